"""Recompute the hourly usage rollups from the usage records.

    manage.py rebuild_rollups [--since 2026-11-01T00:00Z]

Hours whose records are pruned (older than the oldest record kept) keep their rollups. On
PostgreSQL the usage writers wait while it runs (apikeys/rollups.rebuild): give a --since
to rebuild only recent hours of a large table.
"""

from datetime import UTC

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_date, parse_datetime

from apikeys import rollups


def _moment(text):
    moment = parse_datetime(text)
    if moment is None:
        day = parse_date(text)
        if day is None:
            raise CommandError(f"--since: give a date or a date and time (ISO 8601), not {text!r}")
        moment = parse_datetime(f"{day.isoformat()}T00:00")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


class Command(BaseCommand):
    help = "Recompute the hourly usage rollups from the usage records kept."

    def add_arguments(self, parser):
        parser.add_argument(
            "--since",
            metavar="WHEN",
            help="Rebuild from the hour holding this moment (ISO 8601, UTC unless it says); "
            "default: from the oldest record kept.",
        )

    def handle(self, *args, since=None, **options):
        since = _moment(since) if since else None
        first, written = rollups.rebuild(since)
        if first is None:
            self.stdout.write("No usage records: the rollups are left as they are.")
            return
        self.stdout.write(
            f"Rebuilt {written:,} rollup rows from {first:%Y-%m-%d %H:00} UTC on; earlier "
            "hours are left as they are."
        )
