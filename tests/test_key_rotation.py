"""Rotating a key: a new secret for the same key, the old one kept for a grace period.

From the CLI (manage.py apikey rotate) and the admin's Rotate button; the grace period is
read on the limits' clock (tests/clock.py), which the tests move past its end.
"""

import re
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.core.management.base import CommandError

from apikeys.models import SECRET_PREFIX, ApiKey, UsageRecord, digest, keys_by_digest
from tests.client import Client
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db

HOUR = 3600
KEYS = "/admin/apikeys/apikey/"


def apikey(*args):
    """Run the command and return (stdout, stderr)."""
    out, err = StringIO(), StringIO()
    call_command("apikey", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def rotate(name, *options):
    """Rotate a key by the CLI and return its new secret, the last line of the output."""
    out, _ = apikey("rotate", "--name", name, *options)
    return out.splitlines()[-1]


def models_status(client, secret):
    return client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})


def shown_secret(response):
    html = response.content.decode()
    secret = re.search(r'id="api-key-secret"[^>]*value="([^"]+)"', html, re.DOTALL).group(1)
    assert html.count(secret) == 1
    return secret


# The CLI


def test_rotate_prints_the_new_secret_alone_on_the_last_line(alice, clock):
    out, _ = apikey("rotate", "--name", "alice")

    *description, secret = out.splitlines()
    assert secret.startswith(SECRET_PREFIX)
    assert secret == secret.strip()
    assert secret != alice.secret
    assert secret not in "\n".join(description)
    assert "24h" in "\n".join(description) or "1d" in "\n".join(description)
    key = ApiKey.objects.get(name="alice")
    assert key.pk == alice.key.pk
    assert key.digest == digest(secret)
    assert secret.startswith(key.prefix)


def test_the_old_secret_works_during_the_grace_period_and_is_refused_as_rotated_after(
    alice, clock, client
):
    new = rotate("alice", "--grace", "2h")

    assert models_status(client, alice.secret).status_code == 200
    assert models_status(client, new).status_code == 200

    clock.advance(2 * HOUR - 1)
    assert models_status(client, alice.secret).status_code == 200

    clock.advance(1)
    response = models_status(client, alice.secret)

    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "authentication_error"
    assert error["code"] == "rotated_api_key"
    assert "rotated" in error["message"]
    rotated_at = ApiKey.objects.get(name="alice").rotated_at
    assert f"{rotated_at:%Y-%m-%d %H:%M} UTC" in error["message"]
    assert alice.secret not in response.content.decode()
    assert models_status(client, new).status_code == 200


def test_a_key_held_by_the_process_does_not_keep_the_old_secret_alive(alice, clock, client):
    rotate("alice", "--grace", "30m")
    # Read once during the grace period: the process now holds the key by the old digest.
    assert models_status(client, alice.secret).status_code == 200
    assert keys_by_digest.get(digest(alice.secret)).name == "alice"

    clock.advance(30 * 60)

    assert models_status(client, alice.secret).status_code == 401


def test_a_grace_of_zero_refuses_the_old_secret_at_once(alice, clock, client):
    new = rotate("alice", "--grace", "0")

    response = models_status(client, alice.secret)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "rotated_api_key"
    assert models_status(client, new).status_code == 200


def test_the_grace_period_defaults_to_a_day(alice, clock, client):
    rotate("alice")

    clock.advance(24 * HOUR - 1)
    assert models_status(client, alice.secret).status_code == 200
    clock.advance(1)
    assert models_status(client, alice.secret).status_code == 401


def test_rotating_again_in_the_grace_period_refuses_the_first_secret_and_says_so(
    alice, clock, client
):
    second = rotate("alice", "--grace", "7d")

    out, err = apikey("rotate", "--name", "alice", "--grace", "7d")
    third = out.splitlines()[-1]

    assert "refused from now on" in err
    assert models_status(client, alice.secret).status_code == 401
    assert models_status(client, second).status_code == 200
    assert models_status(client, third).status_code == 200


def test_the_rotated_key_keeps_its_name_limits_and_usage(alice, clock, client, cloudflare):
    ApiKey.objects.filter(pk=alice.key.pk).update(rate_limit="50/m", tokens_per_day=9000)
    chat = {"model": LLAMA, "messages": [{"role": "user", "content": "hello"}]}
    client.post("/v1/chat/completions", chat, "application/json", headers=alice.headers)

    new = rotate("alice")
    response = client.post(
        "/v1/chat/completions",
        chat,
        "application/json",
        headers={"Authorization": f"Bearer {new}"},
    )

    assert response.status_code == 200
    key = ApiKey.objects.get(pk=alice.key.pk)
    assert (key.name, key.rate_limit, key.tokens_per_day) == ("alice", "50/m", 9000)
    assert UsageRecord.objects.filter(api_key=key).count() == 2
    assert ApiKey.objects.count() == 1


def test_the_new_secret_counts_in_the_same_request_window(clock, client):
    key, secret = ApiKey.objects.create_key(name="dave", rate_limit="2/m")
    assert models_status(client, secret).status_code == 200
    assert models_status(client, secret).status_code == 200

    new = rotate("dave")

    assert models_status(client, new).status_code == 429


def test_a_key_made_without_create_key_keeps_its_request_window_too(clock, client):
    secret = SECRET_PREFIX + "made-by-hand-" + "x" * 30
    ApiKey.objects.create(name="dave", prefix=secret[:12], digest=digest(secret), rate_limit="2/m")
    assert models_status(client, secret).status_code == 200
    assert models_status(client, secret).status_code == 200

    new = rotate("dave")

    assert models_status(client, new).status_code == 429


