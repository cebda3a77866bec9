"""GET /v1/key and GET /v1/usage served by daphne, read with the openai SDK and httpx."""

import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import httpx
import openai
import pytest

from tests.live_server import LiveGateway

pytestmark = pytest.mark.integration

SETUP = """
from datetime import timedelta
from decimal import Decimal
from django.utils import timezone
from apikeys.models import ApiKey, Team
from apikeys.writer import DatabaseStore

team = Team.objects.create(name="research", monthly_budget=Decimal("40"))
carol, secret = ApiKey.objects.create_key(
    name="carol", team=team, daily_budget=Decimal("5"), rate_limit="1000/h"
)
print("carol", secret)
bob, secret = ApiKey.objects.create_key(name="bob", permissions="read")
print("bob", secret)
# Spent earlier today by Carol, through the writer's store, which keeps the rollups: an
# hour that ends before the gateway reads it is summed from them.
DatabaseStore().add_one(dict(
    api_key=carol, key_name="carol", team=team, model="echo", endpoint="/v1/chat/completions",
    prompt_tokens=10, completion_tokens=5, total_tokens=15, cost=Decimal("1.5"),
    request_id="req-earlier", created_at=timezone.now() - timedelta(seconds=30),
))
"""


def midday_zone(now):
    """Return a zone (Etc/GMT-12 to Etc/GMT+11) in which `now` is between 11:00 and 13:00.

    The limits' days and months are counted in it, so that Carol's record of 30 s before
    the gateway starts and the reads after it fall in one day and month of the limits,
    whenever the suite runs: in UTC, from 00:00:00 to 00:00:30 the record is yesterday's,
    and a gateway started before midnight is read after it.
    """
    hours = 12 - now.astimezone(UTC).hour
    # POSIX signs: Etc/GMT-5 is 5 hours ahead of UTC.
    return f"Etc/GMT{-hours:+d}" if hours else "Etc/GMT"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    zone = midday_zone(datetime.now(UTC))
    folder = tmp_path_factory.mktemp("self-service")
    with LiveGateway(folder, SETUP, LIMITS_TIME_ZONE=zone) as gateway:
        yield gateway


@pytest.mark.parametrize("hour", range(24))
def test_the_limits_zone_puts_any_hour_of_utc_at_midday(hour):
    now = datetime(2026, 12, 31, hour, 59, 59, tzinfo=UTC)

    local = now.astimezone(ZoneInfo(midday_zone(now)))

    assert 11 <= local.hour < 13


def _sdk(live, name):
    return openai.OpenAI(base_url=f"{live.base_url}/v1", api_key=live.printed[name], max_retries=0)


def _wait_for_records(live, count, timeout=5.0):
    deadline = time.monotonic() + timeout
    while len(live.usage_records()) < count:
        assert time.monotonic() < deadline, "the usage record was not written"
        time.sleep(0.05)


def test_a_key_holder_reads_their_key_and_usage_through_daphne(live):
    carol = _sdk(live, "carol")
    carol.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "one two three"}]
    )
    _wait_for_records(live, 2)

    key = carol.get("/key", cast_to=object)
    usage = httpx.get(
        f"{live.base_url}/v1/usage",
        params={"group_by": "model", "bucket": "hour", "start": int(time.time()) - 3600},
        headers={"Authorization": f"Bearer {live.printed['carol']}"},
    )

    assert (key["name"], key["team"], key["request_window"]["limit"]) == ("carol", "research", 1000)
    assert [(b["period"], b["spent_usd"]) for b in key["budgets"]["key"]] == [("day", 1.5)]
    assert [(b["period"], b["spent_usd"]) for b in key["budgets"]["team"]] == [("month", 1.5)]
    assert usage.status_code == 200
    assert "x-ratelimit-remaining-requests" in usage.headers
    results = [result for bucket in usage.json()["data"] for result in bucket["results"]]
    records = live.usage_records()
    assert sum(result["requests"] for result in results) == len(records) == 2
    assert sum(result["total_tokens"] for result in results) == sum(
        record["total_tokens"] for record in records
    )
    assert {result["model"] for result in results} == {"echo"}
    # Reading spent nothing.
    assert len(live.usage_records()) == 2


def test_a_read_only_key_reads_itself_and_a_bad_range_is_refused_through_daphne(live):
    bob = _sdk(live, "bob")

    key = bob.get("/key", cast_to=object)
    with pytest.raises(openai.BadRequestError) as refused:
        bob.get("/usage", cast_to=object, options={"params": {"start": "2026-02-30"}})

    assert key["permissions"] == "read"
    assert refused.value.param == "start"
