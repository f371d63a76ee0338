"""
Fleet-wide state on Redis: every worker that shares an API key shares its
breakers, retry budgets, rate limits, the pauses the API asked for and
alert de-duplication, so the fleet
behaves as one client.

::

    from referee.redis import RedisState

    state = RedisState.from_url("redis://127.0.0.1:6379/0")
    policy = referee.load_policy("enrow", state=state)

Rule 1: every operation is ONE Lua script (``EVALSHA``), so it is atomic
across threads, processes and hosts; nothing reads, decides and writes in
two round trips.
Rule 2: decisions use the callers' clock, the *now* the runners pass (Unix
seconds), never Redis's: the fleet's clocks must agree to well under the
shortest window a policy uses (run NTP).  Redis's clock only sizes the
lifetime of a named breaker's key (``open_breaker`` is given no *now*).
Rule 3: keys are ``{prefix}:{<policy>}:...`` (the braces are a Redis Cluster
hash tag: one policy's keys live in one slot), alert gates are
``{prefix}:alert:<key>``; every key expires once it can no longer matter.
So every script touches one slot, and runs on a Redis Cluster as on a
single server (``from_url(url, cluster=True)``).
Rule 4: Redis being unreachable or stuck never breaks a call, and slows
few.  An operation waits at most its *timeout*, once; then it is served by
a local :class:`~referee.MemoryState` instead, and so is every operation
for the next *recheck_after* seconds; then one operation (the probe) tries
Redis while the others stay local until it has answered.  The outage is
logged once (``referee.state_unavailable``, again at most every
*log_every* seconds while it lasts).  When Redis answers, the shared
state is used again (``referee.state_recovered``); what the local state
learned meanwhile is not merged into it.

The semantics are exactly :class:`~referee.MemoryState`'s (see its
docstring), except that state nobody touches expires: a ratio breaker left
open for twice its *open_for*, a retry budget untouched for a day
(`IDLE_TTL`) and held alert counts not reported within a day of their
window (`referee._run.memory.HELD_FOR`) are forgotten.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Final, Generic, TypeAlias, TypeVar

import attrs
import structlog

from ._core.backend import (
    PAUSE_SLACK,
    Admission,
    BreakerState,
    PauseState,
    SeedState,
    Settlement,
)
from ._core.ops import (
    Acquire,
    CheckBreakers,
    CheckPause,
    OpenBreaker,
    RecordOutcome,
    Refund,
    SeedLimit,
    SetPause,
    TakeRetryToken,
    admit_parts,
    by_parts,
    settle_parts,
)
from ._run.memory import (
    BUCKETS,
    HELD_FOR,
    RATIO_BREAKER,
    MemoryState,
    interval,
    seeded,
)
from ._run.stateio import adrain, flush_state


try:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on the install
    msg = (
        "referee.redis needs redis-py, which is not installed; "
        "install it with: pip install 'referee[redis]'"
    )
    raise ImportError(msg) from exc


if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Self

    from redis.commands.core import AsyncScript, Script

    from ._core.backend import (
        BreakerSettings,
        BudgetSettings,
        RateLimitSettings,
        StateBackend,
    )
    from ._core.ops import Admit, Settle, StateOp


__all__ = ["IDLE_TTL", "MIN_TTL", "TIMEOUT", "RedisState"]

_log = structlog.get_logger("referee")

#: No key lives less than this (seconds), whatever its window: the TTLs
#: are garbage collection, never semantics, and a floor keeps a slow test
#: or a paused worker from losing state it still needs.
MIN_TTL: Final = 60.0

#: How long a retry budget that is not full is kept when nobody touches
#: it (seconds); then it starts full again.
IDLE_TTL: Final = 86_400.0

#: What counts as Redis being unreachable.  Every redis-py error is: a
#: replica that turned read-only in a failover, a server out of memory or
#: a wrong password must not break the calls either; the log says which.
_FAULTS: Final = (
    redis.exceptions.RedisError,
    # No node of a cluster could be reached (not a RedisError).
    redis.exceptions.RedisClusterException,
    OSError,
)

T = TypeVar("T")

#: A synchronous client: one server, or a cluster.
_Client: TypeAlias = "redis.Redis | redis.cluster.RedisCluster"

#: Where an operation goes (`RedisState._route`).
_REDIS: Final = "redis"
_LOCAL: Final = "local"
_PROBE: Final = "probe"

#: How long an asyncio cluster client may take to learn the cluster
#: (seconds): once, before its first operation.
_SETUP: Final = 2.0

#: How long one operation may wait for Redis by default (seconds): a
#: loopback or LAN server answers in well under a millisecond, and a call
#: should not wait for a slow one longer than this.
TIMEOUT: Final = 0.1


# The scripts.  Numbers go in and out as strings: Redis truncates a Lua
# number it returns to an integer, and %.17g round-trips every double.
_PRELUDE: Final = f"""
local function fmt(x) return string.format('%.17g', x) end
-- A key's lifetime in ms: *seconds*, but at least MIN_TTL.
local function life(seconds)
  local ms = math.ceil(seconds * 1000)
  if ms < {int(MIN_TTL * 1000)} then ms = {int(MIN_TTL * 1000)} end
  return ms
end
-- Twice a window, open_for, ...: the usual lifetime.
local function ttl(seconds) return life(seconds * 2) end
"""

# KEYS: breakers (zset name -> until), their rules (hash name -> rule).
# ARGV: name, until, rule id, '1' if there is a rule id.
_OPEN_BREAKER: Final = (
    _PRELUDE
    + """
