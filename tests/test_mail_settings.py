"""Mail settings from the environment (budget alerts, the usage digest): EMAIL_URL or
EMAIL_HOST and its companions, the console in development."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from gateway.env import envmailurl

ROOT = Path(__file__).resolve().parent.parent
MAIL_VARIABLES = (
    "ENVIRONMENT",
    "EMAIL_URL",
    "EMAIL_HOST",
    "EMAIL_PORT",
    "EMAIL_USE_TLS",
    "EMAIL_USE_SSL",
    "BUDGET_ALERT_THRESHOLDS",
)
PRINT_MAIL = (
    "import django; from django.conf import settings; django.setup(); "
    "print(settings.EMAIL_BACKEND.rsplit('.', 2)[-2], settings.EMAIL_HOST, settings.EMAIL_PORT)"
)


def _mail_settings(**env):
    clean = {k: v for k, v in os.environ.items() if k not in MAIL_VARIABLES}
    return subprocess.run(
        [sys.executable, "-c", PRINT_MAIL],
        env={**clean, "DJANGO_SETTINGS_MODULE": "gateway.settings", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_reads_an_smtp_url_with_starttls(monkeypatch):
    monkeypatch.setenv("EMAIL_URL", "smtp+tls://alerts%40acme.test:p%2Fss@smtp.acme.test")

    mail = envmailurl("EMAIL_URL")

    assert mail == {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "smtp.acme.test",
        "EMAIL_PORT": 587,
        "EMAIL_HOST_USER": "alerts@acme.test",
        "EMAIL_HOST_PASSWORD": "p/ss",
        "EMAIL_USE_TLS": True,
        "EMAIL_USE_SSL": False,
    }


def test_it_reads_smtps_with_its_port(monkeypatch):
    monkeypatch.setenv("EMAIL_URL", "smtps://smtp.acme.test:2465")

    mail = envmailurl("EMAIL_URL")

    assert (mail["EMAIL_PORT"], mail["EMAIL_USE_SSL"], mail["EMAIL_USE_TLS"]) == (2465, True, False)


@pytest.mark.parametrize("url", ["http://smtp.acme.test", "smtp://", "smtp://host:port"])
def test_it_refuses_what_is_not_a_mail_url(monkeypatch, url):
    monkeypatch.setenv("EMAIL_URL", url)

    with pytest.raises(ImproperlyConfigured, match="EMAIL_URL"):
        envmailurl("EMAIL_URL")


def test_development_prints_mail_to_the_console():
    process = _mail_settings()

    assert process.stdout.split()[0] == "console"


def test_an_email_host_sends_by_smtp():
    process = _mail_settings(EMAIL_HOST="smtp.acme.test", EMAIL_PORT="2525")

    assert process.stdout.split() == ["smtp", "smtp.acme.test", "2525"]


def test_email_url_wins_over_the_separate_variables():
    process = _mail_settings(EMAIL_URL="smtp://mail.acme.test", EMAIL_HOST="other.test")

    assert process.stdout.split() == ["smtp", "mail.acme.test", "25"]


def test_production_without_mail_settings_sends_through_localhost():
    process = _mail_settings(
        ENVIRONMENT="production",
        SECRET_KEY="production-only-" + "k7Qx" * 9,
        ALLOWED_HOSTS="gateway.acme.test",
        REDIS_URL="redis://127.0.0.1:6379/0",
        METRICS_PUBLIC="true",
    )

    assert process.stdout.split() == ["smtp", "localhost", "25"], process.stderr


def test_bad_alert_thresholds_stop_the_process():
    process = _mail_settings(BUDGET_ALERT_THRESHOLDS="50,ninety")

    assert process.returncode != 0
    assert "BUDGET_ALERT_THRESHOLDS" in process.stderr.strip().splitlines()[-1]
