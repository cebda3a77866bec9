"""`manage.py usage_digest`: each team's spend in the previous day or week, e-mailed."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from apikeys import periods
from apikeys.models import ApiKey, Team, UsageRecord
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme():
    team = Team.objects.create(
        name="acme", contact_emails="ops@acme.test", monthly_budget=Decimal("10.00")
    )
    for name in ("dave", "erin"):
        ApiKey.objects.create_key(name=name, team=team)
    return team


def spend(key_name, when, cost, model=LLAMA, tokens=100):
    key = ApiKey.objects.get(name=key_name)
    UsageRecord.objects.create(
        api_key=key,
        key_name=key.name,
        team=key.team,
        model=model,
        endpoint="chat.completions",
        total_tokens=tokens,
        cost=Decimal(cost),
        request_id=f"req_{key_name}_{when.timestamp()}",
        created_at=when,
    )


def yesterday(hours=12):
    return periods.start("day", timezone.now()) - timedelta(hours=24 - hours)


def test_the_daily_digest_mails_each_team_its_spend_of_yesterday_by_key_and_model(acme, mailoutbox):
    spend("dave", yesterday(9), "1.25")
    spend("dave", yesterday(10), "0.75")
    spend("dave", yesterday(11), "0.50", model="gpt-test-mini", tokens=40)
    spend("erin", yesterday(15), "2.00")
    # Today's, not yesterday's.
    spend("erin", timezone.now(), "5.00")

    call_command("usage_digest", "--daily")

    [message] = mailoutbox
    day = f"{yesterday():%Y-%m-%d}"
    assert message.subject == f"Usage of team acme on {day}: 4.50 USD"
    assert message.to == ["ops@acme.test"]
    assert f"Team acme spent 4.50 USD on {day} (UTC), in 4 requests and 340 tokens." in (
        message.body
    )
    assert f"  dave  {LLAMA}  2 requests  200 tokens  2.0000 USD" in message.body
    assert "  dave  gpt-test-mini  1 request  40 tokens  0.5000 USD" in message.body
    assert f"  erin  {LLAMA}  1 request  100 tokens  2.0000 USD" in message.body
    assert "  month  " in message.body
    assert " of 10.00 USD (" in message.body


def test_teams_without_contacts_or_usage_are_not_written_to(acme, mailoutbox, capsys):
    quiet = Team.objects.create(name="quiet", contact_emails="quiet@example.test")
    mute = Team.objects.create(name="mute")
    ApiKey.objects.create_key(name="frank", team=mute)
    spend("frank", yesterday(), "1.00")
    assert quiet.contacts()

    call_command("usage_digest", "--daily")

    assert mailoutbox == []
    assert "Sent the daily digest to 0 teams" in capsys.readouterr().out


def test_the_weekly_digest_covers_the_week_before_this_one(acme, mailoutbox):
    this_week = periods.start("week", timezone.now())
    spend("dave", this_week - timedelta(days=6, hours=20), "1.00")
    spend("dave", this_week - timedelta(hours=1), "2.00")
    spend("dave", this_week - timedelta(days=7, hours=1), "4.00")

    call_command("usage_digest", "--weekly")

    [message] = mailoutbox
    start = this_week - timedelta(days=7)
    assert message.subject == f"Usage of team acme in the week from {start:%Y-%m-%d}: 3.00 USD"


def test_it_asks_for_daily_or_weekly():
    with pytest.raises(CommandError):
        call_command("usage_digest")
