"""Limits on what a key, and the team it belongs to, may spend: requests, tokens and money.

    requests per second, minute, hour or day   django-ratelimit's `get_usage`, the key's
    tokens per minute                          key and team, counted in the cache
    tokens per day                             key and team, summed from usage records
    USD per day, week, month, lifetime         key and team, summed from usage records

Days, weeks and months are calendar periods in settings.LIMITS_TIME_ZONE (apikeys/periods.py);
a minute starts at :00 seconds.

`admit()` runs before the view (gateway/decorators.py) and counts the request against the
key's request rate. `reserve()` runs in the view once the request is validated, before any
provider is called: it reserves the request's worst case (completions/worst_case.py) against
every token window and budget of the key and of its team, in one atomic step of the shared
ledger (apikeys/ledger.py), and refuses it (429) if any of them lacks room. When the answer
ends, whatever the outcome, `Reservation.settle()` replaces the hold with the usage record's
tokens and cost. A reservation not settled (the process died) expires after the request's
longest possible life (`hold_seconds`).

So requests admitted together never take a window or budget past its limit, by more than
what their prompts' real tokens exceed the estimate by: the only slack of the guarantee.
"""

import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal

from django.conf import settings
from django_ratelimit.core import get_usage

from apikeys import periods
from apikeys.ledger import ADMITTED, MISSING, Limit, ledger
from apikeys.rollups import usage_sums
from gateway.db import off_the_request_thread
from gateway.errors import RateLimited

logger = logging.getLogger(__name__)

# The clock of every window here, in seconds since the epoch; tests replace it (see
# tests/clock.py, which also points django-ratelimit's own clock at the same fake).
timer = time.time

PERIOD_NAMES = {"s": "second", "m": "minute", "h": "hour", "d": "day"}
MINUTE = 60
# Seconds a window's counter outlives its window, so that a clock a little behind another
# process's does not find it gone (django-ratelimit allows 5 s too).
EXPIRY_MARGIN = 5
# Seconds a sum over usage records (a day's tokens, a period's spend) is kept in the cache
# and counted up, before it is summed again; the new sum corrects whatever the counter
# missed (a settlement lost while the cache was down).
SUM_CACHE_SECONDS = 10 * 60
# Spend is counted in whole units of 10^-8 USD, the precision of UsageRecord.cost.
SPEND_UNITS_PER_USD = 10**8
CACHE_PREFIX = "apikeys:"
# Seconds a reservation outlives the longest its request may take: time to write the
# record and settle, and clocks of processes a little apart.
HOLD_MARGIN_SECONDS = 60
# How a budget's period is named in messages: (the budget, the period so far).
BUDGET_WORDS = {
    "day": ("daily budget", "today"),
    "week": ("weekly budget", "this week"),
    "month": ("monthly budget", "this month"),
    "lifetime": ("lifetime budget", "in all"),
}


@dataclass
class Window:
    """How much of one limit this window has used, and when it starts afresh."""

    kind: str  # "requests" or "tokens"
    per: str  # "minute", "day"...
    limit: int
    used: int  # settled and reserved
    resets_in: float  # seconds
    reserved: int = 0
    holder: str = ""  # "" for the key, else "the team 'x'"
    # When the window ends, in seconds since the epoch, where it is known to the second
    # (the request window; a window that has just ended, resets_in 0, ended then).
    ends_at: float | None = None

    @property
    def remaining(self):
        return max(0, self.limit - self.used)

    @property
    def settled(self):
        return self.used - self.reserved

    @property
    def spent(self):
        """Tell whether a request must wait for the window to reset."""
        # `used` of the request window includes the request being admitted.
        return self.used > self.limit if self.kind == "requests" else self.used >= self.limit

    def describe(self):
        text = f"{self.kind} per {self.per}: limit {self.limit:,}, used {self.used:,}"
        return f"{text} ({self.reserved:,} of them reserved)" if self.reserved else text


