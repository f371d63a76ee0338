"""
The in-memory state backend: each loaded policy gets its own unless a
:class:`referee.redis.RedisState` is passed.

Rule 1: one :class:`threading.Lock` guards everything, and every method
holds it for a few dictionary operations only: no I/O, no waiting, no
clock.  The methods are synchronous, so asyncio tasks call them directly.
Rule 2: memory is bounded by what is live: a rate limit is one time
(dropped once it has passed), expired breakers and spent alert gates are
dropped, a full retry budget is not stored at all.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Final

from referee._core.backend import (
    BreakerSettings,
    BreakerState,
    BudgetSettings,
    PauseState,
    RateLimitSettings,
    SeedState,
)


__all__ = [
    "PACING_MARGIN",
    "RATIO_BREAKER",
    "MemoryState",
    "interval",
    "seeded",
]

#: The name of the policy-level breaker that trips on a failure ratio.
RATIO_BREAKER = "failure-ratio"

#: How many time buckets the ratio breaker's window is cut into: the
#: window slides by a tenth of itself.
BUCKETS = 10

#: How often (in the callers' clock) the stale entries of every policy are
#: swept; between sweeps each operation trims only what it touches.
SWEEP_EVERY = 60.0

#: The headroom the rate limiter keeps, as a share of the limit's *per*:
#: sends are spaced ``per * (1 + PACING_MARGIN) / requests`` apart, so that
#: any ``requests + 1`` of them span ``per`` plus this share of it.  It
#: absorbs what the client cannot see: how long each request takes from
#: its grant to the server's clock (a new connection, a busy host, the
#: scheduler), which varies by tens of milliseconds.  5% of a 1-second
#: window is 50 ms, and costs 5% of the throughput.
PACING_MARGIN: Final = 0.05

#: How long an alert gate that holds back repeats waits, after its window
#: ends, for the next alert of its key to report them.
HELD_FOR = 86_400.0


class _Ratio:
    """
    The failure-ratio breaker of one policy.

    Closed: *until* is None and *buckets* count the outcomes.  Open:
    *until* is set; once it has passed, *probe_at* is when the probe went
    out (None while no probe is out).
    """

    __slots__ = ("buckets", "open_for", "probe_at", "until", "width")

    def __init__(self) -> None:
        #: bucket index (``floor(now / width)``) -> [calls, failures]
        self.buckets: dict[int, list[int]] = {}
        self.width = 0.0
        self.until: float | None = None
        self.open_for = 0.0
        self.probe_at: float | None = None

    def state(self) -> BreakerState:
        assert self.until is not None  # noqa: S101 - only called when open
        return BreakerState(RATIO_BREAKER, self.until, None)


class _Gate:
    """
    The alert gate of one key: when the last alert went out, for which
    window, and how many were held back since.
    """

    __slots__ = ("held", "sent", "window")

    def __init__(self, sent: float, window: float) -> None:
        self.sent = sent
        self.window = window
        self.held = 0


class MemoryState:
    """
    Breakers, retry budgets, rate limits and alert de-duplication in this
    process's memory; safe to share between threads and asyncio tasks.

    Every time is the caller's clock (Unix seconds); nothing here reads
    the clock or sleeps.

    **Named breakers** are kept per policy and name with their *until*
    and the rule that opened them; opening an open breaker keeps the later
    *until*.  :meth:`check_breakers` returns, of the breakers that stop a
    call now, the one that closes last (named breakers whose *until* has
    passed are dropped).

    **The failure-ratio breaker** (named ``"failure-ratio"``, *rule_id*
    None) counts outcomes in a sliding window of 10 time buckets across
    ``settings.window`` (so the window covers between nine and ten tenths
    of it).  :meth:`record_outcome` adds the outcome to the current
    bucket; when the window then holds at least *min_calls* outcomes, at
    least one of them failed and ``failures / calls >= failure_ratio``,
    the breaker opens for *open_for* seconds, the counts are cleared and
    the new :class:`BreakerState` is returned.  While it is open, outcomes
    of calls that were already under way are ignored.

    When its time is up it is half-open: the first :meth:`check_breakers`
    (that no named breaker stops anyway) gets None and is the probe; while
    the probe is out, every other caller fails fast with the breaker, its
    *until* being the time another probe will be allowed (``probe sent +
    open_for``), never a time in the past.  The first outcome recorded
    while the probe is out is taken as the probe's (outcomes carry no
    caller, and every other call is stopped meanwhile): a success closes the
    breaker with an empty window; a failure opens it again for *open_for*
    (and returns the new state).  A probe that does not report back within
    *open_for* is given up, and the next caller becomes the probe.

    **Retry budgets** are kept per policy and host, starting full at
    ``settings.tokens``.  :meth:`take_retry_token` refuses while the
    bucket holds at most half of *tokens* (gRPC's retry throttling), else
    spends one token; :meth:`refund` gives back *refill*, up to *tokens*.

    **Rate limits** pace sends evenly (GCRA with no burst: an emission
    interval).  Per policy and bucket, the state is one time, *next*: when
    the next send may go.  :meth:`acquire` grants a send (returns 0.0)
    when ``now >= next``, and moves *next* to ``now + interval``, where the
    interval is ``per * (1 + PACING_MARGIN) / requests`` (:func:`interval`);
    otherwise it takes nothing and returns ``next - now``, the wait after
    which asking again may succeed.  Every grant is at least an interval
    after the one before it, in the order they were granted, whatever the
    callers' clocks (a caller whose clock lags is simply told to wait), so
    any ``requests + 1`` grants span at least ``per * (1 +
    PACING_MARGIN)``: no window of *per* seconds holds more than
    *requests* sends, even as the server sees them, late by up to
    ``PACING_MARGIN * per`` more for one send than for another.  There is
    no burst: after a pause the first send goes at once, the next an
    interval later.  A rate limit with ``seed`` set uses the slower of
    its interval and that of the bucket's live seed
    (:meth:`seed_limit`: what the server's ``RateLimit-Policy`` declared,
    kept until its ``until``).

    **Pauses** the server asked for are kept per policy and scope (``*``
    or a host) with their *until*; setting one keeps a later *until*.
    :meth:`check_pause` returns, of the scopes asked, the pause that ends
    last, dropping those whose time is up; with nothing paused it takes
    no lock.

    **Alert gates**, per key: with no window every alert goes out,
    ``(True, 0)``.  With a window, the first alert goes out, ``(True,
    0)``; repeats inside the window are held, ``(False, held so far)``;
    the first after the window goes out with the count it held, ``(True,
    held)``, and opens a new window.  A gate that holds repeats keeps them
    for a day after its window ends if no alert of its key comes to
    report them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._breakers: dict[str, dict[str, BreakerState]] = {}
        self._ratios: dict[str, _Ratio] = {}
        self._tokens: dict[tuple[str, str], float] = {}
        #: (policy, bucket) -> when the next send may go
        self._paces: dict[tuple[str, str], float] = {}
        #: (policy, bucket) -> the pace the server declared, and its end
        self._seeds: dict[tuple[str, str], SeedState] = {}
        self._gates: dict[str, _Gate] = {}
        self._pauses: dict[tuple[str, str], PauseState] = {}
        self._next_sweep = -math.inf

    def __repr__(self) -> str:
        with self._lock:
            breakers = sum(map(len, self._breakers.values()))
            return (
                f"<MemoryState breakers={breakers}"
                f" budgets={len(self._tokens)}"
                f" rate_limits={len(self._paces)}"
                f" alert_gates={len(self._gates)}"
                f" pauses={len(self._pauses)}>"
            )

    # The async twins: every operation here takes a lock for microseconds
    # and never waits on I/O, so each answers by calling its blocking twin.

    async def aopen_breaker(
        self, policy: str, name: str, until: float, rule_id: str | None
    ) -> None:
        self.open_breaker(policy, name, until, rule_id)

    async def acheck_breakers(
        self, policy: str, now: float, skip: frozenset[str] = frozenset()
    ) -> BreakerState | None:
        return self.check_breakers(policy, now, skip)

    async def arecord_outcome(
        self,
        policy: str,
        failed: bool,
        now: float,
        settings: BreakerSettings,
    ) -> BreakerState | None:
        return self.record_outcome(policy, failed, now, settings)

    async def atake_retry_token(
        self, policy: str, host: str, settings: BudgetSettings
    ) -> bool:
        return self.take_retry_token(policy, host, settings)

    async def arefund(
        self, policy: str, host: str, settings: BudgetSettings
    ) -> None:
        self.refund(policy, host, settings)

    async def aacquire(
        self,
        policy: str,
        bucket: str,
        now: float,
        settings: RateLimitSettings,
    ) -> float:
        return self.acquire(policy, bucket, now, settings)

    async def aalert_gate(
        self, key: str, window: float | None, now: float
    ) -> tuple[bool, int]:
        return self.alert_gate(key, window, now)

    async def aseed_limit(
        self, policy: str, bucket: str, seed: SeedState
    ) -> None:
        self.seed_limit(policy, bucket, seed)

    async def aset_pause(self, policy: str, pause: PauseState) -> None:
        self.set_pause(policy, pause)

    async def acheck_pause(
        self, policy: str, scopes: tuple[str, ...], now: float
    ) -> PauseState | None:
        return self.check_pause(policy, scopes, now)

    # Pauses the server asked for

    def set_pause(self, policy: str, pause: PauseState) -> None:
        key = (policy, pause.scope)
        with self._lock:
            old = self._pauses.get(key)
            if old is None or pause.until > old.until:
                self._pauses[key] = pause

    def check_pause(
        self, policy: str, scopes: tuple[str, ...], now: float
    ) -> PauseState | None:
        if not self._pauses:
            return None  # the usual case: nothing paused, no lock
        best: PauseState | None = None
        with self._lock:
            for scope in scopes:
                found = self._pauses.get((policy, scope))
                if found is None:
                    continue
                if found.until <= now:
                    del self._pauses[(policy, scope)]
                elif best is None or found.until > best.until:
                    best = found
        return best

    # Breakers

    def open_breaker(
        self, policy: str, name: str, until: float, rule_id: str | None
    ) -> None:
        with self._lock:
            named = self._breakers.setdefault(policy, {})
            old = named.get(name)
            if old is None or until > old.until:
                named[name] = BreakerState(name, until, rule_id)

    def check_breakers(
        self, policy: str, now: float, skip: frozenset[str] = frozenset()
    ) -> BreakerState | None:
        with self._lock:
            self._maybe_sweep(now)
            best: BreakerState | None = None
            named = self._breakers.get(policy)
            if named:
                for name, st in list(named.items()):
                    if st.until <= now:
                        del named[name]
                    elif name in skip:
                        continue  # scoped to other methods
                    elif best is None or st.until > best.until:
                        best = st
                if not named:
                    del self._breakers[policy]

            r = self._ratios.get(policy)
            if r is None or r.until is None or RATIO_BREAKER in skip:
                return best
            if now < r.until:
                ratio = r.state()
            elif best is not None:
                # A named breaker stops the call: don't spend the probe.
                return best
            elif r.probe_at is None or now >= r.probe_at + r.open_for:
                r.probe_at = now
                return None
            else:
                ratio = BreakerState(
                    RATIO_BREAKER, r.probe_at + r.open_for, None
                )
            if best is None or ratio.until > best.until:
                return ratio
            return best

    def record_outcome(
        self,
        policy: str,
        failed: bool,
        now: float,
        settings: BreakerSettings,
    ) -> BreakerState | None:
        with self._lock:
            r = self._ratios.get(policy)
            if r is None:
                r = self._ratios[policy] = _Ratio()

            if r.until is not None:
                if r.probe_at is None:
                    return None  # a call from before it opened
                r.probe_at = None
                if failed:
                    r.until = now + settings.open_for
                    r.open_for = settings.open_for
                    return r.state()
                r.until = None
                r.buckets.clear()
                return None

            width = settings.window / BUCKETS
            if width != r.width:
                r.buckets.clear()  # new settings: start counting afresh
                r.width = width
            idx = _index(now, width)
            bucket = r.buckets.get(idx)
            if bucket is None:
                bucket = r.buckets[idx] = [0, 0]
            bucket[0] += 1
            if failed:
                bucket[1] += 1

            oldest = idx - BUCKETS + 1
            calls = failures = 0
            for k in list(r.buckets):
                if k < oldest:
                    del r.buckets[k]
                else:
                    c, f = r.buckets[k]
                    calls += c
                    failures += f
            if (
                failures > 0
                and calls >= settings.min_calls
                and failures >= settings.failure_ratio * calls
            ):
                r.until = now + settings.open_for
                r.open_for = settings.open_for
                r.probe_at = None
                r.buckets.clear()
                return r.state()
            return None

    # Retry budgets

    def take_retry_token(
        self, policy: str, host: str, settings: BudgetSettings
    ) -> bool:
        key = (policy, host)
        with self._lock:
            tokens = self._tokens.get(key, settings.tokens)
            if tokens <= settings.tokens / 2:
                return False
            self._tokens[key] = tokens - 1
            return True

    def refund(self, policy: str, host: str, settings: BudgetSettings) -> None:
        key = (policy, host)
        with self._lock:
            tokens = self._tokens.get(key)
            if tokens is None:
                return  # full already
            tokens += settings.refill
            if tokens >= settings.tokens:
                del self._tokens[key]  # full: the default needs no entry
            else:
                self._tokens[key] = tokens

    # Rate limits

    def acquire(
        self,
        policy: str,
        bucket: str,
        now: float,
        settings: RateLimitSettings,
    ) -> float:
        key = (policy, bucket)
        with self._lock:
            self._maybe_sweep(now)
            at = self._paces.get(key)
            if at is not None and now < at:
                return _wait(now, at)
            pace = interval(settings)
            if settings.seed:
                seed = self._seeds.get(key)
                if seed is not None and now < seed.until:
                    pace = max(pace, seeded(seed))
            self._paces[key] = now + pace
            return 0.0

    def seed_limit(self, policy: str, bucket: str, seed: SeedState) -> None:
        """
        Pace *bucket*'s sends at *seed* until ``seed.until`` (replacing
        its earlier seed), where the rate limit asks for seeds and *seed*
        is slower than its own pace.
        """
        with self._lock:
            self._seeds[policy, bucket] = seed

    # Alert de-duplication

    def alert_gate(
        self, key: str, window: float | None, now: float
    ) -> tuple[bool, int]:
        if window is None:
            return True, 0
        with self._lock:
            self._maybe_sweep(now)
            gate = self._gates.get(key)
            if gate is None:
                self._gates[key] = _Gate(now, window)
                return True, 0
            if now < gate.sent + gate.window:
                gate.held += 1
                return False, gate.held
            held = gate.held
            gate.sent = now
            gate.window = window
            gate.held = 0
            return True, held

    # Housekeeping

    def _maybe_sweep(self, now: float) -> None:
        """
        Drop whatever has gone stale in every policy, at most once every
        `SWEEP_EVERY` seconds; the caller holds the lock.
        """
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_EVERY

        for policy, named in list(self._breakers.items()):
            for name, st in list(named.items()):
                if st.until <= now:
                    del named[name]
            if not named:
                del self._breakers[policy]

        for pause_key, pause in list(self._pauses.items()):
            if pause.until <= now:
                del self._pauses[pause_key]

        for policy, r in list(self._ratios.items()):
            if r.until is None and (
                not r.buckets
                or max(r.buckets) < _index(now, r.width) - BUCKETS + 1
            ):
                del self._ratios[policy]

        for key, at in list(self._paces.items()):
            if at <= now:
                del self._paces[key]

        for key, seed in list(self._seeds.items()):
            if seed.until <= now:
                del self._seeds[key]

        for alert_key, gate in list(self._gates.items()):
            end = gate.sent + gate.window
            if now >= end and (gate.held == 0 or now >= end + HELD_FOR):
                del self._gates[alert_key]


def interval(settings: RateLimitSettings) -> float:
    """
    The time between two sends a rate limit grants:
    ``per * (1 + PACING_MARGIN) / requests``.
    """
    return settings.per * (1 + PACING_MARGIN) / settings.requests


def seeded(seed: SeedState) -> float:
    """
    The time between two sends a seed grants, with the same margin as
    :func:`interval`.
    """
    return seed.per * (1 + PACING_MARGIN) / seed.requests


def _index(now: float, width: float) -> int:
    """
    The ratio breaker's bucket for *now*.
    """
    return math.floor(now / width) if width > 0 else 0


def _wait(now: float, target: float) -> float:
    """
    How long from *now* until *target*, rounded up so that ``now + wait``
    is not short of *target*.
    """
    wait = target - now
    while now + wait < target:
        wait = math.nextafter(wait, math.inf)
    return wait


if TYPE_CHECKING:
    from referee._core.backend import StateBackend

    # mypy checks that MemoryState implements the protocol.
    _CONFORMS: StateBackend = MemoryState()
