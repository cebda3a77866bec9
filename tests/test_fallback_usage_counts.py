"""A request whose first candidate failed after reading the prompt counts as one request.

The failed candidate leaves a record of its own (completions/fallbacks.py), marked as an
attempt: its tokens and cost count under its model, but the client made one request, and
every report, /v1/usage, usage_report and the rollups say one.
"""

import json
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Sum
from django.utils import timezone

from apikeys import rollups
from apikeys.models import UsageDayRollup, UsageRecord, UsageRollup
from apikeys.reports import Period, PeriodUsage
from completions.models import Model, ModelFallback
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [{"role": "user", "content": "hello there"}]
FAILING = "@cf/test/fail-500"
LIMITED = "@cf/test/rate-limited"


@pytest.fixture(autouse=True)
def _no_retries(settings):
    settings.UPSTREAM_RETRIES = 0


@pytest.fixture
def fallen_back(cloudflare):
    """FAILING (a 500 after reading the prompt) falls back to LLAMA, both priced."""
    ModelFallback.objects.create(
        model=Model.objects.get(name=FAILING), fallback=Model.objects.get(name=LLAMA), position=0
    )
    Model.objects.filter(name=FAILING).update(input_price=Decimal("2000"))
    Model.objects.filter(name=LLAMA).update(input_price=Decimal("1000"))


async def _chat(api, persona, model=FAILING):
    response = await api.post(
        "/v1/chat/completions",
        data={"model": model, "messages": MESSAGES},
        content_type="application/json",
        headers=persona.headers,
    )
    assert response.status_code == 200
    return response


@sync_to_async
def _records():
    """The failed attempt's record and the answer's, checked to be those of one request."""
    failed, answered = UsageRecord.objects.order_by("id")
    assert (failed.model, failed.status) == (FAILING, UsageRecord.UPSTREAM_ERROR)
    assert failed.cost > 0
    assert (answered.model, answered.status) == (LLAMA, UsageRecord.OK)
    assert failed.request_id == answered.request_id
    return failed, answered


def _periods():
    """A period whose last hour is read from the records, and one of whole days (today's
    included) read from the daily rollups."""
    today = timezone.now().date()
    return [Period.last("24h"), Period.days(today - timedelta(days=2), today)]


@pytest.mark.usefixtures("fallen_back")
async def test_a_request_whose_first_candidate_failed_counts_once_in_the_report(api, alice):
    await _chat(api, alice)
    failed, answered = await _records()

    for period in await sync_to_async(_periods)():
        totals = await sync_to_async(PeriodUsage(period).totals)()
        assert totals["requests"] == 1, period.label
        assert totals["errors"] == 0, period.label
        # The failed candidate's prompt is paid for all the same.
        assert totals["cost"] == failed.cost + answered.cost, period.label
        assert totals["total_tokens"] == failed.total_tokens + answered.total_tokens


@pytest.mark.usefixtures("fallen_back")
async def test_the_failed_candidates_tokens_and_cost_count_under_its_model_not_as_a_request(
    api, alice
):
    await _chat(api, alice)
    failed, answered = await _records()

    for period in await sync_to_async(_periods)():
        by_model = {
            row["model"]: row for row in await sync_to_async(PeriodUsage(period).by_model)()
        }
        assert by_model[FAILING]["requests"] == 0
        assert by_model[FAILING]["errors"] == 0
        assert by_model[FAILING]["cost"] == failed.cost
        assert by_model[FAILING]["prompt_tokens"] == failed.prompt_tokens
        assert by_model[LLAMA]["requests"] == 1
        assert by_model[LLAMA]["cost"] == answered.cost


@pytest.mark.usefixtures("fallen_back")
async def test_the_average_latency_is_that_of_the_request_not_of_its_attempts(api, alice):
    await _chat(api, alice)
    _, answered = await _records()

    totals = await sync_to_async(PeriodUsage(Period.last("24h")).totals)()

    # The answer's record times the whole request, the failed candidate's part included.
    assert totals["latency_ms"] == answered.latency_ms


async def test_a_request_whose_every_candidate_failed_is_one_request_and_one_error(
    api, alice, cloudflare
):
    # FAILING reads the prompt and fails; its fallback is refused (a 429) before reading it.
    await ModelFallback.objects.acreate(
        model=await Model.objects.aget(name=FAILING),
        fallback=await Model.objects.aget(name=LIMITED),
        position=0,
    )
    await Model.objects.filter(name=FAILING).aupdate(input_price=Decimal("2000"))

    response = await api.post(
        "/v1/chat/completions",
        data={"model": FAILING, "messages": MESSAGES},
        content_type="application/json",
        headers=alice.headers,
    )

    assert response.status_code == 503
    records = await sync_to_async(list)(UsageRecord.objects.all())
    assert len(records) == 2
    for period in await sync_to_async(_periods)():
        totals = await sync_to_async(PeriodUsage(period).totals)()
        assert (totals["requests"], totals["errors"], totals["error_rate"]) == (1, 1, 100.0)
        assert totals["cost"] == sum(record.cost for record in records) > 0


@pytest.mark.usefixtures("fallen_back")
async def test_v1_usage_counts_the_request_once_with_the_failed_candidates_cost(api, alice):
    await _chat(api, alice)
    failed, answered = await _records()

    for group_by in [(), ("model",)]:
        response = await api.get(
            "/v1/usage", {"bucket": "hour", "group_by": list(group_by)}, headers=alice.headers
        )
        assert response.status_code == 200
        results = [result for bucket in response.json()["data"] for result in bucket["results"]]
        assert sum(result["requests"] for result in results) == 1
        assert sum(result["cost"] for result in results) == pytest.approx(
            float(failed.cost + answered.cost), abs=1e-8
        )


