"""The usage writer (apikeys/writer.py) when the database fails: every wait is bounded, a
record whose write failed is kept and written later, and the thread outlives the failures.

The database's failures come from a store put in the writer's place (tests/usage_stores.py);
the writer's thread, its batches and the API path are production's.
"""

import asyncio
import json

import pytest
from django.utils import timezone

from apikeys.models import UsageRecord
from apikeys.writer import DatabaseStore, writer
from tests.limited_keys import chat, new_key, read_stream
from tests.usage_stores import BrokenOnce, Crash, LockedDatabase, StuckDatabase

pytestmark = pytest.mark.django_db(transaction=True)

# Seconds to wait for a record the writer keeps for later.
RECORD_TIMEOUT = 5


@pytest.fixture
def store(settings):
    """Put a store in the writer's place; write what it kept and restore it afterwards."""
    settings.USAGE_WRITE_RETRY_SECONDS = 0.2

    def use(store):
        writer.store = store
        return store

    yield use
    writer.store = DatabaseStore()
    writer.shutdown(timeout=RECORD_TIMEOUT)
    writer.store = None


async def _records():
    return [record async for record in UsageRecord.objects.order_by("id")]


async def _wait_for_records(count):
    for _ in range(RECORD_TIMEOUT * 20):
        records = await _records()
        if len(records) >= count:
            return records
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(await _records())} usage records, not {count}")


def _events(body):
    return [line[6:] for line in body.splitlines() if line.startswith("data: ")]


async def _streamed(api, headers):
    response = await chat(api, headers, stream=True)
    return _events(await read_stream(response))


def _ended_with_an_error(events):
    return events[-1] == "[DONE]" and json.loads(events[-2])["error"]["type"] == "server_error"


async def test_a_stream_whose_record_is_not_written_in_time_ends_and_is_recorded_later(
    api, cloudflare, store, settings
):
    settings.USAGE_WRITE_TIMEOUT = 0.5
    stuck = store(StuckDatabase())
    headers = await new_key()

    events = await asyncio.wait_for(_streamed(api, headers), RECORD_TIMEOUT)

    assert _ended_with_an_error(events)
    assert await _records() == []
    stuck.release.set()
    (record,) = await _wait_for_records(1)
    assert record.status == UsageRecord.OK
    assert record.completion_tokens == 4


async def test_a_record_whose_write_failed_is_written_once_the_database_is_free(
    api, cloudflare, store
):
    locked = store(LockedDatabase(seconds=0.5))
    headers = await new_key()

    events = await _streamed(api, headers)

    assert _ended_with_an_error(events)
    (record,) = await _wait_for_records(1)
    assert locked.failures >= 1
    assert record.status == UsageRecord.OK
    assert (record.prompt_tokens, record.completion_tokens) == (3, 4)


async def test_a_record_keeps_the_time_of_its_request_when_written_later(api, cloudflare, store):
    store(LockedDatabase(seconds=1))
    headers = await new_key()

    await _streamed(api, headers)
    answered_at = timezone.now()

    (record,) = await _wait_for_records(1)
    assert record.created_at <= answered_at


async def test_the_writer_outlives_an_exception_it_did_not_expect(api, cloudflare, store):
    store(BrokenOnce(RuntimeError("a bug of the writer's")))
    headers = await new_key()

    first = await _streamed(api, headers)
    second = await _streamed(api, headers)

    assert _ended_with_an_error(first)
    assert second[-1] == "[DONE]"
    assert "error" not in json.loads(second[-2])
    records = await _wait_for_records(2)
    assert [record.status for record in records] == [UsageRecord.OK, UsageRecord.OK]


# The thread's death is the point: pytest's warning of it is expected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
async def test_a_writer_thread_that_died_is_started_again(api, cloudflare, store, settings):
    settings.USAGE_WRITE_TIMEOUT = 0.5
    store(BrokenOnce(Crash()))
    headers = await new_key()

    first = await asyncio.wait_for(_streamed(api, headers), RECORD_TIMEOUT)
    second = await asyncio.wait_for(_streamed(api, headers), RECORD_TIMEOUT)

    assert _ended_with_an_error(first)
    assert second[-1] == "[DONE]"
    assert "error" not in json.loads(second[-2])
    # The record the dead thread held is lost with it; the next one is written.
    (record,) = await _wait_for_records(1)
    assert record.status == UsageRecord.OK
