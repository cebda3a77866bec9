"""Single sign-on's settings from the environment: bad values stop the process, and a
provider that does not answer does not stop manage.py."""

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRINT_BACKENDS = (
    "import django; from django.conf import settings; django.setup(); "
    "print(' '.join(settings.AUTHENTICATION_BACKENDS))"
)
ISSUER = "https://login.example.com/realms/staff"
CLIENT = {"OIDC_CLIENT_ID": "gateway-admin", "OIDC_CLIENT_SECRET": "s3cret-of-the-client"}


def _clean_environment():
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("OIDC_")
        and name not in ("ADMIN_PASSWORD_LOGIN", "ENVIRONMENT", "PROVIDER_KEY_VARIABLES")
    }


def _run(*arguments, **env):
    return subprocess.run(
        [sys.executable, *arguments],
        env={**_clean_environment(), "DJANGO_SETTINGS_MODULE": "gateway.settings", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _backends(**env):
    finished = _run("-c", PRINT_BACKENDS, **env)
    assert finished.returncode == 0, finished.stderr
    return finished.stdout.split()


def test_without_an_issuer_only_passwords_sign_in():
    assert _backends() == ["django.contrib.auth.backends.ModelBackend"]


def test_with_an_issuer_both_sign_in():
    assert _backends(OIDC_ISSUER=ISSUER, **CLIENT) == [
        "django.contrib.auth.backends.ModelBackend",
        "gateway.sso.OidcBackend",
    ]


def test_with_password_login_off_only_the_provider_signs_in():
    backends = _backends(OIDC_ISSUER=ISSUER, ADMIN_PASSWORD_LOGIN="false", **CLIENT)

    assert backends == ["gateway.sso.OidcBackend"]


def test_it_refuses_password_login_off_without_an_issuer():
    finished = _run("-c", PRINT_BACKENDS, ADMIN_PASSWORD_LOGIN="false")

    assert finished.returncode != 0
    assert "ADMIN_PASSWORD_LOGIN=false needs OIDC_ISSUER" in finished.stderr


def test_it_refuses_an_issuer_without_the_client():
    finished = _run("-c", PRINT_BACKENDS, OIDC_ISSUER=ISSUER, OIDC_CLIENT_ID="gateway-admin")

    assert finished.returncode != 0
    assert "OIDC_CLIENT_ID and OIDC_CLIENT_SECRET must be set" in finished.stderr


def test_it_refuses_an_issuer_over_plain_http_to_another_machine():
    finished = _run("-c", PRINT_BACKENDS, OIDC_ISSUER="http://login.example.com", **CLIENT)

    assert finished.returncode != 0
    assert "OIDC_ISSUER must be an https:// URL" in finished.stderr


def test_it_refuses_scopes_without_openid():
    finished = _run("-c", PRINT_BACKENDS, OIDC_ISSUER=ISSUER, OIDC_SCOPES="email profile", **CLIENT)

    assert finished.returncode != 0
    assert "OIDC_SCOPES must include openid" in finished.stderr


def test_no_provider_may_be_given_the_client_secret():
    finished = _run(
        "-c", PRINT_BACKENDS, PROVIDER_KEY_VARIABLES="OIDC_CLIENT_SECRET", OIDC_ISSUER=ISSUER,
        **CLIENT,
    )  # fmt: skip

    assert finished.returncode != 0
    assert "must not name OIDC_CLIENT_SECRET" in finished.stderr


def test_manage_py_runs_while_the_provider_does_not_answer(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]

    finished = _run(
        str(ROOT / "manage.py"),
        "check",
        OIDC_ISSUER=f"http://127.0.0.1:{closed_port}",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        **CLIENT,
    )

    assert finished.returncode == 0, finished.stderr
