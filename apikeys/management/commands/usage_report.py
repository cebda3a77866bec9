"""Report requests, tokens and errors per API key and model.

    manage.py usage_report [--days 30] [--json]

Sums are made in the database from UsageRecord rows, grouped by the key's recorded name.
"""

import json
from datetime import UTC, timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count, Q, Sum
from django.utils import timezone

from apikeys.models import UsageRecord

DEFAULT_DAYS = 30
# (heading, row key) of the numeric columns, right-aligned in the table.
COLUMNS = [
    ("REQUESTS", "requests"),
    ("PROMPT TOKENS", "prompt_tokens"),
    ("COMPLETION TOKENS", "completion_tokens"),
    ("TOTAL TOKENS", "total_tokens"),
    ("ERRORS", "errors"),
]
# The fields of each --json object; scripts read these, so adding one is a visible change.
JSON_FIELDS = ["key", "model", "requests", "prompt_tokens", "completion_tokens", "total_tokens"]


def _usage_since(since):
    """Return usage per key name and model since a moment, summed in the database."""
    # Grouped by the recorded key name rather than the key, so deleted keys still report.
    # Annotations cannot share a name with a model field, hence the n_ prefix.
    rows = (
        UsageRecord.objects.filter(created_at__gte=since)
        .values("key_name", "model")
        .annotate(
            n_requests=Count("id"),
            n_prompt_tokens=Sum("prompt_tokens"),
            n_completion_tokens=Sum("completion_tokens"),
            n_total_tokens=Sum("total_tokens"),
            n_errors=Count("id", filter=~Q(status=UsageRecord.OK)),
        )
        .order_by("key_name", "model")
    )
    return [
        {
            "key": row["key_name"],
            "model": row["model"],
            "requests": row["n_requests"],
            "prompt_tokens": row["n_prompt_tokens"],
            "completion_tokens": row["n_completion_tokens"],
            "total_tokens": row["n_total_tokens"],
            "errors": row["n_errors"],
        }
        for row in rows
    ]


def _table(rows):
    total = {"key": "Total", "model": ""}
    total.update({field: sum(row[field] for row in rows) for _, field in COLUMNS})
    header = ["KEY", "MODEL", *(heading for heading, _ in COLUMNS)]
    lines = [header] + [
        [row["key"], row["model"], *(f"{row[field]:,}" for _, field in COLUMNS)]
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
    help = "Show requests, tokens and errors per API key and model over the last N days."

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
        self.stdout.write(json.dumps(data, indent=2))
