"""Upstream timeouts: connect, first byte, silence within a stream, a stream's whole length.

A timeout before anything reached the client is a 504 in OpenAI's format; once a stream has
started, it ends the stream with an error event. Timeouts are never retried: their time is
already spent. Each test's bound is a fraction of a second, and each checks it is kept.
"""

import asyncio
import contextlib
import json
import socket
import time

import httpx
import pytest

from apikeys.models import UsageRecord
from completions.models import Model, Provider
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [{"role": "user", "content": "hello"}]


async def _chat(api, persona, model, **extra):
    return await api.post(
        "/v1/chat/completions",
        data={"model": model, "messages": MESSAGES, **extra},
        content_type="application/json",
        headers=persona.headers,
    )


async def _events(response):
    raw = b"".join([chunk async for chunk in response.streaming_content]).decode()
    return [event.removeprefix("data: ") for event in raw.split("\n\n") if event]


def _timeout_error(response):
    assert response.status_code == 504
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "upstream_timeout")
    return error


@pytest.fixture
def unanswered_port():
    """A loopback port whose listen queue is full, so that connecting to it hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        # Not connected yet: the connection waits in the queue, which is what is wanted.
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for sock in [server, *fillers]:
        sock.close()


async def test_it_answers_504_when_it_cannot_connect_in_time(
    api, alice, cloudflare, settings, unanswered_port
):
    settings.UPSTREAM_CONNECT_TIMEOUT = 0.2
    stuck = await Provider.objects.acreate(
        name="stuck",
        kind=Provider.CLOUDFLARE,
        base_url=f"http://127.0.0.1:{unanswered_port}/client/v4",
        account_id="acc",
        api_key_env="GATEWAY_PROVIDER_TEST_CF_TOKEN",
    )
    await Model.objects.acreate(name="@cf/test/stuck", provider=stuck)
    started = time.monotonic()

    response = await _chat(api, alice, "@cf/test/stuck")

    error = _timeout_error(response)
    assert "connect" in error["message"]
    assert "0.2 seconds" in error["message"]
    assert time.monotonic() - started < 3


async def test_it_answers_504_when_the_answer_does_not_start_in_time(
    api, alice, cloudflare, upstream, settings
):
    # The slow model waits 0.5 s before answering; the whole call may take 5 s.
    settings.UPSTREAM_FIRST_BYTE_TIMEOUT = 0.2

    response = await _chat(api, alice, "@cf/test/slow")

    error = _timeout_error(response)
    # The 504 itself shows the bound held: without it the slow model answers 200 at 0.5 s.
    assert "0.2 seconds" in error["message"]


async def test_it_bounds_a_whole_call_by_the_upstream_timeout(
    api, alice, cloudflare, upstream, settings
):
    settings.UPSTREAM_TIMEOUT = 0.3
    started = time.monotonic()

    response = await _chat(api, alice, "@cf/test/hang")

    _timeout_error(response)
    assert time.monotonic() - started < 3
    # A timeout is not retried: the time is spent.
    assert len([r for r in upstream.requests if "hang" in r["path"]]) == 1
    record = await UsageRecord.objects.aget()
    assert (record.status, record.http_status) == (UsageRecord.UPSTREAM_ERROR, 504)


async def test_it_answers_504_when_a_stream_sends_no_first_event_in_time(
    api, alice, cloudflare, settings, monkeypatch
):
    # The head comes at once; the first event would come after 5 s.
    async def late_events():
        await asyncio.sleep(5)
        yield b'data: {"response": "late"}\n\n'

    def get_client():
        return httpx.AsyncClient(
            transport=httpx.MockTransport(
                lambda request: httpx.Response(
                    200, content=late_events(), headers={"content-type": "text/event-stream"}
                )
            )
        )

    monkeypatch.setattr("completions.providers.base.get_client", get_client)
    settings.UPSTREAM_FIRST_BYTE_TIMEOUT = 0.2
    started = time.monotonic()

    response = await _chat(api, alice, LLAMA, stream=True)

    error = _timeout_error(response)
    assert "did not start within 0.2 seconds" in error["message"]
    assert time.monotonic() - started < 3


async def test_it_ends_a_stream_silent_for_longer_than_the_read_timeout(
    api, alice, cloudflare, upstream, settings
):
    # The drip model sends a word every 0.2 s.
    settings.UPSTREAM_READ_TIMEOUT = 0.1

    response = await _chat(api, alice, "@cf/test/drip", stream=True)

    assert response.status_code == 200
    events = await _events(response)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "upstream_timeout"
    assert "no event for 0.1 seconds" in error["message"]


async def test_it_ends_a_stream_that_goes_on_longer_than_the_stream_timeout(
    api, alice, cloudflare, upstream, settings
):
    # Words every 0.2 s, each well within the read timeout, for 20 s in all.
    settings.UPSTREAM_STREAM_TIMEOUT = 0.7
    started = time.monotonic()

    response = await _chat(api, alice, "@cf/test/drip", stream=True)

    events = await _events(response)
    assert time.monotonic() - started < 5
    error = json.loads(events[-2])["error"]
    assert error["code"] == "upstream_timeout"
    assert "longer than 0.7 seconds" in error["message"]
    words = [
        json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-2] if e != "[DONE]"
    ]
    record = await UsageRecord.objects.aget()
    assert record.status == UsageRecord.UPSTREAM_ERROR
    # The words that came before the end are counted.
    assert record.completion_tokens == len([w for w in words if w])
