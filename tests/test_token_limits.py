"""Tokens per key per minute and per day, counted from what the upstream reported.

Each chat reserves WORST_TOKENS (132) while it runs and is settled to the 7 it took: a limit
of WORST_TOKENS + 7 admits two chats in a row and refuses the third.
"""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache

from apikeys.ledger import ledger
from apikeys.models import ApiKey, UsageRecord
from apikeys.throttling import token_windows
from tests.limited_keys import WORST_TOKENS, chat, new_key, read_stream

pytestmark = pytest.mark.django_db(transaction=True)

# The fake upstream's usage for tests/limited_keys.py's MESSAGES: 3 prompt words, 4 answer
# words ("Echo: hello there world").
TOKENS = 7
# Room for one chat's worst case, and for a second once the first is settled.
ROOM = WORST_TOKENS + TOKENS


async def _used():
    key = await ApiKey.objects.aget(name="dave")
    windows = await sync_to_async(token_windows)(key)
    return {w.per: w.used for w in windows}


async def test_it_admits_requests_while_the_minute_has_tokens_left(api, cloudflare, clock):
    dave = await new_key(tokens_per_minute=ROOM)

    first = await chat(api, dave)
    second = await chat(api, dave)

    assert (first.status_code, second.status_code) == (200, 200)
    assert first["x-ratelimit-limit-tokens"] == str(ROOM)
    # What is left once the request's own worst case is reserved.
    assert first["x-ratelimit-remaining-tokens"] == str(ROOM - WORST_TOKENS)
    assert second["x-ratelimit-remaining-tokens"] == "0"


async def test_it_refuses_once_the_minutes_tokens_are_spent(api, cloudflare, upstream, clock):
    dave = await new_key(tokens_per_minute=ROOM)
    await chat(api, dave)
    await chat(api, dave)

    response = await chat(api, dave)

    assert response.status_code == 429
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert f"tokens per minute: limit {ROOM}, used 14" in error["message"]
    assert f"this request may take up to {WORST_TOKENS}" in error["message"]
    assert response["x-ratelimit-remaining-tokens"] == str(ROOM - 14)
    assert response["Retry-After"] == "59"
    assert response["x-ratelimit-reset-tokens"] == "59s"
    assert len([r for r in upstream.requests if "/ai/run/" in r["path"]]) == 2


async def test_it_admits_again_when_the_next_minute_starts(api, cloudflare, clock):
    dave = await new_key(tokens_per_minute=ROOM)
    for _ in range(2):
        await chat(api, dave)

    clock.advance(58)
    still_refused = await chat(api, dave)
    clock.advance(1)
    response = await chat(api, dave)

    assert still_refused.status_code == 429
    assert response.status_code == 200
    assert response["x-ratelimit-remaining-tokens"] == str(ROOM - WORST_TOKENS)


async def test_a_day_limit_outlasts_the_minute(api, cloudflare, clock):
    dave = await new_key(tokens_per_day=ROOM + TOKENS)
    for _ in range(3):
        assert (await chat(api, dave)).status_code == 200

    clock.advance(60)
    refused = await chat(api, dave)

    assert refused.status_code == 429
    assert f"tokens per day: limit {ROOM + TOKENS}, used 21" in refused.json()["error"]["message"]
    # The day ends at midnight UTC.
    assert int(refused["Retry-After"]) == 24 * 3600 - clock.now % (24 * 3600)


async def test_it_admits_again_the_next_day(api, cloudflare, clock):
    dave = await new_key(tokens_per_day=ROOM + TOKENS)
    for _ in range(3):
        await chat(api, dave)

    clock.advance(24 * 3600)

    assert (await chat(api, dave)).status_code == 200


async def test_the_days_tokens_are_summed_again_from_usage_records_when_the_cache_loses_them(
    api, cloudflare, clock
):
    dave = await new_key(tokens_per_day=ROOM + TOKENS)
    for _ in range(3):
        await chat(api, dave)

    # As after a Redis restart, or a development server's.
    await cache.aclear()
    response = await chat(api, dave)

    assert response.status_code == 429
    assert f"tokens per day: limit {ROOM + TOKENS}, used 21" in response.json()["error"]["message"]


async def test_the_headers_report_the_window_closer_to_refusing(api, cloudflare, clock):
    dave = await new_key(tokens_per_minute=1000, tokens_per_day=300)
    await chat(api, dave)

    response = await chat(api, dave)

    assert response["x-ratelimit-limit-tokens"] == "300"
    assert response["x-ratelimit-remaining-tokens"] == str(300 - TOKENS - WORST_TOKENS)
    assert response["x-ratelimit-reset-tokens"].endswith("s")


async def test_it_counts_the_tokens_of_a_stream(api, cloudflare, clock):
    dave = await new_key(tokens_per_minute=1000)

    await read_stream(await chat(api, dave, stream=True))

    assert await _used() == {"minute": TOKENS}


async def test_it_counts_the_tokens_of_an_openai_provider(api, openai_upstream, clock):
    dave = await new_key(tokens_per_day=1000)

    await chat(api, dave, model="gpt-test-mini")
    await read_stream(await chat(api, dave, model="gpt-test-mini", stream=True))

    assert await _used() == {"day": 2 * TOKENS}


async def test_a_stream_the_upstream_cut_counts_the_tokens_it_sent(api, cloudflare, clock):
    dave = await new_key(tokens_per_minute=1000)

    await read_stream(await chat(api, dave, model="@cf/test/cut-stream", stream=True))

    record = await UsageRecord.objects.aget()
    assert record.completion_tokens >= 1
    assert record.tokens_estimated is True
    assert await _used() == {"minute": record.total_tokens}


async def test_a_call_the_upstream_failed_after_taking_it_spends_its_prompts_tokens(
    api, cloudflare, clock
):
    dave = await new_key(tokens_per_minute=WORST_TOKENS)

    assert (await chat(api, dave, model="@cf/test/fail-500")).status_code == 502

    record = await UsageRecord.objects.aget()
    # The prompt, as the gateway counts it: the upstream may have run its model on it.
    assert record.prompt_tokens > 0
    assert await _used() == {"minute": record.prompt_tokens}


async def test_a_call_the_upstream_refused_spends_no_tokens(api, cloudflare, clock):
    # Room for one at a time: each refusal returns what it reserved.
    dave = await new_key(tokens_per_minute=WORST_TOKENS)

    for _ in range(3):
        assert (await chat(api, dave, model="@cf/test/bad-request")).status_code == 400

    assert await _used() == {"minute": 0}


async def test_listing_models_is_not_held_to_token_limits(api, cloudflare, clock):
    dave = await new_key(tokens_per_minute=5)
    await chat(api, dave)

    response = await api.get("/v1/models", headers=dave)

    assert response.status_code == 200
    assert "x-ratelimit-limit-tokens" not in response


async def test_concurrent_requests_add_up_exactly(api, cloudflare, clock):
    dave = await new_key(tokens_per_minute=100_000, tokens_per_day=100_000)

    responses = await asyncio.gather(*(chat(api, dave) for _ in range(30)))

    assert {r.status_code for r in responses} == {200}
    assert await _used() == {"minute": 30 * TOKENS, "day": 30 * TOKENS}


async def test_a_cache_that_is_down_does_not_fail_an_answered_request(
    api, cloudflare, clock, monkeypatch
):
    dave = await new_key(tokens_per_minute=1000)

    def settle(*args, **kwargs):
        raise ConnectionError("the cache is down")

    monkeypatch.setattr(ledger, "settle", settle)

    response = await chat(api, dave)

    assert response.status_code == 200
    assert await UsageRecord.objects.acount() == 1
