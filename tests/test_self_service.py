"""GET /v1/key and GET /v1/usage: a key holder reads their own key, limits and usage."""

import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import django_ratelimit.core
import pytest
from django.core.management import call_command
from django.utils import timezone

from apikeys import periods, retention, self_service, throttling
from apikeys.models import ApiKey, Team, UsageRecord
from apikeys.writer import DatabaseStore
from tests.clock import FakeClock
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db

# A Wednesday, far from the ends of its week and month.
NOV_4 = datetime(2026, 11, 4, tzinfo=UTC)


def record(persona_key, *, at, model=LLAMA, prompt=3, completion=4, cost="0", **fields):
    # Through the usage writer's store, which keeps the hourly rollups usage_report reads.
    return DatabaseStore().add_one(
        dict(
            api_key=persona_key,
            key_name=persona_key.name,
            team=persona_key.team,
            model=model,
            endpoint=fields.pop("endpoint", "chat.completions"),
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            cost=Decimal(cost),
            request_id=f"req-{UsageRecord.objects.count()}",
            created_at=at,
            **fields,
        )
    )


@pytest.fixture
def research(alice, carol):
    """Alice's key with limits of its own, in the team "research" with Carol's key."""
    team = Team.objects.create(name="research", weekly_budget=Decimal("100"))
    team.lifetime_budget = Decimal("500")
    team.save()
    ApiKey.objects.filter(pk__in=[alice.key.pk, carol.key.pk]).update(team=team)
    ApiKey.objects.filter(pk=alice.key.pk).update(
        rate_limit="5/m",
        tokens_per_minute=2000,
        tokens_per_day=100_000,
        daily_budget=Decimal("2"),
        monthly_budget=Decimal("25"),
        allowed_models=[LLAMA],
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
    )
    alice.key.refresh_from_db()
    carol.key.refresh_from_db()
    return team


def get_key(client, persona):
    return client.get("/v1/key", headers=persona.headers)


def get_usage(client, persona, **query):
    return client.get("/v1/usage", query, headers=persona.headers)


def usage_report_json(*args):
    out = StringIO()
    call_command("usage_report", "--json", *args, stdout=out)
    return json.loads(out.getvalue())


# GET /v1/key


