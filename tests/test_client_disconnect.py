"""A client that goes away mid-stream: the upstream request is closed within a second, and
the usage record keeps the tokens sent so far with status client_closed.

The fake upstream's drip model sends a word every 0.2 s for 20 s; it notes when the
gateway hangs up on it (`drip_closed`). The first test goes through a real daphne server;
the others drive the two ways Django may leave a stream behind without closing it.
"""

import asyncio
import json
import time

import httpx
import pytest
from asgiref.sync import markcoroutinefunction
from django.conf import settings
from django.test import override_settings

from apikeys.models import UsageRecord
from gateway.handler import ApiHandler
from tests import fake_upstream
from tests.asgi_scope import chat_scope
from tests.live_server import LiveGateway

DRIP = "@cf/test/drip"
BODY = {"model": DRIP, "stream": True, "messages": [{"role": "user", "content": "go on"}]}
# Seconds within which the upstream request must be closed once the client has gone.
CLOSE_WITHIN = 1.0

SETUP = """
from apikeys.models import ApiKey
from completions.models import Model, Provider

cf = Provider.objects.create(
    name="cloudflare", kind="cloudflare", base_url="{base_url}", account_id="{account}",
    api_key_env="GATEWAY_PROVIDER_TEST_CF_TOKEN",
)
Model.objects.create(name="{drip}", provider=cf)
key, secret = ApiKey.objects.create_key(name="dripper", rate_limit="1000/s")
print("secret", secret)
"""


@pytest.fixture(scope="module")
def live(upstream, tmp_path_factory):
    setup = SETUP.format(
        base_url=upstream.cloudflare_base_url, account=fake_upstream.CLOUDFLARE_ACCOUNT, drip=DRIP
    )
    folder = tmp_path_factory.mktemp("disconnect")
    with LiveGateway(
        folder, setup, GATEWAY_PROVIDER_TEST_CF_TOKEN=fake_upstream.CLOUDFLARE_TOKEN
    ) as gateway:
        yield gateway


def _content_events(lines):
    chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    return [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]


@pytest.mark.integration
def test_daphne_closes_the_upstream_within_a_second_of_the_client_leaving(live, upstream):
    headers = {"Authorization": f"Bearer {live.printed['secret']}"}
    lines = []

    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "POST", f"{live.base_url}/v1/chat/completions", json=BODY, headers=headers
        ) as response,
    ):
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            lines.append(line)
            if len(_content_events(lines)) == 3:
                break
    # Leaving both blocks drops the connection with the stream unread.
    left_at = time.monotonic()

    assert upstream.drip_closed.wait(timeout=5), "the upstream request was never closed"
    assert time.monotonic() - left_at < CLOSE_WITHIN
    record = live.usage_record(request_id)
    assert record["status"] == UsageRecord.CLIENT_CLOSED
    assert record["http_status"] == 499
    # The words sent so far, and perhaps one that was on its way.
    assert 3 <= record["completion_tokens"] <= 4
    assert "Traceback" not in live.log
    assert live.printed["secret"] not in live.log


@pytest.mark.django_db(transaction=True)
async def test_closing_the_response_closes_the_upstream_at_once(api, alice, cloudflare, upstream):
    # What an ASGI server whose send() was interrupted leaves: the response closed, its
    # generators suspended where they were.
    response = await api.post(
        "/v1/chat/completions", data=BODY, content_type="application/json", headers=alice.headers
    )
    events = aiter(response.streaming_content)
    received = [await anext(events) for _ in range(4)]
    assert b'"content":" drip"' in received[-1]

    response.close()

    assert await asyncio.to_thread(upstream.drip_closed.wait, CLOSE_WITHIN)
    record = await _record(response["x-request-id"])
    assert record.status == UsageRecord.CLIENT_CLOSED
    assert 3 <= record.completion_tokens <= 4


class PauseOnTheWayOut:
    """Wait after the view has answered, as a slow middleware would."""

    sync_capable = False
    async_capable = True
    paused = None

    def __init__(self, get_response):
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request):
        response = await self.get_response(request)
        PauseOnTheWayOut.paused.set()
        await asyncio.sleep(30)
        return response


@pytest.mark.django_db(transaction=True)
async def test_a_stream_dropped_before_it_was_sent_still_closes_the_upstream(
    alice, cloudflare, upstream
):
    # The client leaves after the view made its stream and before any of it was sent: the
    # handler cancels the request and has no response to close().
    PauseOnTheWayOut.paused = asyncio.Event()
    middleware = list(settings.API_MIDDLEWARE)
    middleware.insert(1, f"{__name__}.PauseOnTheWayOut")
    with override_settings(API_MIDDLEWARE=middleware):
        handler = ApiHandler()
    sent = []

    async def receive():
        if not sent:
            sent.append("body")
            return {"type": "http.request", "body": _json(BODY), "more_body": False}
        await PauseOnTheWayOut.paused.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = chat_scope(alice.headers["Authorization"])
    await asyncio.wait_for(handler(scope, receive, send), 10)

    assert not any(isinstance(m, dict) and m["type"].startswith("http.response") for m in sent)
    assert await asyncio.to_thread(upstream.drip_closed.wait, CLOSE_WITHIN)
    record = await _record_of_key(alice.key)
    assert record.status == UsageRecord.CLIENT_CLOSED


def _json(body):
    return json.dumps(body).encode()


async def _record(request_id):
    for _ in range(100):
        record = await UsageRecord.objects.filter(request_id=request_id).afirst()
        if record is not None:
            return record
        await asyncio.sleep(0.05)
    raise AssertionError(f"no usage record for {request_id}")


async def _record_of_key(key):
    for _ in range(100):
        record = await UsageRecord.objects.filter(api_key=key).afirst()
        if record is not None:
            return record
        await asyncio.sleep(0.05)
    raise AssertionError(f"no usage record for {key.name}")
