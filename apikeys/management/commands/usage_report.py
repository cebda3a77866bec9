"""Report requests, tokens, cost and errors per API key and model.

    manage.py usage_report [--days 30] [--json]

Sums are made in the database from the hourly rollups and the records of the partial hours
(apikeys/reports.py), grouped by the key's recorded name, so that deleted keys still report.
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
# The fields of each --json object; scripts read these, so adding one is a visible change.
JSON_FIELDS = [
    "key",
    "model",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost",
]
# Decimal places of the cost in the table; --json keeps all eight of UsageRecord.cost.
TABLE_COST_PLACES = 4


def _usage_since(since):
    """Return usage per key name and model since a moment."""
    rows = PeriodUsage(Period(since, timezone.now(), "")).by_key_and_model()
    return [{"key": row.pop("key_name"), **row} for row in rows]


def _cell(field, value):
    if field == "cost":
        return f"{value:,.{TABLE_COST_PLACES}f}"
    return f"{value:,}"


def _table(rows):
    total = {"key": "Total", "model": ""}
    total.update({field: sum(row[field] for row in rows) for _, field in COLUMNS})
    header = ["KEY", "MODEL", *(heading for heading, _ in COLUMNS)]
    lines = [header] + [
        [row["key"], row["model"], *(_cell(field, row[field]) for _, field in COLUMNS)]
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
    help = "Show requests, tokens, cost and errors per API key and model over the last N days."

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            type=int,
            default=DEFAULT_DAYS,
            metavar="N",
            help=f"How many days back to count, from now (default {DEFAULT_DAYS}).",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help="Print a JSON list of objects: " + ", ".join(JSON_FIELDS) + ".",
        )

    def handle(self, *args, days, **options):
        if days < 1:
            raise CommandError(f"--days: count at least 1 day, not {days}.")
        since = timezone.now() - timedelta(days=days)
        rows = _usage_since(since)
        if options["json"]:
            self._print_json(rows)
            return
        heading = f"since {since.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        if not rows:
            self.stdout.write(f"No usage in the last {days} days ({heading}).")
            return
        self.stdout.write(f"Usage in the last {days} days ({heading}):")
        for line in _table(rows):
            self.stdout.write(line)

    def _print_json(self, rows):
        data = [{field: row[field] for field in JSON_FIELDS} for row in rows]
        for row in data:
            # A JSON number, as scripts expect; eight decimals stay exact in a double up to
            # about 10 million USD.
            row["cost"] = float(row["cost"])
        self.stdout.write(json.dumps(data, indent=2))