def test_it_describes_the_calling_key_with_its_limits(client, alice, research, clock):
    response = get_key(client, alice)

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "api_key"
    assert body["name"] == "alice"
    assert body["prefix"] == alice.secret[: len(alice.key.prefix)]
    assert body["permissions"] == "read-write"
    assert body["state"] == "active"
    assert body["team"] == "research"
    assert body["allowed_models"] == [LLAMA]
    assert body["expires_at"] == "2030-01-01T00:00:00Z"
    assert body["rotation"] is None
    assert body["rate_limit"] == "5/m"
    requests = body["request_window"]
    # This request is the first of its window.
    assert {name: requests[name] for name in ["per", "limit", "used", "remaining"]} == {
        "per": "minute",
        "limit": 5,
        "used": 1,
        "remaining": 4,
    }
    assert 0 < requests["resets_in_seconds"] <= 60
    assert requests["resets_at"] == _iso(clock.now + requests["resets_in_seconds"])
    assert body["token_windows"] == [
        {
            "per": "minute",
            "limit": 2000,
            "used": 0,
            "remaining": 2000,
            "resets_in_seconds": 59.0,
            "resets_at": _iso(clock.now + 59),
        },
        {
            "per": "day",
            "limit": 100_000,
            "used": 0,
            "remaining": 100_000,
            "resets_in_seconds": 86400 - clock.now % 86400,
            "resets_at": _iso(clock.now // 86400 * 86400 + 86400),
        },
    ]


def test_it_tells_the_key_and_its_team_what_is_spent_of_each_budget(
    client, alice, carol, research, clock
):
    now = datetime.fromtimestamp(clock.now, UTC)
    record(alice.key, at=now - timedelta(seconds=1), cost="0.50")
    # Carol's request is the team's spend, not Alice's.
    record(carol.key, at=now - timedelta(seconds=1), cost="1.25")
    # Before this month and this week: the team's lifetime only.
    record(carol.key, at=periods.start("month", now) - timedelta(days=8), cost="10")

    budgets = get_key(client, alice).json()["budgets"]

    assert budgets["key"] == [
        {
            "period": "day",
            "limit_usd": 2.0,
            "spent_usd": 0.5,
            "reserved_usd": 0.0,
            "remaining_usd": 1.5,
            "resets_at": _iso(periods.end("day", now)),
        },
        {
            "period": "month",
            "limit_usd": 25.0,
            "spent_usd": 0.5,
            "reserved_usd": 0.0,
            "remaining_usd": 24.5,
            "resets_at": _iso(periods.end("month", now)),
        },
    ]
    assert budgets["team"] == [
        {
            "period": "week",
            "limit_usd": 100.0,
            "spent_usd": 1.75,
            "reserved_usd": 0.0,
            "remaining_usd": 98.25,
            "resets_at": _iso(periods.end("week", now)),
        },
        {
            "period": "lifetime",
            "limit_usd": 500.0,
            "spent_usd": 11.75,
            "reserved_usd": 0.0,
            "remaining_usd": 488.25,
            "resets_at": None,
        },
    ]


def test_an_overspent_budget_has_nothing_remaining(client, alice, research, clock):
    record(alice.key, at=datetime.fromtimestamp(clock.now, UTC), cost="3")

    day = get_key(client, alice).json()["budgets"]["key"][0]

    assert (day["period"], day["spent_usd"], day["remaining_usd"]) == ("day", 3.0, 0.0)


def test_a_key_without_limits_or_team_has_none_to_report(client, alice):
    body = get_key(client, alice).json()

    assert body["team"] is None
    assert body["allowed_models"] == []
    assert body["token_windows"] == []
    assert body["budgets"] == {"key": [], "team": None}


def test_a_read_only_key_may_read_itself_and_its_usage(client, bob):
    key = get_key(client, bob)
    usage = get_usage(client, bob)

    assert key.status_code == 200
    assert key.json()["permissions"] == "read"
    assert usage.status_code == 200


def test_a_rotated_key_tells_until_when_its_old_secret_works_and_when_it_is_due(client, alice):
    alice.key.rotate_every_days = 30
    alice.key.save()
    new_secret = alice.key.rotate(timedelta(hours=24))

    response = client.get("/v1/key", headers={"Authorization": f"Bearer {new_secret}"})

    rotation = response.json()["rotation"]
    rotated_at = datetime.fromisoformat(rotation["rotated_at"])
    assert datetime.fromisoformat(rotation["previous_secret_valid_until"]) == rotated_at + (
        timedelta(hours=24)
    )
    assert datetime.fromisoformat(rotation["rotation_due_at"]) == rotated_at + timedelta(days=30)
    assert (rotation["rotate_every_days"], rotation["rotation_due"]) == (30, False)


def test_a_revoked_key_is_refused(client, alice):
    alice.key.revoke()

    for response in [get_key(client, alice), get_usage(client, alice)]:
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"


def test_reading_the_key_and_its_usage_spends_nothing(client, alice, research, clock):
    for _ in range(2):
        get_key(client, alice)
        get_usage(client, alice)

    body = get_key(client, alice).json()

    assert not UsageRecord.objects.exists()
    assert [window["used"] for window in body["token_windows"]] == [0, 0]
    assert [budget["spent_usd"] for budget in body["budgets"]["key"]] == [0, 0]


def test_reads_of_the_key_count_against_its_rate_limit(client, alice, research, clock):
    statuses = [get_key(client, alice).status_code for _ in range(5)]
    refused = get_usage(client, alice)

    assert statuses == [200] * 5
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"


def test_only_get_is_allowed(client, alice):
    response = client.post("/v1/key", headers=alice.headers)

    assert response.status_code == 405
    assert response["Allow"] == "GET"


# GET /v1/usage


@pytest.fixture
def november(alice, bob):
    """Alice's requests on 2 and 3 November 2026, and one of Bob's."""
    record(alice.key, at=datetime(2026, 11, 2, 9, 15, tzinfo=UTC), cost="0.001")
    record(alice.key, at=datetime(2026, 11, 2, 9, 45, tzinfo=UTC), prompt=10, completion=20)
    record(alice.key, at=datetime(2026, 11, 2, 23, 30, tzinfo=UTC), model="echo")
    record(
        alice.key,
        at=datetime(2026, 11, 3, 12, 0, tzinfo=UTC),
        model="echo",
        endpoint="embeddings",
        cost="0.5",
    )
    record(bob.key, at=datetime(2026, 11, 2, 10, 0, tzinfo=UTC), prompt=1000)


def test_it_sums_the_keys_usage_per_day(client, alice, november):
    response = get_usage(client, alice, start="2026-11-01", end="2026-11-04")

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "page"
    assert body["has_more"] is False
    assert body["next_page"] is None
    assert [(b["object"], b["start_time"], b["end_time"]) for b in body["data"]] == [
        ("bucket", _ts(2026, 11, 1), _ts(2026, 11, 2)),
        ("bucket", _ts(2026, 11, 2), _ts(2026, 11, 3)),
        ("bucket", _ts(2026, 11, 3), _ts(2026, 11, 4)),
    ]
    assert [b["results"] for b in body["data"]] == [
        [],
        [
            {
                "object": "usage.result",
                "requests": 3,
                "prompt_tokens": 16,
                "completion_tokens": 28,
                "total_tokens": 44,
                "cost": 0.001,
                "model": None,
                "endpoint": None,
            }
        ],
        [
            {
                "object": "usage.result",
                "requests": 1,
                "prompt_tokens": 3,
                "completion_tokens": 4,
                "total_tokens": 7,
                "cost": 0.5,
                "model": None,
                "endpoint": None,
            }
        ],
    ]


def test_it_groups_usage_by_model_and_endpoint(client, alice, november):
    body = get_usage(
        client, alice, start="2026-11-02", end="2026-11-04", group_by="model,endpoint"
    ).json()

    assert [
        [(r["model"], r["endpoint"], r["requests"], r["total_tokens"]) for r in b["results"]]
        for b in body["data"]
    ] == [
        [(LLAMA, "chat.completions", 2, 37), ("echo", "chat.completions", 1, 7)],
        [("echo", "embeddings", 1, 7)],
    ]


def test_group_by_may_be_repeated(client, alice, november):
    repeated = client.get(
        "/v1/usage?start=2026-11-02&end=2026-11-04&group_by=model&group_by=endpoint",
        headers=alice.headers,
    )
    joined = get_usage(
        client, alice, start="2026-11-02", end="2026-11-04", group_by="model,endpoint"
    )

    assert repeated.status_code == 200
    assert repeated.json() == joined.json()


def test_it_sums_usage_per_hour(client, alice, november):
    body = get_usage(
        client, alice, start="2026-11-02T09:00:00Z", end="2026-11-02T11:00:00Z", bucket="hour"
    ).json()

    assert [(b["start_time"], b["end_time"]) for b in body["data"]] == [
        (_ts(2026, 11, 2, 9), _ts(2026, 11, 2, 10)),
        (_ts(2026, 11, 2, 10), _ts(2026, 11, 2, 11)),
    ]
    assert [[r["requests"] for r in b["results"]] for b in body["data"]] == [[2], []]


def test_buckets_are_cut_at_the_ends_of_the_range(client, alice, november):
    start, end = _ts(2026, 11, 2, 9, 30), _ts(2026, 11, 3, 6)

    body = get_usage(client, alice, start=str(start), end=str(end)).json()

    assert [(b["start_time"], b["end_time"]) for b in body["data"]] == [
        (start, _ts(2026, 11, 3)),
        (_ts(2026, 11, 3), end),
    ]
    # Only the 9:45 and 23:30 requests are in the range.
    assert [[r["requests"] for r in b["results"]] for b in body["data"]] == [[2], []]


def test_days_are_those_of_the_limits_time_zone(client, alice, november, settings):
    settings.LIMITS_TIME_ZONE = "Europe/Paris"

    body = get_usage(client, alice, start="2026-11-02", end="2026-11-04").json()

    paris = periods.zone()
    assert [b["start_time"] for b in body["data"]] == [
        int(datetime(2026, 11, 2, tzinfo=paris).timestamp()),
        int(datetime(2026, 11, 3, tzinfo=paris).timestamp()),
    ]
    # 23:30 UTC on 2 November is 00:30 on the 3rd in Paris.
    assert [[r["requests"] for r in b["results"]] for b in body["data"]] == [[2], [2]]


def test_moments_may_be_written_with_an_offset_even_with_the_plus_unescaped(
    client, alice, november
):
    # "+01:00" in a query string reaches the server as " 01:00" unless escaped as %2B.
    response = client.get(
        "/v1/usage?start=2026-11-02T10:00:00+01:00&end=2026-11-02T11:00:00%2B01:00&bucket=hour",
        headers=alice.headers,
    )

    assert response.status_code == 200
    assert [(b["start_time"], len(b["results"])) for b in response.json()["data"]] == [
        (_ts(2026, 11, 2, 9), 1)
    ]


def test_it_reports_the_last_seven_days_by_default(client, alice):
    now = timezone.now()
    record(alice.key, at=now - timedelta(days=6, hours=23))
    record(alice.key, at=now - timedelta(days=7, hours=1))

    body = get_usage(client, alice).json()

    assert len(body["data"]) in (7, 8)
    assert body["data"][-1]["end_time"] == pytest.approx(now.timestamp(), abs=60)
    assert body["data"][0]["start_time"] == pytest.approx(
        (now - timedelta(days=7)).timestamp(), abs=60
    )
    assert sum(r["requests"] for b in body["data"] for r in b["results"]) == 1


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"start": "yesterday"}, "start"),
        ({"start": "2026-13-01"}, "start"),
        ({"end": "2026-11-31T25:00"}, "end"),
        ({"start": "99999999999999999999"}, "start"),
        ({"start": "2026-11-04", "end": "2026-11-04"}, "end"),
        ({"start": "2026-11-04", "end": "2026-11-01"}, "end"),
        ({"start": "2025-01-01", "end": "2026-01-03"}, "start"),
        ({"start": "2026-10-01", "end": "2026-11-02", "bucket": "hour"}, "start"),
        ({"bucket": "week"}, "bucket"),
        ({"group_by": "user"}, "group_by"),
        ({"group_by": "model,"}, "group_by"),
    ],
)
def test_it_refuses_bad_input_naming_the_parameter(client, alice, query, param):
    response = get_usage(client, alice, **query)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param in error["message"]


