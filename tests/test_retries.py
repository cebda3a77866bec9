"""Retries of upstream calls that failed before any byte reached the client.

Retried: a connection that could not be made or was lost, 502, 503, and 429 when the
upstream says when to come back (Retry-After); never a timeout, another status, or a stream
that had started. Bounded by UPSTREAM_RETRIES and UPSTREAM_RETRY_MAX_SECONDS.

The upstream here is httpx's MockTransport behind the providers' one seam (get_client), and
time is the providers' injectable clock, so no test waits for a backoff.
"""

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from apikeys.models import UsageRecord
from completions.providers.base import BaseProvider
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"model": LLAMA, "messages": [{"role": "user", "content": "hello"}]}
ANSWER = {
    "result": {"response": "Hi there", "usage": {"prompt_tokens": 1, "completion_tokens": 2}},
    "success": True,
    "errors": [],
    "messages": [],
}
STREAM = (
    b'data: {"response":"Hi"}\n\n'
    b'data: {"response":" there"}\n\n'
    b'data: {"response":"","usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n'
    b"data: [DONE]\n\n"
)


def _failure(status, headers=None):
    body = {"result": None, "success": False, "errors": [{"code": 1, "message": "busy"}]}
    return httpx.Response(status, json=body, headers=headers)


def _answer():
    return httpx.Response(200, json=ANSWER)


def _stream():
    return httpx.Response(200, content=STREAM, headers={"content-type": "text/event-stream"})


class ScriptedUpstream:
    """Answer each call with the next of a script of responses (or exceptions to raise)."""

    def __init__(self, *script):
        self.script = list(script)
        self.calls = 0

    def __call__(self, request):
        step = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if isinstance(step, Exception):
            raise step
        return step() if callable(step) else step


class FakeTime:
    """The providers' clock, moved on by their pauses instead of by waiting."""

    def __init__(self):
        self.now = 1000.0
        self.pauses = []

    def clock(self):
        return self.now

    async def sleep(self, seconds):
        self.pauses.append(seconds)
        self.now += seconds


@pytest.fixture
def time_(monkeypatch):
    fake = FakeTime()
    monkeypatch.setattr(BaseProvider, "clock", staticmethod(fake.clock))
    monkeypatch.setattr(BaseProvider, "sleep", staticmethod(fake.sleep))
    return fake


@pytest.fixture
def script(monkeypatch, cloudflare):
    """Route the providers' calls to a ScriptedUpstream set by the test."""
    upstream = ScriptedUpstream(_answer)

    def get_client():
        return httpx.AsyncClient(transport=httpx.MockTransport(lambda r: upstream(r)))

    monkeypatch.setattr("completions.providers.base.get_client", get_client)

    def set_script(*steps):
        upstream.script = list(steps)
        return upstream

    return set_script


@pytest.fixture(autouse=True)
def _retry_settings(settings):
    settings.UPSTREAM_RETRIES = 2
    settings.UPSTREAM_RETRY_MAX_SECONDS = 5
    settings.UPSTREAM_RETRY_BACKOFF = 0.5


async def _chat(api, persona, **extra):
    return await api.post(
        "/v1/chat/completions",
        data={**BODY, **extra},
        content_type="application/json",
        headers=persona.headers,
    )


async def _events(response):
    raw = b"".join([chunk async for chunk in response.streaming_content]).decode()
    return [event.removeprefix("data: ") for event in raw.split("\n\n") if event]


@pytest.mark.parametrize("status", [502, 503])
async def test_it_retries_a_bad_gateway_or_unavailable_upstream(api, alice, script, time_, status):
    upstream = script(_failure(status), _answer)

    response = await _chat(api, alice)

    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Hi there"
    assert upstream.calls == 2


async def test_it_backs_off_doubling_between_retries(api, alice, script, time_):
    upstream = script(_failure(503), _failure(502), _answer)

    response = await _chat(api, alice)

    assert response.status_code == 200
    assert upstream.calls == 3
    first, second = time_.pauses
    # 0.5 s doubled each time, with 50 to 100% jitter.
    assert 0.25 <= first <= 0.5
    assert 0.5 <= second <= 1.0


