"""Database rows kept in this process for a few seconds, so the request path need not ask.

Each process forgets what it holds when the row changes through its own ORM (signals), and
everything after `settings.REGISTRY_CACHE_SECONDS` at the latest. A ChangeMark in the shared
cache tells the other processes sooner: a key revoked in one process (the admin, the CLI)
is refused by every other within CHANGE_CHECK_SECONDS.
"""

import asyncio
import logging
import secrets
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.db import transaction

from gateway.db import off_the_request_thread

logger = logging.getLogger(__name__)

MISSING = object()
# Seconds between two reads of a ChangeMark by one process: how long a change made in another
# process may go unseen. A read is a cache round trip from a pooled thread: 0.67 ms at the
# median with Redis on loopback (0.44 ms of it the GET; 2,000 reads on the 2-core test
# machine), a third of what the gateway adds to a request (2.0-2.2 ms, make bench). So at
# most one read per process in this time, whatever the request rate, not one per request.
CHANGE_CHECK_SECONDS = 0.2
# Seconds a process that made a change waits before saying every process sees it: one
# check interval, and as long again for a read that was under way when the change was made.
CHANGE_SETTLE_SECONDS = 2 * CHANGE_CHECK_SECONDS + 0.1
# Entries one TimedCache holds at most; past that it starts afresh rather than grow.
MAX_ENTRIES = 10_000


def _lifetime():
    return settings.REGISTRY_CACHE_SECONDS


class TimedCache:
    """A mapping whose entries are forgotten after the registry's lifetime."""

    def __init__(self):
        self._entries = {}
        # Bumped by clear(), so that a value read before a change is not kept (see set()).
        self.generation = 0

    def get(self, key):
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return MISSING
        return entry[1]

    def set(self, key, value, generation=None):
        """Keep a value; not if it was read in an earlier `generation` (before a clear())."""
        if generation is not None and generation != self.generation:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + _lifetime(), value)

    def clear(self, *args, **kwargs):
        """Forget everything (takes and ignores a signal's arguments)."""
        self._entries.clear()
        self.generation += 1


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


class ChangeMark:
    """A mark in the shared cache that a process making a change replaces with a new one.

    Every process reads it at most every CHANGE_CHECK_SECONDS (`follow()`, from the request
    path) and calls `on_change` when it differs from what it read last. A random mark rather
    than a counter: a counter evicted and counted again could come back to the value a
    process last read. On the in-process cache there is nothing to share: other processes
    see a change after REGISTRY_CACHE_SECONDS, as before.
    """

    # The cache holding the mark (None: Django's default cache) and the clock of the checks,
    # in seconds; tests give their own.
    cache = None
    timer = staticmethod(time.monotonic)

    def __init__(self, name, on_change):
        self.name = name
        self._on_change = on_change
        self._seen = MISSING
        self._checked = float("-inf")
        self._pending = None
        # Whether the last publish() failed to reach the cache, and whether a change waits
        # for its transaction's commit to be published.
        self.publish_failed = False
        self.unpublished = False

    def _cache(self):
        return caches["default"] if self.cache is None else self.cache

    @property
    def shared(self):
        return cache_kind(self._cache()) == "shared"

    def publish_on_commit(self):
        """Publish a change once the transaction that makes it is committed (sync).

        Not before: a process that read the row again in between would keep the old one.
        """
        self.unpublished = True
        transaction.on_commit(self.publish)

    def publish(self):
        """Tell every process that something changed (sync)."""
        self.unpublished = False
        try:
            self._cache().set(self.name, secrets.token_hex(8), timeout=None)
            self.publish_failed = False
        except Exception:
            self.publish_failed = True
            logger.exception("Could not publish a change of %s to the shared cache", self.name)

    def settle(self):
        """Wait until every process has seen a change just published (sync).

        Return True, or False when other processes will see it only after
        REGISTRY_CACHE_SECONDS: the cache is not shared, could not be told, or the change
        is not committed yet.
        """
        if not self.shared or self.publish_failed or self.unpublished:
            return False
        time.sleep(CHANGE_SETTLE_SECONDS)
        return True

    async def follow(self):
        """Call `on_change` if another process published a change since the last check."""
        if not self.shared or self.timer() < self._checked + CHANGE_CHECK_SECONDS:
            return
        pending = self._pending
        if pending is None or pending.get_loop() is not asyncio.get_running_loop():
            pending = self._pending = asyncio.ensure_future(self._check())
        await asyncio.shield(pending)

    async def _check(self):
        self._checked = self.timer()
        try:
            mark = await sync_to_async(self._cache().get, thread_sensitive=False)(self.name)
        except Exception:
            # Without the mark a change may have been missed: forget, and read the rows again.
            logger.exception("Could not read %s from the shared cache", self.name)
            self._on_change()
            return
        finally:
            self._pending = None
        if mark != self._seen:
            self._seen = mark
            self._on_change()
