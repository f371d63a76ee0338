"""
The state a policy keeps across calls — breakers, retry budgets, rate
limits, alert de-duplication — behind one interface with two
implementations: :class:`~referee.MemoryState` (the default: each loaded
policy gets its own) and :class:`referee.redis.RedisState` (a fleet shares
one through Redis).

Rule 1: every operation that must be atomic is one call here (one Redis
script); the runners never read-modify-write state themselves.
Rule 2: times are the runners' clock (Unix seconds); a backend never reads
the clock itself, so tests can drive it.
Rule 3: keys are namespaced by policy name; a backend may hold several
policies' state.

The settings these operations take come from the policy file (see
``docs/policy-language.md``): ``defaults.breaker``, ``defaults.budget``,
``defaults.rate_limit`` and the rules' ``breaker:``, ``pause:`` and
``alert:``.
"""

from __future__ import annotations

from typing import Protocol

import attrs


__all__ = [
    "PAUSE_SLACK",
    "Admission",
    "BreakerSettings",
    "BreakerState",
    "BudgetSettings",
    "PauseState",
    "RateLimitSettings",
    "SeedState",
    "Settlement",
    "StateBackend",
]

#: A pause that ends within this many seconds holds nothing: the call
#: that set it, retrying on the same hint, meets it as it ends.
PAUSE_SLACK = 0.001


@attrs.frozen
class BreakerSettings:
    """
    The policy-level breaker: it opens when, within *window* seconds, at
    least *min_calls* outcomes were seen and the share that failed reached
    *failure_ratio*; it stays open *open_for* seconds, then lets one probe
    through (half-open): a success closes it, a failure opens it again.
    """

    failure_ratio: float
    window: float
    min_calls: int
    open_for: float


@attrs.frozen
class BudgetSettings:
    """
    A retry budget per policy and host, as gRPC's retry throttling: the
    bucket holds up to *tokens*; each retry costs one, each success gives
    back *refill*; a retry is allowed only while more than half the bucket
    is left.
    """

    tokens: float
    refill: float


@attrs.frozen
class RateLimitSettings:
    """
    At most *requests* sends per *per* seconds, for the methods in
    *methods* (None: all), counted per *bucket* (the policy, or the policy
    and the request's path).  With *seed*, a bucket's responses that carry
    a ``RateLimit-Policy`` field may tighten its pace for a while (see
    :class:`SeedState`); a backend without ``seed_limit`` ignores them.
    """

    requests: int
    per: float
    methods: frozenset[str] | None
    by_path: bool
    seed: bool = False


@attrs.frozen
class SeedState:
    """
    A pace the server declared for one rate-limit bucket (its strictest
    ``RateLimit-Policy`` item): at most *requests* sends per *per*
    seconds, until *until*.  It only tightens: a bucket's sends are paced
    at the slower of this and the policy's own ``requests``/``per``.
    A backend that keeps seeds has ``seed_limit(policy, bucket, seed)``
    (and ``aseed_limit``), which replaces the bucket's seed, and honours
    the live seed in ``acquire`` when ``settings.seed`` is set.
    """

    requests: int
    per: float
    until: float


@attrs.frozen
class BreakerState:
    """
    An open breaker: which, until when, and which rule opened it (None for
    the failure-ratio breaker).
    """

    name: str
    until: float
    rule_id: str | None


@attrs.frozen
class PauseState:
    """
    A pause the server asked for: calls in *scope* (``*``: the whole
    policy, else a host) are held until *until*; they wait or fail fast,
    as *then* says (``wait`` or ``fail``); *rule_id* set it.
    """

    scope: str
    until: float
    rule_id: str | None
    then: str


@attrs.frozen
class Admission:
    """
    What stops or holds a send, found in one operation (``admit``): the
    open breaker that stops it, else the pause that holds it, else how long
    to wait for a rate-limit slot (0.0: the slot is taken, send now).  A
    send a breaker stops or a pause holds takes no slot.
    """

    breaker: BreakerState | None = None
    pause: PauseState | None = None
    wait: float = 0.0


@attrs.frozen
class Settlement:
    """
    What settling an outcome in one operation (``settle``) answers: the
    failure-ratio breaker this outcome opened (or None), whether the retry
    token asked for was granted (True when none was asked for), and the
    alert's de-duplication gate — ``(send, held since the last)`` — when
    the backend passed it (None: the alert dispatcher asks itself).
    """

    ratio: BreakerState | None = None
    token: bool = True
    gate: tuple[bool, int] | None = None


