"""Requests per key and window: counted before the view, refused with 429 once spent."""

import re

import pytest
from asgiref.sync import sync_to_async

from apikeys.models import ApiKey, UsageRecord
from apikeys.throttling import format_duration
from tests.limited_keys import chat

pytestmark = pytest.mark.django_db(transaction=True)

# A reset like 1s, 59s, 6m0s or 1h2m3s.
DURATION = re.compile(r"^(\d+h)?(\d+m)?\d+s$")


@pytest.fixture
def dave(db):
    """A key allowed 3 requests a minute."""
    key, secret = ApiKey.objects.create_key(name="dave", rate_limit="3/m")
    return {"Authorization": f"Bearer {secret}"}


def _run_requests(upstream):
    return [r for r in upstream.requests if "/ai/run/" in r["path"]]


async def test_it_admits_requests_up_to_the_keys_rate(api, dave, cloudflare, clock):
    responses = [await chat(api, dave) for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [r["x-ratelimit-limit-requests"] for r in responses] == ["3", "3", "3"]
    assert [r["x-ratelimit-remaining-requests"] for r in responses] == ["2", "1", "0"]


async def test_it_refuses_the_next_request_with_openais_error(api, dave, cloudflare, clock):
    for _ in range(3):
        await chat(api, dave)

    response = await chat(api, dave)

    assert response.status_code == 429
    error = response.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert error["code"] == "rate_limit_exceeded"
    assert "requests per minute: limit 3" in error["message"]
    assert 1 <= int(response["Retry-After"]) <= 60
    assert response["x-ratelimit-remaining-requests"] == "0"
    assert response["x-request-id"].startswith("req_")


async def test_a_refused_request_never_reaches_the_upstream(api, dave, cloudflare, upstream, clock):
    for _ in range(5):
        await chat(api, dave)

    assert len(_run_requests(upstream)) == 3


async def test_a_refused_request_leaves_no_usage_record(api, dave, cloudflare, clock):
    for _ in range(5):
        await chat(api, dave)

    assert await UsageRecord.objects.acount() == 3


async def test_it_admits_requests_again_once_the_window_resets(api, dave, cloudflare, clock):
    for _ in range(3):
        await chat(api, dave)
    refused = await chat(api, dave)

    clock.advance(int(refused["Retry-After"]))
    response = await chat(api, dave)

    assert response.status_code == 200
    assert response["x-ratelimit-remaining-requests"] == "2"


async def test_the_window_does_not_reset_a_second_before_retry_after(api, dave, cloudflare, clock):
    for _ in range(3):
        await chat(api, dave)
    refused = await chat(api, dave)

    clock.advance(int(refused["Retry-After"]) - 1)
    response = await chat(api, dave)

    assert response.status_code == 429


async def test_the_reset_header_is_a_duration_within_the_window(api, dave, cloudflare, clock):
    response = await chat(api, dave)

    reset = response["x-ratelimit-reset-requests"]
    assert DURATION.match(reset), reset
    assert _seconds(reset) <= 60


async def test_each_key_counts_on_its_own(api, dave, alice, cloudflare, clock):
    for _ in range(4):
        await chat(api, dave)

    response = await chat(api, alice.headers)

    assert response.status_code == 200
    assert response["x-ratelimit-limit-requests"] == "100"
    assert response["x-ratelimit-remaining-requests"] == "99"


async def test_a_stream_carries_the_headers_before_its_first_event(api, dave, cloudflare, clock):
    response = await chat(api, dave, stream=True)

    assert response["x-ratelimit-remaining-requests"] == "2"
    body = b"".join([chunk async for chunk in response.streaming_content])
    assert body.endswith(b"data: [DONE]\n\n")


async def test_a_stream_over_the_rate_is_refused_before_it_starts(api, dave, cloudflare, clock):
    for _ in range(3):
        await chat(api, dave)

    response = await chat(api, dave, stream=True)

    assert response.status_code == 429
    assert response["Content-Type"] == "application/json"


async def test_listing_models_counts_as_a_request(api, dave, cloudflare, clock):
    for _ in range(3):
        assert (await api.get("/v1/models", headers=dave)).status_code == 200

    response = await api.get("/v1/models", headers=dave)

    assert response.status_code == 429


async def test_an_answer_that_failed_validation_still_carries_the_headers(
    api, dave, cloudflare, clock
):
    response = await chat(api, dave, temperature=7)

    assert response.status_code == 400
    assert response["x-ratelimit-remaining-requests"] == "2"


async def test_a_request_with_a_wrong_key_is_not_counted_against_anyone(
    api, dave, cloudflare, clock
):
    response = await chat(api, {"Authorization": "Bearer sk-gw-wrong"})

    assert response.status_code == 401
    assert "x-ratelimit-limit-requests" not in response
    assert (await chat(api, dave))["x-ratelimit-remaining-requests"] == "2"


async def test_a_rate_changed_in_the_admin_applies_to_the_next_request(
    api, dave, cloudflare, clock
):
    for _ in range(3):
        await chat(api, dave)
    key = await ApiKey.objects.aget(name="dave")
    key.rate_limit = "5/m"
    await key.asave()

    response = await chat(api, dave)

    assert response.status_code == 200
    assert response["x-ratelimit-limit-requests"] == "5"


@pytest.mark.parametrize("rate", ["2/s", "2/h", "2/d"])
async def test_it_counts_per_second_hour_or_day(api, cloudflare, clock, rate):
    _, secret = await sync_to_async(ApiKey.objects.create_key)(name="erin", rate_limit=rate)
    headers = {"Authorization": f"Bearer {secret}"}

    statuses = [(await chat(api, headers)).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]


async def test_no_token_headers_without_a_token_limit(api, dave, cloudflare, clock):
    response = await chat(api, dave)

    assert "x-ratelimit-limit-tokens" not in response


@pytest.mark.parametrize(
    ("seconds", "written"),
    [(0.02, "20ms"), (0.9991, "1s"), (1, "1s"), (59.2, "1m0s"), (360, "6m0s"), (3723, "1h2m3s")],
)
def test_durations_are_written_as_openai_writes_them(seconds, written):
    assert format_duration(seconds) == written


def _seconds(duration):
    hours, minutes, seconds = re.match(r"^(?:(\d+)h)?(?:(\d+)m)?(\d+)s$", duration).groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + int(seconds)
