"""Django's sync test client (tests/client.py) runs each API request on an event loop of
its own (async_to_sync): what the request opened on that loop is closed with it.

An aiohttp session left open there outlives its loop until the interpreter's exit, where
its warning went through LiteLLM's log filter on the asyncio logger after LiteLLM's
modules were torn down: a TypeError traceback after the suite's summary.
"""

import gc

import aiohttp
import pytest

from tests.conftest import LLAMA

pytestmark = pytest.mark.django_db

CHAT = {"model": LLAMA, "messages": [{"role": "user", "content": "hello"}]}


def _open_sessions():
    gc.collect()
    return {
        id(thing)
        for thing in gc.get_objects()
        if isinstance(thing, aiohttp.ClientSession) and not thing.closed
    }


def test_a_request_through_the_sync_client_leaves_no_upstream_session_open(
    alice, client, cloudflare
):
    before = _open_sessions()

    response = client.post("/v1/chat/completions", CHAT, "application/json", headers=alice.headers)

    assert response.status_code == 200
    assert _open_sessions() - before == set()