if redis.replicate_commands then redis.replicate_commands() end
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not old) or tonumber(ARGV[2]) > tonumber(old) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
  if ARGV[4] == '1' then
    redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  else
    redis.call('HDEL', KEYS[2], ARGV[1])
  end
end
local last = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local t = redis.call('TIME')
local ms = ttl(tonumber(last[2]) - (tonumber(t[1]) + tonumber(t[2]) / 1e6))
redis.call('PEXPIRE', KEYS[1], ms)
redis.call('PEXPIRE', KEYS[2], ms)
return 1
"""
)

# KEYS: breakers, their rules, the ratio breaker (hash until, open_for,
# probe_at, width).  ARGV: now.  Returns false or {name, until[, rule]}.
_CHECK_BREAKERS: Final = (
    _PRELUDE
    + f"""
local now = tonumber(ARGV[1])
local skip = {{}}
for i = 2, #ARGV do skip[ARGV[i]] = true end
local best = false
local open = redis.call(
  'ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES')
for i = #open - 1, 1, -2 do
  if not skip[open[i]] then
    local rule = redis.call('HGET', KEYS[2], open[i])
    if rule then
      best = {{open[i], open[i + 1], rule}}
    else
      best = {{open[i], open[i + 1]}}
    end
    break
  end
end
if skip['{RATIO_BREAKER}'] then return best end
local r = redis.call('HMGET', KEYS[3], 'until', 'open_for', 'probe_at')
if not r[1] then return best end
local ratio
if now < tonumber(r[1]) then
  ratio = r[1]
elseif best then
  return best
else
  local open_for = tonumber(r[2])
  if (not r[3]) or now >= tonumber(r[3]) + open_for then
    redis.call('HSET', KEYS[3], 'probe_at', ARGV[1])
    redis.call('PEXPIRE', KEYS[3], ttl(open_for))
    return false
  end
  ratio = fmt(tonumber(r[3]) + open_for)
end
if (not best) or tonumber(ratio) > tonumber(best[2]) then
  return {{'{RATIO_BREAKER}', ratio}}
end
return best
"""
)

# KEYS: the ratio breaker, its window (hash 'c<bucket>'/'f<bucket>' ->
# count).  ARGV: failed ('1'/'0'), now, failure_ratio, window, min_calls,
# open_for.  Returns the new until when the breaker (re)opened, else false.
_RECORD_OUTCOME: Final = (
    _PRELUDE
    + f"""
local failed = ARGV[1] == '1'
local now = tonumber(ARGV[2])
local open_for = tonumber(ARGV[6])
local function open()
  local untl = fmt(now + open_for)
  redis.call('HSET', KEYS[1], 'until', untl, 'open_for', ARGV[6])
  redis.call('HDEL', KEYS[1], 'probe_at')
  redis.call('DEL', KEYS[2])
  redis.call('PEXPIRE', KEYS[1], ttl(open_for))
  return untl
end
local r = redis.call('HMGET', KEYS[1], 'until', 'probe_at', 'width')
if r[1] then
  if not r[2] then return false end
  if failed then return open() end
  redis.call('DEL', KEYS[1], KEYS[2])
  return false
end
local window = tonumber(ARGV[4])
local width = window / {BUCKETS}
if (not r[3]) or tonumber(r[3]) ~= width then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'width', fmt(width))
end
local idx = 0
if width > 0 then idx = math.floor(now / width) end
local id = string.format('%.0f', idx)
redis.call('HINCRBY', KEYS[2], 'c' .. id, 1)
if failed then redis.call('HINCRBY', KEYS[2], 'f' .. id, 1) end
local oldest = idx - {BUCKETS} + 1
local calls, failures = 0, 0
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local field = all[i]
  if tonumber(string.sub(field, 2)) < oldest then
    redis.call('HDEL', KEYS[2], field)
  elseif string.sub(field, 1, 1) == 'c' then
    calls = calls + tonumber(all[i + 1])
  else
    failures = failures + tonumber(all[i + 1])
  end
end
if failures > 0 and calls >= tonumber(ARGV[5])
    and failures >= tonumber(ARGV[3]) * calls then
  return open()
end
redis.call('PEXPIRE', KEYS[1], ttl(window))
redis.call('PEXPIRE', KEYS[2], ttl(window))
return false
"""
)

# KEYS: the budget (a string: tokens left; missing = full).  ARGV:
# tokens, ttl (ms).  Returns 1 when a token was spent, else 0.
_TAKE_RETRY_TOKEN: Final = (
    _PRELUDE
    + """
local full = tonumber(ARGV[1])
local left = redis.call('GET', KEYS[1])
if left then left = tonumber(left) else left = full end
if left <= full / 2 then return 0 end
redis.call('SET', KEYS[1], fmt(left - 1), 'PX', ARGV[2])
return 1
"""
)

# KEYS: the budget.  ARGV: tokens, refill, ttl (ms).
_REFUND: Final = (
    _PRELUDE
    + """
local left = redis.call('GET', KEYS[1])
if not left then return 0 end
left = tonumber(left) + tonumber(ARGV[2])
if left >= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], fmt(left), 'PX', ARGV[3])
end
return 1
"""
)

# KEYS: the pace (a string: when the next send may go), and the bucket's
# seed when the rate limit takes one (a hash pace, until).  ARGV: now, the
# interval between sends, ttl (ms).  Returns {1} when the send may go (the
# next is then an interval later: the seed's, while it lives and is
# longer), else {0, when the next may go}.
_ACQUIRE: Final = (
    _PRELUDE
    + """
