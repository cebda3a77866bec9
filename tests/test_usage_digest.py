"""`manage.py usage_digest`: each team's spend in the previous day or week, e-mailed."""

from datetime import timedelta
from decimal import Decimal
from smtplib import SMTPException

import pytest
from django.core.mail import EmailMessage
from django.core.management import CommandError, call_command
from django.utils import timezone

from alerts import digest
from alerts.digest import previous_period
from alerts.models import DigestDelivery
from apikeys import periods, retention
from apikeys.models import ApiKey, Team, UsageRecord
from apikeys.writer import DatabaseStore
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
    # Through the usage writer's store, which adds the rollups as the gateway does.
    DatabaseStore().add_one(
        dict(
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


def test_a_second_run_for_the_same_day_sends_nothing_again(acme, mailoutbox, capsys):
    spend("dave", yesterday(), "1.00")
    call_command("usage_digest", "--daily")

    call_command("usage_digest", "--daily")

    assert len(mailoutbox) == 1
    output = capsys.readouterr().out
    assert "Sent the daily digest to 0 teams" in output
    assert "Already sent to 1 team: acme (--force sends it again)" in output


def test_the_daily_and_the_weekly_digest_are_each_sent_once(acme, mailoutbox):
    spend("dave", yesterday(), "1.00")
    spend("dave", periods.start("week", timezone.now()) - timedelta(hours=1), "2.00")

    for _ in range(2):
        call_command("usage_digest", "--daily")
        call_command("usage_digest", "--weekly")

    subjects = sorted(message.subject for message in mailoutbox)
    assert len(subjects) == 2
    assert subjects[0].startswith("Usage of team acme in the week from")
    assert subjects[1].startswith("Usage of team acme on")


def test_force_sends_the_digest_again(acme, mailoutbox):
    spend("dave", yesterday(), "1.00")
    call_command("usage_digest", "--daily")

    call_command("usage_digest", "--daily", "--force")

    assert len(mailoutbox) == 2
    assert mailoutbox[0].subject == mailoutbox[1].subject
    [sent] = DigestDelivery.objects.all()
    assert sent.attempts == 2


def test_a_digest_whose_sending_failed_is_sent_by_the_next_run(acme, mailoutbox, monkeypatch):
    spend("dave", yesterday(), "1.00")
    send = EmailMessage.send

    def refused(message, *args, **kwargs):
        raise SMTPException("421 try again later")

    monkeypatch.setattr(EmailMessage, "send", refused)
    with pytest.raises(CommandError, match="acme: SMTPException: 421 try again later"):
        call_command("usage_digest", "--daily")
    monkeypatch.setattr(EmailMessage, "send", send)

    call_command("usage_digest", "--daily")

    [message] = mailoutbox
    assert message.to == ["ops@acme.test"]
    [sent] = DigestDelivery.objects.all()
    assert sent.sent_at is not None
    assert "421 try again later" in sent.error


def test_a_digest_left_unsent_by_a_run_that_died_is_sent_once_its_claim_is_old(
    acme, mailoutbox, capsys
):
    spend("dave", yesterday(), "1.00")
    start, _ = previous_period("day", timezone.now())
    # What a run leaves that dies between recording the digest and sending it.
    DigestDelivery.objects.create(
        team=acme, period="day", period_start=start, claimed_at=timezone.now(), attempts=1
    )
    call_command("usage_digest", "--daily")
    assert mailoutbox == []
    DigestDelivery.objects.update(claimed_at=timezone.now() - timedelta(hours=1))

    call_command("usage_digest", "--daily")

    assert len(mailoutbox) == 1
    assert DigestDelivery.objects.get().sent_at is not None


def test_the_admin_lists_the_digests_sent_and_lets_no_one_change_them(acme, admin_client):
    spend("dave", yesterday(), "1.00")
    call_command("usage_digest", "--daily")

    listing = admin_client.get("/admin/alerts/digestdelivery/")

    assert listing.status_code == 200
    assert "ops@acme.test" in listing.content.decode()
    assert admin_client.get("/admin/alerts/digestdelivery/add/").status_code == 403


def test_a_second_run_builds_no_digest_for_a_team_already_sent_it(acme, mailoutbox, monkeypatch):
    spend("dave", yesterday(), "1.00")
    call_command("usage_digest", "--daily")
    built = []
    build = digest.team_digest

    def counted(team, *args, **kwargs):
        built.append(team.name)
        return build(team, *args, **kwargs)

    monkeypatch.setattr(digest, "team_digest", counted)

    call_command("usage_digest", "--daily")

    assert built == []
    assert len(mailoutbox) == 1


def test_a_digest_of_a_day_whose_records_were_pruned_still_shows_its_usage(
    acme, mailoutbox, settings
):
    spend("dave", yesterday(9), "1.25")
    spend("erin", yesterday(15), "2.00")
    # The records are pruned; their rollups are kept (USAGE_ROLLUP_RETENTION_DAYS unset).
    settings.USAGE_RETENTION_DAYS = 1
    retention.prune(now=timezone.now() + timedelta(days=2))
    assert not UsageRecord.objects.exists()

    call_command("usage_digest", "--daily")

    [message] = mailoutbox
    day = f"{yesterday():%Y-%m-%d}"
    assert message.subject == f"Usage of team acme on {day}: 3.25 USD"
    assert f"  dave  {LLAMA}  1 request  100 tokens  1.2500 USD" in message.body
    assert f"  erin  {LLAMA}  1 request  100 tokens  2.0000 USD" in message.body


def test_a_digest_whose_building_failed_is_sent_by_the_next_run(acme, mailoutbox, monkeypatch):
    spend("dave", yesterday(), "1.00")
    build = digest.team_digest

    def failing(*args):
        raise OSError("the database went away")

    monkeypatch.setattr(digest, "team_digest", failing)
    with pytest.raises(CommandError, match="acme: OSError: the database went away"):
        call_command("usage_digest", "--daily")
    monkeypatch.setattr(digest, "team_digest", build)

    call_command("usage_digest", "--daily")

    [message] = mailoutbox
    assert "1.00 USD" in message.subject


def test_a_digest_in_a_zone_of_half_hours_counts_its_own_day_once_the_records_are_pruned(
    acme, mailoutbox, settings
):
    settings.LIMITS_TIME_ZONE = "Asia/Kolkata"
    start, end = previous_period("day", timezone.now())
    # Each in the half hour that begins or follows the day, in an hour it shares with
    # the day before or after.
    spend("dave", start - timedelta(minutes=10), "5.00")
    spend("dave", start + timedelta(minutes=10), "1.25")
    spend("erin", end - timedelta(minutes=10), "2.00")
    spend("erin", end + timedelta(minutes=10), "7.00")
    spend("erin", start + timedelta(hours=2), "0.50")
    settings.USAGE_RETENTION_DAYS = 1
    retention.prune(now=timezone.now() + timedelta(days=2))

    call_command("usage_digest", "--daily")

    [message] = mailoutbox
    # Nothing of the days before and after: the day's own half hours are pruned with the
    # records of their hours (the hourly rollups cannot be cut at the half hour).
    assert message.subject.endswith(": 0.50 USD")
    assert "dave" not in message.body
