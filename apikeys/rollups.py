"""Hourly rollups of usage records: written with the records, rebuilt from them, and summed
for the limits.

The usage writer (apikeys/writer.py) adds a batch's records to UsageRollup in the
transaction that writes them, with one `INSERT ... ON CONFLICT DO UPDATE SET n = n +
excluded.n` per group: the database adds under the row's lock, so writers in any number of
processes stay exact, and a batch that fails leaves neither its records nor their sums.
Groups are written in one order, so that two writers never wait for each other's rows
crosswise (a deadlock).

`rebuild()` (manage.py rebuild_rollups) recomputes the hours whose records are all kept;
older hours, whose records are pruned (apikeys/retention.py), keep their rollups.
"""

from datetime import UTC, timedelta
from decimal import Decimal

from django.db import connections, transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import Coalesce, TruncHour
from django.utils import timezone

from apikeys.models import UsageRecord, UsageRollup

HOUR = timedelta(hours=1)
# The columns that name a group, in the order of the unique constraint apikeys_rollup_group.
GROUP = ("hour", "api_key_id", "key_name", "team_id", "model", "endpoint", "status", "unit")
SUMS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "units",
    "cost",
    "latency_ms",
    "first_token_ms",
    "first_token_count",
)
# Groups per INSERT statement: 19 parameters each, well under SQLite's 32,766.
ROWS_PER_STATEMENT = 200


def hour_of(moment):
    """Return the start of the UTC hour that holds `moment`."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def next_hour(moment):
    """Return the first start of a UTC hour at or after `moment`."""
    start = hour_of(moment)
    return start if start == moment else start + HOUR


def add(records):
    """Add these UsageRecord instances (written in the current transaction) to the rollups."""
    groups = {}
    for record in records:
        key = (
            hour_of(record.created_at),
            record.api_key_id,
            record.key_name,
            record.team_id,
            record.model,
            record.endpoint,
            record.status,
            record.unit,
        )
        sums = groups.setdefault(key, dict.fromkeys(SUMS, 0))
        sums["requests"] += 1
        sums["errors"] += record.status != UsageRecord.OK
        sums["prompt_tokens"] += record.prompt_tokens
        sums["completion_tokens"] += record.completion_tokens
        sums["total_tokens"] += record.total_tokens
        sums["cached_tokens"] += record.cached_tokens
        sums["units"] += record.units
        sums["cost"] += Decimal(record.cost)
        sums["latency_ms"] += record.latency_ms
        if record.time_to_first_token_ms is not None:
            sums["first_token_ms"] += record.time_to_first_token_ms
            sums["first_token_count"] += 1
    ordered = sorted(groups.items(), key=lambda item: _sort_key(item[0]))
    connection = connections[UsageRollup.objects.db]
    table = UsageRollup._meta.db_table
    columns = [*GROUP, *SUMS]
    quote = connection.ops.quote_name
    placeholders = "(" + ", ".join(["%s"] * len(columns)) + ")"
    updates = ", ".join(
        f"{quote(name)} = {quote(table)}.{quote(name)} + excluded.{quote(name)}" for name in SUMS
    )
    # The key's latest name stays with its group; a renamed key starts a group of its own.
    conflict = (
        f"{quote('hour')}, COALESCE({quote('api_key_id')}, 0), {quote('key_name')}, "
        f"COALESCE({quote('team_id')}, 0), {quote('model')}, {quote('endpoint')}, "
        f"{quote('status')}, {quote('unit')}"
    )
    with connection.cursor() as cursor:
        for start in range(0, len(ordered), ROWS_PER_STATEMENT):
            chunk = ordered[start : start + ROWS_PER_STATEMENT]
            params = []
            for key, sums in chunk:
                params.append(connection.ops.adapt_datetimefield_value(key[0]))
                params.extend(key[1:])
                params.extend(sums[name] for name in SUMS)
            cursor.execute(
                f"INSERT INTO {quote(table)} ({', '.join(quote(c) for c in columns)}) "
                f"VALUES {', '.join([placeholders] * len(chunk))} "
                f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}",
                params,
            )


def _sort_key(key):
    # None does not compare with numbers; no id is 0 or less.
    return tuple(-1 if value is None else value for value in key)


def record_sums():
    """Return the rollup's sums as aggregates over UsageRecord rows, named n_<sum>
    (an annotation may not take the name of a field of the model)."""
    return {
        "n_requests": Count("id"),
        "n_errors": Count("id", filter=~Q(status=UsageRecord.OK)),
        "n_prompt_tokens": Sum("prompt_tokens"),
        "n_completion_tokens": Sum("completion_tokens"),
        "n_total_tokens": Sum("total_tokens"),
        "n_cached_tokens": Sum("cached_tokens"),
        "n_units": Sum("units"),
        "n_cost": Sum("cost"),
        "n_latency_ms": Sum("latency_ms"),
        "n_first_token_ms": Coalesce(Sum("time_to_first_token_ms"), 0),
        "n_first_token_count": Count("time_to_first_token_ms"),
    }


def oldest_kept_hour():
    """Return the first hour whose records are all kept (the oldest record's hour), or None."""
    oldest = UsageRecord.objects.order_by("created_at").values_list("created_at", flat=True)
    moment = oldest.first()
    return None if moment is None else hour_of(moment)


def rebuild(since=None):
    """Recompute the rollups from `since` (a moment; default: the oldest record) on.

    Hours before the oldest record kept are left as they are: their records are pruned.
    Return the first hour recomputed (None when there are no records) and the rows written.
    On PostgreSQL, writers wait while the rollups are rebuilt (a lock on the table), so
    that a record written meanwhile is neither lost nor counted twice.
    """
    connection = connections[UsageRollup.objects.db]
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # Blocks the writers' upserts (ROW EXCLUSIVE), not readers. A writer whose
            # records are not yet committed adds their sums once the rebuild commits.
            with connection.cursor() as cursor:
                cursor.execute(
                    f"LOCK TABLE {connection.ops.quote_name(UsageRollup._meta.db_table)} "
                    "IN SHARE ROW EXCLUSIVE MODE"
                )
        first = oldest_kept_hour()
        if first is None:
            return None, 0
        if since is not None:
            first = max(first, hour_of(since))
        UsageRollup.objects.filter(hour__gte=first).delete()
        grouped = (
            UsageRecord.objects.filter(created_at__gte=first)
            .annotate(hour=TruncHour("created_at", tzinfo=UTC))
            .values(*GROUP)
            .annotate(**record_sums())
            .order_by()
        )
        # One INSERT ... SELECT: the sums never leave the database. The SELECT lists the
        # GROUP columns, then the sums, in the order of record_sums() (that of SUMS).
        select, params = grouped.query.sql_with_params()
        quote = connection.ops.quote_name
        columns = ", ".join(quote(name) for name in [*GROUP, *SUMS])
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {quote(UsageRollup._meta.db_table)} ({columns}) {select}", params
            )
            written = cursor.rowcount
    return first, written