local now = tonumber(ARGV[1])
local at = redis.call('GET', KEYS[1])
if at and now < tonumber(at) then return {0, at} end
local pace, ms = tonumber(ARGV[2]), ARGV[3]
if KEYS[2] then
  local s = redis.call('HMGET', KEYS[2], 'pace', 'until')
  if s[1] and s[2] and now < tonumber(s[2]) and tonumber(s[1]) > pace then
    pace = tonumber(s[1])
    ms = ttl(pace)
  end
end
redis.call('SET', KEYS[1], fmt(now + pace), 'PX', ms)
return {1}
"""
)

# A bucket's seed (what the server's RateLimit-Policy declared) replaces
# the one before; it expires a minute after its until, on Redis's clock.
# KEYS: the seed.  ARGV: pace, until.
_SEED_LIMIT: Final = (
    _PRELUDE
    + f"""
if redis.replicate_commands then redis.replicate_commands() end
redis.call('HSET', KEYS[1], 'pace', ARGV[1], 'until', ARGV[2])
local t = redis.call('TIME')
local left = tonumber(ARGV[2]) - (tonumber(t[1]) + tonumber(t[2]) / 1e6)
if left < 0 then left = 0 end
redis.call('PEXPIRE', KEYS[1], life(left + {MIN_TTL}))
return 1
"""
)

# KEYS: the gate (hash sent, window, held).  ARGV: now, window, held_for.
# Returns {1 if it goes out else 0, held}.
_ALERT_GATE: Final = (
    _PRELUDE
    + """
local now = tonumber(ARGV[1])
local g = redis.call('HMGET', KEYS[1], 'sent', 'window', 'held')
local held = 0
if g[1] then
  local ends = tonumber(g[1]) + tonumber(g[2])
  if now < ends then
    held = redis.call('HINCRBY', KEYS[1], 'held', 1)
    redis.call('PEXPIRE', KEYS[1], life(ends - now + tonumber(ARGV[3])))
    return {0, held}
  end
  held = tonumber(g[3])
end
redis.call('HSET', KEYS[1], 'sent', ARGV[1], 'window', ARGV[2], 'held', 0)
redis.call('PEXPIRE', KEYS[1], ttl(tonumber(ARGV[2])))
return {1, held}
"""
)

# A pause the server asked for: one hash per scope (until, rule, then)
# that expires on its own a minute after the pause ends (its lifetime is
# reckoned on Redis's clock, as open_breaker's: the minute absorbs the
# callers' skew), so an ended pause leaves nothing behind.
# KEYS: the scope's pause.  ARGV: until, rule id, then.
_SET_PAUSE: Final = (
    _PRELUDE
    + f"""
if redis.replicate_commands then redis.replicate_commands() end
local old = redis.call('HGET', KEYS[1], 'until')
if (not old) or tonumber(ARGV[1]) > tonumber(old) then
  redis.call('HSET', KEYS[1], 'until', ARGV[1], 'rule', ARGV[2],
    'then', ARGV[3])
  local t = redis.call('TIME')
  local left = tonumber(ARGV[1]) - (tonumber(t[1]) + tonumber(t[2]) / 1e6)
  if left < 0 then left = 0 end
  redis.call('PEXPIRE', KEYS[1], life(left + {MIN_TTL}))
end
return 1
"""
)

# KEYS: the pauses of the scopes a send is held by.  ARGV: now, then the
# scopes' names.  Returns false or {scope, until, rule, then}: the pause
# that ends last among those still on.
_CHECK_PAUSE: Final = """
local now = tonumber(ARGV[1])
local best = false
for i = 1, #KEYS do
  local p = redis.call('HMGET', KEYS[i], 'until', 'rule', 'then')
  if p[1] and tonumber(p[1]) > now
      and ((not best) or tonumber(p[1]) > tonumber(best[2])) then
    best = {ARGV[i + 1], p[1], p[2] or '', p[3] or 'wait'}
  end