@pytest.mark.usefixtures("fallen_back")
async def test_usage_report_counts_the_request_once(api, alice):
    await _chat(api, alice)
    failed, answered = await _records()

    out = StringIO()
    await sync_to_async(call_command)("usage_report", "--json", stdout=out)
    rows = json.loads(out.getvalue())

    assert sum(row["requests"] for row in rows) == 1
    assert sum(Decimal(str(row["cost"])) for row in rows) == failed.cost + answered.cost


@pytest.mark.usefixtures("fallen_back")
async def test_the_limits_sums_count_the_request_once_and_its_whole_cost(api, alice):
    await _chat(api, alice)
    failed, answered = await _records()

    sums = await sync_to_async(rollups.usage_sums)(
        api_key=alice.key, since=timezone.now() - timedelta(days=3)
    )

    assert sums["requests"] == 1
    assert sums["cost"] == failed.cost + answered.cost


def _rollup_rows():
    fields = ["requests", "errors", "total_tokens", "cost", "latency_ms", "first_token_count"]
    return {
        model: sorted(model.objects.values_list("model", "status", *fields))
        for model in (UsageRollup, UsageDayRollup)
    }


@pytest.mark.usefixtures("fallen_back")
async def test_the_rollups_equal_the_records_after_a_rebuild(api, alice):
    await _chat(api, alice)
    await _chat(api, alice, model=LLAMA)
    written = await sync_to_async(_rollup_rows)()

    await sync_to_async(call_command)("rebuild_rollups", stdout=StringIO())

    assert await sync_to_async(_rollup_rows)() == written
    assert sum(row[2] for row in written[UsageRollup]) == 2


def test_the_migration_marks_the_attempts_recorded_before_it_and_takes_them_out_of_the_rollups(
    alice,
):
    before = [("apikeys", "0011_usage_day_rollups")]
    after = [("apikeys", "0013_mark_fallback_attempts")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        old = executor.loader.project_state(before).apps
        record = old.get_model("apikeys", "UsageRecord")
        at = timezone.now() - timedelta(days=2)
        fields = {"api_key_id": alice.key.pk, "key_name": "alice", "endpoint": "chat.completions"}
        for model, status, request_id, cost, latency, late in [
            (FAILING, UsageRecord.UPSTREAM_ERROR, "req-fell-back", "0.5", 100, 0),
            (LLAMA, UsageRecord.OK, "req-fell-back", "0.25", 300, 0),
            # A request that failed with no fallback: its own record, an error.
            (LLAMA, UsageRecord.UPSTREAM_ERROR, "req-failed", "0.125", 50, 0),
            # The request's own record written first: its attempt's write failed, and the
            # writer wrote it again later (a higher id, an earlier time).
            (LLAMA, UsageRecord.OK, "req-written-late", "0.25", 200, 1),
            (FAILING, UsageRecord.UPSTREAM_ERROR, "req-written-late", "0.5", 100, 0),
        ]:
            record.objects.create(
                **fields,
                model=model,
                status=status,
                request_id=request_id,
                cost=cost,
                latency_ms=latency,
                created_at=at + timedelta(milliseconds=late),
            )
        hour, day = (
            old.get_model("apikeys", "UsageRollup"),
            old.get_model("apikeys", "UsageDayRollup"),
        )
        rollups.hours_from_records(record, hour, rollups.hour_of(at))
        rollups.days_from_hours(hour, day, rollups.day_of(at))
        assert hour.objects.aggregate(n=Sum("requests"))["n"] == 5
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        # And on to the latest of every app, as the other tests expect.
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    assert set(UsageRecord.objects.filter(attempt=True).values_list("request_id", "model")) == {
        ("req-fell-back", FAILING),
        ("req-written-late", FAILING),
    }
    for rows in (UsageRollup.objects, UsageDayRollup.objects):
        assert rows.aggregate(
            requests=Sum("requests"), errors=Sum("errors"), cost=Sum("cost"), ms=Sum("latency_ms")
        ) == {"requests": 3, "errors": 1, "cost": Decimal("1.625"), "ms": 550}
    # As a rebuild from the records would have them.
    migrated = _rollup_rows()
    call_command("rebuild_rollups", stdout=StringIO())
    assert _rollup_rows() == migrated


async def test_the_last_candidate_to_fail_is_charged_at_its_own_prices(api, alice, cloudflare):
    # Both read the prompt and fail (a 500): the last one's record is the request's own.
    second = await Model.objects.acreate(
        name="@cf/test/fail-500-second", provider=cloudflare, input_price=Decimal("3000")
    )
    await Model.objects.filter(name=FAILING).aupdate(input_price=Decimal("2000"))
    await ModelFallback.objects.acreate(
        model=await Model.objects.aget(name=FAILING), fallback=second, position=0
    )

    response = await api.post(
        "/v1/chat/completions",
        data={"model": FAILING, "messages": MESSAGES},
        content_type="application/json",
        headers=alice.headers,
    )

    assert response.status_code == 502
    attempt, own = await sync_to_async(list)(UsageRecord.objects.order_by("id"))
    assert (attempt.model, attempt.attempt) == (FAILING, True)
    assert (own.model, own.attempt, own.requested_model) == (second.name, False, FAILING)
    # "hello there": 3 tokens as the gateway counts them, at each model's own prices.
    assert attempt.cost == 3 * Decimal("2000") / 1_000_000
    assert own.cost == 3 * Decimal("3000") / 1_000_000