def test_it_accepts_a_year_of_days_and_a_month_of_hours(client, alice):
    days = get_usage(client, alice, start="2025-01-01", end="2026-01-02")
    hours = get_usage(client, alice, start="2026-10-01", end="2026-11-01", bucket="hour")

    assert (days.status_code, len(days.json()["data"])) == (200, 366)
    assert (hours.status_code, len(hours.json()["data"])) == (200, 31 * 24)


def test_it_refuses_more_rows_than_it_answers_with(client, alice, november, monkeypatch):
    monkeypatch.setattr(self_service, "MAX_RESULTS", 2)

    response = get_usage(client, alice, start="2026-11-02", end="2026-11-04", group_by="model")

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "group_by"


def test_usage_agrees_with_the_usage_report(client, alice, bob):
    now = timezone.now()
    for days_ago, model, cost in [
        (1, LLAMA, "0.00000416"),
        (1, LLAMA, "0.125"),
        (3, "echo", "0"),
        (6, LLAMA, "2.5"),
        (12, LLAMA, "7"),
    ]:
        record(alice.key, at=now - timedelta(days=days_ago), model=model, cost=cost)
    record(bob.key, at=now - timedelta(days=1), cost="1")
    since = now - timedelta(days=7)

    body = get_usage(
        client,
        alice,
        start=since.isoformat(),
        end=(now + timedelta(minutes=1)).isoformat(),
        group_by="model",
    ).json()
    report = [row for row in usage_report_json("--days", "7") if row["key"] == "alice"]

    summed = {}
    for result in (result for bucket in body["data"] for result in bucket["results"]):
        row = summed.setdefault(result["model"], {"key": "alice", "model": result["model"]})
        for field in ["requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost"]:
            row[field] = row.get(field, 0) + result[field]
    assert len(report) == 2
    assert sorted(summed.values(), key=lambda row: row["model"]) == [
        {**row, "cost": pytest.approx(row["cost"], abs=1e-8)} for row in report
    ]