def usage_sums(api_key=None, team=None, since=None, now=None):
    """Return {"requests", "total_tokens", "cost"} of a key's or a team's usage since a
    moment: rollups for the whole hours, records for the partial hours at either end.

    The records read are at most an hour's at each end, through the (key or team,
    created_at) indexes.
    """
    now = now or timezone.now()
    current = hour_of(now)
    first = next_hour(since)
    rollups = UsageRollup.objects.filter(hour__gte=first, hour__lt=current)
    records = UsageRecord.objects.filter(created_at__gte=since)
    if first < current:
        # The hour `since` falls in (if it is not a whole one), and the current hour.
        records = records.filter(Q(created_at__lt=first) | Q(created_at__gte=current))
    if api_key is not None:
        rollups = rollups.filter(api_key=api_key)
        records = records.filter(api_key=api_key)
    if team is not None:
        rollups = rollups.filter(team=team)
        records = records.filter(team=team)
    if first >= current:
        rollups = rollups.none()
    from_rollups = rollups.aggregate(
        requests=Coalesce(Sum("requests"), 0),
        total_tokens=Coalesce(Sum("total_tokens"), 0),
        cost=Sum("cost"),
    )
    from_records = records.aggregate(
        requests=Count("id"),
        total_tokens=Coalesce(Sum("total_tokens"), 0),
        cost=Sum("cost"),
    )
    return {
        "requests": from_rollups["requests"] + from_records["requests"],
        "total_tokens": from_rollups["total_tokens"] + from_records["total_tokens"],
        "cost": (from_rollups["cost"] or Decimal(0)) + (from_records["cost"] or Decimal(0)),
    }
