"""A clock that tests move by hand, for every window of apikeys/throttling.py and the grace
period of a rotated key's previous secret."""

import time

import django_ratelimit.core

from apikeys import throttling
from apikeys.models import ApiKey


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


def freeze(monkeypatch):
    """Stop the limits' clock one second into the current minute and return it.

    One second in, so that a minute window has 59 s left; close to the real time, so that
    usage records (stamped with the real time) fall in the clock's day and month.
    """
    clock = FakeClock(time.time() // 60 * 60 + 1)
    monkeypatch.setattr(throttling, "timer", clock)
    monkeypatch.setattr(ApiKey, "timer", clock)
    monkeypatch.setattr(django_ratelimit.core, "time", clock)
    return clock