@pytest.mark.parametrize("grace", ["24", "1w", "-1h", "h"])
def test_rotate_refuses_a_grace_it_cannot_read(alice, grace):
    with pytest.raises(CommandError, match="not a duration"):
        apikey("rotate", "--name", "alice", f"--grace={grace}")

    assert ApiKey.objects.get(name="alice").digest == alice.key.digest


def test_rotate_refuses_an_unknown_name():
    with pytest.raises(CommandError, match="no key is named 'mallory'"):
        apikey("rotate", "--name", "mallory")


def test_rotate_refuses_a_revoked_key(alice):
    alice.key.revoke()

    with pytest.raises(CommandError, match="revoked"):
        apikey("rotate", "--name", "alice")

    assert ApiKey.objects.get(name="alice").digest == alice.key.digest


# The rotation policy


def test_list_names_the_keys_due_for_rotation(alice, bob, clock):
    apikey("create", "--name", "dave", "--rotate-every-days", "30")
    ApiKey.objects.filter(name="alice").update(rotate_every_days=30)
    ApiKey.objects.filter(name="bob").update(rotate_every_days=90)
    clock.advance(31 * 24 * HOUR)

    out, _ = apikey("list")

    due = out.split("Due for rotation")[1]
    assert "alice: every 30 days" in due
    assert "dave: every 30 days" in due
    assert "bob" not in due


def test_a_rotation_starts_the_policy_afresh(alice, clock):
    ApiKey.objects.filter(name="alice").update(rotate_every_days=30)
    clock.advance(31 * 24 * HOUR)
    assert ApiKey.objects.get(name="alice").rotation_due

    rotate("alice")

    assert not ApiKey.objects.get(name="alice").rotation_due
    assert "Due for rotation" not in apikey("list")[0]


def test_the_admin_lists_and_filters_the_keys_due(admin_client, alice, bob, carol, clock):
    ApiKey.objects.filter(name__in=["alice", "bob"]).update(rotate_every_days=7)
    ApiKey.objects.filter(name="bob").update(rotated_at=ApiKey.now() + timedelta(days=6))
    clock.advance(8 * 24 * HOUR)

    due = admin_client.get(f"{KEYS}?rotation_due=yes").content.decode()
    not_due = admin_client.get(f"{KEYS}?rotation_due=no").content.decode()

    assert "<strong>due</strong> since" in due
    assert ">alice<" in due and ">bob<" not in due and ">carol<" not in due
    assert ">alice<" not in not_due and ">bob<" in not_due and ">carol<" in not_due


# The admin's Rotate button


def test_the_change_page_offers_to_rotate(admin_client, alice):
    html = admin_client.get(f"{KEYS}{alice.key.pk}/change/").content.decode()

    assert f'href="{KEYS}{alice.key.pk}/rotate/"' in html


def test_a_revoked_key_offers_no_rotation(admin_client, alice):
    alice.key.revoke()

    html = admin_client.get(f"{KEYS}{alice.key.pk}/change/").content.decode()

    assert "/rotate/" not in html
    assert admin_client.post(f"{KEYS}{alice.key.pk}/rotate/", {"grace": "1h"}).status_code == 403


def test_the_rotate_button_asks_first_and_changes_nothing(admin_client, alice):
    response = admin_client.get(f"{KEYS}{alice.key.pk}/rotate/")

    assert response.status_code == 200
    html = response.content.decode()
    assert 'method="post"' in html
    assert 'name="grace"' in html and 'value="24h"' in html
    assert ApiKey.objects.get(pk=alice.key.pk).digest == alice.key.digest


def test_rotating_in_the_admin_shows_the_new_secret_once_and_keeps_the_old_for_the_grace(
    admin_client, alice, clock, client
):
    response = admin_client.post(f"{KEYS}{alice.key.pk}/rotate/", {"grace": "1h"})

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    new = shown_secret(response)
    assert "keeps working for 1h" in " ".join(response.content.decode().split())
    assert ApiKey.objects.get(pk=alice.key.pk).digest == digest(new)
    assert new not in admin_client.get(f"{KEYS}{alice.key.pk}/change/").content.decode()
    assert models_status(client, new).status_code == 200
    assert models_status(client, alice.secret).status_code == 200

    clock.advance(HOUR)

    assert models_status(client, alice.secret).status_code == 401


def test_the_admin_refuses_a_grace_it_cannot_read(admin_client, alice):
    response = admin_client.post(f"{KEYS}{alice.key.pk}/rotate/", {"grace": "soon"})

    assert response.status_code == 200
    assert "not a duration" in response.content.decode()
    assert ApiKey.objects.get(pk=alice.key.pk).digest == alice.key.digest


def test_rotating_needs_the_csrf_token(admin_user, alice):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin_user)

    response = browser.post(f"{KEYS}{alice.key.pk}/rotate/", {"grace": "1h"})

    assert response.status_code == 403
    assert ApiKey.objects.get(pk=alice.key.pk).digest == alice.key.digest


def test_a_staff_user_who_may_only_view_keys_cannot_rotate(django_user_model, alice):
    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_apikey"))
    browser = Client()
    browser.force_login(viewer)

    assert browser.post(f"{KEYS}{alice.key.pk}/rotate/", {"grace": "1h"}).status_code == 403
    assert ApiKey.objects.get(pk=alice.key.pk).digest == alice.key.digest
