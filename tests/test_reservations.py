"""Requests reserve their worst case at admission, so that limits hold under concurrency.

The fake upstream's gated model holds every request it receives until the test opens the
gate: requests sent together are then all in flight at once, the case where checking a
limit against what was already spent lets each of them through. "Room for exactly k" is
computed from the worst case of tests/limited_keys.py's chat with MAX_TOKENS.
"""

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import sync_to_async
from django.db.models import Sum

from apikeys.models import ApiKey, Team, UsageRecord
from apikeys.throttling import areserve, budget_status, hold_seconds, token_windows
from apikeys.usage import cost_of
from completions.models import Model
from completions.worst_case import chat_prompt_tokens
from tests.conftest import LLAMA
from tests.limited_keys import MESSAGES, chat, new_key, read_stream

pytestmark = pytest.mark.django_db(transaction=True)

GATED = "@cf/test/gated"
DRIP = "@cf/test/drip"
FAIL = "@cf/test/fail-500"
CONCURRENT = 50
# The fake answers "Echo: hello there world", 4 words: all of them within MAX_TOKENS.
MAX_TOKENS = 4
# 1,000 USD per million tokens: 0.001 USD a token, in and out.
PRICE = Decimal("1000")


@pytest.fixture
def priced(cloudflare):
    Model.objects.create(name=GATED, provider=cloudflare)
    Model.objects.filter(name__in=[LLAMA, GATED, DRIP, FAIL]).update(
        input_price=PRICE, output_price=PRICE
    )


def _worst_tokens(max_tokens=MAX_TOKENS):
    return chat_prompt_tokens({"messages": MESSAGES}) + max_tokens


def _worst_cost(max_tokens=MAX_TOKENS):
    model = Model.objects.get(name=GATED)
    return cost_of(model, chat_prompt_tokens({"messages": MESSAGES}), max_tokens)


def _budget_for(k, max_tokens=MAX_TOKENS):
    """Return a budget in whole cents with room for k worst cases and not k + 1."""
    worst = _worst_cost(max_tokens)
    budget = (worst * k + worst / 2).quantize(Decimal("0.01"))
    assert worst * k <= budget < worst * (k + 1)
    return budget


async def _send_together(api, upstream, keys, count=CONCURRENT):
    """Send `count` chats at once, every other one streamed, spread over the keys' headers;
    hold them at the upstream until each is refused or arrived; return their statuses."""
    upstream.close_gate()
    refused = 0

    async def send(number):
        nonlocal refused
        stream = number % 2 == 0
        response = await chat(
            api, keys[number % len(keys)], model=GATED, max_tokens=MAX_TOKENS, stream=stream
        )
        if response.status_code == 429:
            refused += 1
        elif stream:
            await read_stream(response)
        return response.status_code

    tasks = [asyncio.ensure_future(send(number)) for number in range(count)]
    try:
        for _ in range(3000):
            if refused + upstream.at_gate >= count:
                break
            await asyncio.sleep(0.01)
    finally:
        upstream.open_gate()
    return await asyncio.gather(*tasks)


async def _recorded(**filters):
    return await UsageRecord.objects.filter(**filters).aaggregate(
        cost=Sum("cost"), tokens=Sum("total_tokens")
    )


async def _returned(name):
    """Wait until nothing of the key's is reserved any more."""
    key = await ApiKey.objects.select_related("team").aget(name=name)
    for _ in range(200):
        budgets = await sync_to_async(budget_status)(key)
        windows = await sync_to_async(token_windows)(key)
        if not any(b.reserved for b in budgets) and not any(w.reserved for w in windows):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name}'s reservation was never returned")


async def test_a_budget_with_room_for_k_worst_cases_admits_at_most_k_of_50(
    api, priced, upstream, clock
):
    budget = await sync_to_async(_budget_for)(5)
    dave = await new_key(monthly_budget=budget, rate_limit="1000/m")

    statuses = await _send_together(api, upstream, [dave])

    assert (statuses.count(200), statuses.count(429)) == (5, CONCURRENT - 5)
    assert upstream.at_gate == 5
    assert (await _recorded(key_name="dave"))["cost"] <= budget


