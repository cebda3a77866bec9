"""Limits on what a key may spend: requests, tokens and money per window.

    requests per second, minute, hour or day   django-ratelimit's `get_usage`
    tokens per minute                          a counter per minute
    tokens per day (UTC)                       a counter per day, summed from usage records
    USD per calendar month (UTC)               a counter per month, summed from usage records

`admit()` runs before the view: it counts the request and refuses it (429) once a window is
spent; a refused request never reaches a provider. `count_usage()` runs after the provider
answered (from UsageMeter.save()): it adds the real tokens and cost to the counters.

All counters live in the default cache: the in-process cache in development (one process,
so exact), Redis when REDIS_URL is set, shared by every gateway process. Every change is an
atomic add or increment, never a read followed by a write. Windows are fixed: a minute
starts at :00, a day at 00:00 UTC (django-ratelimit's own windows start at a moment of
their own for each key, so that keys do not all start afresh together).

The day's tokens and the month's spend are sums over usage records that the cache holds
for SUM_CACHE_SECONDS, then sums again: a cache restart or a lost increment cannot hand a
key a fresh day or month. A token or budget window is checked before the call, when the
request's own tokens are not known yet: requests admitted while the window had room may
together take it past its limit; the next one is refused.
"""

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.core.cache import cache
from django_ratelimit.core import get_usage

from apikeys.models import UsageRecord
from apikeys.rollups import usage_sums
from gateway.db import off_the_request_thread
from gateway.errors import RateLimited

logger = logging.getLogger(__name__)

# The clock of every window here, in seconds since the epoch; tests replace it (see
# tests/clock.py, which also points django-ratelimit's own clock at the same fake).
timer = time.time

PERIOD_NAMES = {"s": "second", "m": "minute", "h": "hour", "d": "day"}
MINUTE = 60
DAY = 24 * 60 * 60
# Seconds a window's counter outlives its window, so that a clock a little behind another
# process's does not find it gone (django-ratelimit allows 5 s too).
EXPIRY_MARGIN = 5
# Seconds a sum over usage records (the day's tokens, the month's spend) is kept in the cache
# and counted up, before it is summed again; the new sum corrects whatever the counter
# missed (the race in `_summed_counter`).
SUM_CACHE_SECONDS = 10 * 60
# The counter of spend holds whole units of 10^-8 USD, the precision of UsageRecord.cost.
SPEND_UNITS_PER_USD = 10**8
CACHE_PREFIX = "apikeys:"


@dataclass
class Window:
    """How much of one limit this window has used, and when it starts afresh."""

    kind: str  # "requests" or "tokens"
    per: str  # "minute", "day"...
    limit: int
    used: int
    resets_in: float  # seconds

    @property
    def remaining(self):
        return max(0, self.limit - self.used)

    @property
    def spent(self):
        """Tell whether a request must wait for the window to reset."""
        # `used` of the request window includes the request being admitted.
        return self.used > self.limit if self.kind == "requests" else self.used >= self.limit

    def describe(self):
        return f"{self.kind} per {self.per}: limit {self.limit:,}, used {self.used:,}"


@dataclass
class Allowance:
    """The windows a request was admitted under, reported in OpenAI's headers."""

    requests: Window | None  # None when RATELIMIT_ENABLE is off
    tokens: list

    def headers(self):
        headers = _window_headers(self.requests) if self.requests else {}
        if self.tokens:
            # With a limit per minute and one per day, report the one closer to refusing.
            tightest = min(self.tokens, key=lambda window: (window.remaining, window.resets_in))
            headers.update(_window_headers(tightest))
        return headers

    def add_headers(self, response):
        for name, value in self.headers().items():
            response[name] = value


def counter_id(key):
    """Name a key's counters by its first digest, which no other key ever has (ApiKey.counter_id).

    Not by its id: SQLite hands a deleted key's id to the next key when the row was never
    committed (a test's rollback), and the new key must not inherit the old one's counts.
    Not by its current digest: a rotated key would start its windows afresh.
    """
    return key.counter_id or key.digest[:32]


def request_window(key, increment=True):
    """Return the key's request window, counting one request when `increment`.

    None when django-ratelimit is switched off (RATELIMIT_ENABLE = False).
    """
    usage = get_usage(
        # django-ratelimit reads the request only through `key`, given here as a function.
        None,
        group="apikeys.requests",
        key=lambda group, request: counter_id(key),
        rate=key.rate_limit,
        increment=increment,
    )
    if usage is None:
        return None
    # time_left counts whole seconds to the window's last second, which is still in it: the
    # window ends when that second does.
    now = timer()
    return Window(
        "requests",
        PERIOD_NAMES[key.rate_limit[-1]],
        usage["limit"],
        usage["count"],
        usage["time_left"] + 1 - now % 1,
    )


