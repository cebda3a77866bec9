"""Hourly and daily rollups of usage records: written with the records, rebuilt from them,
and summed for the reports and the limits.

The usage writer (apikeys/writer.py) adds a batch's records to UsageRollup (per UTC hour)
and UsageDayRollup (per UTC day) in the transaction that writes them, with one
`INSERT ... ON CONFLICT DO UPDATE SET n = n + excluded.n` per group: the database adds under
the row's lock, so writers in any number of processes stay exact, and a batch that fails
leaves neither its records nor their sums. Groups are written in one order, hours before
days, so that two writers never wait for each other's rows crosswise (a deadlock).

A span of time is read from three places (`Span`): the records of its partial hours at
either end, the hourly rows of its partial days, and the daily rows of its whole days. A
month then reads about 30 rows a group rather than 720: the cost of a report follows the
groups of its period, not its hours nor the records the table holds.

What is summed is the same from records and rollups (`sums`), and rows of a span's three
sources are added up in one place (`merge`). `requests` counts the client's requests: a
fallback candidate that failed after reading the prompt leaves a record of its own
(UsageRecord.attempt), whose tokens, units and cost count under its model, but which is
neither a request, an error nor a latency of its own; the request's own record is all of
those. So a request whose first candidate failed is one request, and its cost includes
the prompt that candidate read.

`rebuild()` (manage.py rebuild_rollups) recomputes the hours whose records are all kept,
then the days from the hours; older hours, whose records are pruned
(apikeys/retention.py), keep their rollups.
"""

from datetime import UTC, timedelta
from decimal import Decimal
from operator import itemgetter

from django.db import connections, transaction
from django.db.models import Case, Count, DecimalField, F, IntegerField, Q, Sum, When
from django.db.models.functions import Coalesce, TruncDay, TruncHour
from django.utils import timezone

from apikeys.models import UsageDayRollup, UsageRecord, UsageRollup

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# The columns that name a group after its hour or day, in the order of the unique
# constraints apikeys_rollup_group and apikeys_day_rollup_group.
GROUP_FIELDS = ("api_key_id", "key_name", "team_id", "model", "endpoint", "status", "unit")
GROUP = ("hour", *GROUP_FIELDS)
DAY_GROUP = ("day", *GROUP_FIELDS)
# The moment each source of a span is filed under (`Span`).
TIME_FIELD = {UsageRecord: "created_at", UsageRollup: "hour", UsageDayRollup: "day"}
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


def day_of(moment):
    """Return the start of the UTC day that holds `moment`."""
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def next_day(moment):
    """Return the first start of a UTC day at or after `moment`."""
    start = day_of(moment)
    return start if start == moment else start + DAY


class Span:
    """Where the usage of [start, end) is read from: `records` for the partial hours at
    either end, `hours` for the whole hours of the partial days, `days` for the whole
    days (when `by_day`; else the hours cover every whole hour). Each is a queryset, maybe
    empty; `end` None is open (up to now, and any record written later).
    """

    def __init__(self, start, end=None, now=None, by_day=True):
        first_hour = next_hour(start)
        last_hour = hour_of(end if end is not None else now or timezone.now())
        hours = UsageRollup.objects.none()
        days = UsageDayRollup.objects.none()
        if first_hour < last_hour:
            # Each partial hour as a range of its own: a range around both with the hours
            # between filtered out would make the database read every record between them.
            tail = Q(created_at__gte=last_hour)
            if end is not None:
                tail &= Q(created_at__lt=end)
            records = UsageRecord.objects.filter(
                Q(created_at__gte=start, created_at__lt=first_hour) | tail
            )
            first_day, last_day = next_day(first_hour), day_of(last_hour)
            if by_day and first_day < last_day:
                hours = UsageRollup.objects.filter(
                    Q(hour__gte=first_hour, hour__lt=first_day)
                    | Q(hour__gte=last_day, hour__lt=last_hour)
                )
                days = UsageDayRollup.objects.filter(day__gte=first_day, day__lt=last_day)
            else:
                hours = UsageRollup.objects.filter(hour__gte=first_hour, hour__lt=last_hour)
        else:
            records = UsageRecord.objects.filter(created_at__gte=start)
            if end is not None:
                records = records.filter(created_at__lt=end)
        self.records, self.hours, self.days = records, hours, days

    def filter(self, *args, **kwargs):
        """Filter all three alike (by fields that records and rollups share)."""
        self.records = self.records.filter(*args, **kwargs)
        self.hours = self.hours.filter(*args, **kwargs)
        self.days = self.days.filter(*args, **kwargs)
        return self

    def __iter__(self):
        return iter((self.records, self.hours, self.days))


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
        # As _record_sum() counts them: a failed fallback attempt is no request of its own.
        if not record.attempt:
            sums["requests"] += 1
            sums["errors"] += record.status != UsageRecord.OK
            sums["latency_ms"] += record.latency_ms
        sums["prompt_tokens"] += record.prompt_tokens
        sums["completion_tokens"] += record.completion_tokens
        sums["total_tokens"] += record.total_tokens
        sums["cached_tokens"] += record.cached_tokens
        sums["units"] += record.units
        sums["cost"] += Decimal(record.cost)
        if record.time_to_first_token_ms is not None:
            sums["first_token_ms"] += record.time_to_first_token_ms
            sums["first_token_count"] += 1
    days = {}
    for key, sums in groups.items():
        into = days.setdefault((day_of(key[0]), *key[1:]), dict.fromkeys(SUMS, 0))
        for name in SUMS:
            into[name] += sums[name]
    _upsert(UsageRollup, GROUP, groups)
    _upsert(UsageDayRollup, DAY_GROUP, days)


