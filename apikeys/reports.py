"""Usage over a period, summed in the database: totals, a series per hour or day, and
tables per key, per team and per model.

Every sum is a GROUP BY query on the daily rollups (UsageDayRollup) of the period's whole
days, one on the hourly rollups (UsageRollup) of its other whole hours, and one on the
records of its partial hours at either end, added up here (apikeys/rollups.Span); TruncHour
and TruncDay work alike on SQLite and PostgreSQL. A report costs what the groups of its
period hold, whether the table holds a thousand records or ten million.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from django.db.models import F
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone
from django.utils.functional import cached_property

from apikeys import retention
from apikeys.rollups import TIME_FIELD, Span, hour_of, merge, sums

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
# What each row of a report sums (apikeys/rollups.sums): latency_ms is the sum of the
# requests' latencies until _named() averages it, counted_units its `units`.
REPORT_SUMS = (*SUM_FIELDS, "counted_units")
# What a spreadsheet takes as the start of a formula in a cell it opens from CSV (OWASP,
# "CSV Injection"): =, +, - and @, and tab and carriage return, after which some programs
# read the rest of the cell as typed.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# The precision of UsageRecord.cost, in USD.
COST_PLACES = Decimal("0.00000001")


def spreadsheet_text(value):
    """Return a text cell for a CSV export that no spreadsheet runs as a formula.

    A leading single quote makes a spreadsheet show the cell as text; the quote is visible
    to a program that reads the file, the price OWASP accepts. Only for text: a negative
    number in a numeric column must stay a number.
    """
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _named(row):
    named = {name.removeprefix("n_"): value for name, value in row.items()}
    latency_sum = named.pop("latency_ms", 0)
    named["units"] = named.pop("counted_units", 0)
    for field in SUM_FIELDS:
        named.setdefault(field, 0)
    named["cost"] = Decimal(named["cost"] or 0).quantize(COST_PLACES)
    # The average of the requests, in ms; None without any.
    named["latency_ms"] = round(latency_sum / named["requests"]) if named["requests"] else None
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

    Whole days are summed from the daily rollups when the period has a bar per day, whole
    hours from the hourly rollups, and the partial hours at either end of the period (at
    most an hour each) from the records. A period that starts before the records kept
    (USAGE_RETENTION_DAYS) starts at its first whole hour instead: `resolution` is then
    "hour", else "record". Either way the cost of a report follows the groups of the
    period, not the records the table holds.

    `teams` (team ids) limits every figure to those teams' usage, for a reader who may see
    no others (a team member in the admin); None for every record.
    """

    def __init__(self, period, key=None, model="", team=None, teams=None, now=None):
        self.period = period
        now = now or timezone.now()
        start = period.start
        self.resolution = "record"
        if start < retention.records_kept_from(now):
            start = hour_of(start)
            self.resolution = "hour"
        self.start = start
        # A bar per hour needs the hours; a bar per day is summed from the days.
        span = Span(start, period.end, by_day=period.bucket == "day")
        if teams is not None:
            span.filter(team__in=teams)
        if key is not None:
            span.filter(api_key=key)
        if team is not None:
            # By the team the usage was made under, as budgets count it.
            span.filter(team=team)
        if model:
            span.filter(model=model)
        self.span = span

    # What every table of a report is grouped by; the finest rows are summed by these once.
    GROUPS = ("key_name", "team_name", "model", "endpoint", "unit")

    @cached_property
    def _finest(self):
        """Sums per bucket (hour or day) and every field of GROUPS: a query on each of the
        span's sources, whatever the page shows of them.

        The rollups of the period are read once rather than once per table; what comes back
        is a row per group that had usage in a bucket, summed again in Python for each table
        (apikeys/rollups.merge). A month is about 30 rows a group (its days).
        """
        trunc = TruncHour if self.period.bucket == "hour" else TruncDay
        team_name = F("team__name")
        return [
            row
            for queryset in self.span
            for row in self._rows(
                queryset.annotate(
                    bucket=trunc(TIME_FIELD[queryset.model], tzinfo=UTC), team_name=team_name
                ),
                "bucket",
                *self.GROUPS,
            )
        ]

    def totals(self):
        return _named((merge((), self._finest) or [{}])[0])

    def series(self):
        """Return sums per hour or day, one row per bucket, empty buckets included."""
        found = {row["bucket"]: _named(row) for row in merge(("bucket",), self._finest)}
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
        """Return sums per team (`team_name`, None for usage made under no team)."""
        return self._grouped("team_name")

    def by_team_and_model(self):
        return self._grouped("team_name", "model")

    def by_key_team_and_model(self):
        return self._grouped("team_name", "key_name", "model")

    def by_endpoint(self):
        """Return sums per endpoint and unit, with the units each counted: tokens for the
        text endpoints, images, audio seconds, characters or documents for the others."""
        return self._grouped("endpoint", "unit")

    def _grouped(self, *fields):
        # By the team's current name where grouped by team; usage of no team sorts first
        # (apikeys/rollups.merge puts None first).
        return [_named(row) for row in merge(fields, self._finest)]

    @staticmethod
    def _rows(queryset, *fields):
        return list(
            queryset.values(*fields).annotate(**sums(queryset.model, REPORT_SUMS)).order_by()
        )
