"""Failed authentications: unknown keys are remembered, and each address may fail only
AUTH_FAILURES_PER_MINUTE times a minute before it is answered 429."""

import pytest

from apikeys import models
from apikeys.authentication import failures
from tests.client import AsyncClient
from tests.clock import FakeClock
from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = {"model": LLAMA, "messages": [{"role": "user", "content": "hello"}]}
UNKNOWN = {"Authorization": "Bearer sk-gw-this-key-was-never-made"}


@pytest.fixture(autouse=True)
def _limits(settings, monkeypatch):
    settings.AUTH_FAILURES_PER_MINUTE = 3
    clock = FakeClock(1_800_000_000 + 1)
    monkeypatch.setattr(failures, "timer", clock)
    return clock


class _ClientAt(AsyncClient):
    """Django's async test client, connecting from an address of the test's choice."""

    def __init__(self, address):
        super().__init__()
        self.address = address

    def _base_scope(self, **request):
        return {**super()._base_scope(**request), "client": [self.address, 50000]}


async def _chat(headers, address="203.0.113.7", forwarded_for=None):
    if forwarded_for is not None:
        headers = {**headers, "X-Forwarded-For": forwarded_for}
    return await _ClientAt(address).post(
        "/v1/chat/completions", data=CHAT, content_type="application/json", headers=headers
    )


async def test_an_unknown_key_costs_one_lookup_however_often_it_is_sent(monkeypatch, cloudflare):
    lookups = []
    find_key = models._find_key

    async def counted(wanted):
        lookups.append(wanted)
        return await find_key(wanted)

    monkeypatch.setattr(models, "_find_key", counted)

    statuses = [(await _chat(UNKNOWN, address=f"192.0.2.{n}")).status_code for n in range(5)]

    assert statuses == [401] * 5
    assert len(lookups) == 1


async def test_an_address_is_answered_429_once_its_failures_are_spent(cloudflare, _limits):
    statuses = [(await _chat(UNKNOWN)).status_code for _ in range(3)]

    refused = await _chat(UNKNOWN)

    assert statuses == [401, 401, 401]
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert error["code"] == "too_many_failed_authentications"
    # The fake clock stands one second into its minute.
    assert refused["Retry-After"] == "59"


async def test_missing_keys_count_as_failures_too(cloudflare):
    for _ in range(3):
        await _chat({})

    assert (await _chat({})).status_code == 429


async def test_an_address_past_its_failures_is_not_looked_up_again(monkeypatch, cloudflare):
    for _ in range(3):
        await _chat({})
    lookups = []
    monkeypatch.setattr(models, "_find_key", lambda wanted: lookups.append(wanted))

    response = await _chat({"Authorization": "Bearer sk-gw-another-key-never-made"})

    assert response.status_code == 429
    assert lookups == []


async def test_another_address_is_not_held_back(cloudflare, alice):
    for _ in range(4):
        await _chat(UNKNOWN, address="198.51.100.1")

    assert (await _chat(UNKNOWN, address="198.51.100.2")).status_code == 401
    assert (await _chat(alice.headers, address="198.51.100.3")).status_code == 200


async def test_a_key_in_use_is_not_stopped_by_a_neighbour_that_fails(cloudflare, alice):
    assert (await _chat(alice.headers)).status_code == 200
    for _ in range(4):
        await _chat(UNKNOWN)

    response = await _chat(alice.headers)

    assert response.status_code == 200


async def test_the_address_may_try_again_the_next_minute(cloudflare, _limits):
    for _ in range(4):
        await _chat(UNKNOWN)

    _limits.advance(60)

    assert (await _chat(UNKNOWN)).status_code == 401


async def test_behind_a_trusted_proxy_failures_count_per_forwarded_address(
    cloudflare, alice, settings
):
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    for _ in range(4):
        await _chat(UNKNOWN, address="127.0.0.1", forwarded_for="192.0.2.1")

    other = await _chat(UNKNOWN, address="127.0.0.1", forwarded_for="192.0.2.2")
    same = await _chat(UNKNOWN, address="127.0.0.1", forwarded_for="192.0.2.1")

    assert other.status_code == 401
    assert same.status_code == 429


class _BrokenCache:
    async def aget(self, *args, **kwargs):
        raise ConnectionError("the cache does not answer")

    aadd = aincr = aget


async def test_a_cache_that_does_not_answer_leaves_a_401_a_401(monkeypatch, cloudflare, alice):
    monkeypatch.setattr(failures, "cache", _BrokenCache())

    statuses = [(await _chat(UNKNOWN)).status_code for _ in range(5)]

    assert statuses == [401] * 5
    assert (await _chat(alice.headers)).status_code == 200
