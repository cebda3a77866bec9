"""How long usage is kept, and pruning what is older (manage.py prune_usage).

Raw records are kept USAGE_RETENTION_DAYS, their rollups USAGE_ROLLUP_RETENTION_DAYS
(None: for ever). Both limits fall on the start of a UTC hour, so that an hour's records
are either all kept or all pruned, and a rollup rebuilt from the records kept is whole; a
daily rollup goes with the last of its hours, so that a day kept is whole too.

Pruning deletes by ranges of primary keys, one short transaction each: a range is found
from the index on created_at, then deleted by its id bounds, so that no transaction holds
locks on more than BATCH rows and the writers and reports carry on meanwhile.
"""

import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apikeys.models import UsageDayRollup, UsageRecord, UsageRollup
from apikeys.rollups import day_of, hour_of

# Rows deleted per transaction: a few hundred milliseconds of locks on PostgreSQL.
BATCH = 10_000


def records_kept_from(now=None):
    """Return the first moment whose records are kept (a UTC hour's start)."""
    now = now or timezone.now()
    return hour_of(now - timedelta(days=settings.USAGE_RETENTION_DAYS))


def rollups_kept_from(now=None):
    """Return the first hour whose rollups are kept, or None when they are kept for ever."""
    if settings.USAGE_ROLLUP_RETENTION_DAYS is None:
        return None
    now = now or timezone.now()
    return hour_of(now - timedelta(days=settings.USAGE_ROLLUP_RETENTION_DAYS))


@dataclass
class Pruned:
    records: int = 0
    rollups: int = 0
    seconds: float = 0.0


def prune(now=None, batch=BATCH, pause=0.0):
    """Delete the records and rollups older than their retention, `batch` rows per
    transaction, sleeping `pause` seconds between transactions; return what was deleted."""
    started = time.monotonic()
    pruned = Pruned()
    pruned.records = _prune(UsageRecord, "created_at", records_kept_from(now), batch, pause)
    rollup_limit = rollups_kept_from(now)
    if rollup_limit is not None:
        pruned.rollups = _prune(UsageRollup, "hour", rollup_limit, batch, pause)
        pruned.rollups += _prune(UsageDayRollup, "day", day_of(rollup_limit), batch, pause)
    pruned.seconds = time.monotonic() - started
    return pruned


def _prune(model, field, before, batch, pause):
    deleted = 0
    older = model.objects.filter(**{f"{field}__lt": before})
    while True:
        # The ids of the next batch, oldest first: an index range scan on `field`.
        ids = list(older.order_by(field).values_list("id", flat=True)[:batch])
        if not ids:
            return deleted
        with transaction.atomic():
            # By id bounds, and the time again: a row of the range written late (its
            # created_at is the request's, its id the write's) is not taken with it.
            count, _ = older.filter(id__gte=min(ids), id__lte=max(ids)).delete()
        deleted += count
        if pause:
            time.sleep(pause)
