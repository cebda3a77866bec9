"""Upstream failures, as a client of the gateway sees them: OpenAI errors, no secrets."""

import json
import socket

import pytest

from completions.models import Model, Provider
from tests import fake_upstream

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [{"role": "user", "content": "hello there world"}]


async def _chat(api, persona, model, **body):
    return await api.post(
        "/v1/chat/completions",
        data={"model": model, "messages": MESSAGES, **body},
        content_type="application/json",
        headers=persona.headers,
    )


async def _events(response):
    """Return the data of every event of a streamed response, in order, as strings."""
    raw = b"".join([chunk async for chunk in response.streaming_content]).decode()
    return [event.removeprefix("data: ") for event in raw.split("\n\n") if event]


def _closed_port():
    """Return a loopback port that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _assert_no_secrets(text, upstream):
    assert fake_upstream.CLOUDFLARE_TOKEN not in text
    assert fake_upstream.CLOUDFLARE_ACCOUNT not in text
    assert fake_upstream.OPENAI_KEY not in text
    assert upstream.url not in text


async def test_it_answers_an_upstream_failure_with_502(api, alice, cloudflare):
    response = await _chat(api, alice, "@cf/test/fail-500")

    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "server_error"
    assert error["code"] == "upstream_error"
    assert "500" in error["message"]


async def test_it_keeps_credentials_out_of_an_upstream_failure(api, alice, cloudflare, upstream):
    # The fake's 500 message carries the account id, its base URL and the token.
    response = await _chat(api, alice, "@cf/test/fail-500")

    _assert_no_secrets(response.content.decode(), upstream)
    assert "Internal error on account" in response.json()["error"]["message"]


async def test_it_keeps_an_openai_key_out_of_an_upstream_failure(
    api, alice, openai_upstream, upstream
):
    response = await _chat(api, alice, "gpt-test-fail-500")

    assert response.status_code == 502
    _assert_no_secrets(response.content.decode(), upstream)


async def test_it_passes_on_upstream_rate_limiting_with_retry_after(api, alice, openai_upstream):
    # A plain 429; Workers AI's codes for capacity and allowance are
    # tests/test_cloudflare_errors.py's.
    await Model.objects.acreate(name="gpt-test-rate-limited", provider=openai_upstream)

    response = await _chat(api, alice, "gpt-test-rate-limited")

    assert response.status_code == 429
    assert response["Retry-After"] == str(fake_upstream.RETRY_AFTER_SECONDS)
    error = response.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert "Rate limit reached" in error["message"]


async def test_it_passes_on_the_upstreams_reason_for_refusing_a_request(api, alice, cloudflare):
    response = await _chat(api, alice, "@cf/test/bad-request")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "context too long" in error["message"]


async def test_it_answers_504_when_the_upstream_does_not_answer_in_time(
    api, alice, cloudflare, settings
):
    settings.UPSTREAM_TIMEOUT = 0.5

    response = await _chat(api, alice, "@cf/test/hang")

    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "upstream_timeout"
    assert "0.5 seconds" in error["message"]


async def test_it_answers_502_when_the_upstream_cannot_be_reached(api, alice, cloudflare):
    await Provider.objects.filter(pk=cloudflare.pk).aupdate(
        base_url=f"http://127.0.0.1:{_closed_port()}/client/v4"
    )

    response = await _chat(api, alice, "@cf/meta/llama-3.1-8b-instruct")

    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "server_error"
    assert "cloudflare" in error["message"]
    assert fake_upstream.CLOUDFLARE_ACCOUNT not in response.content.decode()


async def test_it_answers_a_stream_with_502_when_the_upstream_cannot_be_reached(
    api, alice, cloudflare
):
    await Provider.objects.filter(pk=cloudflare.pk).aupdate(
        base_url=f"http://127.0.0.1:{_closed_port()}/client/v4"
    )

    response = await _chat(api, alice, "@cf/meta/llama-3.1-8b-instruct", stream=True)

    assert response.status_code == 502
    assert not response.streaming


async def test_it_answers_502_when_the_gateways_credentials_are_refused(
    api, alice, cloudflare, monkeypatch
):
    monkeypatch.setenv("GATEWAY_PROVIDER_TEST_CF_TOKEN", "cf-wrong-token")

    response = await _chat(api, alice, "@cf/meta/llama-3.1-8b-instruct")

    # The client cannot fix the gateway's credentials, so this is not a 401 for it.
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_auth_failed"
    assert "cf-wrong-token" not in response.content.decode()


async def test_it_answers_a_refused_stream_with_an_http_error(api, alice, cloudflare):
    # The fake's rate-limited model answers Workers AI's 3040, out of capacity.
    response = await _chat(api, alice, "@cf/test/rate-limited", stream=True)

    assert response.status_code == 503
    assert not response.streaming
    assert response.json()["error"]["code"] == "upstream_over_capacity"


async def test_it_ends_a_cut_stream_with_an_error_event(api, alice, cloudflare):
    response = await _chat(api, alice, "@cf/test/cut-stream", stream=True)

    assert response.status_code == 200
    events = await _events(response)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["type"] == "server_error"
    assert error["code"] == "stream_cut"
    # Words read before the cut still reach the client, and no finish chunk does. aiohttp
    # drops what it had buffered once it sees the cut, so the last words may not arrive.
    chunks = [json.loads(e) for e in events[:-2]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text.startswith("Echo:")
    assert "Echo: hello there".startswith(text)
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)


async def test_it_ends_a_cut_openai_stream_with_an_error_event(api, alice, openai_upstream):
    response = await _chat(api, alice, "gpt-test-cut-stream", stream=True)

    events = await _events(response)
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "stream_cut"


async def test_it_ends_a_stream_with_a_malformed_event_with_an_error_event(
    api, alice, cloudflare, upstream
):
    response = await _chat(api, alice, "@cf/test/bad-json", stream=True)

    events = await _events(response)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "invalid_stream_event"
    _assert_no_secrets("".join(events), upstream)


@pytest.mark.parametrize(
    "model",
    [
        "@cf/test/drip",
        # Its head 0.5 s late, as any head may be on a loaded machine: a stream's head has
        # its own bound, not the 0.1 s between reads.
        "@cf/test/slow-drip",
    ],
)
async def test_it_ends_a_stalled_stream_with_a_timeout_event(
    api, alice, cloudflare, settings, model
):
    await Model.objects.aget_or_create(name=model, provider=cloudflare)
    # The drip model sends an event every 0.2 s: longer than the 0.1 s allowed between reads.
    settings.UPSTREAM_TIMEOUT = 0.1
    settings.UPSTREAM_FIRST_BYTE_TIMEOUT = 5

    response = await _chat(api, alice, model, stream=True)

    events = await _events(response)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "upstream_timeout"
    assert "stalled" in error["message"]


async def test_it_answers_504_when_a_stream_does_not_start_in_time(
    api, alice, cloudflare, settings
):
    settings.UPSTREAM_TIMEOUT = 0.5

    response = await _chat(api, alice, "@cf/test/hang", stream=True)

    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"


async def test_it_passes_on_an_upstream_that_does_not_know_the_model(
    api, alice, cloudflare, upstream
):
    await Model.objects.acreate(name="@cf/test/unknown-model", provider=cloudflare)

    response = await _chat(api, alice, "@cf/test/unknown-model")

    # Workers AI answers 400 "No such model" (5007); the gateway listed the model, so its
    # catalogue is out of date: not the client's fault, but the client sees why.
    assert response.status_code == 502
    assert "No such model" in response.json()["error"]["message"]
    _assert_no_secrets(response.content.decode(), upstream)
