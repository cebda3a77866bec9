"""Settings from the environment: bad values stop the process with the variable's name."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from gateway.env import envbool, envchoice, envfloat, envint, envlist, envstr

ROOT = Path(__file__).resolve().parent.parent
# A secret key fit for production: at least 32 characters, 5 or more of them different.
PRODUCTION_SECRET_KEY = "production-only-" + "k7Qx" * 9
# What /metrics asks of a scraper in production.
METRICS_TOKEN = "scrape-" + "m3Tz" * 6
# Settings load without reaching Redis: the URL need not answer.
PRODUCTION_REDIS_URL = "redis://127.0.0.1:6379/0"
# Variables that would change what the settings under test see.
SETTINGS_VARIABLES = (
    "ENVIRONMENT",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "DEBUG",
    "DATABASE_URL",
    "UPSTREAM_TIMEOUT",
    "MAX_REQUEST_BYTES",
    "REDIS_URL",
    "ALLOW_LOCAL_CACHE_IN_PRODUCTION",
    "METRICS_TOKEN",
    "METRICS_PUBLIC",
    "PROVIDER_KEY_VARIABLES",
)
PRINT_SETTINGS = (
    "import django; from django.conf import settings; django.setup(); "
    "print(settings.DEBUG, settings.ALLOWED_HOSTS)"
)


def _load_settings(**env):
    """Load the settings in a new process with these variables; return the finished process."""
    clean = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARIABLES}
    return subprocess.run(
        [sys.executable, "-c", PRINT_SETTINGS],
        env={**clean, "DJANGO_SETTINGS_MODULE": "gateway.settings", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _run(*arguments, **env):
    """Run manage.py (or any script of the project) with these variables."""
    clean = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARIABLES}
    return subprocess.run(
        [sys.executable, *arguments],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _assert_refused(process, *words):
    assert process.returncode != 0
    assert "ImproperlyConfigured" in process.stderr
    last_line = process.stderr.strip().splitlines()[-1]
    for word in words:
        assert word in last_line


def test_it_reads_a_whole_number(monkeypatch):
    monkeypatch.setenv("GATEWAY_TEST_INT", "42")

    assert envint("GATEWAY_TEST_INT", 7) == 42


def test_it_uses_the_default_for_an_unset_or_empty_variable(monkeypatch):
    monkeypatch.delenv("GATEWAY_TEST_INT", raising=False)
    assert envint("GATEWAY_TEST_INT", 7) == 7

    monkeypatch.setenv("GATEWAY_TEST_INT", "")
    assert envint("GATEWAY_TEST_INT", 7) == 7


@pytest.mark.parametrize("value", ["forty", "4.5", "1e3"])
def test_it_refuses_a_whole_number_that_is_not_one(monkeypatch, value):
    monkeypatch.setenv("GATEWAY_TEST_INT", value)

    with pytest.raises(ImproperlyConfigured, match=f"GATEWAY_TEST_INT.*{value}"):
        envint("GATEWAY_TEST_INT", 7)


def test_it_refuses_a_whole_number_below_its_minimum(monkeypatch):
    monkeypatch.setenv("GATEWAY_TEST_INT", "0")

    with pytest.raises(ImproperlyConfigured, match="GATEWAY_TEST_INT must be at least 1"):
        envint("GATEWAY_TEST_INT", 7, minimum=1)


def test_it_reads_a_number(monkeypatch):
    monkeypatch.setenv("GATEWAY_TEST_FLOAT", "0.5")

    assert envfloat("GATEWAY_TEST_FLOAT", 1.0) == 0.5


def test_it_refuses_a_number_that_is_not_one(monkeypatch):
    monkeypatch.setenv("GATEWAY_TEST_FLOAT", "soon")

    with pytest.raises(ImproperlyConfigured, match="GATEWAY_TEST_FLOAT.*'soon'"):
        envfloat("GATEWAY_TEST_FLOAT", 1.0)


def test_it_refuses_a_number_below_its_minimum(monkeypatch):
    monkeypatch.setenv("GATEWAY_TEST_FLOAT", "0.01")

    with pytest.raises(ImproperlyConfigured, match="GATEWAY_TEST_FLOAT must be at least 0.1"):
        envfloat("GATEWAY_TEST_FLOAT", 1.0, minimum=0.1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("true", True), ("YES", True), ("on", True), ("0", False), ("False", False)],
)
def test_it_reads_a_boolean(monkeypatch, value, expected):
    monkeypatch.setenv("GATEWAY_TEST_BOOL", value)

    assert envbool("GATEWAY_TEST_BOOL", not expected) is expected


def test_it_refuses_a_boolean_that_is_not_one(monkeypatch):
    monkeypatch.setenv("GATEWAY_TEST_BOOL", "maybe")

    with pytest.raises(ImproperlyConfigured, match="GATEWAY_TEST_BOOL.*'maybe'"):
        envbool("GATEWAY_TEST_BOOL", False)


def test_it_reads_a_comma_separated_list(monkeypatch):
    monkeypatch.setenv("GATEWAY_TEST_LIST", " a.example , b.example,, ")

    assert envlist("GATEWAY_TEST_LIST") == ["a.example", "b.example"]


def test_it_uses_the_default_list_for_a_blank_variable(monkeypatch):
    monkeypatch.setenv("GATEWAY_TEST_LIST", "  ")

    assert envlist("GATEWAY_TEST_LIST", ["localhost"]) == ["localhost"]


def test_it_refuses_a_choice_outside_the_list(monkeypatch):
    monkeypatch.setenv("GATEWAY_TEST_CHOICE", "prod")

    with pytest.raises(ImproperlyConfigured, match="GATEWAY_TEST_CHOICE.*'prod'"):
        envchoice("GATEWAY_TEST_CHOICE", "development", ("development", "production"))


def test_it_reads_a_string_with_a_default(monkeypatch):
    monkeypatch.delenv("GATEWAY_TEST_STR", raising=False)

    assert envstr("GATEWAY_TEST_STR", "fallback") == "fallback"


def test_it_loads_development_settings_with_no_variables():
    process = _load_settings()

    assert process.returncode == 0, process.stderr
    assert process.stdout.startswith("True ")


def test_it_refuses_production_without_a_secret_key():
    process = _load_settings(ENVIRONMENT="production", ALLOWED_HOSTS="api.example.com")

    _assert_refused(process, "SECRET_KEY", "production")


def test_it_refuses_production_with_a_short_secret_key():
    process = _load_settings(
        ENVIRONMENT="production", SECRET_KEY="short", ALLOWED_HOSTS="api.example.com"
    )

    _assert_refused(process, "SECRET_KEY", "32")


def _example_secret_key():
    """Return the SECRET_KEY line's value in deploy/env.example."""
    for line in (ROOT / "deploy" / "env.example").read_text().splitlines():
        if line.startswith("SECRET_KEY="):
            return line.removeprefix("SECRET_KEY=")
    raise AssertionError("deploy/env.example has no SECRET_KEY line")


