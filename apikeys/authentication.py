"""Authenticate a request by its `Authorization: Bearer <key>` header.

Failures are counted per client address (gateway/addresses.py): past
AUTH_FAILURES_PER_MINUTE in a minute, the address is answered 429 instead of 401 until the
minute is over, and secrets it sends that this process has not seen lately are not looked
up. Keys the process holds are not held back, so that one client with a wrong key does not
stop its neighbours behind the same address.
"""

import logging
import math
import time

from django.conf import settings
from django.core.cache import cache

from apikeys.models import ApiKey, SecretRotated, key_changes
from gateway.addresses import address_key
from gateway.errors import AuthenticationFailed, RateLimited
from gateway.memo import MISSING

logger = logging.getLogger(__name__)


class FailedAuthentications:
    """Failed authentications per client address, in windows of a minute."""

    # Injectable, so that tests control time and storage.
    cache = cache
    timer = staticmethod(time.time)
    window = 60
    # Seconds a counter outlives its window, for processes whose clocks differ a little.
    expiry_margin = 5
    prefix = "apikeys:auth-failures:"

    def _counter(self, address):
        now = self.timer()
        start = now // self.window * self.window
        return f"{self.prefix}{address}:{int(start)}", start + self.window - now

    async def check(self, address):
        """Raise RateLimited if the address has spent its failures for this minute."""
        name, remaining = self._counter(address)
        try:
            failures = await self.cache.aget(name) or 0
        except Exception:
            # The counter only spares the database: a cache that does not answer must not
            # turn a 401 into a 500, nor refuse a good key.
            logger.warning("Failed authentications could not be read", exc_info=True)
            return
        if failures >= settings.AUTH_FAILURES_PER_MINUTE:
            raise self._refusal(remaining)

    async def count(self, address):
        """Count one failure; raise RateLimited if it is one too many."""
        name, remaining = self._counter(address)
        try:
            await self.cache.aadd(name, 0, timeout=self.window + self.expiry_margin)
            failures = await self.cache.aincr(name)
        except ValueError:
            # Expired between the two calls: the next window counts afresh.
            return
        except Exception:
            logger.warning("A failed authentication could not be counted", exc_info=True)
            return
        if failures > settings.AUTH_FAILURES_PER_MINUTE:
            raise self._refusal(remaining)

    def _refusal(self, remaining):
        seconds = max(1, math.ceil(remaining))
        return RateLimited(
            "Too many requests with a missing or wrong API key from this address; "
            f"try again in {seconds} seconds.",
            code="too_many_failed_authentications",
            headers={"Retry-After": str(seconds)},
        )


failures = FailedAuthentications()


async def authenticate(request):
    """Return the request's active ApiKey, or raise AuthenticationFailed (401), or
    RateLimited (429) once the client's address has failed too often this minute."""
    address = address_key(request.META)
    try:
        return await _authenticate(request, address)
    except AuthenticationFailed:
        await failures.count(address)
        raise


async def _authenticate(request, address):
    secret = bearer_secret(request.headers.get("Authorization", ""))
    # A key changed in another process (revoked, say) is forgotten here before the keys
    # this process holds are read (gateway/memo.py ChangeMark).
    await key_changes.follow()
    try:
        key = ApiKey.objects.cached_for_secret(secret)
        if key is MISSING:
            # Only a lookup costs the database anything; an address past its failures is
            # refused before one.
            await failures.check(address)
            key = await ApiKey.objects.afor_secret(secret)
    except SecretRotated as rotated:
        raise _rotated(rotated.key) from None
    if key is None:
        # Never echo the secret back: error messages end up in logs.
        raise AuthenticationFailed()
    if key.state != "active":
        raise AuthenticationFailed(f"This API key is {key.state}.", code=f"{key.state}_api_key")
    key.touch()
    return key


def _rotated(key):
    # Saying so spares the key holder a hunt: the secret was right, and is now replaced.
    # The key's name is not given, only what the holder of its old secret already knew.
    return AuthenticationFailed(
        f"This API key was rotated at {key.rotated_at:%Y-%m-%d %H:%M} UTC; its previous "
        f"secret stopped working at {key.previous_valid_until:%Y-%m-%d %H:%M} UTC. Use the "
        "new secret.",
        code="rotated_api_key",
    )


def bearer_secret(header):
    """Return the secret of an `Authorization: Bearer <secret>` header value, or raise
    AuthenticationFailed (missing_api_key)."""
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthenticationFailed(
            "You didn't provide an API key. Send it in the Authorization header as "
            "'Authorization: Bearer YOUR_KEY'.",
            code="missing_api_key",
        )
    return secret.strip()