def test_usage_older_than_the_records_kept_is_read_from_the_rollups(client, alice, settings):
    now = timezone.now()
    settings.USAGE_RETENTION_DAYS = 90
    long_ago = (now - timedelta(days=200)).replace(hour=10, minute=5)
    record(alice.key, at=long_ago, cost="0.25")
    record(alice.key, at=long_ago + timedelta(hours=3), cost="0.5")
    retention.prune(now=now)
    assert not UsageRecord.objects.exists()

    body = get_usage(
        client,
        alice,
        start=(long_ago - timedelta(days=3)).isoformat(),
        end=(long_ago + timedelta(days=3)).isoformat(),
    ).json()

    results = [result for bucket in body["data"] for result in bucket["results"]]
    assert [(r["requests"], r["cost"]) for r in results] == [(2, 0.75)]


def test_days_of_a_zone_of_half_hours_are_cut_at_its_own_midnight(client, alice, settings):
    # India is 5:30 ahead of UTC: 18:15 and 18:45 UTC fall in one UTC hour but on two of
    # its days, so its days cannot be summed from hourly rollups.
    settings.LIMITS_TIME_ZONE = "Asia/Kolkata"
    record(alice.key, at=datetime(2026, 11, 2, 18, 15, tzinfo=UTC))
    record(alice.key, at=datetime(2026, 11, 2, 18, 45, tzinfo=UTC), prompt=100)

    body = get_usage(client, alice, start="2026-11-02", end="2026-11-04").json()

    assert [[r["prompt_tokens"] for r in b["results"]] for b in body["data"]] == [[3], [100]]