async def test_50_requests_that_run_freely_never_spend_past_the_budget(api, priced, clock):
    budget = await sync_to_async(_budget_for)(2)
    dave = await new_key(monthly_budget=budget, rate_limit="1000/m")

    responses = await asyncio.gather(
        *(chat(api, dave, max_tokens=MAX_TOKENS, stream=n % 2 == 0) for n in range(CONCURRENT))
    )
    for response in responses:
        if response.status_code == 200 and response.streaming:
            await read_stream(response)

    assert 429 in {response.status_code for response in responses}
    assert (await _recorded(key_name="dave"))["cost"] <= budget


async def test_a_token_limit_per_minute_with_room_for_k_admits_at_most_k_of_50(
    api, priced, upstream, clock
):
    limit = 3 * _worst_tokens() + _worst_tokens() // 2
    dave = await new_key(tokens_per_minute=limit, rate_limit="1000/m")

    statuses = await _send_together(api, upstream, [dave])

    assert statuses.count(200) == 3
    assert (await _recorded(key_name="dave"))["tokens"] <= limit


async def test_a_token_limit_per_day_with_room_for_k_admits_at_most_k_of_50(
    api, priced, upstream, clock
):
    limit = 4 * _worst_tokens() + _worst_tokens() // 2
    dave = await new_key(tokens_per_day=limit, rate_limit="1000/m")

    statuses = await _send_together(api, upstream, [dave])

    assert statuses.count(200) == 4
    assert (await _recorded(key_name="dave"))["tokens"] <= limit


async def test_a_team_budget_shared_by_two_keys_admits_at_most_k_of_both(
    api, priced, upstream, clock
):
    budget = await sync_to_async(_budget_for)(3)
    team = await Team.objects.acreate(name="research", monthly_budget=budget)
    dave = await new_key(team=team, rate_limit="1000/m")
    _, secret = await sync_to_async(ApiKey.objects.create_key)(
        name="erin", team=team, rate_limit="1000/m"
    )
    erin = {"Authorization": f"Bearer {secret}"}

    statuses = await _send_together(api, upstream, [dave, erin])

    assert statuses.count(200) == 3
    assert (await _recorded(team=team))["cost"] <= budget
    refused = await chat(api, erin, model=GATED, max_tokens=10**6)
    error = refused.json()["error"]
    assert error["code"] == "insufficient_quota"
    assert "The team 'research' of the API key 'erin'" in error["message"]


async def test_a_request_that_does_not_fit_never_reaches_the_provider(api, priced, upstream, clock):
    dave = await new_key(tokens_per_minute=_worst_tokens() - 1)

    response = await chat(api, dave, max_tokens=MAX_TOKENS)

    assert response.status_code == 429
    assert "this request may take up to" in response.json()["error"]["message"]
    assert not [r for r in upstream.requests if "/ai/run/" in r["path"]]
    assert await UsageRecord.objects.acount() == 0


async def test_a_failed_request_returns_its_reservation(api, priced, upstream, clock):
    dave = await new_key(monthly_budget=await sync_to_async(_budget_for)(1))

    failed = await chat(api, dave, model=FAIL, max_tokens=MAX_TOKENS)
    await _returned("dave")
    response = await chat(api, dave, max_tokens=MAX_TOKENS)

    assert failed.status_code == 502
    assert response.status_code == 200


async def test_a_cancelled_request_returns_its_reservation(api, priced, upstream, clock):
    dave = await new_key(monthly_budget=await sync_to_async(_budget_for)(1))
    upstream.close_gate()
    waiting = asyncio.ensure_future(chat(api, dave, model=GATED, max_tokens=MAX_TOKENS))
    for _ in range(500):
        if upstream.at_gate:
            break
        await asyncio.sleep(0.01)
    held = await chat(api, dave, max_tokens=MAX_TOKENS)

    waiting.cancel()
    upstream.open_gate()
    await _returned("dave")
    response = await chat(api, dave, max_tokens=MAX_TOKENS)

    assert held.status_code == 429
    assert response.status_code == 200