end
return best
"""


def _part(name: str, script: str) -> str:
    """
    An operation's script as a Lua function of its own keys and arguments
    (the names KEYS and ARGV shadow the script's), for the combined
    scripts below.
    """
    body = script.removeprefix(_PRELUDE)
    return f"local function {name}(KEYS, ARGV)\n{body}\nend\n"


# The combined scripts: one round trip before a send (admit) and one after
# (settle), whatever the policy uses.  ARGV[1] is the number of parts n;
# ARGV[2 .. 1 + 3n] name each part with the number of its keys and of its
# arguments; then come the parts' arguments, in order, as KEYS hold their
# keys.  Every key is the policy's (one hash slot in a cluster).
_DRIVER: Final = """
local n = tonumber(ARGV[1])
local ki, ai = 1, 2 + 3 * n
local function nxt(p)
  local base = 2 + 3 * (p - 1)
  local name, nk, na = ARGV[base], tonumber(ARGV[base + 1]),
    tonumber(ARGV[base + 2])
  local k, a = {}, {}
  for i = 1, nk do k[i] = KEYS[ki + i - 1] end
  for i = 1, na do a[i] = ARGV[ai + i - 1] end
  ki, ai = ki + nk, ai + na
  return name, k, a
end
"""

# admit: check_breakers, check_pause, acquire, each optional, in that
# order, stopping at the first that holds the send: {'b', breaker},
# {'p', pause} (one that ends more than PAUSE_SLACK from now), {'a',
# acquire's answer}; or {'ok'}.  A held send takes no slot.
_ADMIT: Final = (
    _PRELUDE
    + _part("check_breakers", _CHECK_BREAKERS)
    + _part("check_pause", _CHECK_PAUSE)
    + _part("acquire", _ACQUIRE)
    + _DRIVER
    + f"""
for p = 1, n do
  local name, k, a = nxt(p)
  if name == 'check_breakers' then
    local b = check_breakers(k, a)
    if b then return {{'b', b}} end
  elseif name == 'check_pause' then
    local found = check_pause(k, a)
    if found and tonumber(found[2]) - tonumber(a[1]) > {PAUSE_SLACK!r} then
      return {{'p', found}}
    end
  else
    return {{'a', acquire(k, a)}}
  end
end
return {{'ok'}}
"""
)

# settle: set_pause, open_breaker, record_outcome, refund,
# take_retry_token, seed_limit, each optional, in that order: every part's
# answer, in order (false where a part answers nothing).
_SETTLE: Final = (
    _PRELUDE
    + "if redis.replicate_commands then redis.replicate_commands() end\n"
    + _part("set_pause", _SET_PAUSE)
    + _part("open_breaker", _OPEN_BREAKER)
    + _part("record_outcome", _RECORD_OUTCOME)
    + _part("refund", _REFUND)
    + _part("take_retry_token", _TAKE_RETRY_TOKEN)
    + _part("seed_limit", _SEED_LIMIT)
    + _DRIVER
    + """
local parts = {set_pause = set_pause, open_breaker = open_breaker,
  record_outcome = record_outcome, refund = refund,
  take_retry_token = take_retry_token, seed_limit = seed_limit}
local out = {}
for p = 1, n do
  local name, k, a = nxt(p)
  out[p] = parts[name](k, a)
end
return out
"""
)

_SCRIPTS: Final = {
    "admit": _ADMIT,
    "settle": _SETTLE,
    "open_breaker": _OPEN_BREAKER,
    "check_breakers": _CHECK_BREAKERS,
    "record_outcome": _RECORD_OUTCOME,
    "take_retry_token": _TAKE_RETRY_TOKEN,
    "refund": _REFUND,
    "acquire": _ACQUIRE,
    "alert_gate": _ALERT_GATE,
    "set_pause": _SET_PAUSE,
    "check_pause": _CHECK_PAUSE,
    "seed_limit": _SEED_LIMIT,
}


class _Op(Generic[T]):
    """
    One operation, ready to run on Redis (*script* with *keys* and *args*,
    the answer turned into a value by *convert*) or, when Redis cannot be
    reached, on the local state (*local*).
    """

    __slots__ = ("args", "convert", "keys", "local", "script")

    def __init__(
        self,
        script: str,
        keys: tuple[str, ...],
        args: tuple[str, ...],
        convert: Callable[[Any], T],
        local: Callable[[StateBackend], T],
    ) -> None:
        self.script = script
        self.keys = keys
        self.args = args
        self.convert = convert
        self.local = local


class RedisState:
    """
    A :class:`~referee._core.backend.StateBackend` shared through Redis by
    every process that uses the same server and *prefix*.

    Args:
        client: A ``redis.Redis`` for the synchronous operations, or a
            ``redis.cluster.RedisCluster``: every script touches the keys
            of one policy (or one alert key), which share a hash slot.
            Or a function that makes one, called when it is first needed
            (again after a failure): a cluster client connects as it is
            made, and a cluster that cannot be reached then is an outage
            like any other, not an error.
        async_client: A ``redis.asyncio.Redis`` (or
            ``redis.asyncio.cluster.RedisCluster``) for the ``a``-prefixed
            twins (``acheck_breakers``, …), used on one event loop (an
            asyncio client cannot serve two); without one they run the
            synchronous client in a worker thread.  :meth:`from_url`
            makes one per event loop instead.
        prefix: The first part of every key.
        fallback: The state used while Redis cannot be reached; a new
            :class:`~referee.MemoryState` by default.
        log_every: How often, at most, an outage is logged (seconds).
        recheck_after: After a failure, how long the local state is used
            before Redis is tried again (seconds); then one operation
            tries it (the probe) while the others stay local until it
            has answered.
        timeout: How long an asynchronous operation may wait for Redis
            (seconds), reconnecting and loading a script included.

    Give the synchronous client short socket timeouts: a synchronous
    operation waits at most that long (for each read, and to connect) for
    a server that does not answer before falling back.  :meth:`from_url`
    does, from *timeout*.

    The sync runner calls the synchronous methods; the async runner (httpx's
    ``AsyncClient``, aiohttp) awaits the ``a``-twins (``aopen_breaker``,
    ``acheck_breakers``, ``arecord_outcome``, ``atake_retry_token``,
    ``arefund``, ``aacquire``, ``aalert_gate``, ``aset_pause``,
    ``acheck_pause``), which do the same without
    blocking the event loop.
    """

    def __init__(
        self,
        client: _Client | Callable[[], _Client],
        *,
        async_client: (
            redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster | None
        ) = None,
        prefix: str = "referee",
        fallback: StateBackend | None = None,
        log_every: float = 30.0,
        recheck_after: float = 1.0,
        timeout: float = TIMEOUT,
    ) -> None:
        self._client: _Client | None = None
        self._connect: Callable[[], _Client] | None = None
        self._scripts: dict[str, Script] | None = None
        if isinstance(client, redis.Redis | redis.cluster.RedisCluster):
            self._use(client)
        else:
            self._connect = client
        self._connecting = threading.Lock()
        self._timeout = timeout
        self._async_client = async_client
        self._prefix = prefix
        self._fallback = fallback
        self._log_every = log_every
        self._recheck_after = recheck_after
        self._ascripts: dict[str, AsyncScript] | None = (
            _register(async_client) if async_client is not None else None
        )
        # from_url's: an asyncio client serves one event loop only, so
        # each loop that asks gets its own.
        self._async_factory: (
            Callable[
                [], redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster
            ]
            | None
        ) = None
        self._loops: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, AsyncScript]
        ] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        #: How logs name the server, when the client cannot say yet.
        self._label: str | None = None
        # Outage bookkeeping (time.monotonic(): operational, not state).
        self._down_since: float | None = None
        self._retry_at = -math.inf
        self._next_log = -math.inf
        self._local_ops = 0
        self._told = False  # whether this outage was logged

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool = False,
        prefix: str = "referee",
        fallback: StateBackend | None = None,
        log_every: float = 30.0,
        recheck_after: float = 1.0,
        timeout: float = TIMEOUT,
        **options: Any,
    ) -> Self:
        """
        A state on the server at *url* (``redis://host:6379/0``,
        ``rediss://…``, ``unix://…``), or on the Redis Cluster that the
        node at *url* belongs to when *cluster* is true, with a
        synchronous client and an asynchronous one per event loop that
        uses the ``a``-twins.

        *options* go to both clients (``redis.Redis.from_url`` or
        ``redis.cluster.RedisCluster.from_url``); by default sockets time
        out after *timeout* seconds (to connect, and to read an answer),
        and a command that failed on a broken connection (a server
        restart breaks the pooled ones) is tried once more on a fresh
        one, without backing off; one that timed out is not.
        """
        defaults = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
        }
        again = (redis.exceptions.ConnectionError,)
        sync_options = {
            **defaults,
            "retry": Retry(NoBackoff(), 1, supported_errors=again),
            **options,
        }
        async_options = {
            **defaults,
            "retry": AsyncRetry(NoBackoff(), 1, supported_errors=again),
            **options,
        }
        client: Callable[[], _Client]
        factory: Callable[
            [], redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster
        ]
        if cluster:

            def client() -> redis.cluster.RedisCluster:
                return redis.cluster.RedisCluster.from_url(url, **sync_options)

            def factory() -> redis.asyncio.cluster.RedisCluster:
                return redis.asyncio.cluster.RedisCluster.from_url(
                    url, **async_options
                )

        else:

            def client() -> redis.Redis:
                return redis.Redis.from_url(url, **sync_options)

            def factory() -> redis.asyncio.Redis:
                return redis.asyncio.Redis.from_url(url, **async_options)

        state = cls(
            client,
            prefix=prefix,
            fallback=fallback,
            log_every=log_every,
            recheck_after=recheck_after,
            timeout=timeout,
        )
        state._async_factory = factory
        if not cluster:
            state._use(client())  # no I/O until the first command
        state._label = _label(url, cluster=cluster)
        return state

    def __repr__(self) -> str:
        shared = "local" if self._down_since is not None else "shared"
        return (
            f"<RedisState redis={self._where()} prefix={self._prefix!r}"
            f" {shared}>"
        )

    def close(self) -> None:
        """
        Write the settlements still on the settling thread, then close the
        synchronous client's connections.
        """
        flush_state()
        if self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        """
        Write the running loop's settlements still in their tasks, then
        close the asynchronous client's connections (the running event
        loop's, for a state made by :meth:`from_url`).
        """
        await adrain()
        if self._async_client is not None:
            await self._async_client.aclose()
        with self._lock:
            scripts = self._loops.pop(asyncio.get_running_loop(), None)
        if scripts is not None:
            await scripts["acquire"].registered_client.aclose()

    # The operations: one plan each, run by _run (sync) or _arun (async).

    def open_breaker(
        self, policy: str, name: str, until: float, rule_id: str | None
    ) -> None:
        return self._run(self._open_breaker(policy, name, until, rule_id))

    async def aopen_breaker(
        self, policy: str, name: str, until: float, rule_id: str | None
    ) -> None:
        return await self._arun(
            self._open_breaker(policy, name, until, rule_id)
        )

    def check_breakers(
        self, policy: str, now: float, skip: frozenset[str] = frozenset()
    ) -> BreakerState | None:
        return self._run(self._check_breakers(policy, now, skip))

    async def acheck_breakers(
        self, policy: str, now: float, skip: frozenset[str] = frozenset()
    ) -> BreakerState | None:
        return await self._arun(self._check_breakers(policy, now, skip))

    def record_outcome(
        self,
        policy: str,
        failed: bool,
        now: float,
        settings: BreakerSettings,
    ) -> BreakerState | None:
        return self._run(self._record_outcome(policy, failed, now, settings))

    async def arecord_outcome(
        self,
        policy: str,
        failed: bool,
        now: float,
        settings: BreakerSettings,
    ) -> BreakerState | None:
        return await self._arun(
            self._record_outcome(policy, failed, now, settings)
        )

    def take_retry_token(
        self, policy: str, host: str, settings: BudgetSettings
    ) -> bool:
        return self._run(self._take_retry_token(policy, host, settings))

    async def atake_retry_token(
        self, policy: str, host: str, settings: BudgetSettings
    ) -> bool:
        return await self._arun(self._take_retry_token(policy, host, settings))

    def refund(self, policy: str, host: str, settings: BudgetSettings) -> None:
        return self._run(self._refund(policy, host, settings))

    async def arefund(
        self, policy: str, host: str, settings: BudgetSettings
    ) -> None:
        return await self._arun(self._refund(policy, host, settings))

    def acquire(
        self,
        policy: str,
        bucket: str,
        now: float,
        settings: RateLimitSettings,
    ) -> float:
        return self._run(self._acquire(policy, bucket, now, settings))

    async def aacquire(
        self,
        policy: str,
        bucket: str,
        now: float,
        settings: RateLimitSettings,
    ) -> float:
        return await self._arun(self._acquire(policy, bucket, now, settings))

    def alert_gate(
        self, key: str, window: float | None, now: float
    ) -> tuple[bool, int]:
        if window is None:
            return True, 0
        return self._run(self._alert_gate(key, window, now))

    async def aalert_gate(
        self, key: str, window: float | None, now: float
    ) -> tuple[bool, int]:
        if window is None:
            return True, 0
        return await self._arun(self._alert_gate(key, window, now))

    def seed_limit(self, policy: str, bucket: str, seed: SeedState) -> None:
        """
        Pace *bucket*'s sends at *seed* until ``seed.until``, for every
        process that shares this Redis (see
        :class:`~referee._core.backend.SeedState`).
        """
        return self._run(self._seed_limit(policy, bucket, seed))

    async def aseed_limit(
        self, policy: str, bucket: str, seed: SeedState
    ) -> None:
        return await self._arun(self._seed_limit(policy, bucket, seed))

    def set_pause(self, policy: str, pause: PauseState) -> None:
        return self._run(self._set_pause(policy, pause))

    async def aset_pause(self, policy: str, pause: PauseState) -> None:
        return await self._arun(self._set_pause(policy, pause))

    def check_pause(
        self, policy: str, scopes: tuple[str, ...], now: float
    ) -> PauseState | None:
        return self._run(self._check_pause(policy, scopes, now))

    async def acheck_pause(
        self, policy: str, scopes: tuple[str, ...], now: float
    ) -> PauseState | None:
        return await self._arun(self._check_pause(policy, scopes, now))

    def admit(self, op: Admit) -> Admission:
        """
        Everything a send must pass, in one round trip (see
        :class:`~referee._core.ops.Admit`).
        """
        return self._run(self._admit(op))

    async def aadmit(self, op: Admit) -> Admission:
        return await self._arun(self._admit(op))

    def settle(self, op: Settle) -> Settlement:
        """
        Everything an outcome leaves in the state, in one round trip (see
        :class:`~referee._core.ops.Settle`); the alert's gate is left to
        the alert dispatcher (its key is no policy's: another hash slot).
        """
        return self._run(self._settle(op))

    async def asettle(self, op: Settle) -> Settlement:
        return await self._arun(self._settle(op))

    # Plans

    def _admit(self, op: Admit) -> _Op[Admission]:
        plans = [self._plan(part) for part in op.parts()]
        by_name = {plan.script: plan for plan in plans}

        def convert(answer: Any) -> Admission:
            kind = _text(answer[0])
            if kind == "b":
                return Admission(breaker=_breaker(answer[1]))
            if kind == "p":
                return Admission(pause=_pause(answer[1]))
            if kind == "a":
                return Admission(wait=by_name["acquire"].convert(answer[1]))
            return Admission()

        def local(state: StateBackend) -> Admission:
            return by_parts(
                admit_parts(op), lambda part: self._plan(part).local(state)
            )

        return _combined("admit", plans, convert, local)

    def _settle(self, op: Settle) -> _Op[Settlement]:
        # The alert's gate is the dispatcher's (its key is in another slot).
        op = attrs.evolve(op, alert=None)
        plans = [self._plan(part) for part in op.parts()]

        def convert(answer: Any) -> Settlement:
            answers = iter(
                [
                    plan.convert(got)
                    for plan, got in zip(plans, answer, strict=True)
                ]
            )
            return by_parts(settle_parts(op), lambda _part: next(answers))

        def local(state: StateBackend) -> Settlement:
            return by_parts(
                settle_parts(op), lambda part: self._plan(part).local(state)
            )

        return _combined("settle", plans, convert, local)

    def _plan(self, part: StateOp) -> _Op[Any]:
        """
        The plan of one part of an admission or a settlement.
        """
        match part:
            case CheckBreakers():
                return self._check_breakers(part.policy, part.now, part.skip)
            case CheckPause():
                return self._check_pause(part.policy, part.scopes, part.now)
            case Acquire():
                return self._acquire(
                    part.policy, part.bucket, part.now, part.settings
                )
            case SetPause():
                return self._set_pause(part.policy, part.pause)
            case OpenBreaker():
                return self._open_breaker(
                    part.policy, part.name, part.until, part.rule_id
                )
            case RecordOutcome():
                return self._record_outcome(
                    part.policy, part.failed, part.now, part.settings
                )
            case Refund():
                return self._refund(part.policy, part.host, part.settings)
            case TakeRetryToken():
                return self._take_retry_token(
                    part.policy, part.host, part.settings
                )
            case SeedLimit():
                return self._seed_limit(part.policy, part.bucket, part.seed)
        msg = (
            f"{type(part).__name__} is no part of an admission or a settlement"
        )
        raise TypeError(msg)

    def _seed_limit(
        self, policy: str, bucket: str, seed: SeedState
    ) -> _Op[None]:
        def local(state: StateBackend) -> None:
            keep = getattr(state, "seed_limit", None)
            if keep is not None:
                keep(policy, bucket, seed)

        return _Op(
            "seed_limit",
            (self._key(policy, "seed", bucket),),
            (_num(seeded(seed)), _num(seed.until)),
            _none,
            local,
        )

    def _set_pause(self, policy: str, pause: PauseState) -> _Op[None]:
        return _Op(
            "set_pause",
            (self._key(policy, "pause", pause.scope),),
            (
                _num(pause.until),
                pause.rule_id or "",
                pause.then,
            ),
            _none,
            lambda local: local.set_pause(policy, pause),
        )

    def _check_pause(
        self, policy: str, scopes: tuple[str, ...], now: float
    ) -> _Op[PauseState | None]:
        return _Op(
            "check_pause",
            tuple(self._key(policy, "pause", scope) for scope in scopes),
            (_num(now), *scopes),
            _pause,
            lambda local: local.check_pause(policy, scopes, now),
        )

    def _open_breaker(
        self, policy: str, name: str, until: float, rule_id: str | None
    ) -> _Op[None]:
        return _Op(
            "open_breaker",
            (
                self._key(policy, "breakers"),
                self._key(policy, "breaker-rules"),
            ),
            (
                name,
                _num(until),
                rule_id or "",
                "0" if rule_id is None else "1",
            ),
            _none,
            lambda local: local.open_breaker(policy, name, until, rule_id),
        )

    def _check_breakers(
        self, policy: str, now: float, skip: frozenset[str]
    ) -> _Op[BreakerState | None]:
        return _Op(
            "check_breakers",
            (
                self._key(policy, "breakers"),
                self._key(policy, "breaker-rules"),
                self._key(policy, "ratio"),
            ),
            (_num(now), *sorted(skip)),
            _breaker,
            lambda local: local.check_breakers(policy, now, skip),
        )

    def _record_outcome(
        self,
        policy: str,
        failed: bool,
        now: float,
        settings: BreakerSettings,
    ) -> _Op[BreakerState | None]:
        def convert(until: Any) -> BreakerState | None:
            if until is None:
                return None
            return BreakerState(RATIO_BREAKER, float(until), None)

        return _Op(
            "record_outcome",
            (self._key(policy, "ratio"), self._key(policy, "ratio-window")),
            (
                "1" if failed else "0",
                _num(now),
                _num(settings.failure_ratio),
                _num(settings.window),
                str(settings.min_calls),
                _num(settings.open_for),
            ),
            convert,
            lambda local: local.record_outcome(policy, failed, now, settings),
        )

    def _take_retry_token(
        self, policy: str, host: str, settings: BudgetSettings
    ) -> _Op[bool]:
        return _Op(
            "take_retry_token",
            (self._key(policy, "budget", host),),
            (_num(settings.tokens), _ms(IDLE_TTL)),
            bool,
            lambda local: local.take_retry_token(policy, host, settings),
        )

    def _refund(
        self, policy: str, host: str, settings: BudgetSettings
    ) -> _Op[None]:
        return _Op(
            "refund",
            (self._key(policy, "budget", host),),
            (_num(settings.tokens), _num(settings.refill), _ms(IDLE_TTL)),
            _none,
            lambda local: local.refund(policy, host, settings),
        )

    def _acquire(
        self,
        policy: str,
        bucket: str,
        now: float,
        settings: RateLimitSettings,
    ) -> _Op[float]:
        def convert(answer: Any) -> float:
            if int(answer[0]):
                return 0.0
            target = float(answer[1])
            wait = target - now
            # Asking again after *wait* must not fall short by rounding.
            while now + wait < target:
                wait = math.nextafter(wait, math.inf)
            return wait

        pace = interval(settings)
        keys: tuple[str, ...] = (self._key(policy, "pace", bucket),)
        if settings.seed:
            keys += (self._key(policy, "seed", bucket),)
        return _Op(
            "acquire",
            keys,
            (_num(now), _num(pace), _ms(max(pace * 2, MIN_TTL))),
            convert,
            lambda local: local.acquire(policy, bucket, now, settings),
        )

    def _alert_gate(
        self, key: str, window: float, now: float
    ) -> _Op[tuple[bool, int]]:
        return _Op(
            "alert_gate",
            (f"{self._prefix}:alert:{key}",),
            (_num(now), _num(window), _num(HELD_FOR)),
            lambda answer: (bool(int(answer[0])), int(answer[1])),
            lambda local: local.alert_gate(key, window, now),
        )

    # Running a plan.  While Redis answers, every operation goes to it.
    # After a failure, operations stay local for *recheck_after* seconds;
    # then ONE of them (the probe) tries Redis while the others stay local
    # until it has answered, so an outage costs at most one timeout per
    # back-off period, whatever the number of threads or tasks.

    def _run(self, op: _Op[T]) -> T:
        route = self._route()
        if route is _LOCAL:
            return self._locally(op)
        try:
            scripts = self._scripts or self._sync_scripts()
            answer = scripts[op.script](keys=op.keys, args=op.args)
        except _FAULTS as exc:
            self._failed(exc)
            return self._locally(op)
        except BaseException:
            if route is _PROBE:
                self._give_up_probe()
            raise
        if route is _PROBE or self._down_since is not None:
            self._recovered()
        return op.convert(answer)

    async def _arun(self, op: _Op[T]) -> T:
        scripts = self._async_scripts()
        if scripts is None:
            return await asyncio.to_thread(self._run, op)
        route = self._route()
        if route is _LOCAL:
            return self._locally(op)
        try:
            client = scripts["acquire"].registered_client
            if isinstance(client, redis.asyncio.cluster.RedisCluster):
                # Once per client: the cluster's slots and its commands
                # (COMMAND: a large reply to parse), which may take longer
                # than one operation should; its waits on the network are
                # bounded by the socket timeouts.
                async with asyncio.timeout(max(self._timeout, _SETUP)):
                    await client.initialize()
            # The client's socket timeouts bound each read; this bounds
            # the whole operation (a reconnection, a script load).
            async with asyncio.timeout(self._timeout):
                answer = await scripts[op.script](keys=op.keys, args=op.args)
        except _FAULTS as exc:  # TimeoutError is an OSError
            self._failed(exc)
            return self._locally(op)
        except BaseException:  # cancelled: let another caller probe
            if route is _PROBE:
                self._give_up_probe()
            raise
        if route is _PROBE or self._down_since is not None:
            self._recovered()
        return op.convert(answer)

    def _route(self) -> str:
        """
        Where the next operation goes: `_REDIS` while Redis answers;
        during an outage `_LOCAL`, except for the first caller after the
        back-off period, which becomes the probe (`_PROBE`).
        """
        retry_at = self._retry_at
        if retry_at == -math.inf:
            return _REDIS
        if time.monotonic() < retry_at:
            return _LOCAL
        with self._lock:
            if self._retry_at == -math.inf:
                return _REDIS
            if time.monotonic() < self._retry_at:
                return _LOCAL
            self._retry_at = math.inf  # the others stay local meanwhile
            return _PROBE

    def _give_up_probe(self) -> None:
        """
        The probe ended without an answer or a fault (it was cancelled):
        the next caller may probe at once.
        """
        with self._lock:
            if self._retry_at == math.inf:
                self._retry_at = time.monotonic()

    def _use(self, client: _Client) -> None:
        self._scripts = {
            name: client.register_script(text)
            for name, text in _SCRIPTS.items()
        }
        self._client = client

    def _sync_scripts(self) -> dict[str, Script]:
        """
        The scripts on the synchronous client, made now if it was not:
        a fault here (a cluster that cannot be reached) is the caller's.
        """
        with self._connecting:
            if self._scripts is None:
                assert self._connect is not None  # noqa: S101 - __init__
                self._use(self._connect())
            assert self._scripts is not None  # noqa: S101 - just made
            return self._scripts

    def _async_scripts(self) -> dict[str, AsyncScript] | None:
        """
        The scripts on the asyncio client for the running loop, or None
        when there is no asyncio client.
        """
        if self._ascripts is not None:
            return self._ascripts
        if self._async_factory is None:
            return None
        loop = asyncio.get_running_loop()
        with self._lock:
            scripts = self._loops.get(loop)
            if scripts is None:
                scripts = self._loops[loop] = _register(self._async_factory())
            return scripts

    def _locally(self, op: _Op[T]) -> T:
        with self._lock:
            self._local_ops += 1
            if self._fallback is None:
                self._fallback = MemoryState()
            local = self._fallback
        return op.local(local)

    def _failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            self._retry_at = now + self._recheck_after
            if self._down_since is None:
                self._down_since = now
                self._local_ops = 0
            if now < self._next_log:
                return
            self._next_log = now + self._log_every
            self._told = True
        _log.warning(
            "referee.state_unavailable",
            redis=self._where(),
            prefix=self._prefix,
            error=f"{type(exc).__name__}: {exc}",
            fallback="local",
            recheck_after=self._recheck_after,
        )

    def _recovered(self) -> None:
        with self._lock:
            self._retry_at = -math.inf
            since = self._down_since
            if since is None:
                return  # another thread saw it first
            self._down_since = None
            told, self._told = self._told, False
            local_ops = self._local_ops
        if not told:
            return  # a blip inside the quiet interval: it went unreported
        _log.info(
            "referee.state_recovered",
            redis=self._where(),
            prefix=self._prefix,
            down_for=round(time.monotonic() - since, 3),
            local_ops=local_ops,
        )

    def _key(self, policy: str, kind: str, part: str | None = None) -> str:
        base = f"{self._prefix}:{{{policy}}}:{kind}"
        return base if part is None else f"{base}:{part}"

    def _where(self) -> str:
        """
        The server, for logs: host, port and database, never credentials.
        """
        if self._label is not None:
            return self._label
        if isinstance(self._client, redis.cluster.RedisCluster):
            node = self._client.get_default_node()  # type: ignore[no-untyped-call]
            return f"cluster:{node.host}:{node.port}" if node else "cluster"
        pool = getattr(self._client, "connection_pool", None)
        kw: dict[str, Any] = getattr(pool, "connection_kwargs", {})
        if "path" in kw:
            return f"unix:{kw['path']}?db={kw.get('db', 0)}"
        return f"{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"


def _label(url: str, *, cluster: bool) -> str:
    """
    Where *url* points, for logs: host, port and database, never
    credentials.
    """
    kw: dict[str, Any] = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
    if "path" in kw:
        where = f"unix:{kw['path']}?db={kw.get('db', 0)}"
    else:
        where = (
            f"{kw.get('host', '?')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"
        )
    return f"cluster:{where}" if cluster else where


def _combined(
    script: str,
    parts: list[_Op[Any]],
    convert: Callable[[Any], T],
    local: Callable[[StateBackend], T],
) -> _Op[T]:
    """
    One plan for the combined *script* (admit or settle) running *parts*
    in order: their keys, and their arguments after the header that
    names each part with its counts.
    """
    header: list[str] = [str(len(parts))]
    keys: list[str] = []
    args: list[str] = []
    for part in parts:
        header += [part.script, str(len(part.keys)), str(len(part.args))]
        keys += part.keys
        args += part.args
    return _Op(script, tuple(keys), (*header, *args), convert, local)


def _register(
    client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster,
) -> dict[str, AsyncScript]:
    return {
        name: client.register_script(text) for name, text in _SCRIPTS.items()
    }


def _num(x: float) -> str:
    """
    A number as Lua reads it back exactly.
    """
    return repr(float(x))


def _ms(seconds: float) -> str:
    return str(math.ceil(seconds * 1000))


def _none(_answer: Any) -> None:
    return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _breaker(answer: Any) -> BreakerState | None:
    if answer is None:
        return None
    rule = _text(answer[2]) if len(answer) > 2 else None
    return BreakerState(_text(answer[0]), float(answer[1]), rule)


def _pause(answer: Any) -> PauseState | None:
    if answer is None:
        return None
    rule = _text(answer[2])
    return PauseState(
        _text(answer[0]), float(answer[1]), rule or None, _text(answer[3])
    )


if TYPE_CHECKING:

    def _conforms(state: RedisState) -> StateBackend:
        return state
