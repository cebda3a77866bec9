"""The usage digest: each team's spend in the previous day or week, by key and model, e-mailed
to its contacts (`manage.py usage_digest --daily`).

The previous period is the calendar day or week (from Monday) before the one holding now,
in LIMITS_TIME_ZONE, as budgets count them. A team is sent a digest when it has contacts
and made requests in the period; a quiet team is not written to. Both the table and the
budget lines are read from the usage rollups (apikeys/reports.PeriodUsage,
apikeys/spend.py), so that a period older than USAGE_RETENTION_DAYS, whose records are
pruned, is reported all the same.

Each team's digest of a period is sent once: a DigestDelivery row is claimed before the
digest is built, and a second run, or two at once, finds it and neither builds nor sends
it (alerts/claims.py). `force` sends again all the same.
"""

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction
from django.db.models import Q, TextField, Value
from django.db.models.functions import Concat
from django.template.loader import render_to_string
from django.utils import timezone

from alerts.claims import claim
from alerts.models import DigestDelivery
from apikeys import periods
from apikeys.models import Team
from apikeys.rollups import Span, merge, sums
from apikeys.spend import spent

logger = logging.getLogger(__name__)

# The digest's periods, by the budget period each is.
PERIOD_WORDS = {"day": "daily", "week": "weekly"}
# Seconds after which a run's claim on a digest it has not sent is taken to be a run that
# died: far longer than one mail takes, so that a run still sending is not doubled.
CLAIM_SECONDS = 15 * 60


@dataclass
class Row:
    key: str
    model: str
    requests: int
    tokens: int
    cost: Decimal


@dataclass
class Budget:
    period: str
    budget: Decimal
    spent: Decimal

    @property
    def percent(self):
        return round(self.spent * 100 / self.budget) if self.budget else None


@dataclass
class Digest:
    team: Team
    period: str
    start: object
    end: object
    rows: list = field(default_factory=list)
    budgets: list = field(default_factory=list)

    @property
    def requests(self):
        return sum(row.requests for row in self.rows)

    @property
    def tokens(self):
        return sum(row.tokens for row in self.rows)

    @property
    def cost(self):
        return sum((row.cost for row in self.rows), Decimal(0))

    def describe_period(self):
        """Say which period: "on 2026-11-29" or "in the week from 2026-11-23"."""
        if self.period == "day":
            return f"on {self.start:%Y-%m-%d}"
        return f"in the week from {self.start:%Y-%m-%d}"


def previous_period(period, now):
    """Return (start, end) of the day or week before the one holding `now`."""
    end = periods.start(period, now)
    return periods.start(period, end - timedelta(seconds=1)), end


def team_digest(team, period, now):
    """Return the team's Digest for the period before the one holding `now`."""
    start, end = previous_period(period, now)
    # Through the rollups, as the budget lines below: the period's records may be pruned.
    # The period exactly, as _teams_to_tell reads it, where the report pages would start a
    # pruned period at its whole hour: in a zone of half hours, a digest would then count
    # the half hour before its day that the previous digest counted.
    span = Span(start, end, by_day=True)
    span.filter(team=team)
    grouped = [
        row
        for usage in span
        for row in usage.values("key_name", "model")
        .annotate(**sums(usage.model, ("requests", "total_tokens", "cost")))
        .order_by()
    ]
    rows = [
        Row(
            row["key_name"],
            row["model"],
            row["n_requests"] or 0,
            row["n_total_tokens"] or 0,
            row["n_cost"] or Decimal(0),
        )
        for row in merge(("key_name", "model"), grouped)
    ]
    # Each budget's period that holds the digest's last moment, spent so far.
    last = end - timedelta(microseconds=1)
    budgets = [
        Budget(budget_period, budget, spent(team, budget_period, last))
        for budget_period, budget in team.budgets().items()
    ]
    return Digest(team, period, start, end, rows, budgets)


@dataclass
class Outcome:
    """What one run of the digest did: teams written to, teams already written to for the
    period (or being written to by another run), and [(team, error)] of failed sends."""

    sent: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    failed: list = field(default_factory=list)


def send_digests(period, now, force=False):
    """E-mail every team with contacts and usage its digest, unless it was sent already for
    the period (or `force`); return an Outcome."""
    outcome = Outcome()
    start, end = previous_period(period, now)
    for team in _teams_to_tell(start, end):
        delivery = _claimed(team, period, start, force)
        if delivery is None:
            outcome.skipped.append(team)
            continue
        recipients = team.contacts()
        try:
            # Built once claimed: a digest sent already, or being sent by another run, is
            # not. A digest that cannot be built lets its claim go, as one not sent.
            digest = team_digest(team, period, now)
            context = {"digest": digest, "zone": periods.zone(), "word": PERIOD_WORDS[period]}
            subject = render_to_string("alerts/digest_subject.txt", context).strip()
            body = render_to_string("alerts/digest_body.txt", context)
            EmailMessage(subject, body, to=recipients).send()
        except Exception as error:
            logger.warning(
                "The %s digest of team %s not sent: %s", PERIOD_WORDS[period], team.name, error
            )
            # Let the claim go: the next run sends it.
            DigestDelivery.objects.filter(pk=delivery.pk).update(
                claimed_at=None,
                error=Concat(
                    "error",
                    Value(f"{type(error).__name__}: {error}\n"),
                    output_field=TextField(),
                ),
            )
            outcome.failed.append((team, error))
            continue
        DigestDelivery.objects.filter(pk=delivery.pk).update(
            sent_at=timezone.now(), recipients=", ".join(recipients)
        )
        outcome.sent.append(team)
    return outcome


def _teams_to_tell(start, end):
    """Return the teams with contacts that made requests in [start, end), in one query."""
    made_requests = Q()
    for usage in Span(start, end):
        # The records of the partial hours at either end, the hourly and the daily rollups.
        made_requests |= Q(pk__in=usage.filter(team__isnull=False).values("team_id"))
    return Team.objects.exclude(contact_emails="").filter(made_requests).order_by("name")


def _claimed(team, period, start, force):
    """Return the team's DigestDelivery of the period, claimed by this run, or None when
    it is sent already or another run holds it."""
    # The time of the claim, not of the run's start: a long run's last claims are fresh.
    now = timezone.now()
    try:
        with transaction.atomic():
            return DigestDelivery.objects.create(
                team=team, period=period, period_start=start, claimed_at=now, attempts=1
            )
    except IntegrityError:
        pass
    delivery = DigestDelivery.objects.get(team=team, period=period, period_start=start)
    if force:
        rows = DigestDelivery.objects.all()
        stale_before = now + timedelta(days=1)
    else:
        rows = DigestDelivery.objects.filter(sent_at__isnull=True)
        stale_before = now - timedelta(seconds=CLAIM_SECONDS)
    return delivery if claim(rows, delivery.pk, now, stale_before) else None
