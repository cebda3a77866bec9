"""Who may call the API: Bearer keys, their state, their permission and their models."""

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from apikeys.models import ApiKey
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = {"model": LLAMA, "messages": [{"role": "user", "content": "hello"}]}


async def _chat(api, headers, body=CHAT):
    return await api.post(
        "/v1/chat/completions", data=body, content_type="application/json", headers=headers
    )


def _assert_401(response):
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "authentication_error"
    return error


async def test_it_refuses_a_request_without_a_key(api, cloudflare, upstream):
    response = await _chat(api, {})

    error = _assert_401(response)
    assert error["code"] == "missing_api_key"
    assert "Authorization" in error["message"]
    assert upstream.requests == []


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer   ", "sk-gw-abc"])
async def test_it_refuses_a_header_that_is_not_a_bearer_key(api, cloudflare, header):
    response = await _chat(api, {"Authorization": header})

    _assert_401(response)


async def test_it_refuses_a_wrong_key_without_repeating_it(api, alice, cloudflare, upstream):
    wrong = alice.secret[:-4] + "XXXX"

    response = await _chat(api, {"Authorization": f"Bearer {wrong}"})

    error = _assert_401(response)
    assert error["code"] == "invalid_api_key"
    assert wrong not in response.content.decode()
    assert wrong[-12:] not in response.content.decode()
    assert upstream.requests == []


async def test_it_refuses_a_key_without_the_gateways_prefix(api, cloudflare):
    response = await _chat(api, {"Authorization": "Bearer sk-proj-0123456789"})

    _assert_401(response)


async def test_it_accepts_the_bearer_scheme_in_any_case(api, alice, cloudflare):
    response = await _chat(api, {"Authorization": f"bearer {alice.secret}"})

    assert response.status_code == 200


async def test_it_refuses_a_revoked_key(api, alice, cloudflare, upstream):
    await sync_to_async(alice.key.revoke)()

    response = await _chat(api, alice.headers)

    error = _assert_401(response)
    assert error["code"] == "revoked_api_key"
    assert upstream.requests == []


async def test_it_refuses_an_expired_key(api, cloudflare, upstream):
    key, secret = await sync_to_async(ApiKey.objects.create_key)(
        name="dave", expires_at=timezone.now() - timedelta(seconds=1)
    )

    response = await _chat(api, {"Authorization": f"Bearer {secret}"})

    error = _assert_401(response)
    assert error["code"] == "expired_api_key"
    assert upstream.requests == []


async def test_it_accepts_a_key_that_expires_later(api, cloudflare):
    key, secret = await sync_to_async(ApiKey.objects.create_key)(
        name="dave", expires_at=timezone.now() + timedelta(hours=1)
    )

    response = await _chat(api, {"Authorization": f"Bearer {secret}"})

    assert response.status_code == 200


async def test_it_refuses_chat_to_a_read_key(api, bob, cloudflare, upstream):
    response = await _chat(api, bob.headers)

    assert response.status_code == 403
    error = response.json()["error"]
    assert error["type"] == "permission_error"
    assert "read" in error["message"]
    assert upstream.requests == []


async def test_it_answers_a_model_outside_the_keys_list_with_404(api, carol, cloudflare, upstream):
    response = await _chat(api, carol.headers, {**CHAT, "model": "@cf/test/slow"})

    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    assert upstream.requests == []


async def test_it_lets_a_limited_key_use_its_model(api, carol, cloudflare):
    response = await _chat(api, carol.headers)

    assert response.status_code == 200


async def test_it_records_when_a_key_was_last_used(api, alice, cloudflare):
    assert alice.key.last_used_at is None

    await api.get("/v1/models", headers=alice.headers)

    key = await ApiKey.objects.aget(pk=alice.key.pk)
    assert key.last_used_at is not None
    assert timezone.now() - key.last_used_at < timedelta(minutes=1)


async def test_it_does_not_record_use_of_a_refused_key(api, alice, cloudflare):
    await sync_to_async(alice.key.revoke)()

    await api.get("/v1/models", headers=alice.headers)

    key = await ApiKey.objects.aget(pk=alice.key.pk)
    assert key.last_used_at is None


async def test_it_answers_health_checks_without_a_key(api):
    response = await api.get("/healthz")

    assert response.status_code == 200
