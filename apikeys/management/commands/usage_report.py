"""Report requests, tokens, cost and errors per API key (or team) and model.

    manage.py usage_report [--days 30] [--by key|team] [--json]

Sums are made in the database from the hourly rollups and the records of the partial hours
(apikeys/reports.py), grouped by the key's recorded name, so that deleted keys still report,
or by the team the usage was made under (--by team), as team budgets count it.
"""

import json
from datetime import UTC, timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from apikeys.reports import Period, PeriodUsage

DEFAULT_DAYS = 30
# (heading, row key) of the numeric columns, right-aligned in the table.
COLUMNS = [
    ("REQUESTS", "requests"),
    ("PROMPT TOKENS", "prompt_tokens"),
    ("COMPLETION TOKENS", "completion_tokens"),
    ("TOTAL TOKENS", "total_tokens"),
    ("COST (USD)", "cost"),
    ("ERRORS", "errors"),
]
# The fields of each --json object after the group's own ("key" or "team"); scripts read
# these, so adding one is a visible change.
JSON_FIELDS = [
    "model",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost",
]
# Decimal places of the cost in the table; --json keeps all eight of UsageRecord.cost.
TABLE_COST_PLACES = 4
# What a team's cell reads for records made under no team; null in --json.
NO_TEAM = "(no team)"


def _usage_since(since, by):
    """Return usage per key name (or team name) and model since a moment, each row's
    group under `by`."""
    usage = PeriodUsage(Period(since, timezone.now(), ""))
    if by == "team":
        return [{"team": row.pop("team_name"), **row} for row in usage.by_team_and_model()]
    return [{"key": row.pop("key_name"), **row} for row in usage.by_key_and_model()]


def _cell(field, value):
    if field == "cost":
        return f"{value:,.{TABLE_COST_PLACES}f}"
    return f"{value:,}"


def _table(rows, by):
    total = {by: "Total", "model": ""}
    total.update({field: sum(row[field] for row in rows) for _, field in COLUMNS})
    header = [by.upper(), "MODEL", *(heading for heading, _ in COLUMNS)]
    lines = [header] + [
        [row[by] or NO_TEAM, row["model"], *(_cell(field, row[field]) for _, field in COLUMNS)]
        for row in [*rows, total]
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rendered = []
    for line in lines:
        cells = [line[0].ljust(widths[0]), line[1].ljust(widths[1])]
        cells += [cell.rjust(width) for cell, width in zip(line[2:], widths[2:], strict=True)]
        rendered.append("  ".join(cells))
    # A rule above the total line, as wide as the table.
    rendered.insert(-1, "-" * len(rendered[0]))
    return rendered


class Command(BaseCommand):
    help = (
        "Show requests, tokens, cost and errors per API key (or team) and model over the last "
        "N days."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            type=int,
            default=DEFAULT_DAYS,
            metavar="N",
            help=f"How many days back to count, from now (default {DEFAULT_DAYS}).",
        )
        parser.add_argument(
            "--by",
            choices=["key", "team"],
            default="key",
            help="Group by key (the default) or by the team each request was made under.",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help="Print a JSON list of objects: key (or team), " + ", ".join(JSON_FIELDS) + ".",
        )

    def handle(self, *args, days, by, **options):
        if days < 1:
            raise CommandError(f"--days: count at least 1 day, not {days}.")
        since = timezone.now() - timedelta(days=days)
        rows = _usage_since(since, by)
        if options["json"]:
            self._print_json(rows, by)
            return
        heading = f"since {since.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        if not rows:
            self.stdout.write(f"No usage in the last {days} days ({heading}).")
            return
        self.stdout.write(f"Usage in the last {days} days ({heading}):")
        for line in _table(rows, by):
            self.stdout.write(line)

    def _print_json(self, rows, by):
        data = [{field: row[field] for field in [by, *JSON_FIELDS]} for row in rows]
        for row in data:
            # A JSON number, as scripts expect; eight decimals stay exact in a double up to
            # about 10 million USD.
            row["cost"] = float(row["cost"])
        self.stdout.write(json.dumps(data, indent=2))
