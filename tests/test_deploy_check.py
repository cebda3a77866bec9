"""`manage.py check --deploy` finds nothing to warn about in production settings, and warns
when an operator turns HTTPS off, with none of Django's security checks silenced."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# 50 characters, more than 5 of them different: what Django's deploy check asks of a key.
PRODUCTION_SECRET_KEY = "production-only-" + "k7Qx" * 9


def _deploy_check(tmp_path, **settings):
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SECURE_", "DEBUG", "SESSION_COOKIE_"))
    }
    env = {
        **clean,
        "DJANGO_SETTINGS_MODULE": "gateway.settings",
        "ENVIRONMENT": "production",
        "SECRET_KEY": PRODUCTION_SECRET_KEY,
        "ALLOWED_HOSTS": "api.example.com",
        "METRICS_TOKEN": "scrape-" + "m3Tz" * 6,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        # Rate limits need a cache every process shares; nothing connects to it here.
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        **settings,
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_deploy_check_is_clean_in_production(tmp_path):
    process = _deploy_check(tmp_path)

    assert process.returncode == 0, process.stderr
    assert "no issues" in process.stdout


def test_the_deploy_check_warns_when_production_turns_https_off(tmp_path):
    process = _deploy_check(
        tmp_path,
        SECURE_HSTS_SECONDS="0",
        SECURE_SSL_REDIRECT="false",
        SESSION_COOKIE_SECURE="false",
    )

    assert process.returncode != 0
    # HSTS, the redirect to HTTPS, the session cookie and the CSRF cookie.
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in process.stderr


def test_no_security_check_of_django_is_silenced(settings):
    assert not [name for name in settings.SILENCED_SYSTEM_CHECKS if name.startswith("security.")]
