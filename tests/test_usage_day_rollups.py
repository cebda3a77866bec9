"""Daily rollups (apikeys/rollups.py, UsageDayRollup): written with the hourly ones, rebuilt
from them, pruned with them, and what a report of more than a few days reads for its whole
days; reports and sums over many days still agree with the records to the cent.
"""

import random
from datetime import UTC, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import IntegrityError
from django.db.models import Count, Sum

from apikeys.models import UsageDayRollup, UsageRecord, UsageRollup
from apikeys.reports import Period, PeriodUsage
from apikeys.retention import prune
from apikeys.rollups import day_of, next_day, usage_sums
from apikeys.writer import DatabaseStore
from tests.test_usage_rollups import NOW, fields, many

pytestmark = pytest.mark.django_db

DAYS = 40


def spread(alice, bob, count):
    return many(alice, bob, count, seed=11, days=DAYS)


def records_by_day():
    rows = {}
    for record in UsageRecord.objects.all():
        day = record.created_at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        row = rows.setdefault((day, record.key_name, record.model, record.status), [0, 0, 0])
        row[0] += 1
        row[1] += record.total_tokens
        row[2] += record.cost
    return rows


def days_summed():
    return {
        (r.day, r.key_name, r.model, r.status): [r.requests, r.total_tokens, r.cost]
        for r in UsageDayRollup.objects.all()
    }


def test_the_writer_adds_each_batch_to_the_daily_rollups_to_the_cent(alice, bob):
    store = DatabaseStore()
    batch = spread(alice, bob, 400)
    for start in range(0, len(batch), 50):
        store.add(batch[start : start + 50])

    assert UsageDayRollup.objects.count() < UsageRollup.objects.count()
    assert days_summed() == records_by_day()


def test_a_failed_batch_leaves_no_daily_rollups(alice):
    with pytest.raises(IntegrityError):
        DatabaseStore().add([fields(alice, at=NOW), {**fields(alice, at=NOW), "model": None}])

    assert UsageDayRollup.objects.count() == 0


def test_rebuilding_gives_back_the_same_daily_rollups(alice, bob):
    DatabaseStore().add(spread(alice, bob, 300))
    before = days_summed()
    UsageDayRollup.objects.update(requests=0, cost=0)

    call_command("rebuild_rollups", stdout=StringIO())

    assert days_summed() == before == records_by_day()


def test_rebuilding_since_the_middle_of_a_day_sums_that_whole_day_again(alice, bob):
    DatabaseStore().add(spread(alice, bob, 300))
    since = NOW - timedelta(days=5, hours=7)
    UsageDayRollup.objects.update(requests=0)

    call_command("rebuild_rollups", "--since", since.isoformat(), stdout=StringIO())

    first_day = since.replace(hour=0, minute=0, second=0, microsecond=0)
    assert days_summed() != records_by_day()
    assert not UsageDayRollup.objects.filter(day__gte=first_day, requests=0).exists()
    rebuilt = {key: row for key, row in days_summed().items() if key[0] >= first_day}
    assert rebuilt == {key: row for key, row in records_by_day().items() if key[0] >= first_day}


def test_a_months_report_reads_its_whole_days_from_the_daily_rollups(admin_client, alice, bob):
    DatabaseStore().add(spread(alice, bob, 300))
    period = Period(NOW - timedelta(days=30), NOW, "")
    expected = UsageRecord.objects.filter(created_at__gte=period.start, created_at__lt=NOW)
    # Such a report no longer needs the hourly rows of its whole days: without them it
    # still counts every record.
    first_whole = next_day(period.start)
    last_whole = day_of(NOW)
    assert (last_whole - first_whole).days == 29
    UsageRollup.objects.filter(hour__gte=first_whole, hour__lt=last_whole).delete()

    report = PeriodUsage(period, now=NOW)

    assert report.totals()["requests"] == expected.count()
    assert report.totals()["cost"] == expected.aggregate(n=Sum("cost"))["n"]


def test_random_periods_of_many_days_sum_like_the_records(alice, bob):
    DatabaseStore().add(spread(alice, bob, 400))
    chance = random.Random(5)
    for _ in range(12):
        start = NOW - timedelta(minutes=chance.randrange(DAYS * 24 * 60))
        end = min(NOW, start + timedelta(minutes=chance.randrange(4 * 24 * 60, 35 * 24 * 60)))
        report = PeriodUsage(Period(start, end, ""), now=NOW)
        expected = UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end)

        assert report.period.bucket == "day" or end - start <= timedelta(days=3)
        totals = report.totals()
        assert totals["requests"] == expected.count()
        assert totals["total_tokens"] == (expected.aggregate(n=Sum("total_tokens"))["n"] or 0)
        assert totals["cost"] == (expected.aggregate(n=Sum("cost"))["n"] or Decimal(0))
        series = report.series()
        assert sum(row["requests"] for row in series) == expected.count()
        by_key = {row["key_name"]: row["requests"] for row in report.by_key()}
        assert by_key == dict(
            expected.values("key_name").annotate(n=Count("id")).values_list("key_name", "n")
        )


def test_a_lifetime_sum_reads_days_and_agrees_with_the_records(alice, bob):
    DatabaseStore().add(spread(alice, bob, 300))
    since = NOW - timedelta(days=DAYS + 1, minutes=13)

    sums = usage_sums(api_key=alice.key, since=since, now=NOW)

    expected = UsageRecord.objects.filter(api_key=alice.key, created_at__gte=since).aggregate(
        requests=Count("id"), total_tokens=Sum("total_tokens"), cost=Sum("cost")
    )
    assert sums == expected


def test_daily_rollups_go_with_the_last_of_their_hours(settings, alice):
    DatabaseStore().add([fields(alice, at=NOW - timedelta(days=d, hours=3)) for d in range(10)])
    settings.USAGE_RETENTION_DAYS = 2
    settings.USAGE_ROLLUP_RETENTION_DAYS = 5

    prune(now=NOW)

    limit = (NOW - timedelta(days=5)).replace(minute=0, second=0, microsecond=0)
    assert not UsageRollup.objects.filter(hour__lt=limit).exists()
    # The day holding the limit is partly kept, so its daily row stays; none before it.
    days = set(UsageDayRollup.objects.values_list("day", flat=True))
    assert min(days) == limit.replace(hour=0)


def test_what_was_spent_up_to_a_moment_past_leaves_out_what_came_after(alice):
    from apikeys.spend import spent

    # The usage digest's figure for yesterday, read today: today's requests are not in it.
    yesterday_evening = NOW.replace(hour=0, minute=0) - timedelta(hours=2)
    DatabaseStore().add(
        [
            fields(alice, at=yesterday_evening - timedelta(days=3), cost="1"),
            fields(alice, at=yesterday_evening - timedelta(minutes=30), cost="2"),
            fields(alice, at=yesterday_evening + timedelta(minutes=10), cost="4"),
            fields(alice, at=NOW - timedelta(hours=1), cost="8"),
        ]
    )

    assert spent(alice.key, "month", now=yesterday_evening) == Decimal("3")
    assert spent(alice.key, "lifetime", now=yesterday_evening) == Decimal("3")