class StateBackend(Protocol):
    """
    What the runners ask of a state backend.  Every method is safe to call
    from several threads (and, for Redis, several processes) at once.

    Each method has an async twin, named with an ``a`` in front
    (``acheck_breakers``...), taking the same arguments: the async runner
    awaits those, so a backend on the network never blocks the event
    loop.  A backend whose operations never wait (in memory) may answer
    them by calling the blocking method.
    """

    def open_breaker(
        self, policy: str, name: str, until: float, rule_id: str | None
    ) -> None:
        """
        Open the breaker *name* until *until* (keeping a later time if it
        is already open longer).
        """

    def check_breakers(
        self, policy: str, now: float, skip: frozenset[str] = frozenset()
    ) -> BreakerState | None:
        """
        The open breaker that stops a call now, or None; breakers named in
        *skip* do not stop this call (their scope is other methods).  A
        ratio breaker whose time is up lets exactly one caller through as
        its probe (the call that gets None while the others still get the
        breaker).
        """

    def record_outcome(
        self,
        policy: str,
        failed: bool,
        now: float,
        settings: BreakerSettings,
    ) -> BreakerState | None:
        """
        Count one outcome for the ratio breaker; the breaker's state when
        this outcome opened it (or re-opened it after a failed probe),
        else None.  A success after a probe closes it.
        """

    def take_retry_token(
        self, policy: str, host: str, settings: BudgetSettings
    ) -> bool:
        """
        Spend one token for a retry; False when the budget forbids it.
        """

    def refund(self, policy: str, host: str, settings: BudgetSettings) -> None:
        """
        Give back *settings.refill* tokens after a success.
        """

    def acquire(
        self,
        policy: str,
        bucket: str,
        now: float,
        settings: RateLimitSettings,
    ) -> float:
        """
        Take a send slot: 0.0 when the send may go now (the slot is taken),
        else how long to wait before asking again (nothing is taken).
        """

    def alert_gate(
        self, key: str, window: float | None, now: float
    ) -> tuple[bool, int]:
        """
        Whether an alert with *key* goes out now, and how many with that
        key were held back since the last one that went out.  With a
        *window*, one goes out per key per window.
        """

    def set_pause(self, policy: str, pause: PauseState) -> None:
        """
        Hold calls in ``pause.scope`` until ``pause.until`` (keeping a
        later pause of the scope if there is one).
        """

    def check_pause(
        self, policy: str, scopes: tuple[str, ...], now: float
    ) -> PauseState | None:
        """
        The pause of one of *scopes* that holds a call now (the one that
        ends last), or None.
        """

    async def aset_pause(self, policy: str, pause: PauseState) -> None:
        """
        The async twin of :meth:`set_pause`.
        """

    async def acheck_pause(
        self, policy: str, scopes: tuple[str, ...], now: float
    ) -> PauseState | None:
        """
        The async twin of :meth:`check_pause`.
        """

    async def aopen_breaker(
        self, policy: str, name: str, until: float, rule_id: str | None
    ) -> None:
        """
        The async twin of :meth:`open_breaker`.
        """

    async def acheck_breakers(
        self, policy: str, now: float, skip: frozenset[str] = frozenset()
    ) -> BreakerState | None:
        """
        The async twin of :meth:`check_breakers`.
        """

    async def arecord_outcome(
        self,
        policy: str,
        failed: bool,
        now: float,
        settings: BreakerSettings,
    ) -> BreakerState | None:
        """
        The async twin of :meth:`record_outcome`.
        """

    async def atake_retry_token(
        self, policy: str, host: str, settings: BudgetSettings
    ) -> bool:
        """
        The async twin of :meth:`take_retry_token`.
        """

    async def arefund(
        self, policy: str, host: str, settings: BudgetSettings
    ) -> None:
        """
        The async twin of :meth:`refund`.
        """

    async def aacquire(
        self,
        policy: str,
        bucket: str,
        now: float,
        settings: RateLimitSettings,
    ) -> float:
        """
        The async twin of :meth:`acquire`.
        """

    async def aalert_gate(
        self, key: str, window: float | None, now: float
    ) -> tuple[bool, int]:
        """
        The async twin of :meth:`alert_gate`.
        """
