"""Usage records: exactly one for every request that reached a provider, whatever its outcome."""

import pytest
from asgiref.sync import sync_to_async

from apikeys.models import UsageRecord
from completions.models import Model
from tests import fake_upstream
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hello there world"},
]
# The fake upstream's usage for MESSAGES: 5 prompt words, 4 answer words.
USAGE = {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}


async def _chat(api, persona, model, **body):
    return await api.post(
        "/v1/chat/completions",
        data={"model": model, "messages": MESSAGES, **body},
        content_type="application/json",
        headers=persona.headers,
    )


async def _read(response):
    return b"".join([chunk async for chunk in response.streaming_content]).decode()


@sync_to_async
def _records():
    return list(UsageRecord.objects.order_by("id"))


async def _only_record():
    records = await _records()
    assert len(records) == 1
    return records[0]


def _tokens(record):
    return {
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "total_tokens": record.total_tokens,
    }


async def test_it_records_a_completion(api, alice, cloudflare):
    response = await _chat(api, alice, LLAMA)

    record = await _only_record()
    assert record.api_key_id == alice.key.pk
    assert record.key_name == "alice"
    assert record.model == LLAMA
    assert record.provider == "cloudflare"
    assert record.endpoint == "/v1/chat/completions"
    assert record.stream is False
    assert record.status == UsageRecord.OK
    assert record.http_status == 200
    assert record.error == ""
    assert _tokens(record) == USAGE
    assert record.request_id == response["x-request-id"]


async def test_it_records_how_long_the_provider_took(api, alice, cloudflare):
    # The slow model waits 0.5 s before answering (less a few ms of timer rounding).
    await _chat(api, alice, "@cf/test/slow")

    record = await _only_record()
    assert record.latency_ms >= 490
    assert record.latency_ms < 5000


async def test_it_records_the_model_an_alias_names(api, alice, cloudflare):
    await _chat(api, alice, "gpt-4o-mini")

    record = await _only_record()
    assert record.model == LLAMA


async def test_it_records_a_completion_through_an_openai_provider(api, alice, openai_upstream):
    await _chat(api, alice, "gpt-test-mini")

    record = await _only_record()
    assert record.provider == "openai-fake"
    assert _tokens(record) == USAGE


async def test_it_records_a_stream(api, alice, cloudflare):
    response = await _chat(api, alice, LLAMA, stream=True)
    await _read(response)

    record = await _only_record()
    assert record.stream is True
    assert record.status == UsageRecord.OK
    assert record.http_status == 200
    assert _tokens(record) == USAGE
    assert record.request_id == response["x-request-id"]
    assert record.time_to_first_token_ms is not None
    assert record.time_to_first_token_ms <= record.latency_ms


async def test_it_records_usage_of_a_stream_that_did_not_ask_for_it(api, alice, openai_upstream):
    response = await _chat(api, alice, "gpt-test-mini", stream=True)
    body = await _read(response)

    assert '"usage"' not in body
    record = await _only_record()
    assert _tokens(record) == USAGE


async def test_it_records_time_to_first_token_of_a_stream(api, alice, cloudflare):
    # The slow model waits 0.5 s, then sends 4 words 0.05 s apart: 150 ms from the first to
    # the last, less a few ms of timer rounding.
    response = await _chat(api, alice, "@cf/test/slow", stream=True)
    await _read(response)

    record = await _only_record()
    assert record.time_to_first_token_ms >= 490
    assert record.latency_ms >= record.time_to_first_token_ms + 120


async def test_it_records_an_upstream_failure(api, alice, cloudflare):
    response = await _chat(api, alice, "@cf/test/fail-500")

    record = await _only_record()
    assert record.status == UsageRecord.UPSTREAM_ERROR
    assert record.http_status == 502
    assert "HTTP 500" in record.error
    assert fake_upstream.CLOUDFLARE_TOKEN not in record.error
    # The upstream failed after taking the request: its prompt is paid for, as the gateway
    # counts it ("Be brief.\nhello there world", 27 characters at 4 a token).
    assert _tokens(record) == {"prompt_tokens": 7, "completion_tokens": 0, "total_tokens": 7}
    assert record.tokens_estimated is True
    assert record.request_id == response["x-request-id"]


