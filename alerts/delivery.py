"""Sending budget alerts by e-mail and webhook, and sending those a process left pending.

Each of an alert's channels (email_status, webhook_status) starts pending and is tried by
the process holding the alert's claim (alerts/claims.py); its outcome is saved as soon as
it is known: sent, failed (with the reason, after the webhook's own retries) or none
(nowhere to send). The process whose insert recorded the alert holds the first claim
(alerts/budgets.py) and sends at once. A process that dies first leaves the channels it
had not recorded pending: `send_pending` (`manage.py send_pending_alerts`, on a timer)
claims alerts pending for longer than its `older_than`, once per run and one run at a time
per alert, and tries what is still pending.

An alert is about its budget period: once the period is over (period_end passed), "80% of
this month's budget" is news of a month gone, and the budget has started afresh. The
sweep sends no alert of a period over: it marks the channels still pending expired, with
the reason in `error`. That covers the alerts left pending before alerts/0002 (never
claimed) and those left by an outage longer than the rest of their period. Lifetime
budgets have no end, and their alerts are sent however late.

The trade-off: a channel sent by a process that died before saving that it was sent is
sent again by the sweep; a channel recorded as sent is never sent again.
"""

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.core.mail import EmailMessage
from django.db.models import Case, F, Q, TextField, Value, When
from django.db.models.functions import Concat
from django.template.loader import render_to_string
from django.utils import timezone

from alerts.claims import claim, claimable
from alerts.models import BudgetAlert
from alerts.webhooks import WebhookSender
from apikeys import periods
from apikeys.models import ApiKey
from gateway.db import off_the_request_thread

logger = logging.getLogger(__name__)

# Seconds an alert stays pending before send_pending takes it over, by default: far longer
# than its process takes to send it (5 webhook attempts of up to 10 s, 15 s of backoff),
# so that a process still sending is not doubled.
PENDING_SECONDS = 600
# Claims on one alert before send_pending leaves it: an alert whose sending kills the
# process each time is not tried for ever. The first claim is the recording process's.
MAX_ATTEMPTS = 5
# What sending changes on an alert; the claim (claimed_at, attempts) is not among them.
OUTCOME_FIELDS = [
    "sent_at",
    "email_status",
    "email_recipients",
    "webhook_status",
    "webhook_attempts",
    "error",
]


@dataclass
class Sweep:
    """What one send_pending did: the alerts it claimed and tried, how many it expired
    unsent (their budget period over), and how many it leaves pending for good
    (MAX_ATTEMPTS claims spent)."""

    tried: list = field(default_factory=list)
    expired: int = 0
    given_up: int = 0


class AlertSender:
    """Send an alert's pending channels; `webhook_sender` is a class attribute for tests."""

    webhook_sender = WebhookSender

    async def send(self, alert, holder, team):
        """Try each pending channel of an alert claimed by this process, saving each
        outcome as it is known. `holder` is the key or team, None when it is gone."""
        if holder is None:
            await _gone(alert)
            return
        try:
            if alert.email_status == BudgetAlert.PENDING:
                await _send_mail(alert, holder, team)
                await _save(alert)
            if alert.webhook_status == BudgetAlert.PENDING:
                await self._post_webhook(alert, holder, team)
                await _save(alert)
        except Exception:
            logger.exception("Sending budget alert %s failed", alert.pk)

    async def send_pending(self, older_than=PENDING_SECONDS):
        """Claim each alert pending for more than `older_than` seconds, send what it has
        pending, one alert after another; return a Sweep."""
        sweep = Sweep()
        sweep.expired = await _expire(older_than)
        for alert_id in await _stale(older_than):
            claimed = await _claim(alert_id, older_than)
            if claimed is None:
                # Another sweep took it first, it was sent meanwhile, or its period ended
                # since _stale (the next sweep expires it).
                continue
            await self.send(*claimed)
            sweep.tried.append(claimed[0])
        sweep.given_up = await _given_up()
        return sweep

    async def _post_webhook(self, alert, holder, team):
        if team is None or not team.webhook_url:
            alert.webhook_status = BudgetAlert.NONE
            return
        if not team.webhook_secret:
            alert.webhook_status = BudgetAlert.FAILED
            alert.error += "Webhook: the team's webhook secret is not set (or unreadable).\n"
            return
        delivery = await self.webhook_sender().post(
            team.webhook_url, team.webhook_secret, payload(alert, holder, team), f"alert-{alert.pk}"
        )
        alert.webhook_attempts = delivery.attempts
        if delivery.delivered:
            alert.webhook_status = BudgetAlert.SENT
            alert.sent_at = alert.sent_at or timezone.now()
        else:
            alert.webhook_status = BudgetAlert.FAILED
            alert.error += f"Webhook: {delivery.error}\n"
            logger.warning(
                "Budget alert %s not delivered to team %s's webhook after %d attempts: %s",
                alert.pk,
                team.name,
                delivery.attempts,
                delivery.error,
            )


