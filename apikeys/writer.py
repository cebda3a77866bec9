"""The usage writer: one thread per process that writes usage records in batches.

Each request awaits its own record, so a client that has seen the end of its answer can
count on the record being there; but records that arrive together are written in one
transaction, and the thread keeps its database connection open between batches. Under
load this turns a connection, a transaction and a thread hop per request into one
transaction per batch, and it keeps SQLite's single writer from being fought over.

A failed write does not lose its record. The request waits at most USAGE_WRITE_TIMEOUT
seconds and is told of a failure, but the thread keeps the record and writes it again
every USAGE_WRITE_RETRY_SECONDS; at exit (SIGTERM under daphne included), it writes what
is still queued or kept. A record it cannot write in the end (at exit, after MAX_ATTEMPTS,
or beyond MAX_KEPT) is logged at ERROR level with what it takes to enter it by hand.
An exception the thread did not expect fails its batch only: the batch's records are kept
the same way, and a thread that died anyway is started again by the next record.

Each batch is added to the hourly rollups (apikeys/rollups.py) in the transaction that
writes it, so that reports and limits can read sums that agree with the records.

Where records go is a store (`DatabaseStore`, the USAGE_WRITER_STORE setting), so that
tests can put a database that fails in its place and still run the writer as production
does.
"""

import asyncio
import atexit
import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import OperationalError, close_old_connections, connections, transaction
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)

# Records written in one transaction at most.
MAX_BATCH = 500
# Records kept for another attempt at most (about 1 KiB each): beyond this the oldest is
# logged and given up, so that a database that never comes back cannot exhaust memory.
MAX_KEPT = 100_000
# Attempts at writing one record before it is logged and given up: an hour at the default
# USAGE_WRITE_RETRY_SECONDS, for a record the database refuses as such (its key deleted
# meanwhile, say) rather than for being unavailable.
MAX_ATTEMPTS = 720
# Touches made without the thread, kept until done so that the loop does not drop them.
_inline_touches = set()


class UsageNotWritten(TimeoutError):
    """The usage writer did not write a record within USAGE_WRITE_TIMEOUT (it still will)."""


class DatabaseStore:
    """Write usage records and key touches to the database, on the calling thread's
    connection."""

    def add(self, records):
        """Write these records (dicts of UsageRecord fields) and add them to the hourly
        rollups, in one transaction; return the UsageRecord instances."""
        from apikeys import rollups
        from apikeys.models import UsageRecord

        instances = [UsageRecord(**fields) for fields in records]
        with transaction.atomic():
            UsageRecord.objects.bulk_create(instances)
            rollups.add(instances)
        return instances

    def add_one(self, fields):
        return self.add([fields])[0]

    def touch(self, touches):
        """Set last_used_at of keys: {key id: when}."""
        from apikeys.models import ApiKey

        with transaction.atomic():
            for key_id, when in touches.items():
                ApiKey.objects.filter(pk=key_id).update(last_used_at=when)

    def recover(self):
        """Drop a connection a failure may have broken; the next query opens another."""
        close_old_connections()
        connections["default"].close()

    def close(self):
        connections.close_all()


@dataclass(eq=False)
class _Record:
    fields: dict
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future | None = None
    written: bool = False
    # In UsageWriter._kept, waiting for another attempt.
    kept: bool = False
    attempts: int = 0


class _Close:
    """Ask the thread to close its database connections (tests drop their database)."""

    def __init__(self):
        self.done = threading.Event()


class _Stop(_Close):
    """Ask the thread to write what it holds and end."""


