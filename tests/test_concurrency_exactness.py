"""Usage and limits hold exactly when requests arrive together.

Run on SQLite and the in-process cache by `make test`, and on PostgreSQL and Redis by
`make test-production-stack`; tests/integration/test_limits_under_daphne.py does the same
through a real server.
"""

import asyncio
import json
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.db.models import Sum

from apikeys.models import ApiKey, UsageRecord
from apikeys.throttling import token_windows
from completions.models import Model
from tests.conftest import LLAMA
from tests.limited_keys import new_key

pytestmark = pytest.mark.django_db(transaction=True)

CONCURRENT = 50


def _messages(number):
    # Each request's prompt has its own length (number + 1 words), so that a record
    # credited to the wrong request, or counted twice, changes the sums.
    return [{"role": "user", "content": " ".join(["word"] * (number + 1))}]


async def _chat(api, headers, number, stream):
    body = {"model": LLAMA, "messages": _messages(number), "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    response = await api.post(
        "/v1/chat/completions", data=body, content_type="application/json", headers=headers
    )
    if response.status_code != 200:
        return response.status_code, None
    if not stream:
        return 200, response.json()["usage"]
    events = b"".join([chunk async for chunk in response.streaming_content]).decode()
    usage = [line for line in events.splitlines() if '"usage":{' in line]
    return 200, json.loads(usage[-1].removeprefix("data: "))["usage"]


async def test_concurrent_requests_leave_records_whose_sums_are_the_upstreams(
    api, cloudflare, clock
):
    await Model.objects.filter(name=LLAMA).aupdate(
        input_price=Decimal("0.28"), output_price=Decimal("0.83")
    )
    dave = await new_key(tokens_per_minute=10**6, tokens_per_day=10**6)

    answers = await asyncio.gather(
        *(_chat(api, dave, number, stream=number % 2 == 0) for number in range(CONCURRENT))
    )

    assert [status for status, _ in answers] == [200] * CONCURRENT
    reported = {
        field: sum(usage[field] for _, usage in answers)
        for field in ("prompt_tokens", "completion_tokens", "total_tokens")
    }
    records = UsageRecord.objects.filter(key_name="dave")
    assert await records.acount() == CONCURRENT
    assert await records.filter(stream=True).acount() == CONCURRENT // 2
    sums = await records.aaggregate(
        prompt_tokens=Sum("prompt_tokens"),
        completion_tokens=Sum("completion_tokens"),
        total_tokens=Sum("total_tokens"),
        cost=Sum("cost"),
    )
    assert {field: sums[field] for field in reported} == reported
    expected_cost = (
        reported["prompt_tokens"] * Decimal("0.28")
        + reported["completion_tokens"] * Decimal("0.83")
    ) / 10**6
    # Each record's cost is rounded to 10^-8 USD.
    assert abs(sums["cost"] - expected_cost) <= Decimal("0.00000001") * CONCURRENT
    key = await ApiKey.objects.aget(name="dave")
    windows = await sync_to_async(token_windows)(key)
    assert [window.used for window in windows] == [reported["total_tokens"]] * 2


@pytest.mark.parametrize("stream", [False, True], ids=["completions", "streams"])
async def test_a_key_limited_to_n_requests_admits_exactly_n_of_3n(
    api, cloudflare, upstream, clock, stream
):
    limit = 10
    dave = await new_key(rate_limit=f"{limit}/m")

    answers = await asyncio.gather(
        *(_chat(api, dave, number, stream=stream) for number in range(3 * limit))
    )

    statuses = [status for status, _ in answers]
    assert statuses.count(200) == limit
    assert statuses.count(429) == 2 * limit
    assert len([r for r in upstream.requests if "/ai/run/" in r["path"]]) == limit
    assert await UsageRecord.objects.acount() == limit
