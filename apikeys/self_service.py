"""What a key holder may read about their own key: its limits and what is left of them
(GET /v1/key), and its usage over time in buckets (GET /v1/usage).

    describe_key(key)      the key, its windows, and the budgets of the key and its team
    rotation_state(key)    None until keys can be rotated
    usage_buckets(...)     requests, tokens and cost per day or hour, optionally grouped

Reading these spends nothing: no usage record is written and no token or budget window is
counted; the request itself counts against the key's request rate like any read endpoint.
"""

from datetime import UTC, datetime, timedelta

from django.db.models.functions import TruncDay, TruncHour

from apikeys import periods, throttling
from apikeys.models import Team, UsageRecord
from apikeys.rollups import TIME_FIELD, Span, merge, sums
from gateway.errors import InvalidRequest

# What /v1/usage may group by, each a UsageRecord field.
GROUPS = ("model", "endpoint")
# What each result sums (apikeys/rollups.sums).
SUMS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost")
# Rows of results one answer may hold (buckets times groups): about 2 MB of JSON.
MAX_RESULTS = 10_000


def describe_key(key):
    """Return what GET /v1/key answers for a key (reads the database and the cache)."""
    now = throttling.timer()
    # Read afresh, not through key.team: the key may be the one this process keeps in
    # memory (apikeys.models.keys_by_digest), and its team's budgets change on their own.
    team = Team.objects.filter(pk=key.team_id).first() if key.team_id else None
    return {
        "object": "api_key",
        "name": key.name,
        "prefix": key.prefix,
        "permissions": key.permissions,
        "state": key.state,
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "team": team.name if team else None,
        # Empty means every model the gateway serves.
        "allowed_models": key.allowed_models,
        "rate_limit": key.rate_limit,
        "request_window": _window(throttling.request_window(key, increment=False), now),
        "token_windows": [_window(window, now) for window in throttling.token_windows(key, now)],
        "budgets": {
            "key": _budgets(key, now),
            "team": _budgets(team, now) if team else None,
        },
        "rotation": rotation_state(key),
    }


def rotation_state(key):
    """Return when the key's secret was last replaced, until when the one before it is
    still taken, and when its rotation policy wants it replaced; None for a key never
    rotated and with no policy."""
    if key.rotated_at is None and key.rotate_every_days is None:
        return None
    return {
        "rotated_at": key.rotated_at,
        # Null once the replaced secret is refused (or when there is none).
        "previous_secret_valid_until": (
            key.previous_valid_until if key.previous_secret_works else None
        ),
        "rotate_every_days": key.rotate_every_days,
        "rotation_due_at": key.rotation_due_at,
        "rotation_due": key.rotation_due,
    }


def usage_buckets(key, start, end, bucket, group_by=()):
    """Return the key's usage in [start, end) per day or hour, grouped by `group_by`.

    Days are calendar days in settings.LIMITS_TIME_ZONE, the days its daily budgets count;
    hours are whole hours of UTC, which are the zone's own hours unless its offset is not
    a whole number of hours. The first and last buckets are cut at `start` and `end`, so
    that each says exactly which span it sums. Raises InvalidRequest (param group_by) if
    the answer would hold more than MAX_RESULTS rows.

    Read from the rollups (apikeys/rollups.Span), so that a year of a busy key costs its
    days, and usage older than the records kept (USAGE_RETENTION_DAYS) is still there: the
    daily rollups where the zone's days are UTC days, the hourly ones where its midnights
    fall on UTC hours, and the records alone in a zone whose offset is not whole hours.
    """
    zone = periods.zone()
    spans = list(_bucket_spans(start, end, bucket))
    offsets = (
        {first.astimezone(zone).utcoffset() for first, _ in spans} if bucket == "day" else set()
    )
    if all(offset == timedelta(0) for offset in offsets):
        sources = list(Span(start, end, by_day=bucket == "day"))
    elif all(offset % timedelta(hours=1) == timedelta(0) for offset in offsets):
        sources = list(Span(start, end, by_day=False))
    else:
        sources = [UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end)]
    rows = []
    for queryset in sources:
        time = TIME_FIELD[queryset.model]
        trunc = TruncDay(time, tzinfo=zone) if bucket == "day" else TruncHour(time, tzinfo=UTC)
        rows += (
            queryset.filter(api_key=key)
            .annotate(bucket_start=trunc)
            .values("bucket_start", *group_by)
            .annotate(**sums(queryset.model, SUMS))
            .order_by()[: MAX_RESULTS + 1]
        )
    merged = merge(("bucket_start", *group_by), rows)
    if len(merged) > MAX_RESULTS:
        raise InvalidRequest(
            f"Invalid value for 'group_by': the answer would hold more than {MAX_RESULTS:,} "
            "results; group by less, use day buckets, or narrow the range from start to end.",
            param="group_by",
        )
    results = {}
    for row in merged:
        results.setdefault(row["bucket_start"], []).append(_result(row, group_by))
    return [
        {
            "object": "bucket",
            "start_time": int(max(first, start).timestamp()),
            "end_time": int(min(following, end).timestamp()),
            "results": results.get(first, []),
        }
        for first, following in spans
    ]


def _result(row, group_by):
    return {
        "object": "usage.result",
        "requests": row["n_requests"],
        "prompt_tokens": row["n_prompt_tokens"],
        "completion_tokens": row["n_completion_tokens"],
        "total_tokens": row["n_total_tokens"],
        # A JSON number in USD, as usage_report --json writes it.
        "cost": float(row["n_cost"]),
        # None when not grouped by it, as OpenAI's usage buckets do.
        **{group: row[group] if group in group_by else None for group in GROUPS},
    }


def _bucket_spans(start, end, bucket):
    """Yield (first moment, first moment of the next) of each bucket [start, end) touches."""
    if bucket == "day":
        first = periods.start("day", start)
    else:
        first = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while first < end:
        following = periods.end("day", first) if bucket == "day" else first + timedelta(hours=1)
        yield first, following
        first = following


def _window(window, now):
    if window is None:
        # django-ratelimit is switched off (RATELIMIT_ENABLE = False).
        return None
    return {
        "per": window.per,
        "limit": window.limit,
        "used": window.used,
        "remaining": window.remaining,
        "resets_in_seconds": round(window.resets_in, 3),
        # The window's own edges are whole seconds of its clock.
        "resets_at": datetime.fromtimestamp(
            round(now + window.resets_in if window.ends_at is None else window.ends_at), UTC
        ),
    }


def _budgets(holder, now):
    """Return each budget set on a key or team, with what is spent, reserved by requests
    running and left of it (USD), as the limit goes by and the x-budget-* headers say."""
    return [
        {
            "period": status.period,
            "limit_usd": float(status.limit),
            "spent_usd": float(status.spent),
            "reserved_usd": float(status.reserved),
            "remaining_usd": float(status.remaining),
            # None for a lifetime budget, which never resets.
            "resets_at": status.resets_at,
        }
        for status in throttling.budget_status(holder, now)
    ]
