"""A stream that is never sent returns its reservation: closed before its first event (the
client left between the head and the body), or dropped for another answer.

"Room for exactly one" is a budget with room for one worst case of the request and not
two: the second request is admitted only once the first one's reservation is settled.
"""

import asyncio
import json
from decimal import Decimal

import pytest
from asgiref.sync import markcoroutinefunction, sync_to_async
from django.conf import settings
from django.test import override_settings

from apikeys.models import ApiKey, UsageRecord
from apikeys.throttling import budget_status
from apikeys.usage import cost_of
from apikeys.writer import writer
from completions.models import Model
from completions.worst_case import chat_prompt_tokens
from gateway.handler import ApiHandler
from tests.asgi_scope import chat_scope
from tests.conftest import LLAMA
from tests.limited_keys import MESSAGES, chat, new_key

pytestmark = pytest.mark.django_db(transaction=True)

DRIP = "@cf/test/drip"
# 1,000 USD per million tokens: 0.001 USD a token, in and out.
PRICE = Decimal("1000")
# The completion tokens the streams below may take: more than the drip sends in a second.
MAX_TOKENS = 50


@pytest.fixture
def priced(cloudflare):
    Model.objects.filter(name__in=[LLAMA, DRIP]).update(input_price=PRICE, output_price=PRICE)


def _budget_for_one(max_tokens=MAX_TOKENS):
    """Return a budget in whole cents with room for one worst case of a chat and not two."""
    model = Model.objects.get(name=LLAMA)
    worst = cost_of(model, chat_prompt_tokens({"messages": MESSAGES}), max_tokens)
    budget = (worst * 3 / 2).quantize(Decimal("0.01"))
    assert worst <= budget < 2 * worst
    return budget


async def _returned(name):
    """Wait until nothing of the key's budget is reserved any more; False if it never is."""
    key = await ApiKey.objects.select_related("team").aget(name=name)
    for _ in range(100):
        if not any(budget.reserved for budget in await sync_to_async(budget_status)(key)):
            return True
        await asyncio.sleep(0.05)
    return False


async def _records(**filters):
    return await sync_to_async(list)(UsageRecord.objects.filter(**filters).order_by("id"))


async def test_a_stream_never_iterated_but_closed_returns_its_reservation(
    api, priced, upstream, clock
):
    dave = await new_key(monthly_budget=await sync_to_async(_budget_for_one)())
    left = await chat(api, dave, model=DRIP, max_tokens=MAX_TOKENS, stream=True)
    held = await chat(api, dave, max_tokens=MAX_TOKENS)

    left.close()

    assert await _returned("dave")
    response = await chat(api, dave, max_tokens=MAX_TOKENS)
    assert held.status_code == 429
    assert response.status_code == 200
    [record, _] = await _records()
    assert record.status == UsageRecord.CLIENT_CLOSED
    # Its prompt was read, and the one word the upstream had sent before the gateway
    # answered; nothing more was read from it.
    assert record.prompt_tokens > 0
    assert record.completion_tokens == 1
    assert await asyncio.to_thread(upstream.drip_closed.wait, 5)


class FailOnTheWayOut:
    """Fail after the view has answered, as a middleware with a bug would."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request):
        await self.get_response(request)
        raise RuntimeError("a middleware failed")


async def test_a_stream_dropped_for_an_error_answer_returns_its_reservation(
    api, priced, upstream, clock
):
    # The view made its stream, and a middleware then failed: the client is answered 500,
    # and the stream is never sent nor closed by the handler, which never had it.
    dave = await new_key(monthly_budget=await sync_to_async(_budget_for_one)())
    middleware = list(settings.API_MIDDLEWARE)
    middleware.insert(1, f"{__name__}.FailOnTheWayOut")
    with override_settings(API_MIDDLEWARE=middleware):
        handler = ApiHandler()
    sent = []

    async def receive():
        if not sent:
            sent.append("body")
            body = {"model": DRIP, "stream": True, "messages": MESSAGES, "max_tokens": MAX_TOKENS}
            return {"type": "http.request", "body": json.dumps(body).encode()}
        await asyncio.sleep(30)

    async def send(message):
        sent.append(message)

    await asyncio.wait_for(handler(chat_scope(dave["Authorization"]), receive, send), 10)

    assert sent[1]["status"] == 500
    assert await _returned("dave"), "the dropped stream's reservation was never returned"
    assert (await chat(api, dave, max_tokens=MAX_TOKENS)).status_code == 200
    [record, _] = await _records()
    assert record.model == DRIP
    assert record.status == UsageRecord.GATEWAY_ERROR
    assert record.http_status == 500
    assert record.prompt_tokens > 0
    assert await asyncio.to_thread(upstream.drip_closed.wait, 5)


async def test_a_client_that_leaves_between_the_head_and_the_body_returns_its_reservation(
    api, priced, upstream, clock
):
    dave = await new_key(monthly_budget=await sync_to_async(_budget_for_one)())
    handler = ApiHandler()
    head_sent = asyncio.Event()
    sent = []

    async def receive():
        if not sent:
            sent.append("body")
            body = {"model": DRIP, "stream": True, "messages": MESSAGES, "max_tokens": MAX_TOKENS}
            return {"type": "http.request", "body": json.dumps(body).encode()}
        await head_sent.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.start":
            # The server still writing the head when the client leaves.
            head_sent.set()
            await asyncio.sleep(30)

    await asyncio.wait_for(handler(chat_scope(dave["Authorization"]), receive, send), 10)

    assert [m["type"] for m in sent[1:]] == ["http.response.start"]
    assert await _returned("dave")
    assert (await chat(api, dave, max_tokens=MAX_TOKENS)).status_code == 200
    [record, _] = await _records()
    assert record.status == UsageRecord.CLIENT_CLOSED
    assert await asyncio.to_thread(upstream.drip_closed.wait, 5)


async def test_a_record_the_writer_cannot_take_still_returns_its_reservation(
    api, priced, clock, monkeypatch
):
    dave = await new_key(monthly_budget=await sync_to_async(_budget_for_one)())

    def no_thread(fields):
        # What Thread.start raises once the interpreter is shutting down.
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(writer, "submit", no_thread)
    with pytest.raises(RuntimeError, match="interpreter shutdown"):
        await chat(api, dave, max_tokens=MAX_TOKENS)

    assert await _returned("dave")
