"""A 429 that waiting a minute cannot cure says so: `x-should-retry: false`.

openai-node sleeps as long as Retry-After asks, however long: on a spent monthly budget that
was until the month ended. Both official SDKs give up at once on `x-should-retry: false`.
"""

from decimal import Decimal

import pytest

from completions.models import Model
from gateway.errors import RateLimited, error_response
from tests.conftest import LLAMA
from tests.limited_keys import chat, new_key

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def dear(cloudflare):
    """Llama at 1,000 and 2,000 USD per million tokens: 0.011 USD per request here."""
    Model.objects.filter(name=LLAMA).update(
        input_price=Decimal("1000"), output_price=Decimal("2000")
    )


async def test_a_spent_monthly_budget_tells_clients_not_to_retry(api, dear, clock):
    dave = await new_key(monthly_budget=Decimal("0.01"))
    await chat(api, dave)

    response = await chat(api, dave)

    assert response.status_code == 429
    assert response["x-should-retry"] == "false"


async def test_a_spent_daily_token_allowance_tells_clients_not_to_retry(api, cloudflare, clock):
    dave = await new_key(tokens_per_day=5)
    await chat(api, dave)

    response = await chat(api, dave)

    assert response.status_code == 429
    assert int(response["Retry-After"]) > 60
    assert response["x-should-retry"] == "false"


async def test_a_spent_minute_leaves_retrying_to_the_client(api, cloudflare, clock):
    dave = await new_key(rate_limit="1/m")
    await chat(api, dave)

    response = await chat(api, dave)

    assert response.status_code == 429
    assert int(response["Retry-After"]) <= 60
    assert "x-should-retry" not in response


@pytest.mark.parametrize(("retry_after", "hint"), [("7", None), ("60", None), ("61", "false")])
def test_any_error_that_asks_for_more_than_a_minute_says_not_to_retry(retry_after, hint):
    response = error_response(RateLimited(headers={"Retry-After": retry_after}))

    assert response.get("x-should-retry") == hint