async def test_it_records_upstream_rate_limiting(api, alice, cloudflare):
    # Workers AI's daily allowance used up: a 429 (tests/test_cloudflare_errors.py).
    await Model.objects.acreate(name="@cf/test/cf-4006", provider=cloudflare)

    await _chat(api, alice, "@cf/test/cf-4006")

    record = await _only_record()
    assert record.status == UsageRecord.UPSTREAM_ERROR
    assert record.http_status == 429


async def test_it_records_a_request_the_upstream_refused_as_a_client_error(api, alice, cloudflare):
    await _chat(api, alice, "@cf/test/bad-request")

    record = await _only_record()
    assert record.status == UsageRecord.CLIENT_ERROR
    assert record.http_status == 400
    assert "context too long" in record.error


async def test_it_records_an_upstream_timeout(api, alice, cloudflare, settings):
    settings.UPSTREAM_TIMEOUT = 0.5

    await _chat(api, alice, "@cf/test/hang")

    record = await _only_record()
    assert record.status == UsageRecord.UPSTREAM_ERROR
    assert record.http_status == 504


async def test_it_records_a_stream_refused_before_it_started(api, alice, cloudflare):
    await _chat(api, alice, "@cf/test/fail-500", stream=True)

    record = await _only_record()
    assert record.stream is True
    assert record.http_status == 502


async def test_it_records_a_cut_stream_with_the_tokens_sent(api, alice, cloudflare):
    response = await _chat(api, alice, "@cf/test/cut-stream", stream=True)
    body = await _read(response)

    record = await _only_record()
    assert record.stream is True
    assert record.status == UsageRecord.UPSTREAM_ERROR
    assert record.http_status == 502
    assert "ended before it was complete" in record.error
    # No usage came from the upstream: each word event sent counts as one token.
    assert record.completion_tokens == body.count('"content":"') - 1
    assert record.completion_tokens >= 1
    assert record.request_id == response["x-request-id"]


async def test_it_records_a_stream_with_a_malformed_event(api, alice, cloudflare):
    response = await _chat(api, alice, "@cf/test/bad-json", stream=True)
    await _read(response)

    record = await _only_record()
    assert record.status == UsageRecord.UPSTREAM_ERROR
    assert record.completion_tokens == fake_upstream.BAD_JSON_AFTER_EVENTS


async def test_it_records_each_request_once(api, alice, carol, cloudflare):
    first = await _chat(api, alice, LLAMA)
    second = await _chat(api, carol, LLAMA, stream=True)
    await _read(second)

    records = await _records()
    assert [(r.key_name, r.request_id) for r in records] == [
        ("alice", first["x-request-id"]),
        ("carol", second["x-request-id"]),
    ]


async def test_it_keeps_records_readable_after_the_key_is_deleted(api, alice, cloudflare):
    await _chat(api, alice, LLAMA)

    await alice.key.adelete()

    record = await _only_record()
    assert record.api_key_id is None
    assert record.key_name == "alice"


async def test_it_records_nothing_for_a_request_without_a_key(api, cloudflare):
    await api.post(
        "/v1/chat/completions",
        data={"model": LLAMA, "messages": MESSAGES},
        content_type="application/json",
    )

    assert await _records() == []


async def test_it_records_nothing_for_an_invalid_request(api, alice, cloudflare):
    response = await _chat(api, alice, LLAMA, temperature=3)

    assert response.status_code == 400
    assert await _records() == []


async def test_it_records_nothing_for_an_unknown_model(api, alice, cloudflare):
    response = await _chat(api, alice, "@cf/nobody/nothing")

    assert response.status_code == 404
    assert await _records() == []


async def test_it_records_nothing_for_a_model_outside_the_keys_list(api, carol, cloudflare):
    response = await _chat(api, carol, "@cf/test/slow")

    assert response.status_code == 404
    assert await _records() == []


async def test_it_records_nothing_for_a_read_key(api, bob, cloudflare):
    response = await _chat(api, bob, LLAMA)

    assert response.status_code == 403
    assert await _records() == []
