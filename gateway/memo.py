"""Database rows kept in this process for a few seconds, so the request path need not ask.

Each process forgets what it holds when the row changes through its own ORM (signals), and
everything after `settings.REGISTRY_CACHE_SECONDS` at the latest: a key revoked in the
admin of one process is refused by the others within that time.
"""

import asyncio
import time

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache

from gateway.db import off_the_request_thread

MISSING = object()
# Entries one TimedCache holds at most; past that it starts afresh rather than grow.
MAX_ENTRIES = 10_000


def _lifetime():
    return settings.REGISTRY_CACHE_SECONDS


class TimedCache:
    """A mapping whose entries are forgotten after the registry's lifetime."""

    def __init__(self):
        self._entries = {}

    def get(self, key):
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return MISSING
        return entry[1]

    def set(self, key, value):
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + _lifetime(), value)

    def clear(self, *args, **kwargs):
        """Forget everything (takes and ignores a signal's arguments)."""
        self._entries.clear()


class Snapshot:
    """One value built from the database by `load` (sync), rebuilt once it is too old.

    Requests that find it stale at the same moment share one rebuild.
    """

    def __init__(self, load):
        self._load = off_the_request_thread(load)
        self._value = MISSING
        self._expires = 0.0
        self._pending = None
        # Bumped by clear(), so that a rebuild that began before a change is not kept.
        self._generation = 0

    async def get(self):
        if self._value is not MISSING and self._expires >= time.monotonic():
            return self._value
        pending = self._pending
        if pending is None or pending.get_loop() is not asyncio.get_running_loop():
            pending = self._pending = asyncio.ensure_future(self._rebuild())
        return await asyncio.shield(pending)

    async def _rebuild(self):
        generation = self._generation
        try:
            value = await self._load()
            if generation == self._generation:
                self._value, self._expires = value, time.monotonic() + _lifetime()
            return value
        finally:
            self._pending = None

    def clear(self, *args, **kwargs):
        """Forget the value (takes and ignores a signal's arguments)."""
        self._value = MISSING
        self._pending = None
        self._generation += 1


def cache_kind(cache=None):
    """Return "local" if the cache lives in this process only, else "shared"."""
    cache = caches["default"] if cache is None else cache
    return "local" if isinstance(cache, LocMemCache) else "shared"
