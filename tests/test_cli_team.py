"""Teams from the shell: `team create | list`, keys made in a team with `apikey create
--team`, and `usage_report --by team`."""

import json
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from apikeys.models import ApiKey, Team, UsageRecord
from apikeys.writer import DatabaseStore

pytestmark = pytest.mark.django_db


def run(*args):
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.fixture
def red():
    return Team.objects.create(name="red", monthly_budget=Decimal(100))


def record(key, *, cost, tokens, team=None):
    # Through the usage writer's store, which keeps the hourly rollups reports read.
    return DatabaseStore().add_one(
        dict(
            api_key=key,
            key_name=key.name,
            team=team if team is not None else key.team,
            model="echo",
            endpoint="/v1/chat/completions",
            prompt_tokens=tokens,
            total_tokens=tokens,
            cost=Decimal(cost),
            request_id=f"req-{UsageRecord.objects.count()}",
            created_at=timezone.now() - timedelta(hours=1),
        )
    )


# apikey create --team, apikey list


def test_apikey_create_puts_the_key_in_the_team(red):
    out = run("apikey", "create", "--name", "ci", "--team", "red")

    assert ApiKey.objects.get(name="ci").team == red
    assert "team red" in out


def test_apikey_create_refuses_a_team_that_does_not_exist(red):
    with pytest.raises(CommandError, match="--team: no team is named 'green'"):
        run("apikey", "create", "--name", "ci", "--team", "green")

    assert not ApiKey.objects.exists()


def test_apikey_list_shows_each_keys_team(red, alice):
    ApiKey.objects.create_key(name="ci", team=red)

    lines = run("apikey", "list").splitlines()

    assert lines[0].split()[-1] == "TEAM"
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["ci"][-1] == "red"
    assert rows["alice"][-1] == "-"


# team create, team list


def test_team_create_sets_limits_and_members():
    User.objects.create_user("alice")
    User.objects.create_user("bob")

    out = run(
        "team",
        "create",
        "--name",
        "red",
        "--monthly-budget",
        "100",
        "--daily-budget",
        "10",
        "--tokens-per-minute",
        "2000",
        "--member",
        "alice",
        "--member",
        "bob",
    )

    team = Team.objects.get(name="red")
    assert (team.monthly_budget, team.daily_budget) == (Decimal(100), Decimal(10))
    assert team.tokens_per_minute == 2000
    assert sorted(team.members.values_list("username", flat=True)) == ["alice", "bob"]
    assert "Created team 'red'" in out


def test_team_create_refuses_a_member_who_is_no_user():
    with pytest.raises(CommandError, match="--member: no user is named 'mallory'"):
        run("team", "create", "--name", "red", "--member", "mallory")

    assert not Team.objects.exists()


def test_team_create_refuses_a_name_taken(red):
    with pytest.raises(CommandError, match="--name: a team named 'red' already exists"):
        run("team", "create", "--name", "red")


def test_team_list_shows_each_team_with_its_limits_members_and_keys(red):
    red.members.add(User.objects.create_user("alice"))
    ApiKey.objects.create_key(name="ci", team=red)
    Team.objects.create(name="blue")

    lines = run("team", "list").splitlines()

    assert lines[0].split() == ["NAME", "LIMITS", "MEMBERS", "KEYS"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["red"] == ["red", "100.00USD/month", "alice", "1"]
    assert rows["blue"] == ["blue", "-", "-", "0"]


# usage_report --by team


def test_usage_report_by_team_sums_each_teams_keys(red, alice):
    first, _ = ApiKey.objects.create_key(name="red-a", team=red)
    second, _ = ApiKey.objects.create_key(name="red-b", team=red)
    record(first, cost="1.25", tokens=100)
    record(second, cost="0.75", tokens=50)
    record(alice.key, cost="3", tokens=7)

    rows = json.loads(run("usage_report", "--by", "team", "--json"))

    assert [(r["team"], r["model"], r["requests"], r["total_tokens"]) for r in rows] == [
        (None, "echo", 1, 7),
        ("red", "echo", 2, 150),
    ]
    assert rows[1]["cost"] == 2.0


def test_usage_report_by_team_prints_a_table_with_a_team_column(red, alice):
    key, _ = ApiKey.objects.create_key(name="red-a", team=red)
    record(key, cost="1", tokens=100)
    record(alice.key, cost="0", tokens=7)

    lines = run("usage_report", "--by", "team").splitlines()

    assert lines[1].split()[:2] == ["TEAM", "MODEL"]
    teams = [line.split()[0] for line in lines[2:-2]]
    assert teams == ["(no", "red"]
    assert lines[-1].split()[0] == "Total"


def test_usage_report_by_key_is_the_default(red):
    key, _ = ApiKey.objects.create_key(name="red-a", team=red)
    record(key, cost="1", tokens=100)

    [row] = json.loads(run("usage_report", "--json"))

    assert row["key"] == "red-a"