def payload(alert, holder, team):
    """Return the JSON body posted to a webhook for an alert (README, "Budget alerts")."""
    return {
        "id": f"alert-{alert.pk}",
        "type": "budget.threshold_crossed",
        "created": int(alert.created_at.timestamp()),
        "scope": alert.scope,
        "key": (
            {"name": holder.name, "prefix": holder.prefix}
            if alert.scope == BudgetAlert.KEY
            else None
        ),
        "team": {"name": team.name} if team is not None else None,
        "period": alert.period,
        "period_start": alert.period_start.isoformat(),
        "period_end": alert.period_end.isoformat() if alert.period_end else None,
        "threshold_percent": alert.threshold,
        "budget_usd": str(alert.budget),
        "spent_usd": str(alert.spent.normalize()),
    }


def _sendable(now):
    """The alerts still to send at `now`: pending, of a period not over, with claims left."""
    return BudgetAlert.pending().filter(
        Q(period_end__isnull=True) | Q(period_end__gt=now), attempts__lt=MAX_ATTEMPTS
    )


def _expired_channel(channel):
    # The channel's status, expired where it is still pending.
    return Case(
        When(**{channel: BudgetAlert.PENDING}, then=Value(BudgetAlert.EXPIRED)),
        default=F(channel),
    )


@off_the_request_thread
def _expire(older_than):
    """Expire the pending channels of the alerts whose budget period is over; return how
    many alerts. Only alerts claimable as the sweep claims them: one a process holds a
    fresh claim on is its to finish. One conditional UPDATE, as a claim is (alerts/claims.py),
    whatever the alert's attempts: one given up on leaves the count of those pending."""
    now = timezone.now()
    over = BudgetAlert.pending().filter(period_end__lte=now)
    return claimable(over, now - timedelta(seconds=older_than)).update(
        email_status=_expired_channel("email_status"),
        webhook_status=_expired_channel("webhook_status"),
        error=Concat(
            "error",
            Value("Not sent: its "),
            "period",
            Value(" budget period had ended when send_pending_alerts found it pending.\n"),
            output_field=TextField(),
        ),
    )


@off_the_request_thread
def _stale(older_than):
    now = timezone.now()
    stale = claimable(_sendable(now), now - timedelta(seconds=older_than))
    return list(stale.order_by("pk").values_list("pk", flat=True))


@off_the_request_thread
def _claim(alert_id, older_than):
    """Claim the alert for this process; return (alert, holder, team), or None when
    another process holds it, it is no longer pending or its period is over."""
    now = timezone.now()
    if not claim(_sendable(now), alert_id, now, now - timedelta(seconds=older_than)):
        return None
    alert = BudgetAlert.objects.select_related("team").get(pk=alert_id)
    team = alert.team
    if alert.scope == BudgetAlert.TEAM:
        holder = team
    else:
        holder = ApiKey.objects.filter(pk=alert.holder_id).first()
    return alert, holder, team


@off_the_request_thread
def _given_up():
    return BudgetAlert.pending().filter(attempts__gte=MAX_ATTEMPTS).count()


@off_the_request_thread
def _send_mail(alert, holder, team):
    recipients = holder.contacts() or (team.contacts() if team is not None else [])
    if not recipients:
        alert.email_status = BudgetAlert.NONE
        return
    alert.email_recipients = ", ".join(recipients)
    context = {
        "alert": alert,
        "holder": holder,
        "is_team": alert.scope == BudgetAlert.TEAM,
        "percent": round(alert.spent * 100 / alert.budget),
        "zone": periods.zone(),
        "period_start": _local(alert.period_start),
        "period_end": _local(alert.period_end) if alert.period_end else None,
    }
    subject = render_to_string("alerts/alert_subject.txt", context).strip()
    body = render_to_string("alerts/alert_body.txt", context)
    try:
        EmailMessage(subject, body, to=recipients).send()
    except Exception as error:
        alert.email_status = BudgetAlert.FAILED
        alert.error += f"E-mail: {type(error).__name__}: {error}\n"
        logger.warning("Budget alert %s not e-mailed: %s", alert.pk, error)
    else:
        alert.email_status = BudgetAlert.SENT
        alert.sent_at = alert.sent_at or timezone.now()


def _local(moment):
    """The moment as text in LIMITS_TIME_ZONE, which budget periods are counted in."""
    return f"{moment.astimezone(periods.zone()):%Y-%m-%d %H:%M}"


@off_the_request_thread
def _gone(alert):
    """Record that an alert's key or team was deleted before it was sent: no one to tell."""
    for channel in ("email_status", "webhook_status"):
        if getattr(alert, channel) == BudgetAlert.PENDING:
            setattr(alert, channel, BudgetAlert.NONE)
    alert.error += f"Its {alert.scope} was deleted before the alert was sent.\n"
    alert.save(update_fields=OUTCOME_FIELDS)


@off_the_request_thread
def _save(alert):
    alert.save(update_fields=OUTCOME_FIELDS)


alert_sender = AlertSender()
