"""Budget alerts: each threshold once per budget period, by e-mail and signed webhook.

The requests go through the API to the fake upstream, as in production; alerts are sent
after the usage record is written, off the request, and `budget_alerts.settled()` waits for
them. Mail goes to Django's locmem backend (`mailoutbox`), webhooks to a loopback receiver
that checks each signature with its own code (tests/webhook_receiver.py).
"""

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.core import serializers
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from alerts import budgets
from alerts.budgets import BudgetAlerts, budget_alerts
from alerts.delivery import AlertSender
from alerts.models import BudgetAlert
from alerts.webhooks import sign, verify
from apikeys import periods
from apikeys.models import ApiKey, Team, UsageRecord
from completions.models import Model
from tests.conftest import LLAMA
from tests.limited_keys import chat
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.django_db(transaction=True)

CONCURRENT = 30
WEBHOOK_SECRET = "whsec-test-4f9c2a71d0b3e6a8"
# At the `dear` prices, each chat of tests/limited_keys.py costs 0.01 USD: 4 completion
# tokens at 2,500 USD per million, its prompt nothing. The chat asks for max_tokens=4, so
# the worst case a request reserves (apikeys/throttling.py) is its cost: as many requests
# are admitted together as the budget has room for, and they spend it all.
COST_PER_CHAT = Decimal("0.01")
DAY = 24 * 60 * 60


@pytest.fixture
def dear(cloudflare):
    Model.objects.filter(name=LLAMA).update(input_price=Decimal(0), output_price=Decimal("2500"))