class UsageWriter:
    # The clock records are stamped with, in seconds since the epoch: the limits' clock
    # (apikeys/throttling.timer) in production. Injectable, so that tests which stop the
    # limits' clock (tests/clock.py) stamp records in the windows that clock counts them in.
    timer = staticmethod(time.time)

    def __init__(self, store=None):
        self._queue = queue.SimpleQueue()
        self._thread = None
        self._start_lock = threading.Lock()
        self._store = store
        # Records whose write failed, oldest first, and when to try them again (monotonic).
        self._kept = []
        self._retry_at = None
        self._exit_registered = False
        # False: write on the request's own database connection instead, for tests that
        # hold everything in one transaction, which no other connection can see into.
        self.threaded = True

    @property
    def store(self):
        if self._store is None:
            self._store = import_string(settings.USAGE_WRITER_STORE)()
        return self._store

    @store.setter
    def store(self, store):
        self._store = store

    def submit(self, fields):
        """Queue one UsageRecord with these fields and return at once, with a future that
        is done once the record is committed (see wait). Once queued, the record is the
        thread's: written later if its write fails, and at exit if still queued."""
        # The time of the request, not of a write that may come much later.
        fields = {"created_at": datetime.fromtimestamp(self.timer(), UTC), **fields}
        if not self.threaded:
            return asyncio.ensure_future(sync_to_async(self.store.add_one)(fields))
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._put(_Record(fields, loop, future))
        return future

    async def wait(self, written):
        """Wait for a submitted record's write (`written`, what submit returned).

        Raise the write's error if it failed, or UsageNotWritten after
        USAGE_WRITE_TIMEOUT seconds; either way the record is kept and written later.
        """
        try:
            # Shielded: a wait that runs out leaves the future to the thread.
            await asyncio.wait_for(asyncio.shield(written), settings.USAGE_WRITE_TIMEOUT)
        except TimeoutError:
            raise UsageNotWritten(
                f"The usage record was not written within {settings.USAGE_WRITE_TIMEOUT:g} s; "
                "it stays queued"
            ) from None

    def touch(self, key_id, when):
        """Set a key's last_used_at, without waiting for it."""
        if self.threaded:
            self._put(("touch", key_id, when))
        else:
            self._touch_inline(key_id, when)

    @staticmethod
    def _touch_inline(key_id, when):
        from apikeys.models import ApiKey

        task = asyncio.ensure_future(ApiKey.objects.filter(pk=key_id).aupdate(last_used_at=when))
        _inline_touches.add(task)
        task.add_done_callback(_inline_touches.discard)

    def close_connections(self, timeout=10):
        """Close the thread's database connections and wait until it has (seconds)."""
        if self._thread is None or not self._thread.is_alive():
            return
        request = _Close()
        self._queue.put(request)
        request.done.wait(timeout)

    def shutdown(self, timeout=None):
        """Write what is queued or kept and stop the thread; wait at most `timeout`
        seconds (USAGE_WRITER_SHUTDOWN_TIMEOUT by default). Run at exit."""
        if self._thread is None or not self._thread.is_alive():
            return
        timeout = settings.USAGE_WRITER_SHUTDOWN_TIMEOUT if timeout is None else timeout
        request = _Stop()
        self._queue.put(request)
        if not request.done.wait(timeout):
            logger.error(
                "The usage writer did not finish writing within %g s at exit; usage records "
                "still queued are lost",
                timeout,
            )
            return
        self._thread.join(timeout)
        # Stopped, not dead: a later record starts another thread without alarm.
        self._thread = None

    def _put(self, item):
        if self._thread is None or not self._thread.is_alive():
            with self._start_lock:
                if self._thread is None or not self._thread.is_alive():
                    if self._thread is not None:
                        logger.error("The usage writer thread had died; starting another")
                    # A daemon, so that a thread stuck on a database cannot hold the process
                    # at exit; what it holds is written by shutdown(), run at exit.
                    self._thread = threading.Thread(
                        target=self._run, name="usage-writer", daemon=True
                    )
                    self._thread.start()
                    if not self._exit_registered:
                        self._exit_registered = True
                        atexit.register(self.shutdown)
        self._queue.put(item)

    def _run(self):
        while True:
            try:
                first = self._queue.get(timeout=self._until_retry())
            except queue.Empty:
                self._guarded(self._retry_kept, [])
                continue
            if isinstance(first, _Close):
                self._end(first)
                if isinstance(first, _Stop):
                    return
                continue
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Close):
                    # Keep it for after this batch: put it back at the end.
                    self._queue.put(item)
                    break
                batch.append(item)
            self._guarded(self._write, batch)
            if self._retry_at is not None and time.monotonic() >= self._retry_at:
                self._guarded(self._retry_kept, [])

    def _end(self, request):
        try:
            if isinstance(request, _Stop):
                self._flush()
            self.store.close()
        except Exception:
            logger.exception("The usage writer failed to close its database connections")
        finally:
            request.done.set()

    def _flush(self):
        """Write every record still queued, then those kept; log the ones that fail."""
        batch = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if not isinstance(item, _Close):
                batch.append(item)
            else:
                item.done.set()
        if batch:
            self._guarded(self._write, batch)
        if self._kept:
            self._guarded(self._retry_kept, [])
        for record in self._kept:
            logger.error("Usage record lost at exit: %s", _described(record.fields))
        self._kept = []

    def _guarded(self, work, batch):
        """Do one batch's work; an exception fails the batch's records, not the thread."""
        try:
            work(batch)
        except Exception as error:
            logger.exception("The usage writer failed; its unwritten records are kept")
            with contextlib.suppress(Exception):
                self.store.recover()
            for item in batch:
                if isinstance(item, _Record) and not item.written:
                    self._keep(item, error)

    def _until_retry(self):
        """Seconds to wait for the next record before retrying kept ones (None: no limit)."""
        if self._retry_at is None:
            return None
        return max(0.0, self._retry_at - time.monotonic())

    def _write(self, batch):
        records = [item for item in batch if isinstance(item, _Record)]
        touches = {}
        for _, key_id, when in (item for item in batch if isinstance(item, tuple)):
            touches[key_id] = max(when, touches.get(key_id, when))
        if records:
            self._add(records)
        if touches:
            self._touch(touches)

    def _add(self, records):
        try:
            self.store.add([record.fields for record in records])
        except Exception as error:
            logger.warning(
                "Writing %d usage records together failed (%s); writing them one by one",
                len(records),
                type(error).__name__,
            )
            self.store.recover()
            for position, record in enumerate(records):
                try:
                    self.store.add_one(record.fields)
                except OperationalError as error:
                    # The database is unavailable (locked, gone), not this record at fault:
                    # the others would fail the same way, after as long a wait each.
                    self.store.recover()
                    for unwritten in records[position:]:
                        self._keep(unwritten, error)
                    return
                except Exception as error:
                    self.store.recover()
                    self._keep(record, error)
                else:
                    self._written(record)
        else:
            for record in records:
                self._written(record)

    def _written(self, record):
        record.written = True
        if record.future is not None:
            _resolve(record.loop, record.future, None)

    def _keep(self, record, error):
        """Tell the request its record failed, and keep the record to write it again."""
        if record.future is not None:
            _resolve(record.loop, record.future, error)
            record.future = None
        record.attempts += 1
        if record.attempts == 1:
            logger.warning(
                "Usage record of request %s not written (%s: %s); kept to be written again",
                record.fields.get("request_id"),
                type(error).__name__,
                error,
            )
        if record.attempts >= MAX_ATTEMPTS:
            logger.error(
                "Usage record given up after %d attempts: %s",
                record.attempts,
                _described(record.fields),
            )
            return
        if not record.kept:
            record.kept = True
            self._kept.append(record)
        if len(self._kept) > MAX_KEPT:
            lost = self._kept.pop(0)
            lost.kept = False
            logger.error("Usage record given up, too many kept: %s", _described(lost.fields))
        if self._retry_at is None:
            self._retry_at = time.monotonic() + settings.USAGE_WRITE_RETRY_SECONDS

    def _retry_kept(self, _batch):
        kept, self._kept = self._kept, []
        self._retry_at = None
        for record in kept:
            record.kept = False
        for start in range(0, len(kept), MAX_BATCH):
            self._guarded(self._add, kept[start : start + MAX_BATCH])
        if not self._kept:
            logger.info("Usage records kept after failed writes are written (%d)", len(kept))

    def _touch(self, touches):
        # Best effort: a lost last_used_at is corrected by the key's next use.
        try:
            self.store.touch(touches)
        except Exception as error:
            logger.warning("Recording when keys were last used failed (%s)", type(error).__name__)
            self.store.recover()


def _described(fields):
    """The fields of a record that let an operator enter it by hand, for the log."""
    names = (
        "request_id",
        "key_name",
        "model",
        "status",
        "attempt",
        "prompt_tokens",
        "completion_tokens",
        "cost",
        "created_at",
    )
    return " ".join(f"{name}={fields.get(name)!s}" for name in names if name in fields)


def _resolve(loop, future, error):
    def settle():
        if future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    # A RuntimeError means the loop that waited is gone (a test's loop, say): the record is
    # written all the same.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle)


writer = UsageWriter()
