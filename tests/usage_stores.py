"""Usage writer stores that fail as a database does, put in DatabaseStore's place.

In-process tests set `writer.store`; a daphne under test names one in USAGE_WRITER_STORE
through tests/settings_usage_store.py, with its parameters in the environment.
"""

import os
import threading
import time

from django.db import OperationalError

from apikeys.writer import DatabaseStore


class LockedDatabase(DatabaseStore):
    """A database locked for `seconds` from the first write: until then, every write of a
    record fails as SQLite's does once its wait for the lock has run out."""

    def __init__(self, seconds=None):
        if seconds is None:
            seconds = float(os.environ["TEST_USAGE_LOCKED_SECONDS"])
        self.seconds = seconds
        self.locked_until = None
        self.failures = 0

    def _locked(self):
        if self.locked_until is None:
            self.locked_until = time.monotonic() + self.seconds
        if time.monotonic() < self.locked_until:
            self.failures += 1
            raise OperationalError("database is locked")

    def add(self, records):
        self._locked()
        super().add(records)

    def add_one(self, fields):
        self._locked()
        super().add_one(fields)


class StuckDatabase(DatabaseStore):
    """A database whose writes of records wait until `release` is set."""

    def __init__(self):
        self.release = threading.Event()

    def add(self, records):
        self.release.wait()
        super().add(records)


class Crash(BaseException):
    """What no code of the writer's expects: not even an Exception."""


class BrokenOnce(DatabaseStore):
    """A store whose first write of records raises `error`, and whose recovery from it
    raises too, as a bug of the writer's own would."""

    def __init__(self, error):
        self.error = error
        self.raised = False

    def add(self, records):
        if not self.raised:
            self.raised = True
            raise self.error
        super().add(records)

    def recover(self):
        if isinstance(self.error, Exception):
            raise RuntimeError("recovering failed too")
        super().recover()