@pytest.fixture
def alert_clock(clock, monkeypatch):
    """The limits' clock, also the alerts' and Django's (timezone.now(), which the alerts'
    periods read), so that moving it a day on starts a new budget day everywhere.

    Stopped at the last noon (UTC, the tests' LIMITS_TIME_ZONE), one second in: a test
    that moves it on by the sweep's delay stays in the budget day it started in.
    """
    clock.now = (clock.now - DAY // 2) // DAY * DAY + DAY // 2 + 1
    monkeypatch.setattr(BudgetAlerts, "timer", clock)
    monkeypatch.setattr(timezone, "now", lambda: datetime.fromtimestamp(clock.now, UTC))
    return clock


@pytest.fixture
def loopback_webhooks(settings):
    """Let webhooks reach the loopback receiver, and shorten the backoff to 10 ms."""
    settings.BUDGET_ALERT_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.BUDGET_ALERT_WEBHOOK_BACKOFF = 0.01


@pytest.fixture
def receiver():
    with WebhookReceiver(WEBHOOK_SECRET) as server:
        yield server


def make_team(receiver=None, **fields):
    team = Team(
        name="acme",
        contact_emails="ops@acme.test, finance@acme.test",
        webhook_url=receiver.url if receiver else "",
        webhook_secret=WEBHOOK_SECRET if receiver else "",
        **fields,
    )
    team.full_clean()
    team.save()
    return team


async def key_in(team, name="dave", **fields):
    _, secret = await sync_to_async(ApiKey.objects.create_key)(name=name, team=team, **fields)
    return {"Authorization": f"Bearer {secret}"}


async def chats(api, headers, count):
    responses = await asyncio.gather(*(chat(api, headers) for _ in range(count)))
    await budget_alerts.settled()
    return [response.status_code for response in responses]


async def alerts(**filters):
    return [
        alert
        async for alert in BudgetAlert.objects.filter(**filters).order_by("scope", "threshold")
    ]


async def spent(**filters):
    total = await UsageRecord.objects.filter(**filters).aaggregate(cost=Sum("cost"))
    return total["cost"] or Decimal(0)


async def test_thresholds_crossed_by_concurrent_requests_are_each_sent_exactly_once(
    api, dear, alert_clock, loopback_webhooks, receiver, mailoutbox
):
    team = await sync_to_async(make_team)(receiver, weekly_budget=Decimal("0.30"))
    # 30 chats spend 0.30 USD: every threshold of the team's 0.30. Three keys of the team
    # share them, so that checks of different keys race for the team's alerts; dave's 10
    # spend 0.10 USD, 50 % of his own 0.20 (no further).
    dave = await key_in(team, daily_budget=Decimal("0.20"), contact_emails="dave@acme.test")
    others = [await key_in(team, name=name) for name in ("erin", "frank")]

    responses = await asyncio.gather(
        *(chat(api, [dave, *others][number % 3]) for number in range(CONCURRENT))
    )
    await budget_alerts.settled()
    statuses = [response.status_code for response in responses]

    assert statuses.count(200) >= CONCURRENT * 9 // 10
    team_spent = await spent(team=team)
    expected = [t for t in (50, 80, 95, 100) if team_spent * 100 >= Decimal("0.30") * t]
    assert expected[:3] == [50, 80, 95]
    team_alerts = await alerts(scope=BudgetAlert.TEAM)
    assert [alert.threshold for alert in team_alerts] == expected
    assert {alert.period for alert in team_alerts} == {"week"}
    assert [alert.threshold for alert in await alerts(scope=BudgetAlert.KEY)] == [50]
    # One e-mail per alert, each to its holder's contacts.
    subjects = Counter(message.subject for message in mailoutbox)
    for threshold in expected:
        assert subjects[f"Team acme has spent {threshold}% of its weekly budget"] == 1
    assert subjects["API key dave has spent 50% of its daily budget"] == 1
    assert len(mailoutbox) == len(expected) + 1
    team_mail = next(m for m in mailoutbox if m.subject.startswith("Team acme has spent 80%"))
    assert team_mail.to == ["ops@acme.test", "finance@acme.test"]
    assert "of its 0.30 USD budget for the week from" in team_mail.body
    key_mail = next(m for m in mailoutbox if m.subject.startswith("API key dave"))
    assert key_mail.to == ["dave@acme.test"]
    # One webhook delivery per alert, team's and key's alike, each correctly signed.
    assert all(delivery["signed"] for delivery in receiver.deliveries)
    posted = Counter(
        (delivery["json"]["scope"], delivery["json"]["threshold_percent"])
        for delivery in receiver.deliveries
    )
    assert posted == Counter([("team", t) for t in expected] + [("key", 50)])
    first = next(d["json"] for d in receiver.deliveries if d["json"]["threshold_percent"] == 80)
    assert first["type"] == "budget.threshold_crossed"
    assert first["team"] == {"name": "acme"}
    assert (first["period"], first["budget_usd"]) == ("week", "0.30")
    assert Decimal(first["spent_usd"]) >= Decimal("0.24")
    for alert in await alerts():
        assert (alert.email_status, alert.webhook_status) == ("sent", "sent")
        assert alert.webhook_attempts == 1
        assert alert.sent_at is not None


async def test_thresholds_already_sent_are_not_sent_again_in_the_same_period(
    api, dear, alert_clock, mailoutbox
):
    team = await sync_to_async(make_team)(daily_budget=Decimal("0.10"))
    dave = await key_in(team)
    await chats(api, dave, 5)
    sent = len(mailoutbox)

    await chats(api, dave, 1)

    # 0.05 then 0.06 USD of 0.10: past 50 % both times.
    assert sent == 1
    assert len(mailoutbox) == 1
    assert [alert.threshold for alert in await alerts()] == [50]


async def test_a_new_period_sends_its_thresholds_again(api, dear, alert_clock, mailoutbox):
    team = await sync_to_async(make_team)(daily_budget=Decimal("0.02"))
    dave = await key_in(team)
    await chats(api, dave, 2)

    alert_clock.advance(DAY)
    await chats(api, dave, 2)

    by_day = Counter(alert.period_start for alert in await alerts(threshold=100))
    assert sorted(by_day.values()) == [1, 1]
    days = sorted(by_day)
    assert (days[1] - days[0]).total_seconds() == DAY
    assert [m.subject for m in mailoutbox].count(
        "Team acme has spent 100% of its daily budget"
    ) == 2


async def test_a_failing_webhook_is_retried_then_recorded_as_failed_and_requests_go_on(
    api, dear, alert_clock, loopback_webhooks, receiver, mailoutbox
):
    receiver.status = 500
    team = await sync_to_async(make_team)(
        receiver, daily_budget=Decimal("0.02"), alert_thresholds="50,100"
    )
    dave = await key_in(team)

    statuses = await chats(api, dave, 2)

    assert statuses == [200, 200]
    [half, whole] = await alerts()
    assert (half.threshold, whole.threshold) == (50, 100)
    for alert in (half, whole):
        assert alert.webhook_status == BudgetAlert.FAILED
        assert alert.webhook_attempts == 5
        assert "HTTP 500" in alert.error
        # The e-mail went all the same.
        assert alert.email_status == BudgetAlert.SENT
    assert len(receiver.deliveries) == 10
    # Every attempt carries the same delivery id, so that a receiver can drop repeats.
    ids = Counter(d["headers"]["X-Gateway-Delivery"] for d in receiver.deliveries)
    assert sorted(ids.values()) == [5, 5]


async def test_a_webhook_is_delivered_on_a_later_attempt(
    api, dear, alert_clock, loopback_webhooks, receiver
):
    receiver.first_answers = [503, 503]
    team = await sync_to_async(make_team)(
        receiver, lifetime_budget=Decimal("0.01"), alert_thresholds="100"
    )
    dave = await key_in(team)

    await chats(api, dave, 1)

    [alert] = await alerts()
    assert (alert.webhook_status, alert.webhook_attempts) == ("sent", 3)


async def test_a_webhook_to_an_internal_address_is_refused_without_being_posted(
    api, dear, alert_clock, receiver, mailoutbox
):
    # No BUDGET_ALERT_WEBHOOK_ALLOWED_NETWORKS: the loopback receiver is internal.
    team = await sync_to_async(make_team)(receiver, daily_budget=Decimal("0.01"))
    dave = await key_in(team)

    statuses = await chats(api, dave, 1)

    assert statuses == [200]
    alerts_sent = await alerts()
    assert alerts_sent
    for alert in alerts_sent:
        assert (alert.webhook_status, alert.webhook_attempts) == ("failed", 0)
        assert "internal address" in alert.error
        assert alert.email_status == "sent"
    assert receiver.deliveries == []


async def test_a_key_of_no_team_alerts_its_own_contacts_at_its_own_thresholds(
    api, dear, alert_clock, mailoutbox
):
    _, secret = await sync_to_async(ApiKey.objects.create_key)(
        name="dave",
        monthly_budget=Decimal("1.00"),
        alert_thresholds="1, 2",
        contact_emails="dave@example.test",
    )

    await chats(api, {"Authorization": f"Bearer {secret}"}, 2)

    # 0.022 USD of 1.00: past 1 % and 2 %, far from the default 50 %.
    assert [(a.threshold, a.webhook_status) for a in await alerts()] == [
        (1, "none"),
        (2, "none"),
    ]
    assert [m.to for m in mailoutbox] == [["dave@example.test"]] * 2


async def test_a_key_without_contacts_alerts_its_teams(api, dear, alert_clock, mailoutbox):
    team = await sync_to_async(make_team)()
    dave = await key_in(team, daily_budget=Decimal("0.01"), alert_thresholds="100")

    await chats(api, dave, 1)

    [message] = mailoutbox
    assert message.subject == "API key dave has spent 100% of its daily budget"
    assert message.to == ["ops@acme.test", "finance@acme.test"]


async def test_a_budget_with_no_one_to_tell_is_recorded_as_having_nowhere_to_send(
    api, dear, alert_clock, mailoutbox
):
    _, secret = await sync_to_async(ApiKey.objects.create_key)(
        name="dave", daily_budget=Decimal("0.01")
    )

    await chats(api, {"Authorization": f"Bearer {secret}"}, 1)

    assert {(a.email_status, a.webhook_status) for a in await alerts()} == {("none", "none")}
    assert mailoutbox == []


@pytest.mark.django_db(transaction=False)
def test_records_of_a_key_whose_team_has_no_budget_cost_no_query_for_alerts(
    django_assert_num_queries,
):
    team = Team.objects.create(name="acme", contact_emails="ops@acme.test")
    ApiKey.objects.create_key(name="dave", team=team)
    # As a request holds it: with its team (ApiKeyManager).
    key = ApiKey.objects.select_related("team").get(name="dave")

    async def records(count):
        for _ in range(count):
            budget_alerts.check_after(key)
        await budget_alerts.settled()

    with django_assert_num_queries(0):
        async_to_sync(records)(3)


async def test_a_burst_of_records_costs_a_check_a_second_and_still_sends_the_last_crossing(
    api, dear, alert_clock, mailoutbox, monkeypatch
):
    checked = []
    crossed = budgets._crossed

    async def counted(key_id, now):
        checked.append(key_id)
        return await crossed(key_id, now)

    monkeypatch.setattr(budgets, "_crossed", counted)
    # 100 chats of 0.01 USD: only the last one takes the team to 100 % of its budget.
    team = await sync_to_async(make_team)(daily_budget=Decimal("1.00"), alert_thresholds="100")
    dave = await key_in(team, rate_limit="1000/m")
    started = time.monotonic()

    statuses = [(await chat(api, dave)).status_code for _ in range(100)]
    await budget_alerts.settled()

    elapsed = time.monotonic() - started
    assert statuses == [200] * 100
    # Checks start CHECK_INTERVAL_SECONDS apart at least, the first at the first record.
    assert len(checked) <= elapsed // BudgetAlerts.interval + 1
    [alert] = await alerts()
    assert (alert.threshold, alert.spent) == (100, Decimal("1.00"))
    assert [m.subject for m in mailoutbox] == ["Team acme has spent 100% of its daily budget"]


def test_contact_emails_must_be_addresses(db):
    team = Team(name="acme", contact_emails="ops@acme.test, not-an-address")

    with pytest.raises(ValidationError) as error:
        team.full_clean()

    assert "not-an-address is not one" in str(error.value)


@pytest.mark.parametrize("thresholds", ["50,eighty", "0,50", "50,1001", ","])
def test_thresholds_must_be_percentages_from_1_to_1000(db, thresholds):
    key = ApiKey(name="dave", digest="x" * 64, alert_thresholds=thresholds)

    with pytest.raises(ValidationError) as error:
        key.full_clean()

    assert "alert_thresholds" in error.value.message_dict


def test_a_webhook_needs_a_secret(db):
    team = Team(name="acme", webhook_url="https://hooks.acme.test/budget")

    with pytest.raises(ValidationError) as error:
        team.full_clean()

    assert "webhook_secret" in error.value.message_dict


def test_the_webhook_secret_is_stored_encrypted(db):
    team = Team.objects.create(
        name="acme", webhook_url="https://hooks.acme.test/budget", webhook_secret=WEBHOOK_SECRET
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT webhook_secret FROM apikeys_team WHERE id = %s", [team.pk])
        [stored] = cursor.fetchone()

    assert WEBHOOK_SECRET not in stored
    assert Team.objects.get().webhook_secret == WEBHOOK_SECRET


def test_the_admin_never_shows_the_webhook_secret_and_keeps_it_when_left_empty(admin_client):
    team = Team.objects.create(
        name="acme", webhook_url="https://hooks.acme.test/budget", webhook_secret=WEBHOOK_SECRET
    )
    url = f"/admin/apikeys/team/{team.pk}/change/"

    page = admin_client.get(url)
    response = admin_client.post(
        url,
        {
            "name": "acme",
            "contact_emails": "ops@acme.test",
            "alert_thresholds": "80,100",
            "webhook_url": "https://hooks.acme.test/budget",
            "webhook_secret": "",
        },
    )

    assert page.status_code == 200
    assert WEBHOOK_SECRET not in page.content.decode()
    assert response.status_code == 302
    team.refresh_from_db()
    assert team.webhook_secret == WEBHOOK_SECRET
    assert team.alert_thresholds == "80,100"


def test_the_admin_lists_alerts_and_lets_no_one_change_them(admin_client, db):
    team = Team.objects.create(name="acme")
    alert = BudgetAlert.objects.create(
        scope=BudgetAlert.TEAM,
        holder_id=team.pk,
        holder_name="acme",
        team=team,
        period="month",
        period_start=datetime(2026, 11, 1, tzinfo=UTC),
        threshold=80,
        budget=Decimal("25.00"),
        spent=Decimal("20.5"),
        email_status=BudgetAlert.SENT,
        webhook_status=BudgetAlert.FAILED,
    )

    listing = admin_client.get("/admin/alerts/budgetalert/")
    change = admin_client.post(f"/admin/alerts/budgetalert/{alert.pk}/change/", {"threshold": 1})

    assert listing.status_code == 200
    assert "acme" in listing.content.decode()
    assert "80%" in listing.content.decode()
    assert admin_client.get("/admin/alerts/budgetalert/add/").status_code == 403
    assert change.status_code == 403
    alert.refresh_from_db()
    assert alert.threshold == 80


def test_the_readme_verification_accepts_the_signature_and_refuses_a_changed_body():
    body = b'{"threshold_percent":80}'
    header = sign(WEBHOOK_SECRET, body, 1_800_000_000)

    assert verify(WEBHOOK_SECRET, body, header, now=1_800_000_010)
    assert not verify(WEBHOOK_SECRET, body + b" ", header, now=1_800_000_010)
    assert not verify("another-secret", body, header, now=1_800_000_010)
    # Replayed ten minutes later.
    assert not verify(WEBHOOK_SECRET, body, header, now=1_800_000_600)


def test_a_dump_of_the_teams_leaves_the_webhook_secret_out(db):
    Team.objects.create(
        name="acme", webhook_url="https://hooks.acme.test/budget", webhook_secret=WEBHOOK_SECRET
    )

    dump = serializers.serialize("json", Team.objects.all())

    assert WEBHOOK_SECRET not in dump
    assert '"webhook_secret": ""' in dump


# Alerts left pending by a process that died


# Seconds after which send_pending_alerts takes over an alert left pending, by default.
PENDING_AFTER = 600


async def chats_left_pending(api, headers, count):
    """Make chats whose alerts are recorded as the gateway records them, then never sent:
    the process died between recording them and sending."""

    async def died(self, alert, holder, team):
        return None

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AlertSender, "send", died)
        await chats(api, headers, count)


async def sweep():
    """Run `manage.py send_pending_alerts` in a thread of its own; return its output."""
    out = StringIO()
    await sync_to_async(call_command, thread_sensitive=False)("send_pending_alerts", stdout=out)
    return out.getvalue()


async def test_an_alert_left_pending_by_a_process_that_died_is_sent_once_by_the_sweep(
    api, dear, alert_clock, loopback_webhooks, receiver, mailoutbox
):
    team = await sync_to_async(make_team)(
        receiver, daily_budget=Decimal("0.01"), alert_thresholds="100"
    )
    dave = await key_in(team)
    await chats_left_pending(api, dave, 1)
    [alert] = await alerts()
    assert (alert.email_status, alert.webhook_status) == ("pending", "pending")

    # Too soon: the process that recorded it may still be sending it.
    too_soon = await sweep()
    sent_too_soon = (len(mailoutbox), len(receiver.deliveries))
    alert_clock.advance(PENDING_AFTER + 1)
    output = await sweep()
    await sweep()

    assert sent_too_soon == (0, 0)
    assert "Sent 0 pending budget alerts" in too_soon
    assert "Sent 1 pending budget alert" in output
    assert [m.subject for m in mailoutbox] == ["Team acme has spent 100% of its daily budget"]
    assert mailoutbox[0].to == ["ops@acme.test", "finance@acme.test"]
    [delivery] = receiver.deliveries
    assert delivery["signed"]
    assert delivery["json"]["id"] == f"alert-{alert.pk}"
    [alert] = await alerts()
    assert (alert.email_status, alert.webhook_status) == ("sent", "sent")
    assert alert.sent_at is not None
    # Claimed twice: by the process that recorded it, and by the sweep.
    assert alert.attempts == 2


async def test_sweeps_running_at_once_send_each_pending_alert_once(
    api, dear, alert_clock, loopback_webhooks, receiver, mailoutbox
):
    # Slow answers, so that the sweeps are all sending at the same time.
    receiver.delay = 0.2
    team = await sync_to_async(make_team)(
        receiver, daily_budget=Decimal("0.04"), alert_thresholds="25,50,75,100"
    )
    dave = await key_in(team)
    await chats_left_pending(api, dave, 4)
    alert_clock.advance(PENDING_AFTER + 1)

    await asyncio.gather(*(sweep() for _ in range(3)))

    recorded = await alerts()
    assert [alert.threshold for alert in recorded] == [25, 50, 75, 100]
    posted = Counter(delivery["json"]["id"] for delivery in receiver.deliveries)
    assert posted == Counter(f"alert-{alert.pk}" for alert in recorded)
    subjects = Counter(message.subject for message in mailoutbox)
    assert sorted(subjects.values()) == [1, 1, 1, 1]
    for alert in recorded:
        assert (alert.email_status, alert.webhook_status, alert.attempts) == ("sent", "sent", 2)


async def test_the_sweep_sends_only_the_channels_still_pending(
    api, dear, alert_clock, loopback_webhooks, receiver, mailoutbox
):
    team = await sync_to_async(make_team)(
        receiver, daily_budget=Decimal("0.01"), alert_thresholds="100"
    )
    dave = await key_in(team)
    await chats_left_pending(api, dave, 1)
    # The process died after the e-mail went and was recorded, before the webhook.
    await BudgetAlert.objects.aupdate(email_status=BudgetAlert.SENT)
    alert_clock.advance(PENDING_AFTER + 1)

    await sweep()

    assert mailoutbox == []
    assert len(receiver.deliveries) == 1
    [alert] = await alerts()
    assert (alert.email_status, alert.webhook_status) == ("sent", "sent")


async def test_alerts_sent_or_failed_are_not_sent_again_by_the_sweep(
    api, dear, alert_clock, loopback_webhooks, receiver, mailoutbox
):
    receiver.status = 500
    team = await sync_to_async(make_team)(
        receiver, daily_budget=Decimal("0.01"), alert_thresholds="100"
    )
    dave = await key_in(team)
    await chats(api, dave, 1)
    sent = (len(mailoutbox), len(receiver.deliveries))
    alert_clock.advance(PENDING_AFTER + 1)

    await sweep()

    assert sent == (1, 5)
    assert (len(mailoutbox), len(receiver.deliveries)) == sent
    [alert] = await alerts()
    assert (alert.email_status, alert.webhook_status, alert.attempts) == ("sent", "failed", 1)


def left_pending_before_the_sweep_existed(team, period_start, period="day", threshold=80):
    """Record a team's alert as a process did before alerts/0002: pending, never claimed."""
    return BudgetAlert.objects.create(
        scope=BudgetAlert.TEAM,
        holder_id=team.pk,
        holder_name=team.name,
        team=team,
        period=period,
        period_start=period_start,
        period_end=periods.end(period, period_start),
        threshold=threshold,
        budget=Decimal("1.00"),
        spent=Decimal("0.80"),
        created_at=period_start,
    )


async def test_the_sweep_sends_no_alert_of_a_budget_period_already_over(alert_clock, mailoutbox):
    team = await sync_to_async(make_team)(daily_budget=Decimal("1.00"))
    today = periods.start("day", timezone.now())
    last_week = today - timedelta(days=7)
    old = await sync_to_async(left_pending_before_the_sweep_existed)(team, last_week)
    current = await sync_to_async(left_pending_before_the_sweep_existed)(team, today)

    output = await sweep()
    await sweep()

    assert [m.subject for m in mailoutbox] == ["Team acme has spent 80% of its daily budget"]
    assert f"from {today:%Y-%m-%d}" in mailoutbox[0].body
    await current.arefresh_from_db()
    assert (current.email_status, current.webhook_status) == ("sent", "none")
    await old.arefresh_from_db()
    assert (old.email_status, old.webhook_status) == ("expired", "expired")
    assert old.sent_at is None
    assert "its day budget period had ended" in old.error
    assert "Sent 1 pending budget alert" in output
    assert "1 pending budget alert was not sent: its budget period had ended" in output


async def test_an_alert_left_pending_until_its_day_is_over_is_not_sent_by_the_sweep(
    api, dear, alert_clock, loopback_webhooks, receiver, mailoutbox
):
    team = await sync_to_async(make_team)(
        receiver, daily_budget=Decimal("0.01"), alert_thresholds="100"
    )
    dave = await key_in(team)
    await chats_left_pending(api, dave, 1)
    # The gateway's sweeps stopped for a day (an outage), then came back.
    alert_clock.advance(DAY)

    await sweep()

    assert (len(mailoutbox), len(receiver.deliveries)) == (0, 0)
    [alert] = await alerts()
    assert (alert.email_status, alert.webhook_status) == ("expired", "expired")


def test_the_admin_says_which_alerts_expired_unsent(admin_client, db):
    team = make_team()
    alert = left_pending_before_the_sweep_existed(team, datetime(2026, 11, 1, tzinfo=UTC))

    call_command("send_pending_alerts", stdout=StringIO())

    listing = admin_client.get("/admin/alerts/budgetalert/?email_status=expired")
    page = admin_client.get(f"/admin/alerts/budgetalert/{alert.pk}/change/")
    assert "period over, not sent" in listing.content.decode()
    assert "its day budget period had ended" in page.content.decode()