@dataclass
class BudgetStatus:
    """Where one budget of a key or a team stands (USD): the one figure GET /v1/key, the
    x-budget-* headers, the admin's key and team pages and the budget alerts show."""

    period: str  # apikeys/periods.PERIODS
    limit: Decimal
    spent: Decimal  # settled: what finished requests cost
    reserved: Decimal  # held by requests still running
    resets_at: datetime | None  # None for lifetime
    resets_in: float | None = None  # seconds; None for lifetime

    LABELS = {"day": "Daily", "week": "Weekly", "month": "Monthly", "lifetime": "Lifetime"}
    # Shares of a budget past which its bar turns amber, then red (<meter>'s low and high).
    WARN_SHARE = Decimal("0.75")
    ALARM_SHARE = Decimal("0.9")

    @property
    def remaining(self):
        """What is left for new requests: neither spent nor held by requests running."""
        return max(Decimal(0), self.limit - self.spent - self.reserved)

    @property
    def label(self):
        return self.LABELS[self.period]

    @property
    def percent(self):
        """Percent of the budget spent, whole, capped at 100 so that a bar stays drawable."""
        if self.limit <= 0:
            return 100
        return min(int(100 * self.spent / self.limit), 100)

    @property
    def warn_at(self):
        return self.limit * self.WARN_SHARE

    @property
    def alarm_at(self):
        return self.limit * self.ALARM_SHARE

    @property
    def exceeded(self):
        return self.spent >= self.limit


@dataclass
class Allowance:
    """The windows and budgets a request was admitted under, reported in headers."""

    requests: Window | None  # None when RATELIMIT_ENABLE is off
    tokens: list
    budgets: list = field(default_factory=list)

    def headers(self):
        headers = _window_headers(self.requests) if self.requests else {}
        if self.tokens:
            # With several token windows (minute and day, key and team), report the one
            # closest to refusing.
            tightest = min(self.tokens, key=lambda window: (window.remaining, window.resets_in))
            headers.update(_window_headers(tightest))
        if self.budgets:
            tightest = min(self.budgets, key=_budget_order)
            headers["x-budget-remaining-usd"] = str(
                tightest.remaining.quantize(Decimal("0.000001"), rounding=ROUND_FLOOR)
            )
            if tightest.resets_at is not None:
                headers["x-budget-reset"] = tightest.resets_at.isoformat()
        return headers

    def add_headers(self, response):
        for name, value in self.headers().items():
            response[name] = value


def _budget_order(status):
    # The least left first; of equals, the one that resets first (lifetime last).
    resets = status.resets_at.timestamp() if status.resets_at else math.inf
    return (status.remaining, resets)


def counter_id(key):
    """Name a key's counters by its first digest, which no other key ever has (ApiKey.counter_id).

    Not by its id: SQLite hands a deleted key's id to the next key when the row was never
    committed (a test's rollback), and the new key must not inherit the old one's counts.
    Not by its current digest: a rotated key would start its windows afresh.
    """
    return key.counter_id or key.digest[:32]


def _holder_id(holder):
    if hasattr(holder, "digest"):
        return f"key:{counter_id(holder)}"
    # A team's id with its creation instant, for the same reason as counter_id.
    return f"team:{holder.pk}:{int(holder.created_at.timestamp() * 1000)}"


def _holder_words(holder):
    return "" if hasattr(holder, "digest") else f"the team '{holder.name}'"


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
    # window ends when that second does. django-ratelimit reads its clock twice; when a
    # second ends between the two, time_left is one less and the window has just ended.
    now = timer()
    ends_at = now - now % 1 + usage["time_left"] + 1
    return Window(
        "requests",
        PERIOD_NAMES[key.rate_limit[-1]],
        usage["limit"],
        usage["count"],
        max(0.0, ends_at - now),
        ends_at=ends_at,
    )


