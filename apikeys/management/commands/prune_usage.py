"""Delete usage records older than USAGE_RETENTION_DAYS, and rollups (hourly and daily) older than
USAGE_ROLLUP_RETENTION_DAYS (kept for ever when unset).

    manage.py prune_usage [--batch 10000] [--pause 0.1]

Safe while the gateway serves: deletes go by ranges of primary keys in short transactions
(apikeys/retention.py). deploy/gateway-prune-usage.timer runs it every night.
"""

from django.conf import settings
from django.core.management.base import BaseCommand

from apikeys import retention


class Command(BaseCommand):
    help = "Delete usage records and rollups older than their retention, in small batches."

    def add_arguments(self, parser):
        parser.add_argument(
            "--batch",
            type=int,
            default=retention.BATCH,
            metavar="ROWS",
            help=f"Rows deleted per transaction (default {retention.BATCH:,}).",
        )
        parser.add_argument(
            "--pause",
            type=float,
            default=0.0,
            metavar="SECONDS",
            help="Seconds to wait between transactions, to leave the database to the "
            "gateway on a busy day (default 0).",
        )

    def handle(self, *args, batch, pause, **options):
        pruned = retention.prune(batch=max(1, batch), pause=max(0.0, pause))
        rollups = (
            f"{pruned.rollups:,} rollup rows (hourly and daily) older than "
            f"{settings.USAGE_ROLLUP_RETENTION_DAYS} days"
            if settings.USAGE_ROLLUP_RETENTION_DAYS is not None
            else "no rollups (kept for ever)"
        )
        self.stdout.write(
            f"Deleted {pruned.records:,} usage records older than "
            f"{settings.USAGE_RETENTION_DAYS} days and {rollups}, in {pruned.seconds:.1f} s."
        )
