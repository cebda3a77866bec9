"""GET /v1/key and GET /v1/usage served by daphne, read with the openai SDK and httpx."""

import time

import httpx
import openai
import pytest

from tests.live_server import LiveGateway

pytestmark = pytest.mark.integration

SETUP = """
from datetime import timedelta
from decimal import Decimal
from django.utils import timezone
from apikeys.models import ApiKey, Team, UsageRecord

team = Team.objects.create(name="research", monthly_budget=Decimal("40"))
carol, secret = ApiKey.objects.create_key(
    name="carol", team=team, daily_budget=Decimal("5"), rate_limit="1000/h"
)
print("carol", secret)
bob, secret = ApiKey.objects.create_key(name="bob", permissions="read")
print("bob", secret)
# Spent earlier today by Carol.
UsageRecord.objects.create(
    api_key=carol, key_name="carol", team=team, model="echo", endpoint="/v1/chat/completions",
    prompt_tokens=10, completion_tokens=5, total_tokens=15, cost=Decimal("1.5"),
    request_id="req-earlier", created_at=timezone.now() - timedelta(seconds=30),
)
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with LiveGateway(tmp_path_factory.mktemp("self-service"), SETUP) as gateway:
        yield gateway


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
