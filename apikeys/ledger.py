"""The shared ledger of limits: what each limit's window has settled and holds reserved.

    settled    what finished requests spent in the window: tokens, or 10^-8 USD
    reserved   the worst cases of admitted requests still running, each under the request's
               reservation id, until it is settled or its hold expires

A request is admitted in one atomic step over every limit that applies to it (its key's and
its team's): holds past their expiry are dropped, each limit is checked, and the worst case
is reserved against all of them or none. It is settled in one more: the hold is dropped and
the real usage added. On Redis each step is a Lua script, so any number of gateway
processes share one exact ledger; on the in-process cache (development, the tests on
SQLite) the same steps run under a lock, exact within the one process.

A settled counter the cache has lost (a restart, a flush, its expiry) is summed again from
the usage records by the caller (`Limit.summed`) and handed to the next admission.
Usage settled while the counter was missing is kept apart ("late") and added to that sum:
the records already written may hold it too, so it may be counted twice until the next sum,
never missed. Counting high errs toward refusing, which a limit may; counting low would let
a window overshoot.

Layout on Redis, per limit (the name includes the holder, the kind and the window):
`<name>:s` settled, `<name>:l` late, `<name>:t` reserved total, `<name>:a` hash of amounts by
reservation id, `<name>:e` sorted set of reservation ids by expiry (epoch seconds).
"""

import threading
from dataclasses import dataclass

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache

# Seconds the "late" amount waits for the sum it corrects: longer than any sum of records.
LATE_SECONDS = 10 * 60
SUFFIXES = ("s", "l", "t", "a", "e")
# Seconds the in-process cache keeps a limit's holds, each with its own expiry inside: the
# cache's own expiry goes by the real clock, the holds' by the limits' (tests move it).
LOCAL_HOLDS_SECONDS = 24 * 60 * 60

# Outcomes of an admission.
MISSING, REFUSED, ADMITTED = 0, 1, 2

_ADMIT = """
local now = tonumber(ARGV[1])
local id = ARGV[2]
local hold_ttl = tonumber(ARGV[4])
local count = #KEYS / 5
local missing = {}
local states = {}
for i = 1, count do
  local k = (i - 1) * 5
  local a = 4 + (i - 1) * 4
  local s, l, t, am, e = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5]
  local expired = redis.call('ZRANGEBYSCORE', e, '-inf', now)
  for _, old in ipairs(expired) do
    local amount = redis.call('HGET', am, old)
    if amount then
      redis.call('DECRBY', t, amount)
      redis.call('HDEL', am, old)
    end
  end
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', e, '-inf', now)
  end
  local settled = redis.call('GET', s)
  if not settled then
    local initial = ARGV[a + 4]
    if initial == '' then
      table.insert(missing, i)
    else
      settled = tonumber(initial) + tonumber(redis.call('GET', l) or '0')
      -- Written as digits: Lua would write a number of 15 digits or more as 1e+14.
      redis.call('SET', s, string.format('%d', settled), 'EX', ARGV[a + 3])
      redis.call('DEL', l)
    end
  end
  states[i] = {tonumber(settled or '0'), tonumber(redis.call('GET', t) or '0')}
end
if #missing > 0 then
  table.insert(missing, 1, 0)
  return missing
end
local fits = true
for i = 1, count do
  local a = 4 + (i - 1) * 4
  local amount = tonumber(ARGV[a + 2])
  local need = amount
  if need < 1 then need = 1 end
  if states[i][1] + states[i][2] + need > tonumber(ARGV[a + 1]) then
    fits = false
  end
end
local result = {1}
if fits then
  result[1] = 2
  for i = 1, count do
    local k = (i - 1) * 5
    local a = 4 + (i - 1) * 4
    if tonumber(ARGV[a + 2]) > 0 then
      redis.call('HSET', KEYS[k + 4], id, ARGV[a + 2])
      redis.call('ZADD', KEYS[k + 5], ARGV[3], id)
      redis.call('INCRBY', KEYS[k + 3], ARGV[a + 2])
      for j = 3, 5 do
        if redis.call('TTL', KEYS[k + j]) < hold_ttl then
          redis.call('EXPIRE', KEYS[k + j], hold_ttl)
        end
      end
    end
  end
end
for i = 1, count do
  table.insert(result, states[i][1])
  table.insert(result, states[i][2])
end
return result
"""

_SETTLE = """
local id = ARGV[1]
local late_ttl = ARGV[2]
for i = 1, #KEYS / 5 do
  local k = (i - 1) * 5
  local s, l, t, am, e = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5]
  local amount = redis.call('HGET', am, id)
  if amount then
    redis.call('DECRBY', t, amount)
    redis.call('HDEL', am, id)
    redis.call('ZREM', e, id)
  end
  local actual = ARGV[2 + i]
  if tonumber(actual) > 0 then
    if redis.call('EXISTS', s) == 1 then
      redis.call('INCRBY', s, actual)
    else
      redis.call('INCRBY', l, actual)
      redis.call('EXPIRE', l, late_ttl)
    end
  end
end
return 1
"""

_READ = """
local now = tonumber(ARGV[1])
local result = {}
for i = 1, #KEYS / 5 do
  local k = (i - 1) * 5
  local s, t, am, e = KEYS[k + 1], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5]
  local settled = redis.call('GET', s)
  local reserved = 0
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', e, '(' .. now, '+inf')) do
    reserved = reserved + tonumber(redis.call('HGET', am, id) or '0')
  end
  if settled then
    table.insert(result, tonumber(settled))
  else
    table.insert(result, -1)
  end
  table.insert(result, reserved)
end
return result
"""


