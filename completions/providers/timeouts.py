"""The waits on an upstream, each bounded by its setting (UPSTREAM_*_TIMEOUT, in seconds),
and how a transport failure tells a timeout from a lost connection."""

import httpx
from django.conf import settings


def first_byte_timeout():
    return settings.UPSTREAM_FIRST_BYTE_TIMEOUT or settings.UPSTREAM_TIMEOUT


def read_timeout():
    return settings.UPSTREAM_READ_TIMEOUT or settings.UPSTREAM_TIMEOUT


def transport_timeout():
    """Return the timeouts left to the HTTP client: connecting only.

    Every other wait is bounded by the gateway's own deadlines, which know what is being
    waited for (a head, a first event, the next event) and so can say it.
    """
    return httpx.Timeout(None, connect=settings.UPSTREAM_CONNECT_TIMEOUT)


def timed_out(exc):
    """Tell whether a transport failure was a timeout rather than a lost connection.

    httpx_aiohttp maps every aiohttp connection error, a refused connection or a server
    that hung up included, to httpx.ConnectTimeout; the aiohttp error it was made from
    says whether time ran out.
    """
    if isinstance(exc, TimeoutError):
        return True
    if not isinstance(exc, httpx.TimeoutException):
        return False
    return exc.__cause__ is None or isinstance(exc.__cause__, TimeoutError)
