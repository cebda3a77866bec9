"""The HTTP client shared by every provider call of a process.

One client per event loop: under daphne that is one per process, which keeps upstream
connections alive across requests. Tests run several loops one after another, and an
aiohttp session cannot outlive the loop it was made on, hence the mapping.
"""

import asyncio
import weakref

import httpx
from django.conf import settings
from httpx_aiohttp import HttpxAiohttpClient

_clients = weakref.WeakKeyDictionary()


def get_client():
    """Return this event loop's shared upstream client, creating it on first use."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        # aiohttp's transport (measured 3.3x the throughput of httpx's own pool here). The
        # timeouts are defaults for callers that give none: providers set their own on each
        # request (providers/base.py), so that each wait is bounded and named when it ends.
        client = HttpxAiohttpClient(
            timeout=httpx.Timeout(
                settings.UPSTREAM_TIMEOUT, connect=settings.UPSTREAM_CONNECT_TIMEOUT
            ),
            # Only what providers/answers.py inflates in bounded steps: httpx would also
            # ask for zstd, which it inflates a whole read at a time.
            headers={"Accept-Encoding": "gzip, deflate"},
            limits=httpx.Limits(
                max_connections=settings.UPSTREAM_MAX_CONNECTIONS,
                max_keepalive_connections=settings.UPSTREAM_MAX_CONNECTIONS,
            ),
        )
        _clients[loop] = client
    return client


async def close_client():
    """Close this event loop's client, if it made one."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()