@dataclass
class Limit:
    """One limit of one holder in one window, as the ledger sees it."""

    name: str  # unique for the holder, the kind and the window
    limit: int  # tokens, or 10^-8 USD
    ttl: int  # seconds the settled counter is kept before it is summed again
    # The settled amount if the counter must start afresh: 0 for a window counted only in
    # the cache, None for one summed from the usage records when it is missing.
    initial: int | None = 0


@dataclass
class State:
    settled: int
    reserved: int


@dataclass
class Outcome:
    code: int  # MISSING, REFUSED or ADMITTED
    states: list  # a State per limit (before this request), or indexes of missing counters


class Ledger:
    """Reserve and settle amounts against limits in the default cache, atomically."""

    def __init__(self, cache=None):
        self._cache = cache
        self._lock = threading.Lock()
        self._scripts = {}

    @property
    def cache(self):
        # The backend itself, not django.core.cache.cache (a proxy that isinstance() sees
        # through to nothing).
        return self._cache or caches["default"]

    def admit(self, limits, amounts, reservation_id, expires_at, now, hold_seconds):
        """Reserve `amounts` (one per limit) under `reservation_id` until `expires_at`, if
        every limit has room; return an Outcome."""
        if isinstance(self.cache, RedisCache):
            return self._admit_redis(limits, amounts, reservation_id, expires_at, now, hold_seconds)
        with self._lock:
            return self._admit_local(limits, amounts, reservation_id, expires_at, now, hold_seconds)

    def settle(self, limits, reservation_id, actuals):
        """Drop the reservation and add the real amounts (one per limit)."""
        if isinstance(self.cache, RedisCache):
            script = self._script("settle", _SETTLE)
            script(
                keys=self._keys(limits),
                args=[reservation_id, LATE_SECONDS, *[int(actual) for actual in actuals]],
                client=self._client(),
            )
            return
        with self._lock:
            self._settle_local(limits, reservation_id, actuals)

    def read(self, limits, now):
        """Return a State per limit, settled None when its counter is missing."""
        if isinstance(self.cache, RedisCache):
            script = self._script("read", _READ)
            values = script(keys=self._keys(limits), args=[now], client=self._client())
            return [
                State(None if settled < 0 else int(settled), int(reserved))
                for settled, reserved in zip(values[::2], values[1::2], strict=True)
            ]
        with self._lock:
            states = []
            for limit in limits:
                held = self._holds(limit)
                settled = self.cache.get(_key(limit, "s"))
                states.append(State(settled, sum(a for a, expiry in held.values() if expiry > now)))
            return states

    # Redis

    def _client(self):
        return self.cache._cache.get_client(write=True)

    def _script(self, name, text):
        if name not in self._scripts:
            self._scripts[name] = self._client().register_script(text)
        return self._scripts[name]

    def _keys(self, limits):
        # Named as the cache names its own keys (KEY_PREFIX, VERSION), so that clearing the
        # cache clears them too.
        return [self.cache.make_key(_key(limit, suffix)) for limit in limits for suffix in SUFFIXES]

    def _admit_redis(self, limits, amounts, reservation_id, expires_at, now, hold_seconds):
        args = [now, reservation_id, expires_at, int(hold_seconds)]
        for limit, amount in zip(limits, amounts, strict=True):
            initial = "" if limit.initial is None else int(limit.initial)
            args += [int(limit.limit), int(amount), int(limit.ttl), initial]
        script = self._script("admit", _ADMIT)
        values = script(keys=self._keys(limits), args=args, client=self._client())
        if values[0] == MISSING:
            return Outcome(MISSING, [index - 1 for index in values[1:]])
        pairs = values[1:]
        states = [State(int(s), int(r)) for s, r in zip(pairs[::2], pairs[1::2], strict=True)]
        return Outcome(values[0], states)

    # The in-process cache, under the lock: the same steps as the scripts above.

    def _holds(self, limit):
        return self.cache.get(_key(limit, "a")) or {}

    def _admit_local(self, limits, amounts, reservation_id, expires_at, now, hold_seconds):
        cache = self.cache
        missing, states, holds = [], [], []
        for index, limit in enumerate(limits):
            held = {
                key: (amount, expiry)
                for key, (amount, expiry) in self._holds(limit).items()
                if expiry > now
            }
            holds.append(held)
            settled = cache.get(_key(limit, "s"))
            if settled is None:
                if limit.initial is None:
                    missing.append(index)
                else:
                    settled = limit.initial + cache.get(_key(limit, "l"), 0)
                    cache.set(_key(limit, "s"), settled, limit.ttl)
                    cache.delete(_key(limit, "l"))
            states.append(State(settled or 0, sum(amount for amount, _ in held.values())))
        if missing:
            return Outcome(MISSING, missing)
        fits = all(
            state.settled + state.reserved + max(amount, 1) <= limit.limit
            for limit, amount, state in zip(limits, amounts, states, strict=True)
        )
        for limit, amount, held in zip(limits, amounts, holds, strict=True):
            if fits and amount > 0:
                held[reservation_id] = (int(amount), expires_at)
            cache.set(_key(limit, "a"), held, max(int(hold_seconds), LOCAL_HOLDS_SECONDS))
        return Outcome(ADMITTED if fits else REFUSED, states)

    def _settle_local(self, limits, reservation_id, actuals):
        cache = self.cache
        for limit, actual in zip(limits, actuals, strict=True):
            held = self._holds(limit)
            if held.pop(reservation_id, None) is not None:
                cache.set(_key(limit, "a"), held, LOCAL_HOLDS_SECONDS)
            if actual > 0:
                try:
                    cache.incr(_key(limit, "s"), int(actual))
                except ValueError:
                    late = cache.get(_key(limit, "l"), 0)
                    cache.set(_key(limit, "l"), late + int(actual), LATE_SECONDS)


def _key(limit, suffix):
    return f"{limit.name}:{suffix}"


ledger = Ledger()
