"""A key changed in one process (the CLI, the admin) is forgotten by every other.

Each process keeps the keys it read for REGISTRY_CACHE_SECONDS; a mark in the shared cache
(gateway.memo.ChangeMark) tells the others sooner. Two marks over one file cache stand for
two processes over one Redis: Django's file cache is shared between processes too.
"""

from io import StringIO

import pytest
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.management import call_command
from django.db import transaction

from apikeys.models import ApiKey, key_changes, keys_by_digest
from gateway.memo import CHANGE_CHECK_SECONDS, MISSING, ChangeMark, TimedCache
from tests.clock import FakeClock

pytestmark = pytest.mark.django_db(transaction=True)


class Process:
    """What one gateway process holds: its keys, and its view of the shared mark."""

    def __init__(self, cache, clock):
        self.keys = TimedCache()
        self.mark = ChangeMark("test:keys-changed", on_change=self.keys.clear)
        self.mark.cache = cache
        self.mark.timer = clock


@pytest.fixture
def shared_cache(tmp_path):
    return FileBasedCache(str(tmp_path / "cache"), {})


@pytest.fixture
def clock():
    return FakeClock(1000.0)


async def test_a_change_published_by_one_process_is_seen_by_another_within_the_interval(
    shared_cache, clock
):
    one, two = Process(shared_cache, clock), Process(shared_cache, clock)
    await two.mark.follow()
    two.keys.set("digest", "alice's key")

    one.mark.publish()
    # Read at most once per interval: the mark was just read.
    await two.mark.follow()
    assert two.keys.get("digest") == "alice's key"

    clock.advance(CHANGE_CHECK_SECONDS)
    await two.mark.follow()

    assert two.keys.get("digest") is MISSING


async def test_a_process_keeps_its_keys_while_nothing_changes(shared_cache, clock):
    one, two = Process(shared_cache, clock), Process(shared_cache, clock)
    one.mark.publish()
    await two.mark.follow()
    two.keys.set("digest", "alice's key")

    clock.advance(CHANGE_CHECK_SECONDS * 10)
    await two.mark.follow()

    assert two.keys.get("digest") == "alice's key"


async def test_a_process_that_cannot_read_the_mark_reads_its_keys_again(shared_cache, clock):
    two = Process(shared_cache, clock)
    await two.mark.follow()
    two.keys.set("digest", "alice's key")

    def broken(*args, **kwargs):
        raise ConnectionError("Redis is down")

    shared_cache.get = broken
    clock.advance(CHANGE_CHECK_SECONDS)
    await two.mark.follow()

    assert two.keys.get("digest") is MISSING


def test_a_key_read_before_a_change_is_not_kept_after_it():
    keys = TimedCache()
    generation = keys.generation

    keys.clear()
    keys.set("digest", "the key as it was", generation)

    assert keys.get("digest") is MISSING


def test_revoking_through_the_cli_publishes_the_change_and_says_it_is_refused(
    alice, shared_cache, monkeypatch
):
    monkeypatch.setattr(key_changes, "cache", shared_cache)
    before = shared_cache.get(key_changes.name)
    out = StringIO()

    call_command("apikey", "revoke", "alice", stdout=out)

    assert shared_cache.get(key_changes.name) not in (None, before)
    assert "requests with it are now refused" in out.getvalue()


def test_revoking_through_the_cli_says_when_processes_without_a_shared_cache_refuse(
    alice, settings, monkeypatch
):
    settings.REGISTRY_CACHE_SECONDS = 5
    monkeypatch.setattr(key_changes, "cache", LocMemCache("key-changes", {}))
    out = StringIO()

    call_command("apikey", "revoke", "alice", stdout=out)

    assert "now refused" not in out.getvalue()
    assert "within 5 seconds" in out.getvalue()


def test_a_key_saved_anywhere_is_forgotten_here_at_once(alice):
    keys_by_digest.set(alice.key.digest, alice.key)

    ApiKey.objects.filter(pk=alice.key.pk).get().save()

    assert keys_by_digest.get(alice.key.digest) is MISSING


def test_the_admins_revoke_action_says_the_keys_are_refused_once_every_process_sees_it(
    admin_client, shared_cache, monkeypatch
):
    monkeypatch.setattr(key_changes, "cache", shared_cache)
    leaked, _ = ApiKey.objects.create_key(name="leaked")
    before = shared_cache.get(key_changes.name)

    response = admin_client.post(
        "/admin/apikeys/apikey/",
        {"action": "revoke_keys", "_selected_action": [leaked.pk]},
        follow=True,
    )

    assert shared_cache.get(key_changes.name) != before
    assert "requests with it are now refused" in response.content.decode()


def test_a_revocation_inside_a_transaction_does_not_claim_what_is_not_yet_true(
    alice, shared_cache, monkeypatch
):
    monkeypatch.setattr(key_changes, "cache", shared_cache)
    out = StringIO()

    with transaction.atomic():
        call_command("apikey", "revoke", "alice", stdout=out)

    assert "now refused" not in out.getvalue()
    assert "when its transaction commits" in out.getvalue()
