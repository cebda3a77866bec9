"""Hourly rollups (apikeys/rollups.py): written with the records by the usage writer's store,
rebuilt from the records by manage.py rebuild_rollups, and the sums the limits read.

Concurrent writers in several processes on PostgreSQL: tests/integration/test_usage_scale.py.
"""

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import IntegrityError
from django.db.models import Count, Q, Sum

from apikeys.models import Team, UsageRecord, UsageRollup
from apikeys.rollups import usage_sums
from apikeys.writer import DatabaseStore
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 30, 11, 40, tzinfo=UTC)
STATUSES = [UsageRecord.OK, UsageRecord.OK, UsageRecord.UPSTREAM_ERROR, UsageRecord.CLIENT_CLOSED]


def fields(persona, *, at, model=LLAMA, status=UsageRecord.OK, tokens=(10, 5), cost="0.00012345"):
    prompt, completion = tokens
    return {
        "api_key": persona.key,
        "key_name": persona.key.name,
        "team_id": persona.key.team_id,
        "model": model,
        "endpoint": "chat.completions",
        "status": status,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cached_tokens": prompt // 2,
        "units": prompt + completion,
        "cost": Decimal(cost),
        "latency_ms": 120,
        "time_to_first_token_ms": 30 if status == UsageRecord.OK else None,
        "request_id": f"req-{random.getrandbits(64):x}",
        "created_at": at,
    }


def many(alice, bob, count, seed=7, days=3):
    """Records of both keys over the last `days` days, in random moments, models and
    outcomes."""
    chance = random.Random(seed)
    return [
        fields(
            chance.choice([alice, bob]),
            at=NOW - timedelta(seconds=chance.randrange(days * 24 * 3600)),
            model=chance.choice([LLAMA, "echo"]),
            status=chance.choice(STATUSES),
            tokens=(chance.randrange(1, 5000), chance.randrange(0, 2000)),
            cost=f"0.{chance.randrange(10**8):08d}",
        )
        for _ in range(count)
    ]


def records_summed():
    """Sums of the raw records per hour, key, model and status, as the rollups hold them."""
    rows = {}
    for record in UsageRecord.objects.all():
        hour = record.created_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        key = (hour, record.key_name, record.model, record.status)
        row = rows.setdefault(key, [0, 0, 0, 0, Decimal(0), 0, 0])
        row[0] += 1
        row[1] += record.prompt_tokens
        row[2] += record.completion_tokens
        row[3] += record.cached_tokens
        row[4] += record.cost
        row[5] += record.latency_ms
        row[6] += record.time_to_first_token_ms is not None
    return rows


def rollups_summed():
    return {
        (r.hour, r.key_name, r.model, r.status): [
            r.requests,
            r.prompt_tokens,
            r.completion_tokens,
            r.cached_tokens,
            r.cost,
            r.latency_ms,
            r.first_token_count,
        ]
        for r in UsageRollup.objects.all()
    }


def test_the_writer_adds_each_batch_to_the_hourly_rollups_to_the_cent(alice, bob):
    store = DatabaseStore()
    batch = many(alice, bob, 300)
    for start in range(0, len(batch), 50):
        store.add(batch[start : start + 50])
    store.add_one(fields(alice, at=NOW))

    assert UsageRollup.objects.count() < UsageRecord.objects.count()
    assert rollups_summed() == records_summed()
    assert (
        UsageRollup.objects.aggregate(cost=Sum("cost"))["cost"]
        == UsageRecord.objects.aggregate(cost=Sum("cost"))["cost"]
    )


def test_a_failed_batch_leaves_neither_records_nor_rollups(alice):
    store = DatabaseStore()
    broken = [fields(alice, at=NOW), {**fields(alice, at=NOW), "model": None}]

    with pytest.raises(IntegrityError):
        store.add(broken)

    assert UsageRecord.objects.count() == 0
    assert UsageRollup.objects.count() == 0


def test_errors_count_every_status_but_ok(alice):
    store = DatabaseStore()
    store.add([fields(alice, at=NOW, status=status) for status in STATUSES])

    assert UsageRollup.objects.aggregate(errors=Sum("errors"))["errors"] == 2
    assert UsageRecord.objects.filter(~Q(status=UsageRecord.OK)).count() == 2


def test_a_teams_usage_is_rolled_up_under_its_team(alice, bob):
    team = Team.objects.create(name="research")
    alice.key.team = team
    alice.key.save()
    DatabaseStore().add([fields(alice, at=NOW), fields(bob, at=NOW)])

    assert dict(UsageRollup.objects.values_list("key_name", "team__name")) == {
        "alice": "research",
        "bob": None,
    }


def test_rebuilding_gives_back_the_same_rollups(alice, bob):
    DatabaseStore().add(many(alice, bob, 200))
    before = rollups_summed()
    UsageRollup.objects.update(requests=0, cost=0)

    out = StringIO()
    call_command("rebuild_rollups", stdout=out)

    assert rollups_summed() == before == records_summed()
    assert "Rebuilt" in out.getvalue()


def test_rebuilding_since_a_moment_leaves_earlier_hours_alone(alice, bob):
    DatabaseStore().add(many(alice, bob, 200))
    UsageRollup.objects.update(requests=0)
    since = NOW - timedelta(days=1)

    call_command("rebuild_rollups", "--since", since.isoformat(), stdout=StringIO())

    rebuilt = UsageRollup.objects.filter(hour__gte=since - timedelta(hours=1))
    assert rebuilt.filter(requests=0).count() == 0
    assert UsageRollup.objects.filter(hour__lt=since - timedelta(hours=1), requests=0).exists()


def test_usage_sums_read_rollups_for_whole_hours_and_records_for_the_partial_ones(alice, bob):
    DatabaseStore().add(many(alice, bob, 300))
    since = NOW - timedelta(hours=30, minutes=17)

    sums = usage_sums(api_key=alice.key, since=since, now=NOW)

    expected = UsageRecord.objects.filter(api_key=alice.key, created_at__gte=since).aggregate(
        requests=Count("id"), total_tokens=Sum("total_tokens"), cost=Sum("cost")
    )
    assert sums == expected


def test_usage_sums_of_a_team_count_its_keys(alice, bob, carol):
    team = Team.objects.create(name="research")
    for persona in (alice, bob):
        persona.key.team = team
        persona.key.save()
    DatabaseStore().add(
        [fields(p, at=NOW - timedelta(hours=h)) for p in (alice, bob, carol) for h in (0, 3)]
    )

    assert usage_sums(team=team, since=NOW - timedelta(days=1), now=NOW)["requests"] == 4