async def test_it_gives_up_after_the_last_retry(api, alice, script, time_):
    upstream = script(_failure(503))

    response = await _chat(api, alice)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert upstream.calls == 3
    record = await UsageRecord.objects.aget()
    assert (record.status, record.http_status) == (UsageRecord.UPSTREAM_ERROR, 502)


async def test_it_stops_retrying_once_its_time_is_spent(api, alice, script, time_, settings):
    settings.UPSTREAM_RETRIES = 50
    settings.UPSTREAM_RETRY_MAX_SECONDS = 3
    upstream = script(_failure(503))

    response = await _chat(api, alice)

    assert response.status_code == 502
    assert sum(time_.pauses) <= 3
    assert upstream.calls < 10


async def test_it_does_not_retry_when_retries_are_switched_off(api, alice, script, time_, settings):
    settings.UPSTREAM_RETRIES = 0
    upstream = script(_failure(503), _answer)

    response = await _chat(api, alice)

    assert response.status_code == 502
    assert upstream.calls == 1


async def test_it_retries_a_connection_that_could_not_be_made(api, alice, script, time_):
    upstream = script(httpx.ConnectError("Connection refused"), _answer)

    response = await _chat(api, alice)

    assert response.status_code == 200
    assert upstream.calls == 2


async def test_it_retries_a_connection_lost_before_the_answer(api, alice, script, time_):
    upstream = script(httpx.RemoteProtocolError("Server disconnected"), _answer)

    response = await _chat(api, alice)

    assert response.status_code == 200
    assert upstream.calls == 2


async def test_it_retries_a_rate_limit_after_the_time_it_asks_for(api, alice, script, time_):
    upstream = script(_failure(429, {"Retry-After": "2"}), _answer)

    response = await _chat(api, alice)

    assert response.status_code == 200
    assert upstream.calls == 2
    assert time_.pauses == [2]


async def test_it_reads_retry_after_as_a_date(api, alice, script, time_):
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    upstream = script(_failure(503, {"Retry-After": when}), _answer)

    response = await _chat(api, alice)

    assert response.status_code == 200
    assert upstream.calls == 2
    assert 1 < time_.pauses[0] <= 3


async def test_it_passes_on_a_rate_limit_that_says_nothing_of_when(api, alice, script, time_):
    upstream = script(_failure(429), _answer)

    response = await _chat(api, alice)

    assert response.status_code == 429
    assert upstream.calls == 1


async def test_it_passes_on_a_rate_limit_longer_than_its_retry_time(api, alice, script, time_):
    # 60 s is past UPSTREAM_RETRY_MAX_SECONDS (5 s): the client is told to come back.
    upstream = script(_failure(429, {"Retry-After": "60"}), _answer)

    response = await _chat(api, alice)

    assert response.status_code == 429
    assert response["Retry-After"] == "60"
    assert upstream.calls == 1
    assert time_.pauses == []


@pytest.mark.parametrize("status", [400, 404, 500, 504])
async def test_it_does_not_retry_other_failures(api, alice, script, time_, status):
    upstream = script(_failure(status), _answer)

    response = await _chat(api, alice)

    assert response.status_code in (400, 502)
    assert upstream.calls == 1


async def test_it_retries_a_stream_that_could_not_start(api, alice, script, time_):
    upstream = script(_failure(503), _stream)

    response = await _chat(api, alice, stream=True)

    assert response.status_code == 200
    events = await _events(response)
    text = "".join(
        json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1] if e
    )
    assert text == "Hi there"
    assert upstream.calls == 2


async def test_it_does_not_retry_a_stream_cut_after_it_started(api, alice, cloudflare, upstream):
    # The real fake upstream: three words, then the connection is dropped.
    response = await _chat(api, alice, model="@cf/test/cut-stream", stream=True)

    events = await _events(response)
    assert json.loads(events[-2])["error"]["code"] == "stream_cut"
    assert len([r for r in upstream.requests if "cut-stream" in r["path"]]) == 1