@dataclass
class _Spec:
    """One token window or budget of a key or team, in the current window."""

    holder: object
    kind: str  # "tokens" or "spend"
    period: str  # "minute", or one of periods.PERIODS
    limit: Limit
    starts_at: datetime | None
    resets_at: datetime | None
    resets_in: float

    def summed(self):
        """Return the settled amount from the usage of this window: the hourly rollups of
        its whole hours and the records of the hour under way (apikeys/rollups.py)."""
        if hasattr(self.holder, "digest"):
            sums = usage_sums(api_key=self.holder, since=self.starts_at)
        else:
            sums = usage_sums(team=self.holder, since=self.starts_at)
        if self.kind == "tokens":
            return sums["total_tokens"] or 0
        return int((sums["cost"] or 0) * SPEND_UNITS_PER_USD)

    def window(self, settled, reserved):
        return Window(
            "tokens",
            self.period,
            self.limit.limit,
            settled + reserved,
            self.resets_in,
            reserved=reserved,
            holder=_holder_words(self.holder),
        )

    def budget(self, settled, reserved):
        return BudgetStatus(
            self.period,
            Decimal(self.limit.limit) / SPEND_UNITS_PER_USD,
            Decimal(settled) / SPEND_UNITS_PER_USD,
            Decimal(reserved) / SPEND_UNITS_PER_USD,
            self.resets_at,
            self.resets_in if math.isfinite(self.resets_in) else None,
        )


