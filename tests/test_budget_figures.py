"""What a budget has spent and has left reads the same wherever it is shown: GET /v1/key,
the x-budget-* headers, the key's and the team's admin pages. All of them go by what the
limit goes by (apikeys/throttling.budget_status): the cost of finished requests, and apart
from it what requests still running hold reserved.

The fake upstream's gated model holds a request in flight until the test opens the gate.
"""

import asyncio
import re
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User

from apikeys.models import ApiKey, Team
from apikeys.writer import DatabaseStore, writer
from completions.models import Model
from tests.conftest import LLAMA
from tests.limited_keys import chat, read_stream
from tests.usage_stores import StuckDatabase

pytestmark = pytest.mark.django_db(transaction=True)

GATED = "@cf/test/gated"
# 1,000 USD per million tokens: 0.001 USD a token, in and out. A chat of
# tests/limited_keys.py costs 7 tokens (0.007 USD) and reserves 132 (0.132 USD).
PRICE = Decimal("1000")
COST = Decimal("0.007")
WORST = Decimal("0.132")


@pytest.fixture
def priced(cloudflare):
    Model.objects.create(name=GATED, provider=cloudflare)
    Model.objects.filter(name__in=[LLAMA, GATED]).update(input_price=PRICE, output_price=PRICE)


@pytest.fixture
async def dave():
    """Dave's key, with a daily budget of 1 USD, in the team acme with 2 USD a day."""
    team = await Team.objects.acreate(name="acme", daily_budget=Decimal("2"))
    key, secret = await sync_to_async(ApiKey.objects.create_key)(
        name="dave", team=team, daily_budget=Decimal("1"), rate_limit="1000/m"
    )
    return key, {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def operator(api):
    user = await sync_to_async(User.objects.create_superuser)("root", "root@example.com", "x")
    await api.aforce_login(user)
    return api


async def figures(api, key, headers):
    """Return what /v1/key, an invalid request's headers and the admin pages say of the
    key's and the team's daily budgets."""
    budgets = (await api.get("/v1/key", headers=headers)).json()["budgets"]
    # Refused before any reservation, an invalid request tells where the limits stand.
    invalid = await api.post(
        "/v1/chat/completions",
        data={"model": LLAMA},
        content_type="application/json",
        headers=headers,
    )
    assert invalid.status_code == 400
    key_page = (await api.get(f"/admin/apikeys/apikey/{key.pk}/change/")).content.decode()
    team_page = (await api.get(f"/admin/apikeys/team/{key.team_id}/change/")).content.decode()
    return {
        "v1_key": [
            (budget["spent_usd"], budget.get("reserved_usd"), budget["remaining_usd"])
            for budget in (budgets["key"][0], budgets["team"][0])
        ],
        "header": invalid["x-budget-remaining-usd"],
        # <td>spent</td><td>left</td> of the day's row.
        "key_page": _cells(key_page, "limit-budget-day")[:2],
        "team_page": _cells(team_page, "budget-day")[:2],
    }


def _cells(html, row_class):
    row = re.search(rf'<tr class="{row_class}">(.*?)</tr>', html, re.S).group(1)
    return [cell.strip() for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]


async def test_a_request_still_running_is_reserved_alike_on_v1_key_in_the_headers_and_the_admin(
    api, priced, upstream, dave, operator, clock
):
    key, headers = dave
    assert (await chat(api, headers)).status_code == 200
    upstream.close_gate()
    running = asyncio.ensure_future(chat(api, headers, model=GATED))
    try:
        for _ in range(500):
            if upstream.at_gate:
                break
            await asyncio.sleep(0.01)

        seen = await figures(api, key, headers)
    finally:
        upstream.open_gate()
        await running

    left = Decimal(1) - COST - WORST
    team_left = Decimal(2) - COST - WORST
    assert seen["v1_key"] == [
        (float(COST), float(WORST), float(left)),
        (float(COST), float(WORST), float(team_left)),
    ]
    assert seen["header"] == f"{left:.6f}"
    assert seen["key_page"] == ["0.0070", "0.8610"]
    assert seen["team_page"] == ["0.0070", "1.86"]


async def test_a_finished_request_whose_record_is_not_written_yet_is_spent_alike_everywhere(
    api, priced, dave, operator, clock, settings
):
    key, headers = dave
    stuck = StuckDatabase()
    writer.store = stuck
    settings.USAGE_WRITE_TIMEOUT = 0.2
    try:
        # Answered; its record waits in the writer's queue for the database to come back.
        await read_stream(await chat(api, headers, stream=True))

        seen = await figures(api, key, headers)
    finally:
        stuck.release.set()
        writer.store = DatabaseStore()
        writer.shutdown(timeout=5)
        writer.store = None

    assert seen["v1_key"] == [
        (float(COST), 0.0, float(Decimal(1) - COST)),
        (float(COST), 0.0, float(Decimal(2) - COST)),
    ]
    assert seen["header"] == f"{Decimal(1) - COST:.6f}"
    assert seen["key_page"] == ["0.0070", "0.9930"]
    assert seen["team_page"] == ["0.0070", "1.99"]