def test_it_refuses_production_with_the_secret_key_of_the_example_environment_file():
    process = _load_settings(
        ENVIRONMENT="production",
        SECRET_KEY=_example_secret_key(),
        ALLOWED_HOSTS="api.example.com",
        METRICS_TOKEN=METRICS_TOKEN,
    )

    _assert_refused(process, "SECRET_KEY", "placeholder")


@pytest.mark.parametrize(
    "key",
    [
        "replace-this-with-a-long-random-secret-key-please-ok",
        "django-insecure-" + "a8Fq" * 10,
        "your-secret-key-goes-here-and-it-is-long-enough-now",
        "CHANGEME" * 5,
    ],
)
def test_it_refuses_production_with_a_placeholder_secret_key(key):
    process = _load_settings(
        ENVIRONMENT="production",
        SECRET_KEY=key,
        ALLOWED_HOSTS="api.example.com",
        METRICS_TOKEN=METRICS_TOKEN,
    )

    _assert_refused(process, "SECRET_KEY", "placeholder")


def test_it_refuses_production_with_a_secret_key_of_few_different_characters():
    process = _load_settings(
        ENVIRONMENT="production",
        SECRET_KEY="abab" * 12,
        ALLOWED_HOSTS="api.example.com",
        METRICS_TOKEN=METRICS_TOKEN,
    )

    _assert_refused(process, "SECRET_KEY", "5 different")