def _specs(holder, now):
    """Return the limits of one key or team that are set, in the windows that hold `now`."""
    specs = []
    base = f"{CACHE_PREFIX}ledger:{_holder_id(holder)}"
    if holder.tokens_per_minute is not None:
        resets_in = (now // MINUTE + 1) * MINUTE - now
        name = f"{base}:tokens:minute:{int(now // MINUTE)}"
        limit = Limit(name, holder.tokens_per_minute, math.ceil(resets_in) + EXPIRY_MARGIN, 0)
        specs.append(_Spec(holder, "tokens", "minute", limit, None, None, resets_in))
    windows = []
    if holder.tokens_per_day is not None:
        windows.append(("tokens", "day", holder.tokens_per_day))
    for period, budget in holder.budgets().items():
        windows.append(("spend", period, int(budget * SPEND_UNITS_PER_USD)))
    for kind, period, amount in windows:
        starts_at = periods.start(period, now)
        resets_at = periods.end(period, now)
        resets_in = resets_at.timestamp() - now if resets_at else math.inf
        ttl = SUM_CACHE_SECONDS
        if resets_at is not None:
            ttl = min(ttl, math.ceil(resets_in) + EXPIRY_MARGIN)
        name = f"{base}:{kind}:{period}:{starts_at:%Y-%m-%d}"
        limit = Limit(name, amount, max(ttl, 1), None)
        specs.append(_Spec(holder, kind, period, limit, starts_at, resets_at, resets_in))
    return specs


def _holders(key):
    # The key's team comes with the key (ApiKeyManager looks keys up with their team).
    return [key] if key.team_id is None else [key, key.team]


@dataclass
class Reservation:
    """A request's hold on its limits, until it is settled with the real usage."""

    id: str
    limits: list  # ledger Limits
    kinds: list  # "tokens" or "spend", one per limit
    key_name: str
    # Set once a usage record took the reservation over (UsageMeter.save).
    claimed: bool = False

    def amounts(self, tokens, cost):
        spend = int(Decimal(cost) * SPEND_UNITS_PER_USD)
        return [tokens if kind == "tokens" else spend for kind in self.kinds]

    def settle(self, tokens, cost):
        """Replace the hold with the real usage: tokens, and cost in Decimal USD."""
        if not self.limits:
            return
        try:
            ledger.settle(self.limits, self.id, self.amounts(tokens, cost))
        except Exception:
            # The usage record is already written and is what budgets are summed again
            # from; a cache that is down must not turn an answered request into an error.
            # The hold expires on its own.
            logger.exception("Could not settle the usage of key %s in the cache", self.key_name)

    def release(self):
        """Return the whole hold: the request reached no provider."""
        self.settle(0, 0)


def hold_seconds(stream, candidates=1, rounds=1):
    """Return the longest a request may run: its calls (`rounds` one after another, on each
    candidate in turn), retries, and the record's write; past it, its reservation expires."""
    call = settings.UPSTREAM_STREAM_TIMEOUT if stream else settings.UPSTREAM_TIMEOUT
    per_candidate = rounds * (call + settings.UPSTREAM_RETRY_MAX_SECONDS)
    return candidates * per_candidate + settings.USAGE_WRITE_TIMEOUT + HOLD_MARGIN_SECONDS


def reserve(request, tokens, cost, hold):
    """Reserve a request's worst case (tokens, Decimal USD) against its key's and team's
    limits for `hold` seconds; raise RateLimited if one of them lacks room.

    The reservation is kept as `request.reservation`, and the windows and budgets it was
    admitted under update the request's headers (`request.allowance`).
    """
    key = request.api_key
    now = timer()
    specs = [spec for holder in _holders(key) for spec in _specs(holder, now)]
    reservation = Reservation(
        uuid.uuid4().hex, [s.limit for s in specs], [s.kind for s in specs], key.name
    )
    request.reservation = reservation
    if not specs:
        return reservation
    amounts = reservation.amounts(tokens, cost)
    outcome = ledger.admit(
        reservation.limits, amounts, reservation.id, now + hold, now, hold + HOLD_MARGIN_SECONDS
    )
    # A counter the cache lost is summed from the records; another may expire meanwhile.
    for _ in range(3):
        if outcome.code != MISSING:
            break
        for index in outcome.states:
            specs[index].limit.initial = specs[index].summed()
        outcome = ledger.admit(
            reservation.limits, amounts, reservation.id, now + hold, now, hold + HOLD_MARGIN_SECONDS
        )
    if outcome.code == MISSING:
        raise RuntimeError("The limits' counters could not be summed")
    admitted = outcome.code == ADMITTED
    allowance = getattr(request, "allowance", None) or Allowance(None, [])
    request.allowance = allowance
    allowance.tokens, allowance.budgets = [], []
    refusing = []
    for spec, amount, state in zip(specs, amounts, outcome.states, strict=True):
        reserved = state.reserved + (amount if admitted else 0)
        if spec.kind == "tokens":
            allowance.tokens.append(spec.window(state.settled, reserved))
        else:
            allowance.budgets.append(spec.budget(state.settled, reserved))
        if state.settled + state.reserved + max(amount, 1) > spec.limit.limit:
            refusing.append((spec, amount, state))
    if not admitted:
        request.reservation = None
        raise _refusal(key, allowance, refusing)
    return reservation


_reserve_off_the_loop = off_the_request_thread(reserve)


async def areserve(request, tokens, cost, hold):
    """Reserve as `reserve` does, from the event loop.

    A key without token windows or budgets, and without a team, has nothing to reserve:
    it costs no thread hop and no cache call.
    """
    key = request.api_key
    if key.team_id is None and not _has_limits(key):
        request.reservation = Reservation(uuid.uuid4().hex, [], [], key.name)
        return request.reservation
    return await _reserve_off_the_loop(request, tokens, cost, hold)


def _has_limits(holder):
    return (
        holder.tokens_per_minute is not None
        or holder.tokens_per_day is not None
        or bool(holder.budgets())
    )


def settle(key, reservation, tokens, cost):
    """Settle a finished request's usage; without a reservation, add it to the key's and
    team's counters as they stand now."""
    if reservation is None:
        now = timer()
        specs = [spec for holder in _holders(key) for spec in _specs(holder, now)]
        reservation = Reservation("", [s.limit for s in specs], [s.kind for s in specs], key.name)
    reservation.settle(tokens, cost)


asettle = off_the_request_thread(settle)


def token_windows(holder, now=None):
    """Return the token windows of a key or team that have a limit, with what each has
    settled and holds reserved."""
    now = timer() if now is None else now
    specs = [spec for spec in _specs(holder, now) if spec.kind == "tokens"]
    return [spec.window(*state) for spec, state in zip(specs, _read(specs, now), strict=True)]


def budget_status(holder, now=None):
    """Return a BudgetStatus for each budget of a key or team, in periods.PERIODS order.

    What the limit goes by: the ledger's settled counter, which counts a finished request
    as soon as it is settled, before the usage writer has written its record; a counter
    the cache lost is summed from the rollups instead (`_read`). Every reader of a budget's
    current period shows this, so that /v1/key, the headers and the admin agree.
    """
    now = timer() if now is None else now
    specs = [spec for spec in _specs(holder, now) if spec.kind == "spend"]
    return [spec.budget(*state) for spec, state in zip(specs, _read(specs, now), strict=True)]


def _read(specs, now):
    """Return (settled, reserved) of each spec; a lost counter is summed, not written."""
    if not specs:
        return []
    states = ledger.read([spec.limit for spec in specs], now)
    return [
        (
            state.settled
            if state.settled is not None
            else (0 if spec.limit.initial == 0 else spec.summed()),
            state.reserved,
        )
        for spec, state in zip(specs, states, strict=True)
    ]


def describe_limits(request):
    """Add the key's and team's token windows and budgets to the request's headers when no
    reservation did (a request refused before it was reserved: invalid, say)."""
    allowance = getattr(request, "allowance", None)
    if allowance is None or allowance.tokens or allowance.budgets:
        return
    now = timer()
    for holder in _holders(request.api_key):
        allowance.tokens += token_windows(holder, now)
        allowance.budgets += budget_status(holder, now)


adescribe_limits = off_the_request_thread(describe_limits)


def admit(request, *, spends):
    """Count the request against its key's request rate; raise RateLimited (429) if spent.

    `spends`: the endpoint runs a model; its tokens and money are reserved by the view
    (`reserve`), once the request is validated.
    """
    key = request.api_key
    allowance = Allowance(request_window(key), [])
    request.allowance = allowance
    if allowance.requests and allowance.requests.spent:
        raise _refusal(key, allowance, [])
    return allowance


aadmit = off_the_request_thread(admit)


def month_start(now):
    """Return the first moment of the calendar month (LIMITS_TIME_ZONE) holding `now`."""
    return periods.start("month", now)


def month_end(now):
    """Return the first moment of the calendar month (LIMITS_TIME_ZONE) after `now`'s."""
    return periods.end("month", now)


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


def _refusal(key, allowance, refusing):
    """Return the 429 for a request refused by the request rate (`refusing` empty) or by
    the (spec, amount, state) of the token windows and budgets that lack room."""
    headers = allowance.headers()
    if not refusing:
        window = allowance.requests
        return RateLimited(
            f"Rate limit reached for the API key '{key.name}' on {window.describe()}. "
            f"Try again in {format_duration(window.resets_in)}.",
            headers={**headers, "Retry-After": _retry_after(window.resets_in)},
        )
    # Where what is settled leaves room, the request waits only for those still running.
    waits = [
        spec.resets_in if state.settled + max(amount, 1) > spec.limit.limit else 1
        for spec, amount, state in refusing
    ]
    wait = max(waits)
    if math.isfinite(wait):
        headers["Retry-After"] = _retry_after(wait)
    budgets = [item for item in refusing if item[0].kind == "spend"]
    if budgets:
        spec, amount, state = budgets[0]
        return RateLimited(
            _budget_message(key, spec, amount, state), code="insufficient_quota", headers=headers
        )
    parts = []
    for spec, amount, state in refusing:
        window = spec.window(state.settled, state.reserved)
        owner = f"the team '{spec.holder.name}' of " if window.holder else ""
        parts.append(f"{owner}{window.describe()}, this request may take up to {amount:,}")
    return RateLimited(
        f"Rate limit reached for the API key '{key.name}' on {'; '.join(parts)}. "
        + (f"Try again in {format_duration(wait)}." if math.isfinite(wait) else ""),
        headers=headers,
    )


def _budget_message(key, spec, amount, state):
    name, so_far = BUDGET_WORDS[spec.period]
    limit = Decimal(spec.limit.limit) / SPEND_UNITS_PER_USD
    spent = Decimal(state.settled) / SPEND_UNITS_PER_USD
    reserved = Decimal(state.reserved) / SPEND_UNITS_PER_USD
    cost = Decimal(amount) / SPEND_UNITS_PER_USD
    who = (
        f"The API key '{key.name}'"
        if spec.holder is key
        else f"The team '{spec.holder.name}' of the API key '{key.name}'"
    )
    message = (
        f"{who} has not enough left of its {name}: {spent:.2f} of {limit:.2f} USD spent "
        f"{so_far}"
        + (f", {reserved:.2f} USD reserved by requests still running" if reserved else "")
        + f"; this request may cost up to {cost:.4f} USD."
    )
    if spec.resets_at is not None:
        message += f" It resets on {spec.resets_at:%Y-%m-%d %H:%M} {settings.LIMITS_TIME_ZONE}."
    return message


def _retry_after(seconds):
    return str(max(1, math.ceil(seconds)))