def token_windows(key, now=None):
    """Return the key's token windows that have a limit, with the tokens used in each."""
    now = timer() if now is None else now
    windows = []
    if key.tokens_per_minute is not None:
        used = cache.get(_token_counter(key, MINUTE, now), 0)
        windows.append(
            Window("tokens", "minute", key.tokens_per_minute, used, _resets_in(MINUTE, now))
        )
    if key.tokens_per_day is not None:
        day_start = datetime.fromtimestamp(now // DAY * DAY, UTC)
        used = _summed_counter(
            _token_counter(key, DAY, now),
            lambda: usage_sums(api_key=key, since=day_start)["total_tokens"],
        )
        windows.append(Window("tokens", "day", key.tokens_per_day, used, _resets_in(DAY, now)))
    return windows


def month_spend(key, now=None):
    """Return what the key spent this calendar month (UTC), in USD."""
    now = timer() if now is None else now

    def spent():
        cost = usage_sums(api_key=key, since=month_start(now))["cost"]
        return int((cost or 0) * SPEND_UNITS_PER_USD)

    return Decimal(_summed_counter(_spend_counter(key, now), spent)) / SPEND_UNITS_PER_USD


def admit(request, *, spends):
    """Count the request against its key's limits; raise RateLimited (429) if one is spent.

    `spends`: the endpoint runs a model, so token windows and the budget apply too.
    """
    key = request.api_key
    now = timer()
    allowance = Allowance(request_window(key), token_windows(key, now) if spends else [])
    if allowance.requests and allowance.requests.spent:
        raise _refusal(key, allowance, [allowance.requests])
    spent = [window for window in allowance.tokens if window.spent]
    if spent:
        raise _refusal(key, allowance, spent)
    if spends and key.monthly_budget is not None:
        spend = month_spend(key, now)
        if spend >= key.monthly_budget:
            resets_in = month_end(now).timestamp() - now
            raise RateLimited(
                f"The API key '{key.name}' has used its monthly budget: {spend:.2f} of "
                f"{key.monthly_budget:.2f} USD spent this month. It resets on "
                f"{month_end(now):%Y-%m-%d} 00:00 UTC.",
                code="insufficient_quota",
                headers={**allowance.headers(), "Retry-After": _retry_after(resets_in)},
            )
    return allowance


aadmit = off_the_request_thread(admit)


def count_usage(key, tokens, cost):
    """Add a finished request's tokens and cost (Decimal USD) to the key's counters."""
    now = timer()
    try:
        # Only the counters of the key's limits: a key without any costs no cache call.
        if tokens and key.tokens_per_minute is not None:
            _add(_token_counter(key, MINUTE, now), tokens, MINUTE + EXPIRY_MARGIN)
        # Sums are counted up only while they are in the cache: a missing one is summed
        # from the records, this request's included, the next time it is read. (A limit
        # removed and set again within SUM_CACHE_SECONDS finds its sum short of the
        # requests in between, until it is summed again.)
        if tokens and key.tokens_per_day is not None:
            with contextlib.suppress(ValueError):
                cache.incr(_token_counter(key, DAY, now), tokens)
        if cost and key.monthly_budget is not None:
            with contextlib.suppress(ValueError):
                cache.incr(_spend_counter(key, now), int(cost * SPEND_UNITS_PER_USD))
    except Exception:
        # The usage record is already written and is what reports and budgets rebuild
        # from; a cache that is down must not turn an answered request into an error.
        logger.exception("Could not count the usage of key %s in the cache", key.name)


# Cache calls, and a sum of records when a counter is missing.
acount_usage = off_the_request_thread(count_usage)


def format_duration(seconds):
    """Write seconds as OpenAI's reset headers do: 20ms, 1s, 6m0s, 1h2m3s."""
    milliseconds = max(1, math.ceil(seconds * 1000))
    if milliseconds < 1000:
        return f"{milliseconds}ms"
    seconds = math.ceil(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"


def _window_headers(window):
    return {
        f"x-ratelimit-limit-{window.kind}": str(window.limit),
        f"x-ratelimit-remaining-{window.kind}": str(window.remaining),
        f"x-ratelimit-reset-{window.kind}": format_duration(window.resets_in),
    }


def _refusal(key, allowance, spent):
    # With both token windows spent, the request waits for the later of the two.
    resets_in = max(window.resets_in for window in spent)
    return RateLimited(
        f"Rate limit reached for the API key '{key.name}' on "
        f"{'; '.join(window.describe() for window in spent)}. "
        f"Try again in {format_duration(resets_in)}.",
        headers={**allowance.headers(), "Retry-After": _retry_after(resets_in)},
    )


def _retry_after(seconds):
    return str(max(1, math.ceil(seconds)))


def _summed_counter(name, total):
    """Return a counter holding a sum over usage records, summing them with `total()` if
    the cache has lost it or never had it."""
    value = cache.get(name)
    if value is None:
        # Race condition: a request that ends between the sum and the add may be counted
        # twice or not at all, until the sum is made again after SUM_CACHE_SECONDS. Exact
        # enough for a day's tokens or a month's budget, and the hot path stays one read.
        value = total() or 0
        if not cache.add(name, value, SUM_CACHE_SECONDS):
            value = cache.get(name, value)
    return value


def _records_since(key, moment):
    return UsageRecord.objects.filter(api_key=key, created_at__gte=moment)


def _add(name, amount, timeout):
    """Add to a counter atomically, creating it for `timeout` seconds if it is missing."""
    cache.add(name, 0, timeout)
    try:
        cache.incr(name, amount)
    except ValueError:
        # Expired between the add and the incr: this amount starts the next counter.
        if not cache.add(name, amount, timeout):
            cache.incr(name, amount)


def _token_counter(key, period, now):
    # Windows are aligned on the epoch: minutes start at :00 seconds, days at 00:00 UTC.
    return f"{CACHE_PREFIX}tokens:{counter_id(key)}:{period}:{int(now // period)}"


def _resets_in(period, now):
    return (now // period + 1) * period - now


def _spend_counter(key, now):
    return f"{CACHE_PREFIX}spend:{counter_id(key)}:{month_start(now):%Y-%m}"


def month_start(now):
    """Return the first moment of the calendar month (UTC) that holds `now` (epoch seconds)."""
    return datetime.fromtimestamp(now, UTC).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )


def month_end(now):
    """Return the first moment of the calendar month (UTC) after the one that holds `now`."""
    start = month_start(now)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)
