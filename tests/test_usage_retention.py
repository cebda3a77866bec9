"""Retention: manage.py prune_usage deletes records older than USAGE_RETENTION_DAYS and
rollups older than USAGE_ROLLUP_RETENTION_DAYS, and reports of older periods read the
rollups and say so."""

import random
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db.models import Sum
from django.utils import timezone

from apikeys.models import UsageRecord, UsageRollup
from apikeys.writer import DatabaseStore
from tests.test_usage_report_admin import total
from tests.test_usage_rollups import fields, records_summed, rollups_summed

pytestmark = pytest.mark.django_db

REPORT = "/admin/apikeys/usagereport/"


def days_of_usage(persona, days, per_day=3):
    now = timezone.now()
    DatabaseStore().add(
        [
            fields(persona, at=now - timedelta(days=day, hours=hour * 5), cost="0.01")
            for day in range(days)
            for hour in range(per_day)
        ]
    )


def prune(**options):
    out = StringIO()
    call_command("prune_usage", *(f"--{k}={v}" for k, v in options.items()), stdout=out)
    return out.getvalue()


def test_pruning_deletes_records_older_than_the_retention_and_keeps_their_rollups(settings, alice):
    settings.USAGE_RETENTION_DAYS = 10
    days_of_usage(alice, 20)
    rollups_before = rollups_summed()

    said = prune(batch=7)

    cutoff = timezone.now() - timedelta(days=10, hours=1)
    assert not UsageRecord.objects.filter(created_at__lt=cutoff).exists()
    assert UsageRecord.objects.filter(created_at__gte=timezone.now() - timedelta(days=9)).count()
    assert rollups_summed() == rollups_before
    assert "older than 10 days" in said


def test_rollups_still_equal_the_records_kept_after_pruning_and_a_rebuild(settings, alice, bob):
    settings.USAGE_RETENTION_DAYS = 5
    days_of_usage(alice, 12)
    days_of_usage(bob, 12, per_day=2)
    total = UsageRollup.objects.aggregate(cost=Sum("cost"))["cost"]
    prune()

    call_command("rebuild_rollups", stdout=StringIO())

    kept = UsageRecord.objects.order_by("created_at").first().created_at
    hour = kept.replace(minute=0, second=0, microsecond=0)
    recent = {key: row for key, row in rollups_summed().items() if key[0] >= hour}
    assert recent == records_summed()
    # The pruned hours' rollups are still there: nothing of the total is lost.
    assert UsageRollup.objects.aggregate(cost=Sum("cost"))["cost"] == total == Decimal("0.60")


def test_rollups_older_than_their_own_retention_are_pruned(settings, alice):
    settings.USAGE_RETENTION_DAYS = 5
    settings.USAGE_ROLLUP_RETENTION_DAYS = 8
    days_of_usage(alice, 12)

    prune()

    assert UsageRollup.objects.order_by("hour").first().hour >= timezone.now() - timedelta(
        days=8, hours=1
    )


def test_a_report_beyond_the_records_kept_reads_the_rollups_and_says_so(
    settings, admin_client, alice
):
    settings.USAGE_RETENTION_DAYS = 3
    days_of_usage(alice, 20)
    prune()

    html = admin_client.get(REPORT, {"period": "30d"}).content.decode()

    assert "<strong>hourly rollups</strong>" in html
    assert "Records are kept 3 days" in html
    assert total(html, "requests") == "60"


def test_a_report_within_the_records_kept_is_to_the_second(admin_client, alice):
    days_of_usage(alice, 2)

    html = admin_client.get(REPORT, {"period": "24h"}).content.decode()

    assert "Resolution: <strong>records</strong>" in html


def test_the_last_24_hours_count_records_of_the_partial_hours_to_the_second(
    admin_client, alice, bob
):
    now = timezone.now()
    DatabaseStore().add(
        [
            # Just inside and just outside the period's first (partial) hour.
            fields(alice, at=now - timedelta(hours=24) + timedelta(seconds=30)),
            fields(bob, at=now - timedelta(hours=24) - timedelta(seconds=30)),
            fields(alice, at=now - timedelta(seconds=1)),
        ]
    )

    html = admin_client.get(REPORT, {"period": "24h"}).content.decode()

    assert total(html, "requests") == "2"
    assert "bob" not in html.split('id="by-key"')[1]


def test_random_periods_sum_like_the_records(alice, bob):
    from apikeys.reports import Period, PeriodUsage

    now = timezone.now()
    chance = random.Random(3)
    DatabaseStore().add(
        [
            fields(chance.choice([alice, bob]), at=now - timedelta(minutes=chance.randrange(4000)))
            for _ in range(200)
        ]
    )
    for _ in range(10):
        start = now - timedelta(minutes=chance.randrange(4000))
        end = start + timedelta(minutes=chance.randrange(1, 3000))
        report = PeriodUsage(Period(start, end, ""), now=now)
        expected = UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end)
        assert report.totals()["requests"] == expected.count()
        assert report.totals()["total_tokens"] == (
            expected.aggregate(n=Sum("total_tokens"))["n"] or 0
        )
