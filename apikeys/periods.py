"""The calendar periods budgets are counted in, aligned in settings.LIMITS_TIME_ZONE.

    day        from 00:00 to the next 00:00
    week       from Monday 00:00 to the next Monday 00:00
    month      from the 1st 00:00 to the next month's 1st 00:00
    lifetime   from the beginning of time; never resets

A period's boundaries are wall-clock midnights in the zone, so a day across a daylight
saving change lasts 23 or 25 hours; every boundary is returned as an aware datetime.
"""

from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from django.conf import settings

PERIODS = ("day", "week", "month", "lifetime")
# The start of the lifetime period: before any usage record.
BEGINNING = datetime(2000, 1, 1, tzinfo=UTC)


@cache
def _zone(name):
    return ZoneInfo(name)


def zone():
    return _zone(settings.LIMITS_TIME_ZONE)


def _local(now):
    """`now` (an aware datetime or epoch seconds) in the limits' time zone."""
    if not isinstance(now, datetime):
        now = datetime.fromtimestamp(now, UTC)
    return now.astimezone(zone())


def _midnight(local):
    # Built from the date, not by replace() on `local`, so that its UTC offset is the one
    # in force at that midnight rather than at `local`.
    return datetime(local.year, local.month, local.day, tzinfo=local.tzinfo)


def start(period, now):
    """Return the first moment of the period that holds `now`."""
    local = _local(now)
    if period == "day":
        return _midnight(local)
    if period == "week":
        return _midnight(local - timedelta(days=local.weekday()))
    if period == "month":
        return _midnight(local.replace(day=1))
    if period == "lifetime":
        return BEGINNING
    raise ValueError(f"Unknown period {period!r}")


def end(period, now):
    """Return the first moment of the next period (when this one resets); None for lifetime."""
    first = start(period, now)
    if period == "day":
        return _midnight(first + timedelta(days=1, hours=12))
    if period == "week":
        return _midnight(first + timedelta(days=7, hours=12))
    if period == "month":
        if first.month == 12:
            return _midnight(first.replace(year=first.year + 1, month=1))
        return _midnight(first.replace(month=first.month + 1))
    if period == "lifetime":
        return None
    raise ValueError(f"Unknown period {period!r}")