def _upsert(model, group, groups):
    """Add the sums of `groups` ({group key: {sum: value}}) to the rows of `model`."""
    ordered = sorted(groups.items(), key=lambda item: _sort_key(item[0]))
    connection = connections[model.objects.db]
    table = model._meta.db_table
    columns = [*group, *SUMS]
    quote = connection.ops.quote_name
    placeholders = "(" + ", ".join(["%s"] * len(columns)) + ")"
    updates = ", ".join(
        f"{quote(name)} = {quote(table)}.{quote(name)} + excluded.{quote(name)}" for name in SUMS
    )
    # The key's latest name stays with its group; a renamed key starts a group of its own.
    conflict = (
        f"{quote(group[0])}, COALESCE({quote('api_key_id')}, 0), {quote('key_name')}, "
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


def sums(model, names=SUMS):
    """Return aggregates of the sums `names` over rows of `model`, each named n_<name> (an
    annotation may not take the name of a field of the model): the same figures from the
    records (UsageRecord, or a migration's copy of it) as from the rollups (UsageRollup,
    UsageDayRollup), so that a span's sources add up (`merge`).

    Besides SUMS, "counted_units" is what a request counts in its endpoint's unit: its tokens
    for the text endpoints (records written before 0006_usage_units have no units), images,
    audio seconds, characters or documents for the others.
    """
    fields = {field.name for field in model._meta.concrete_fields}
    if "requests" in fields:
        return {f"n_{name}": _rollup_sum(name) for name in names}
    # A migration before 0012_usage_sums passes a UsageRecord without attempts.
    requests = Q(attempt=False) if "attempt" in fields else Q(pk__isnull=False)
    return {f"n_{name}": _record_sum(name, requests) for name in names}


def _rollup_sum(name):
    if name == "counted_units":
        return Sum(_counted())
    return Sum(name)


def _record_sum(name, requests):
    """The rollup column `name` as an aggregate over the records; `requests` selects the
    records that are requests of the client's (not failed fallback attempts)."""
    if name == "requests":
        return Count("id", filter=requests)
    if name == "errors":
        return Count("id", filter=requests & ~Q(status=UsageRecord.OK))
    if name == "latency_ms":
        # A request's own record times all of it, the failed candidates' part included.
        return Coalesce(Sum("latency_ms", filter=requests), 0)
    if name == "first_token_ms":
        return Coalesce(Sum("time_to_first_token_ms"), 0)
    if name == "first_token_count":
        return Count("time_to_first_token_ms")
    if name == "cost":
        # As many digits as the rollups' sums: more than one record's cost holds.
        return Sum("cost", output_field=DecimalField(max_digits=20, decimal_places=8))
    if name == "counted_units":
        return Sum(_counted())
    return Sum(name)


def _counted():
    return Case(
        When(unit=UsageRecord.TOKENS, then=F("total_tokens")),
        default=F("units"),
        output_field=IntegerField(),
    )


def merge(groups, rows):
    """Add up rows of the same group (their values of the fields `groups`), summing their
    n_ fields (None as 0); return a row per group, in the order of the groups' values
    (None first).

    Rows of a span's three sources (records, hours, days) come in one list. Profiled on
    the usage report's pages: itemgetter and one dict per group are what keep this a
    small part of a page's time.
    """
    merged = {}
    key = itemgetter(*groups) if groups else (lambda row: ())
    names = None
    for row in rows:
        if names is None:
            names = [name for name in row if name.startswith("n_")]
        group = key(row)
        into = merged.get(group)
        if into is None:
            merged[group] = {
                **{name: row[name] for name in groups},
                **{name: row[name] or 0 for name in names},
            }
        else:
            for name in names:
                into[name] += row[name] or 0
    return [merged[group] for group in sorted(merged, key=_sortable)]


def _sortable(group):
    # itemgetter of one field gives the value itself rather than a tuple of one.
    group = group if isinstance(group, tuple) else (group,)
    return tuple(("", "") if value is None else (type(value).__name__, value) for value in group)


def oldest_kept_hour():
    """Return the first hour whose records are all kept (the oldest record's hour), or None."""
    oldest = UsageRecord.objects.order_by("created_at").values_list("created_at", flat=True)
    moment = oldest.first()
    return None if moment is None else hour_of(moment)


def rebuild(since=None):
    """Recompute the rollups from `since` (a moment; default: the oldest record) on: the
    hours from the records, then the days from the hours.

    Hours before the oldest record kept are left as they are: their records are pruned.
    The day holding the first hour recomputed is summed again from all its hours, those
    kept and those recomputed. Return the first hour recomputed (None when there are no
    records) and the rows written (hours and days). On PostgreSQL, writers wait while the
    rollups are rebuilt (a lock on the tables), so that a record written meanwhile is
    neither lost nor counted twice.
    """
    with transaction.atomic():
        lock_writers_out(UsageRollup, UsageDayRollup)
        first = oldest_kept_hour()
        if first is None:
            return None, 0
        if since is not None:
            first = max(first, hour_of(since))
        written = hours_from_records(UsageRecord, UsageRollup, first)
        written += days_from_hours(UsageRollup, UsageDayRollup, day_of(first))
    return first, written


def lock_writers_out(hour_model, day_model):
    """On PostgreSQL, make the writers wait until the current transaction ends, so that the
    rollups can be summed again meanwhile; elsewhere (SQLite: one writer at a time) nothing.

    Blocks the writers' upserts (ROW EXCLUSIVE), not readers. A writer whose records are not
    yet committed adds their sums once the transaction commits. In the writers' order,
    hours then days. Takes the models, so that a migration can pass its own.
    """
    connection = connections[hour_model.objects.db]
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for model in (hour_model, day_model):
            cursor.execute(
                f"LOCK TABLE {connection.ops.quote_name(model._meta.db_table)} "
                "IN SHARE ROW EXCLUSIVE MODE"
            )


def hours_from_records(record_model, hour_model, first):
    """Replace the hourly rows from the hour `first` on by sums of the records; return the
    rows written. Takes the models, so that a migration can pass its own."""
    hour_model.objects.filter(hour__gte=first).delete()
    grouped = (
        record_model.objects.filter(created_at__gte=first)
        .annotate(hour=TruncHour("created_at", tzinfo=UTC))
        .values(*GROUP)
        .annotate(**sums(record_model))
        .order_by()
    )
    return _insert_select(hour_model, GROUP, grouped)


def days_from_hours(hour_model, day_model, first_day):
    """Replace the daily rows from the day `first_day` on by sums of the hourly rows; return
    the rows written."""
    day_model.objects.filter(day__gte=first_day).delete()
    grouped = (
        hour_model.objects.filter(hour__gte=first_day)
        .annotate(day=TruncDay("hour", tzinfo=UTC))
        .values(*DAY_GROUP)
        .annotate(**sums(hour_model))
        .order_by()
    )
    return _insert_select(day_model, DAY_GROUP, grouped)


def _insert_select(model, group, grouped):
    # One INSERT ... SELECT: the sums never leave the database. The SELECT lists the
    # group's columns, then the sums, in the order of SUMS.
    connection = connections[model.objects.db]
    select, params = grouped.query.sql_with_params()
    quote = connection.ops.quote_name
    columns = ", ".join(quote(name) for name in [*group, *SUMS])
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {quote(model._meta.db_table)} ({columns}) {select}", params)
        return cursor.rowcount


def usage_sums(api_key=None, team=None, since=None, now=None, until=None):
    """Return {"requests", "total_tokens", "cost"} of a key's or a team's usage since a
    moment: daily rollups for the whole days, hourly ones for the whole hours of the
    partial days, records for the partial hours at either end (`Span`).

    The records read are at most an hour's at each end, through the (key or team,
    created_at) indexes; a lifetime's sum reads a row per group a day. `until` (exclusive)
    ends the span at a moment; without it every record from `since` on counts, those made
    after `now` included (the limits' sums, whose counters count them too).
    """
    span = Span(since, end=until, now=now)
    if api_key is not None:
        span.filter(api_key=api_key)
    if team is not None:
        span.filter(team=team)
    totals = {"requests": 0, "total_tokens": 0, "cost": Decimal(0)}
    for rows in span:
        found = rows.aggregate(**sums(rows.model, totals))
        for name in totals:
            totals[name] += found[f"n_{name}"] or 0
    return totals
