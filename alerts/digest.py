"""The usage digest: each team's spend in the previous day or week, by key and model, e-mailed
to its contacts (`manage.py usage_digest --daily`).

The previous period is the calendar day or week (from Monday) before the one holding now,
in LIMITS_TIME_ZONE, as budgets count them. A team is sent a digest when it has contacts
and made requests in the period; a quiet team is not written to.
"""

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from django.core.mail import EmailMessage
from django.db.models import Count, Sum
from django.template.loader import render_to_string

from apikeys import periods
from apikeys.models import Team, UsageRecord
from apikeys.spend import spent

# The digest's periods, by the budget period each is.
PERIOD_WORDS = {"day": "daily", "week": "weekly"}


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
    records = UsageRecord.objects.filter(team=team, created_at__gte=start, created_at__lt=end)
    rows = [
        Row(row["key_name"], row["model"], row["requests"], row["tokens"], row["cost"])
        for row in records.values("key_name", "model")
        .annotate(requests=Count("id"), tokens=Sum("total_tokens"), cost=Sum("cost"))
        .order_by("key_name", "model")
    ]
    # Each budget's period that holds the digest's last moment, spent so far.
    last = end - timedelta(microseconds=1)
    budgets = [
        Budget(budget_period, budget, spent(team, budget_period, last))
        for budget_period, budget in team.budgets().items()
    ]
    return Digest(team, period, start, end, rows, budgets)


def send_digests(period, now):
    """E-mail every team with contacts and usage its digest; return the teams written to."""
    sent = []
    for team in Team.objects.exclude(contact_emails=""):
        digest = team_digest(team, period, now)
        if not digest.rows:
            continue
        context = {"digest": digest, "zone": periods.zone(), "word": PERIOD_WORDS[period]}
        subject = render_to_string("alerts/digest_subject.txt", context).strip()
        body = render_to_string("alerts/digest_body.txt", context)
        EmailMessage(subject, body, to=team.contacts()).send()
        sent.append(team)
    return sent
