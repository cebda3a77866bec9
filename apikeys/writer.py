"""The usage writer: one thread per process that writes usage records in batches.

Each request awaits its own record, so a client that has seen the end of its answer can
count on the record being there; but records that arrive together are written in one
transaction, and the thread keeps its database connection open between batches. Under
load this turns a connection, a transaction and a thread hop per request into one
transaction per batch, and it keeps SQLite's single writer from being fought over.
"""

import asyncio
import contextlib
import logging
import queue
import threading

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connections, transaction

logger = logging.getLogger(__name__)

# Records written in one transaction at most.
MAX_BATCH = 500
# Touches made without the thread, kept until done so that the loop does not drop them.
_inline_touches = set()


class _Close:
    """Ask the thread to close its database connections (tests drop their database)."""

    def __init__(self):
        self.done = threading.Event()


class UsageWriter:
    def __init__(self):
        self._queue = queue.SimpleQueue()
        self._thread = None
        self._start_lock = threading.Lock()
        # False: write on the request's own database connection instead, for tests that
        # hold everything in one transaction, which no other connection can see into.
        self.threaded = True

    async def write(self, fields):
        """Write one UsageRecord with these fields; return once it is committed."""
        if not self.threaded:
            await sync_to_async(self._write_inline)(fields)
            return
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._put(("record", fields, loop, future))
        await future

    def touch(self, key_id, when):
        """Set a key's last_used_at, without waiting for it."""
        if self.threaded:
            self._put(("touch", key_id, when, None))
        else:
            self._touch_inline(key_id, when)

    @staticmethod
    def _write_inline(fields):
        from apikeys.models import UsageRecord

        UsageRecord.objects.create(**fields)

    @staticmethod
    def _touch_inline(key_id, when):
        from apikeys.models import ApiKey

        task = asyncio.ensure_future(ApiKey.objects.filter(pk=key_id).aupdate(last_used_at=when))
        _inline_touches.add(task)
        task.add_done_callback(_inline_touches.discard)

    def close_connections(self, timeout=10):
        """Close the thread's database connections and wait until it has (seconds)."""
        if self._thread is None:
            return
        request = _Close()
        self._queue.put(request)
        request.done.wait(timeout)

    def _put(self, item):
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="usage-writer", daemon=True
                    )
                    self._thread.start()
        self._queue.put(item)

    def _run(self):
        while True:
            first = self._queue.get()
            if isinstance(first, _Close):
                connections.close_all()
                first.done.set()
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
            self._write(batch)

    def _write(self, batch):
        from apikeys.models import UsageRecord

        records = [item for item in batch if item[0] == "record"]
        touches = {}
        for _, key_id, when, _ in (item for item in batch if item[0] == "touch"):
            touches[key_id] = max(when, touches.get(key_id, when))
        if records:
            try:
                with transaction.atomic():
                    UsageRecord.objects.bulk_create([UsageRecord(**item[1]) for item in records])
            except Exception as error:
                logger.warning(
                    "Writing %d usage records together failed (%s); writing them one by one",
                    len(records),
                    type(error).__name__,
                )
                # A broken connection is replaced on the next query.
                close_old_connections()
                for record in records:
                    self._write_one(record)
            else:
                for _, _, loop, future in records:
                    _resolve(loop, future, None)
        if touches:
            self._touch(touches)

    def _touch(self, touches):
        from apikeys.models import ApiKey

        # Best effort: a lost last_used_at is corrected by the key's next use.
        try:
            with transaction.atomic():
                for key_id, when in touches.items():
                    ApiKey.objects.filter(pk=key_id).update(last_used_at=when)
        except Exception as error:
            logger.warning("Recording when keys were last used failed (%s)", type(error).__name__)
            close_old_connections()

    def _write_one(self, record):
        from apikeys.models import UsageRecord

        _, fields, loop, future = record
        try:
            UsageRecord.objects.create(**fields)
        except Exception as error:
            connections["default"].close()
            _resolve(loop, future, error)
        else:
            _resolve(loop, future, None)


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
