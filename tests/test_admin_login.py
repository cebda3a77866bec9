"""Admin login attempts are limited per client address and per user name (ADMIN_LOGIN_RATE)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client

from tests.clock import freeze

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "a-long-admin-password"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_counters(settings, monkeypatch):
    settings.ADMIN_LOGIN_RATE = "3/m"
    # A test's attempts all fall in one window, however slow the machine.
    freeze(monkeypatch)
    # A slow password hash is the point in production, and only slows tests down.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def admin_user():
    return User.objects.create_superuser("root", "root@example.com", PASSWORD)


def _login(username, password, address="203.0.113.7", forwarded_for=None):
    headers = {} if forwarded_for is None else {"X-Forwarded-For": forwarded_for}
    return Client(REMOTE_ADDR=address, headers=headers).post(
        "/admin/login/", {"username": username, "password": password, "next": "/admin/"}
    )


def test_it_logs_in_with_the_right_password(admin_user):
    response = _login("root", PASSWORD)

    assert response.status_code == 302
    assert response["Location"] == "/admin/"


def test_it_refuses_attempts_past_the_rate_with_429(admin_user):
    answers = [_login("root", "wrong").status_code for _ in range(3)]

    refused = _login("root", "wrong")

    # The first three get the form back, with its error.
    assert answers == [200, 200, 200]
    assert refused.status_code == 429
    assert refused["Retry-After"] == "60"


def test_it_refuses_even_the_right_password_once_the_rate_is_spent(admin_user):
    for _ in range(3):
        _login("root", "wrong")

    response = _login("root", PASSWORD)

    assert response.status_code == 429
    assert "_auth_user_id" not in response.wsgi_request.session


def test_it_limits_one_user_name_tried_from_many_addresses(admin_user):
    for number in range(3):
        _login("root", "wrong", address=f"198.51.100.{number}")

    response = _login("root", PASSWORD, address="198.51.100.99")

    assert response.status_code == 429


def test_it_limits_one_address_trying_many_user_names(admin_user):
    for name in ("alice", "bob", "carol"):
        _login(name, "wrong")

    response = _login("root", PASSWORD)

    assert response.status_code == 429


def test_another_address_and_user_are_not_held_back(admin_user):
    for _ in range(3):
        _login("mallory", "wrong", address="192.0.2.1")

    response = _login("root", PASSWORD, address="192.0.2.200")

    assert response.status_code == 302


def test_showing_the_login_form_is_not_counted(admin_user):
    for _ in range(5):
        assert Client(REMOTE_ADDR="203.0.113.7").get("/admin/login/").status_code == 200

    assert _login("root", PASSWORD).status_code == 302


@pytest.mark.parametrize(
    "spelling",
    [" root", "root ", "root\t", "\u00a0root", "ｒｏｏｔ"],
    ids=["leading-space", "trailing-space", "tab", "no-break-space", "fullwidth"],
)
def test_it_counts_every_spelling_of_a_name_that_logs_in_as_it(admin_user, spelling):
    for number in range(3):
        _login("root", "wrong", address=f"198.51.100.{number}")

    response = _login(spelling, PASSWORD, address="198.51.100.99")

    assert response.status_code == 429
    assert "_auth_user_id" not in response.wsgi_request.session


def test_a_fullwidth_name_logs_in_as_the_plain_one(admin_user):
    # What the counter above relies on: Django's form hands the backend the NFKC form.
    response = _login("ｒｏｏｔ", PASSWORD)

    assert response.status_code == 302


def test_a_name_in_other_case_is_another_account_and_counter(admin_user):
    for number in range(3):
        _login("root", "wrong", address=f"198.51.100.{number}")

    response = _login("ROOT", PASSWORD, address="198.51.100.99")

    # The backend matches names exactly: ROOT is no account, so it gets the form back.
    assert response.status_code == 200
    assert "_auth_user_id" not in response.wsgi_request.session


def test_behind_a_trusted_proxy_it_counts_by_the_forwarded_address(admin_user, settings):
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    for _ in range(3):
        _login("mallory", "wrong", address="127.0.0.1", forwarded_for="192.0.2.1")

    response = _login("root", PASSWORD, address="127.0.0.1", forwarded_for="192.0.2.200")

    assert response.status_code == 302


def test_behind_a_trusted_proxy_a_forged_address_does_not_escape_the_count(admin_user, settings):
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    # The client writes an address of its own; nginx appends the one it saw.
    for number in range(3):
        _login(
            f"user{number}",
            "wrong",
            address="127.0.0.1",
            forwarded_for=f"10.9.9.{number}, 192.0.2.1",
        )

    response = _login("root", PASSWORD, address="127.0.0.1", forwarded_for="10.9.9.99, 192.0.2.1")

    assert response.status_code == 429


def test_it_ignores_x_forwarded_for_from_a_peer_that_is_not_a_trusted_proxy(admin_user):
    for number in range(3):
        _login(f"user{number}", "wrong", forwarded_for=f"192.0.2.{number}")

    response = _login("root", PASSWORD, forwarded_for="192.0.2.99")

    assert response.status_code == 429


def test_a_rate_that_is_not_one_stops_the_process():
    env = {k: v for k, v in os.environ.items() if k != "ADMIN_LOGIN_RATE"}
    process = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**env, "DJANGO_SETTINGS_MODULE": "gateway.settings", "ADMIN_LOGIN_RATE": "ten"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert process.returncode != 0
    assert "ADMIN_LOGIN_RATE" in process.stderr.strip().splitlines()[-1]
