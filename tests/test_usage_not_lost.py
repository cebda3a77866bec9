"""Usage is recorded and counted when a client goes away mid-stream or the upstream fails.

The disconnect is the real one: the ASGI app gets `http.disconnect` while it streams, as
daphne sends it when the client closes its connection, and the gateway cancels the response.
"""

import asyncio
import json
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from apikeys.models import ApiKey, UsageRecord
from apikeys.throttling import token_windows
from completions.models import Model
from gateway.asgi import application
from tests.asgi_scope import chat_scope

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [{"role": "user", "content": "hello there world"}]
# Seconds to wait for the record of a request the client left.
RECORD_TIMEOUT = 5


@pytest.fixture
def priced(cloudflare):
    Model.objects.filter(name="@cf/test/drip").update(
        input_price=Decimal("1000"), output_price=Decimal("1000")
    )


async def _key():
    _, secret = await sync_to_async(ApiKey.objects.create_key)(
        name="dave", tokens_per_minute=10**6, tokens_per_day=10**6
    )
    return secret


async def _stream_and_leave(secret, model, events_before_leaving):
    """POST a streamed chat to the ASGI app; disconnect after some events; return them."""
    body = json.dumps({"model": model, "messages": MESSAGES, "stream": True}).encode()
    scope = chat_scope(f"Bearer {secret}")
    leaving = asyncio.Event()
    requested = False
    events = []

    async def receive():
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": body, "more_body": False}
        await leaving.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.body" and message.get("body"):
            events.append(message["body"])
            if len(events) >= events_before_leaving:
                leaving.set()

    await asyncio.wait_for(application(scope, receive, send), RECORD_TIMEOUT)
    return events


async def _record():
    for _ in range(RECORD_TIMEOUT * 20):
        record = await UsageRecord.objects.filter(key_name="dave").afirst()
        if record is not None:
            return record
        await asyncio.sleep(0.05)
    raise AssertionError("no usage record was written")


async def test_a_client_that_leaves_mid_stream_leaves_a_record_of_what_it_got(
    cloudflare, priced, upstream, clock
):
    secret = await _key()

    events = await _stream_and_leave(secret, "@cf/test/drip", events_before_leaving=4)

    record = await _record()
    assert record.status == UsageRecord.CLIENT_CLOSED
    assert record.http_status == 499
    # The role chunk, then one drip per event: at least the three the client saw.
    assert record.completion_tokens >= len(events) - 1 >= 3
    assert record.tokens_estimated is True
    # The prompt is paid for too, as the gateway counts it: 17 characters, 5 tokens.
    assert record.prompt_tokens == 5
    assert record.cost == record.total_tokens * Decimal("0.001")
    # The upstream call was ended with the client's.
    assert await asyncio.to_thread(upstream.drip_closed.wait, RECORD_TIMEOUT)


async def test_the_tokens_of_a_stream_the_client_left_count_against_its_limits(cloudflare, clock):
    secret = await _key()

    await _stream_and_leave(secret, "@cf/test/drip", events_before_leaving=3)

    record = await _record()
    key = await ApiKey.objects.aget(name="dave")
    windows = await sync_to_async(token_windows)(key)
    assert [window.used for window in windows] == [record.total_tokens] * 2


async def test_a_stream_the_upstream_cut_is_recorded_with_the_tokens_it_sent(cloudflare, clock):
    secret = await _key()

    events = await _stream_and_leave(secret, "@cf/test/cut-stream", events_before_leaving=100)

    record = await _record()
    assert record.status == UsageRecord.UPSTREAM_ERROR
    assert "error" in events[-2].decode()
    assert record.completion_tokens >= 1
    key = await ApiKey.objects.aget(name="dave")
    assert (await sync_to_async(token_windows)(key))[0].used == record.total_tokens


async def test_a_client_that_leaves_before_a_plain_answer_leaves_a_record(cloudflare, clock):
    secret = await _key()
    body = json.dumps({"model": "@cf/test/hang", "messages": MESSAGES}).encode()
    requested = False

    async def receive():
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": body, "more_body": False}
        # The client leaves while the provider is still thinking.
        await asyncio.sleep(0.3)
        return {"type": "http.disconnect"}

    async def send(message):
        pass

    await asyncio.wait_for(application(chat_scope(f"Bearer {secret}"), receive, send), 5)

    record = await _record()
    assert record.status == UsageRecord.CLIENT_CLOSED
    assert record.model == "@cf/test/hang"
