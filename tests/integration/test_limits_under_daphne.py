"""Limits and usage through a real server: daphne, the in-process cache or Redis, and
clients on real connections that arrive together or leave mid-stream."""

import asyncio
import json
import time
import uuid

import httpx
import pytest

from tests.integration.conftest import LLAMA
from tests.live_server import manage

pytestmark = pytest.mark.integration

DRIP = "@cf/test/drip"
# Seconds to wait for the record of a request whose client left.
RECORD_TIMEOUT = 10
SETUP = f"""
from decimal import Decimal
from completions.models import Model, Provider

Model.objects.get_or_create(
    name="{DRIP}",
    defaults={{
        "provider": Provider.objects.get(name="cloudflare"),
        "input_price": Decimal("1000"),
        "output_price": Decimal("1000"),
    }},
)
"""


@pytest.fixture(scope="module")
def env(gateway):
    env = gateway.env
    manage(env, "shell", "-c", SETUP)
    return env


def _new_key(env, *options):
    """Create a key with these `apikey create` options; return its name and headers."""
    name = f"limits-{uuid.uuid4().hex[:8]}"
    secret = manage(env, "apikey", "create", "--name", name, *options).splitlines()[-1]
    return name, {"Authorization": f"Bearer {secret}"}


def _records(gateway, name):
    return [r for r in gateway.usage_records() if r["key_name"] == name]


def _messages(number):
    # A prompt of its own length for each request (number + 1 words).
    return [{"role": "user", "content": " ".join(["word"] * (number + 1))}]


async def _chat(client, gateway, headers, number, stream):
    body = {"model": LLAMA, "messages": _messages(number), "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    url = f"{gateway.api_base}/chat/completions"
    if not stream:
        response = await client.post(url, json=body, headers=headers)
        usage = response.json().get("usage") if response.status_code == 200 else None
        return response.status_code, usage
    async with client.stream("POST", url, json=body, headers=headers) as response:
        usage = None
        async for line in response.aiter_lines():
            if line.startswith("data: {") and '"usage":{' in line:
                usage = json.loads(line.removeprefix("data: "))["usage"]
        return response.status_code, usage


def _client():
    # Enough connections for every request at once.
    return httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200))


async def test_50_concurrent_requests_leave_50_records_with_the_upstreams_tokens(env, gateway):
    name, headers = _new_key(env, "--rate-limit", "1000/d", "--tokens-per-day", "1000000")

    async with _client() as client:
        answers = await asyncio.gather(
            *(_chat(client, gateway, headers, n, stream=n % 2 == 0) for n in range(50))
        )

    assert [status for status, _ in answers] == [200] * 50
    records = _records(gateway, name)
    assert len(records) == 50
    assert sum(r["stream"] for r in records) == 25
    for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert sum(r[field] for r in records) == sum(usage[field] for _, usage in answers)


async def test_a_key_limited_to_10_requests_admits_exactly_10_of_30(env, gateway):
    # Per day, so that the window cannot turn over while the 30 are in flight.
    name, headers = _new_key(env, "--rate-limit", "10/d")

    async with _client() as client:
        answers = await asyncio.gather(
            *(_chat(client, gateway, headers, n, stream=n % 3 == 0) for n in range(30))
        )

    statuses = [status for status, _ in answers]
    assert (statuses.count(200), statuses.count(429)) == (10, 20)
    assert len(_records(gateway, name)) == 10


async def test_a_refusal_carries_retry_after_and_the_rate_limit_headers(env, gateway):
    _, headers = _new_key(env, "--rate-limit", "1/d")

    async with _client() as client:
        first = await client.get(f"{gateway.api_base}/models", headers=headers)
        second = await client.get(f"{gateway.api_base}/models", headers=headers)

    assert first.headers["x-ratelimit-limit-requests"] == "1"
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(second.headers["retry-after"]) <= 24 * 3600


async def test_a_client_that_leaves_mid_stream_still_leaves_its_record(env, gateway):
    name, headers = _new_key(env, "--tokens-per-day", "1000000")
    body = {"model": DRIP, "messages": _messages(2), "stream": True}

    async with (
        _client() as client,
        client.stream(
            "POST", f"{gateway.api_base}/chat/completions", json=body, headers=headers
        ) as response,
    ):
        assert response.status_code == 200
        seen = 0
        async for line in response.aiter_lines():
            seen += '"content":" drip"' in line or '"content":"drip"' in line
            if seen == 3:
                # Leaving the block closes the connection mid-stream.
                break

    deadline = time.monotonic() + RECORD_TIMEOUT
    while not _records(gateway, name) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    [record] = _records(gateway, name)
    assert record["status"] == "client_closed"
    assert record["completion_tokens"] >= 3
    # 1,000 USD per million tokens: 0.001 USD a token.
    assert float(record["cost"]) == pytest.approx(record["total_tokens"] * 0.001)
