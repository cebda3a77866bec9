"""manage.py usage_report, from usage records written directly."""

import json
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from apikeys.models import UsageRecord
from apikeys.writer import DatabaseStore
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db


def record(persona, model, *, prompt, completion, days_ago=1, status=UsageRecord.OK, cost="0"):
    return DatabaseStore().add_one(
        dict(
            cost=Decimal(cost),
            api_key=persona.key,
            key_name=persona.key.name,
            model=model,
            endpoint="chat.completions",
            status=status,
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            request_id=f"req-{UsageRecord.objects.count()}",
            created_at=timezone.now() - timedelta(days=days_ago),
        )
    )


def usage_report(*args):
    out = StringIO()
    call_command("usage_report", *args, stdout=out)
    return out.getvalue()


def report_json(*args):
    return json.loads(usage_report("--json", *args))


@pytest.fixture
def usage(alice, bob):
    """Alice used llama three times (one failed) and echo once; Bob used echo once."""
    record(alice, LLAMA, prompt=10, completion=20)
    record(alice, LLAMA, prompt=5, completion=7, days_ago=12)
    record(alice, LLAMA, prompt=3, completion=0, status=UsageRecord.UPSTREAM_ERROR)
    record(alice, "echo", prompt=2, completion=2)
    record(bob, "echo", prompt=1000, completion=234)


def test_json_sums_requests_and_tokens_per_key_and_model(usage):
    assert report_json() == [
        {
            "key": "alice",
            "model": LLAMA,
            "requests": 3,
            "prompt_tokens": 18,
            "completion_tokens": 27,
            "total_tokens": 45,
            "cost": 0.0,
        },
        {
            "key": "alice",
            "model": "echo",
            "requests": 1,
            "prompt_tokens": 2,
            "completion_tokens": 2,
            "total_tokens": 4,
            "cost": 0.0,
        },
        {
            "key": "bob",
            "model": "echo",
            "requests": 1,
            "prompt_tokens": 1000,
            "completion_tokens": 234,
            "total_tokens": 1234,
            "cost": 0.0,
        },
    ]


def test_json_sums_the_cost_of_each_key_and_model_in_usd(alice):
    record(alice, "echo", prompt=1, completion=1, cost="0.00000472")
    record(alice, "echo", prompt=1, completion=1, cost="1.25000001")

    assert report_json()[0]["cost"] == 1.25000473


def test_the_table_shows_the_cost_and_its_total(alice, bob):
    record(alice, "echo", prompt=1, completion=1, cost="0.5")
    record(bob, "echo", prompt=1, completion=1, cost="1234.00004")

    lines = usage_report().splitlines()

    assert lines[2].split()[-2] == "0.5000"
    assert lines[3].split()[-2] == "1,234.0000"
    assert lines[-1].split()[-2] == "1,234.5000"


def test_it_leaves_out_records_older_than_the_window(alice, usage):
    record(alice, "echo", prompt=100, completion=100, days_ago=31)

    rows = report_json("--days", "30")

    alice_echo = next(r for r in rows if r["key"] == "alice" and r["model"] == "echo")
    assert alice_echo["requests"] == 1
    assert alice_echo["total_tokens"] == 4


def test_days_narrows_the_window(usage):
    rows = report_json("--days", "7")

    alice_llama = next(r for r in rows if r["key"] == "alice" and r["model"] == LLAMA)
    assert alice_llama["requests"] == 2
    assert alice_llama["prompt_tokens"] == 13


def test_the_default_window_is_30_days(alice):
    record(alice, "echo", prompt=1, completion=1, days_ago=29)
    record(alice, "echo", prompt=1, completion=1, days_ago=31)

    assert [r["requests"] for r in report_json()] == [1]


def test_usage_of_a_deleted_key_still_reports_under_its_name(alice, usage):
    alice.key.delete()

    rows = report_json()

    assert {(r["key"], r["model"]) for r in rows} == {
        ("alice", LLAMA),
        ("alice", "echo"),
        ("bob", "echo"),
    }


def test_json_is_an_empty_list_without_usage(db):
    assert report_json() == []


def test_the_table_shows_each_key_and_model_with_errors(usage):
    lines = usage_report().splitlines()

    assert lines[0].startswith("Usage in the last 30 days")
    assert lines[1].split() == [
        "KEY",
        "MODEL",
        "REQUESTS",
        "PROMPT",
        "TOKENS",
        "COMPLETION",
        "TOKENS",
        "TOTAL",
        "TOKENS",
        "COST",
        "(USD)",
        "ERRORS",
    ]
    assert lines[2].split() == ["alice", LLAMA, "3", "18", "27", "45", "0.0000", "1"]
    assert lines[3].split() == ["alice", "echo", "1", "2", "2", "4", "0.0000", "0"]
    assert lines[4].split() == ["bob", "echo", "1", "1,000", "234", "1,234", "0.0000", "0"]


def test_the_table_ends_with_a_total_line(usage):
    last = usage_report().splitlines()[-1]

    assert last.split() == ["Total", "5", "1,020", "263", "1,283", "0.0000", "1"]


def test_the_table_aligns_numbers_to_the_right(usage):
    lines = usage_report().splitlines()[1:]

    ends = {len(line) for line in lines}
    assert len(ends) == 1
    errors_column = lines[0].index("ERRORS") + len("ERRORS")
    assert all(line[errors_column - 1].isdigit() for line in lines[1:] if line[0] != "-")


def test_every_status_but_ok_counts_as_an_error(alice):
    for status in [UsageRecord.CLIENT_ERROR, UsageRecord.UPSTREAM_ERROR, UsageRecord.CLIENT_CLOSED]:
        record(alice, "echo", prompt=1, completion=0, status=status)
    record(alice, "echo", prompt=1, completion=1)

    assert usage_report().splitlines()[2].split()[-1] == "3"


def test_the_table_says_when_there_is_no_usage(db):
    assert usage_report().startswith("No usage in the last 30 days")


@pytest.mark.parametrize("days", ["0", "-3"])
def test_it_refuses_a_window_of_no_days(days):
    with pytest.raises(CommandError, match="--days"):
        usage_report("--days", days)


def test_it_refuses_days_that_are_not_a_number():
    with pytest.raises(CommandError, match="--days"):
        usage_report("--days", "a week")