def test_days_of_a_zone_of_whole_hours_agree_with_the_records(client, alice, settings):
    settings.LIMITS_TIME_ZONE = "America/New_York"
    start = datetime(2026, 10, 20, tzinfo=UTC)
    for hours in range(0, 24 * 20, 7):
        record(alice.key, at=start + timedelta(hours=hours, minutes=hours % 60), prompt=hours)

    body = get_usage(client, alice, start="2026-10-21", end="2026-11-06").json()

    zone = periods.zone()
    # 21 October to 5 November, both included, in New York.
    assert len(body["data"]) == 16
    for bucket in body["data"]:
        first = datetime.fromtimestamp(bucket["start_time"], UTC)
        following = datetime.fromtimestamp(bucket["end_time"], UTC)
        assert first.astimezone(zone).hour == 0
        expected = UsageRecord.objects.filter(created_at__gte=first, created_at__lt=following)
        assert sum(r["requests"] for r in bucket["results"]) == expected.count()
        assert sum(r["prompt_tokens"] for r in bucket["results"]) == sum(
            expected.values_list("prompt_tokens", flat=True)
        )


def _ts(*parts):
    return int(datetime(*parts, tzinfo=UTC).timestamp())


def _iso(moment):
    """Write a moment (aware datetime or epoch seconds) as Django's JSON encoder does."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    text = moment.isoformat()
    return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text


class _TickingClock(FakeClock):
    """A clock that django-ratelimit sees move on each time it reads it."""

    def time(self):
        self.advance(0.002)
        return self.now


def test_a_window_that_ends_while_it_is_read_resets_now_not_in_the_past(client, alice, monkeypatch):
    # django-ratelimit reads the clock twice (the window, then the time left): when a second
    # ends between the two, it says the window ended a second ago. The CI's fuzzer saw
    # "resets_in_seconds": -0.001 from a key limited per second.
    ApiKey.objects.filter(pk=alice.key.pk).update(rate_limit="100/s")
    # Its fourth reading is the first of the next second: the second of the two that
    # /v1/key's own look at the window makes (admission made the first two).
    edge = time.time() // 60 * 60 + 1
    ticking = _TickingClock(edge - 0.007)
    monkeypatch.setattr(throttling, "timer", ticking)
    monkeypatch.setattr(ApiKey, "timer", ticking)
    monkeypatch.setattr(django_ratelimit.core, "time", ticking)

    window = get_key(client, alice).json()["request_window"]

    assert window["per"] == "second"
    # The window it counted in ended at the edge just passed.
    assert window["resets_in_seconds"] == 0
    assert window["resets_at"] == _iso(edge)
