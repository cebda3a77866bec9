"""The limits' clock of the tests (tests/clock.py) at the end of a day and of a month.

A test with the `clock` fixture must pass whenever the suite runs: in the last minute of a
day, or when the real time runs into the next day or month while the clock stands. Each
test here runs the real time from such a moment, then does what a test of limits does.
"""

import time
from decimal import Decimal

import pytest

from apikeys import periods
from completions.models import Model
from tests.clock import freeze, run_real_time_from
from tests.conftest import LLAMA
from tests.limited_keys import WORST_TOKENS, chat, new_key

pytestmark = pytest.mark.django_db(transaction=True)

# The fake upstream's usage for tests/limited_keys.py's MESSAGES: 7 tokens. A day limit of
# this admits two chats in a row and refuses the third (tests/test_token_limits.py).
DAY_LIMIT = WORST_TOKENS + 7
# Seconds before the end of the real day (or month) each test starts.
LEAD = 30


@pytest.fixture
def day_ending(monkeypatch):
    """The real time: half a minute before the end of the current day."""
    end = periods.end("day", time.time()).timestamp()
    return run_real_time_from(monkeypatch, end - LEAD)


@pytest.fixture
def month_ending(monkeypatch):
    """The real time: half a minute before the end of the current month."""
    end = periods.end("month", time.time()).timestamp()
    return run_real_time_from(monkeypatch, end - LEAD)


@pytest.fixture
def dear(cloudflare):
    """Llama at 1,000 and 2,000 USD per million tokens: 0.011 USD per request here."""
    Model.objects.filter(name=LLAMA).update(
        input_price=Decimal("1000"), output_price=Decimal("2000")
    )


async def test_a_day_limit_outlasts_the_minute_in_the_last_minute_of_a_day(
    api, cloudflare, day_ending, monkeypatch
):
    clock = freeze(monkeypatch)
    dave = await new_key(tokens_per_day=DAY_LIMIT)
    for _ in range(3):
        await chat(api, dave)

    clock.advance(60)
    refused = await chat(api, dave)

    assert refused.status_code == 429
    assert "tokens per day" in refused.json()["error"]["message"]


async def test_a_spent_day_says_not_to_retry_in_the_last_minute_of_a_day(
    api, cloudflare, day_ending, monkeypatch
):
    freeze(monkeypatch)
    dave = await new_key(tokens_per_day=5)
    await chat(api, dave)

    response = await chat(api, dave)

    assert response.status_code == 429
    assert int(response["Retry-After"]) > 60
    assert response["x-should-retry"] == "false"


async def test_usage_made_once_the_real_day_ended_is_counted_in_the_clocks_day(
    api, cloudflare, day_ending, monkeypatch
):
    clock = freeze(monkeypatch)
    day = periods.start("day", clock.now)
    dave = await new_key(tokens_per_day=DAY_LIMIT)
    # The real time runs into the next day while the clock stands.
    day_ending.advance(LEAD + 1)
    for _ in range(3):
        await chat(api, dave)

    clock.advance(24 * 3600)

    assert periods.start("day", clock.now) > day
    assert (await chat(api, dave)).status_code == 200


async def test_usage_made_once_the_real_month_ended_is_counted_in_the_clocks_month(
    api, dear, month_ending, monkeypatch
):
    clock = freeze(monkeypatch)
    dave = await new_key(monthly_budget=Decimal("0.14"))
    # The real time runs into the next month while the clock stands.
    month_ending.advance(LEAD + 1)
    await chat(api, dave)
    refused = await chat(api, dave)
    assert refused.status_code == 429

    clock.advance(int(refused["Retry-After"]))

    assert (await chat(api, dave)).status_code == 200