async def test_a_stream_the_client_leaves_returns_its_reservation(api, priced, upstream, clock):
    # Room for one drip of up to 50 tokens, and for a second only once the first is settled
    # to the few tokens it sent.
    dave = await new_key(monthly_budget=await sync_to_async(_budget_for)(1, max_tokens=50))
    left = await chat(api, dave, model=DRIP, max_tokens=50, stream=True)
    events = aiter(left.streaming_content)
    [await anext(events) for _ in range(3)]
    held = await chat(api, dave, model=DRIP, max_tokens=50, stream=True)

    left.close()
    await _returned("dave")
    response = await chat(api, dave, max_tokens=50)

    assert held.status_code == 429
    assert response.status_code == 200


async def test_the_headers_report_the_tightest_budget_and_when_it_resets(
    api, priced, clock, settings
):
    settings.LIMITS_TIME_ZONE = "Europe/Berlin"
    dave = await new_key(daily_budget=Decimal("10"), monthly_budget=Decimal("20"))

    response = await chat(api, dave, max_tokens=MAX_TOKENS)

    worst = await sync_to_async(_worst_cost)()
    # Reported after this request's own reservation.
    assert Decimal(response["x-budget-remaining-usd"]) == 10 - worst
    berlin = datetime.fromtimestamp(clock.now, ZoneInfo("Europe/Berlin"))
    reset = datetime.fromisoformat(response["x-budget-reset"])
    assert reset.astimezone(ZoneInfo("Europe/Berlin")).hour == 0
    assert 0 < (reset - berlin).total_seconds() <= 24 * 3600


async def test_a_daily_budget_starts_afresh_at_midnight_in_the_limits_time_zone(
    api, priced, clock, settings
):
    settings.LIMITS_TIME_ZONE = "America/New_York"
    dave = await new_key(daily_budget=Decimal("1"))
    # Spent earlier today: the day's counter is summed from the records.
    await UsageRecord.objects.acreate(
        api_key=await ApiKey.objects.aget(name="dave"),
        key_name="dave",
        cost=Decimal("1"),
        request_id="earlier",
        created_at=datetime.fromtimestamp(clock.now, UTC),
    )

    refused = await chat(api, dave, max_tokens=MAX_TOKENS)

    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert "1.00 of 1.00 USD spent today" in refused.json()["error"]["message"]
    midnight = datetime.fromisoformat(refused["x-budget-reset"])
    assert midnight.astimezone(ZoneInfo("America/New_York")).strftime("%H:%M") == "00:00"
    assert int(refused["Retry-After"]) == int(midnight.timestamp() - clock.now)
    clock.advance(midnight.timestamp() - clock.now - 1)
    assert (await chat(api, dave, max_tokens=MAX_TOKENS)).status_code == 429
    clock.advance(1)
    assert (await chat(api, dave, max_tokens=MAX_TOKENS)).status_code == 200


async def test_the_prompt_estimate_is_at_least_what_the_upstream_counts(api, priced, clock):
    dave = await new_key()

    await chat(api, dave, max_tokens=MAX_TOKENS)

    record = await UsageRecord.objects.aget()
    assert record.prompt_tokens <= chat_prompt_tokens({"messages": MESSAGES})
    assert record.completion_tokens <= MAX_TOKENS


async def test_a_request_refused_before_its_reservation_still_reports_its_limits(
    api, priced, clock
):
    dave = await new_key(tokens_per_minute=1000, monthly_budget=Decimal("5"))

    response = await chat(api, dave, model="no-such-model")

    assert response.status_code == 404
    assert response["x-ratelimit-remaining-tokens"] == "1000"
    assert response["x-budget-remaining-usd"] == "5.000000"


async def test_a_reservation_never_settled_expires_after_the_longest_its_request_may_run(
    api, priced, clock
):
    dave = await new_key(lifetime_budget=await sync_to_async(_budget_for)(1))
    key = await ApiKey.objects.aget(name="dave")
    hold = hold_seconds(stream=True)
    # As a request whose process died before it could settle.
    await areserve(
        SimpleNamespace(api_key=key), _worst_tokens(), await sync_to_async(_worst_cost)(), hold
    )

    clock.advance(hold - 1)
    still_held = await chat(api, dave, max_tokens=MAX_TOKENS)
    clock.advance(1)
    response = await chat(api, dave, max_tokens=MAX_TOKENS)

    assert still_held.status_code == 429
    assert still_held["Retry-After"] == "1"
    assert "x-budget-reset" not in still_held
    assert response.status_code == 200
