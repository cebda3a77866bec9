"""Usage over a period, summed in the database: totals, a series per hour or day, and
tables per key, per team and per model.

Every sum is one GROUP BY query on UsageRecord (TruncHour and TruncDay work alike on
SQLite and PostgreSQL), so a report costs the same whether the period holds ten records or
ten million rows' worth of index.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from django.db.models import Avg, Case, Count, DecimalField, F, Q, Sum, Value, When
from django.db.models.functions import Coalesce, TruncDay, TruncHour
from django.utils import timezone

from apikeys.models import UsageRecord

# The periods offered, by the value that names them in a URL.
PRESETS = {
    "24h": ("Last 24 hours", timedelta(hours=24)),
    "7d": ("Last 7 days", timedelta(days=7)),
    "30d": ("Last 30 days", timedelta(days=30)),
}
# Up to this span the chart has a bar per hour, beyond it a bar per day (72 bars at most
# per hour, 7 to 366 per day).
HOURLY_UP_TO = timedelta(days=3)
# The fields each sum row has, in the order of the CSV export.
SUM_FIELDS = [
    "requests",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "total_tokens",
    "cost",
    "errors",
    "latency_ms",
]
# What a spreadsheet takes as the start of a formula in a cell it opens from CSV (OWASP,
# "CSV Injection"): =, +, - and @, and tab and carriage return, after which some programs
# read the rest of the cell as typed.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(value):
    """Return a text cell for a CSV export that no spreadsheet runs as a formula.

    A leading single quote makes a spreadsheet show the cell as text; the quote is visible
    to a program that reads the file, the price OWASP accepts. Only for text: a negative
    number in a numeric column must stay a number.
    """
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _sums():
    # Annotations may not share a name with a field of the model, hence the n_ prefix,
    # taken off again by _named().
    return {
        "n_requests": Count("id"),
        "n_prompt_tokens": Coalesce(Sum("prompt_tokens"), 0),
        # The part of the prompt tokens read from the upstream's prompt cache.
        "n_cached_tokens": Coalesce(Sum("cached_tokens"), 0),
        "n_completion_tokens": Coalesce(Sum("completion_tokens"), 0),
        "n_total_tokens": Coalesce(Sum("total_tokens"), 0),
        "n_cost": Coalesce(
            Sum("cost"),
            Value(Decimal(0)),
            output_field=DecimalField(max_digits=20, decimal_places=8),
        ),
        "n_errors": Count("id", filter=~Q(status=UsageRecord.OK)),
        "n_latency_ms": Avg("latency_ms"),
    }


def _named(row):
    named = {name.removeprefix("n_"): value for name, value in row.items()}
    if named.get("latency_ms") is not None:
        named["latency_ms"] = round(named["latency_ms"])
    # Percent of requests that failed, with one decimal.
    named["error_rate"] = (
        round(100 * named["errors"] / named["requests"], 1) if named["requests"] else 0
    )
    return named


@dataclass
class Period:
    """A span of time [start, end), and a label for it."""

    start: datetime
    end: datetime
    label: str

    @classmethod
    def last(cls, preset, now=None):
        """Return the period of a preset ("24h", "7d", "30d") ending now."""
        label, span = PRESETS[preset]
        now = now or timezone.now()
        return cls(now - span, now, label)

    @classmethod
    def days(cls, first, last):
        """Return whole UTC days from `first` to `last` (dates), both included."""
        start = datetime.combine(first, time(), tzinfo=UTC)
        end = datetime.combine(last + timedelta(days=1), time(), tzinfo=UTC)
        return cls(start, end, f"{first:%Y-%m-%d} to {last:%Y-%m-%d} (UTC)")

    @property
    def bucket(self):
        return "hour" if self.end - self.start <= HOURLY_UP_TO else "day"

    def buckets(self):
        """Return the start of every hour or day the period touches, in order."""
        if self.bucket == "hour":
            step = timedelta(hours=1)
            current = self.start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        else:
            step = timedelta(days=1)
            current = datetime.combine(self.start.astimezone(UTC).date(), time(), tzinfo=UTC)
        starts = []
        while current < self.end:
            starts.append(current)
            current += step
        return starts


class PeriodUsage:
    """The usage of a period, optionally of one key, one team and one model.

    `teams` (team ids) limits every figure to those teams' records, for a reader who may
    see no others (a team member in the admin); None for every record.
    """

    def __init__(self, period, key=None, model="", team=None, teams=None):
        self.period = period
        records = UsageRecord.objects.filter(
            created_at__gte=period.start, created_at__lt=period.end
        )
        if teams is not None:
            records = records.filter(team__in=teams)
        if key is not None:
            records = records.filter(api_key=key)
        if team is not None:
            # By the team a record was made under, as budgets count it (apikeys/spend.py).
            records = records.filter(team=team)
        if model:
            records = records.filter(model=model)
        self.records = records

    def totals(self):
        return _named(self.records.aggregate(**_sums()))

    def series(self):
        """Return sums per hour or day, one row per bucket, empty buckets included."""
        trunc = TruncHour if self.period.bucket == "hour" else TruncDay
        rows = (
            self.records.annotate(bucket=trunc("created_at", tzinfo=UTC))
            .values("bucket")
            .annotate(**_sums())
            .order_by("bucket")
        )
        found = {row["bucket"]: _named(row) for row in rows}
        empty = {field: 0 for field in [*SUM_FIELDS, "error_rate"]}
        return [{**found.get(start, empty), "bucket": start} for start in self.period.buckets()]

    def by_key(self):
        # By the recorded name, so that the usage of deleted keys is still reported.
        return self._grouped("key_name")

    def by_model(self):
        return self._grouped("model")

    def by_key_and_model(self):
        return self._grouped("key_name", "model")

    def by_team(self):
        """Return sums per team (`team_name`, None for records made under no team)."""
        return self._grouped_by_team()

    def by_team_and_model(self):
        return self._grouped_by_team("model")

    def by_key_team_and_model(self):
        return self._grouped_by_team("key_name", "model")

    def by_endpoint(self):
        """Return sums per endpoint and unit, with the units each counted: tokens for the
        text endpoints, images, audio seconds, characters or documents for the others."""
        counted = Case(
            When(unit=UsageRecord.TOKENS, then=F("total_tokens")),
            default=F("units"),
        )
        rows = (
            self.records.values("endpoint", "unit")
            .annotate(**_sums(), n_units=Coalesce(Sum(counted), 0))
            .order_by("endpoint", "unit")
        )
        return [_named(row) for row in rows]

    def _grouped(self, *fields):
        rows = self.records.values(*fields).annotate(**_sums()).order_by(*fields)
        return [_named(row) for row in rows]

    def _grouped_by_team(self, *fields):
        # By the team's current name; records of no team first on every database (SQLite
        # sorts NULL first, PostgreSQL last).
        rows = (
            self.records.values(*fields, team_name=F("team__name"))
            .annotate(**_sums())
            .order_by(F("team_name").asc(nulls_first=True), *fields)
        )
        return [_named(row) for row in rows]
