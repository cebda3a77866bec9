"""A clock that tests move by hand, for every window of apikeys/throttling.py, the grace
period of a rotated key's previous secret and the moment usage records are stamped with;
and the real time run on from another moment, to see what a suite that runs at the end of
a day sees (`run_real_time_from`)."""

import time
from datetime import UTC, datetime

import django_ratelimit.core
from django.utils import timezone

from apikeys import periods, throttling
from apikeys.models import ApiKey
from apikeys.writer import UsageWriter

# Seconds a test may move the clock on and still be in the day (so the week and the month)
# the clock stopped in: it never stops in the last 10 minutes of a day of LIMITS_TIME_ZONE.
# Less than half an hour, so that the clock stays in the real time's hour.
ROOM = 10 * 60
# The real clock, whatever a test makes time.time say.
_real_time = time.time


class FakeClock:
    """Stand still at a moment (seconds since the epoch) until told to move."""

    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now

    def time(self):
        # django-ratelimit calls time.time() on its module's `time`.
        return self.now

    def advance(self, seconds):
        self.now += seconds


def stop_at(real):
    """Return where the clock stops for a test that starts at `real` (seconds since the epoch).

    One second into the minute, so that a minute window has 59 s left. In the last ROOM
    seconds of a day, ROOM earlier, so that a test has ROOM to move the clock on within its
    day: a minute on from 23:59:01 is the next day, and a day limit is no longer spent.
    """
    moment = real // 60 * 60 + 1
    if periods.start("day", moment) != periods.start("day", moment + ROOM):
        moment -= ROOM
    return moment


def freeze(monkeypatch):
    """Stop the limits' clock near the real time (`stop_at`) and return it.

    Usage records are stamped on it too, so that each falls in the day and month the limits
    counted it in, even when the real time runs into the next day while the clock stands.
    Close to the real time (in its hour, at most ROOM and a minute behind), so that records
    a test writes with the real time fall in the clock's day and month.
    """
    clock = FakeClock(stop_at(time.time()))
    monkeypatch.setattr(throttling, "timer", clock)
    monkeypatch.setattr(ApiKey, "timer", clock)
    monkeypatch.setattr(UsageWriter, "timer", clock)
    monkeypatch.setattr(django_ratelimit.core, "time", clock)
    return clock


class RealTime:
    """The real time run on from another moment, as time.time() and timezone.now() tell it."""

    def __init__(self, moment):
        self.offset = moment - _real_time()

    def time(self):
        return _real_time() + self.offset

    def now(self):
        return datetime.fromtimestamp(self.time(), UTC)

    def advance(self, seconds):
        self.offset += seconds


def run_real_time_from(monkeypatch, moment):
    """Make time.time() and timezone.now() run on from `moment` (seconds since the epoch),
    as they would in a suite started then; return the RealTime, which `advance` moves on."""
    real = RealTime(moment)
    monkeypatch.setattr(time, "time", real.time)
    monkeypatch.setattr(timezone, "now", real.now)
    return real