def test_it_refuses_production_without_a_metrics_token():
    process = _load_settings(
        ENVIRONMENT="production",
        SECRET_KEY=PRODUCTION_SECRET_KEY,
        ALLOWED_HOSTS="api.example.com",
        REDIS_URL=PRODUCTION_REDIS_URL,
    )

    _assert_refused(process, "METRICS_TOKEN", "METRICS_PUBLIC")


def test_it_loads_production_with_open_metrics_when_told_they_are_public():
    process = _load_settings(
        ENVIRONMENT="production",
        SECRET_KEY=PRODUCTION_SECRET_KEY,
        ALLOWED_HOSTS="api.example.com",
        REDIS_URL=PRODUCTION_REDIS_URL,
        METRICS_PUBLIC="true",
    )

    assert process.returncode == 0, process.stderr


def test_it_refuses_production_without_allowed_hosts():
    process = _load_settings(ENVIRONMENT="production", SECRET_KEY=PRODUCTION_SECRET_KEY)

    _assert_refused(process, "ALLOWED_HOSTS", "production")


def test_it_refuses_production_with_debug_on():
    process = _load_settings(
        ENVIRONMENT="production",
        SECRET_KEY=PRODUCTION_SECRET_KEY,
        ALLOWED_HOSTS="api.example.com",
        METRICS_TOKEN=METRICS_TOKEN,
        DEBUG="true",
    )

    _assert_refused(process, "DEBUG", "production")


def test_it_loads_production_settings_without_debug():
    process = _load_settings(
        ENVIRONMENT="production",
        SECRET_KEY=PRODUCTION_SECRET_KEY,
        ALLOWED_HOSTS="api.example.com",
        REDIS_URL=PRODUCTION_REDIS_URL,
        METRICS_TOKEN=METRICS_TOKEN,
    )

    assert process.returncode == 0, process.stderr
    assert process.stdout.strip() == "False ['api.example.com']"


def test_it_refuses_production_without_a_shared_cache():
    process = _load_settings(
        ENVIRONMENT="production", SECRET_KEY=PRODUCTION_SECRET_KEY, ALLOWED_HOSTS="api.example.com"
    )

    _assert_refused(process, "REDIS_URL", "production", "ALLOW_LOCAL_CACHE_IN_PRODUCTION")


def test_it_runs_production_on_the_local_cache_only_when_told_to(tmp_path):
    env = {
        "ENVIRONMENT": "production",
        "SECRET_KEY": PRODUCTION_SECRET_KEY,
        "ALLOWED_HOSTS": "api.example.com",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "ALLOW_LOCAL_CACHE_IN_PRODUCTION": "true",
        "METRICS_TOKEN": METRICS_TOKEN,
    }

    process = _run("manage.py", "check", **env)

    # django-ratelimit's check for a cache shared by every process (E003) is waived too.
    assert process.returncode == 0, process.stderr


def test_it_passes_the_system_checks_in_production(tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if k not in SETTINGS_VARIABLES},
        "ENVIRONMENT": "production",
        "SECRET_KEY": PRODUCTION_SECRET_KEY,
        "ALLOWED_HOSTS": "api.example.com",
        "METRICS_TOKEN": METRICS_TOKEN,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        # Rate limits need a cache shared by every process (django_ratelimit.E003).
        "REDIS_URL": PRODUCTION_REDIS_URL,
    }

    process = subprocess.run(
        [sys.executable, "manage.py", "check"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert process.returncode == 0, process.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ENVIRONMENT", "prod"),
        ("DEBUG", "maybe"),
        ("UPSTREAM_TIMEOUT", "two minutes"),
        ("MAX_REQUEST_BYTES", "10"),
        ("DATABASE_URL", "not a url"),
        ("PROVIDER_KEY_VARIABLES", "OPENAI_API_KEY,my-key"),
    ],
)
def test_it_refuses_to_start_with_a_bad_value(variable, value):
    process = _load_settings(**{variable: value})

    _assert_refused(process, variable)


@pytest.mark.parametrize("name", ["SECRET_KEY", "DATABASE_URL", "REDIS_URL", "METRICS_TOKEN"])
def test_it_refuses_to_let_providers_read_the_gateways_own_secrets(name):
    process = _load_settings(PROVIDER_KEY_VARIABLES=f"OPENAI_API_KEY,{name}")

    _assert_refused(process, "PROVIDER_KEY_VARIABLES", name)
