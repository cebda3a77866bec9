"""Cost of each request from its model's prices, and a monthly spend limit per key.

A chat here costs 0.011 USD and reserves up to 0.136 USD while it runs (tests/limited_keys.py's
WORST_TOKENS at the dear prices): a budget of 0.15 USD admits two and refuses the third.
"""

import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache

from apikeys import rollups
from apikeys.models import ApiKey, UsageRecord
from completions.models import Model
from tests.clock import run_real_time_from
from tests.conftest import LLAMA
from tests.limited_keys import chat, new_key, read_stream

pytestmark = pytest.mark.django_db(transaction=True)

# The fake upstream's usage for tests/limited_keys.py's MESSAGES.
PROMPT_TOKENS, COMPLETION_TOKENS = 3, 4


@pytest.fixture
def priced(cloudflare):
    """Llama at Cloudflare's prices: 0.28 USD per million prompt tokens, 0.83 completion."""
    Model.objects.filter(name=LLAMA).update(
        input_price=Decimal("0.28"), output_price=Decimal("0.83")
    )


@pytest.fixture
def dear(cloudflare):
    """Llama at 1,000 and 2,000 USD per million tokens: 0.011 USD per request here, and
    at most 128 × 0.001 + 4 × 0.002 = 0.136 USD."""
    Model.objects.filter(name=LLAMA).update(
        input_price=Decimal("1000"), output_price=Decimal("2000")
    )


async def test_it_records_the_cost_of_a_completion(api, alice, priced):
    await chat(api, alice.headers)

    record = await UsageRecord.objects.aget()
    # 3 × 0.28 / 10^6 + 4 × 0.83 / 10^6 USD
    assert record.cost == Decimal("0.00000416")


async def test_it_records_the_cost_of_a_stream(api, alice, priced):
    await read_stream(await chat(api, alice.headers, stream=True))

    record = await UsageRecord.objects.aget()
    assert record.cost == Decimal("0.00000416")


async def test_a_model_without_prices_costs_nothing(api, alice, cloudflare):
    await chat(api, alice.headers)

    record = await UsageRecord.objects.aget()
    assert record.cost == 0


async def test_a_failed_call_costs_nothing(api, alice, priced):
    await chat(api, alice.headers, model="@cf/test/fail-500")

    record = await UsageRecord.objects.aget()
    assert record.cost == 0


async def test_it_admits_requests_while_the_month_has_budget_left(api, dear, clock):
    dave = await new_key(monthly_budget=Decimal("0.30"))

    first = await chat(api, dave)
    second = await chat(api, dave)

    assert (first.status_code, second.status_code) == (200, 200)


async def test_it_refuses_with_insufficient_quota_once_the_budget_is_spent(
    api, dear, upstream, clock
):
    dave = await new_key(monthly_budget=Decimal("0.15"))
    await chat(api, dave)
    await chat(api, dave)

    response = await chat(api, dave)

    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "insufficient_quota"
    assert "0.02 of 0.15 USD spent this month" in error["message"]
    assert "this request may cost up to 0.1360 USD" in error["message"]
    assert len([r for r in upstream.requests if "/ai/run/" in r["path"]]) == 2


async def test_a_refusal_for_budget_says_when_the_month_ends(api, dear, clock):
    dave = await new_key(monthly_budget=Decimal("0.14"))
    await chat(api, dave)

    response = await chat(api, dave)

    now = datetime.fromtimestamp(clock.now, UTC)
    next_month = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    assert int(response["Retry-After"]) == int(next_month.timestamp() - clock.now)
    assert f"{next_month:%Y-%m-%d}" in response.json()["error"]["message"]


async def test_a_stream_spends_the_budget_too(api, dear, clock):
    dave = await new_key(monthly_budget=Decimal("0.14"))
    await read_stream(await chat(api, dave, stream=True))

    response = await chat(api, dave, stream=True)

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "insufficient_quota"


async def test_a_budget_of_zero_refuses_every_request(api, dear, clock):
    dave = await new_key(monthly_budget=Decimal("0"))

    response = await chat(api, dave)

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "insufficient_quota"


async def test_a_key_without_a_budget_is_never_refused_for_spend(api, dear, clock):
    dave = await new_key()

    statuses = [(await chat(api, dave)).status_code for _ in range(3)]

    assert statuses == [200, 200, 200]


async def test_spend_is_summed_again_from_usage_records_when_the_cache_loses_it(api, dear, clock):
    dave = await new_key(monthly_budget=Decimal("0.15"))
    await chat(api, dave)
    await chat(api, dave)

    # As after a Redis restart.
    await cache.aclear()
    response = await chat(api, dave)

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "insufficient_quota"


# The real time may run into the next hour during the test: then the hour of the record is
# summed from the rollups, not from the records.
@pytest.mark.parametrize("real_hours_on", [0, 1])
async def test_spend_set_in_an_earlier_month_does_not_count(
    api, dear, clock, monkeypatch, real_hours_on
):
    dave = await new_key(monthly_budget=Decimal("0.14"))
    await chat(api, dave)
    key = await ApiKey.objects.aget(name="dave")
    await UsageRecord.objects.filter(api_key=key).aupdate(
        created_at=datetime(2020, 1, 31, 23, 59, tzinfo=UTC)
    )
    # The record's usage moves with it in the rollups too.
    await sync_to_async(rollups.rebuild)()
    await cache.aclear()
    run_real_time_from(monkeypatch, time.time() + real_hours_on * 3600)

    response = await chat(api, dave)

    assert response.status_code == 200


async def test_the_budget_starts_afresh_next_month(api, dear, clock):
    dave = await new_key(monthly_budget=Decimal("0.14"))
    await chat(api, dave)
    refused = await chat(api, dave)

    clock.advance(int(refused["Retry-After"]))
    response = await chat(api, dave)

    assert response.status_code == 200


async def test_listing_models_is_not_held_to_the_budget(api, dear, clock):
    dave = await new_key(monthly_budget=Decimal("0"))

    response = await api.get("/v1/models", headers=dave)

    assert response.status_code == 200
