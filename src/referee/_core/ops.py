"""
The state operations the flow asks for, as values: one class per method of
the state backend (and one for raising an alert).

The flow yields a :class:`~referee._core.flow.Store` holding one of these;
a runner answers with what the backend returned, or with the operation's
:attr:`fallback` when the backend failed (state trouble never fails a
call).  Carrying an operation out — blocking or awaited — is the runner's
business (``referee._run.stateio``); what its answer means is the flow's.

Rule 1: every time here is the runner's clock, passed in; a backend never
reads the clock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import attrs

from .backend import PAUSE_SLACK, Admission, Settlement


T = TypeVar("T")

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from .backend import (
        BreakerSettings,
        BreakerState,
        BudgetSettings,
        PauseState,
        RateLimitSettings,
        SeedState,
    )
    from .decisions import AlertNotice


__all__ = [
    "Acquire",
    "Admit",
    "CheckBreakers",
    "CheckPause",
    "OpenBreaker",
    "RaiseAlert",
    "RecordOutcome",
    "Refund",
    "SeedLimit",
    "SetPause",
    "StateOp",
    "TakeRetryToken",
    "admit_parts",
    "by_parts",
    "settle_parts",
]


@attrs.frozen
class CheckBreakers:
    """
    The open breaker that stops a send now (a ``BreakerState``), or None.
    Breakers named in *skip* stop other methods only.
    """

    policy: str
    now: float
    skip: frozenset[str]
    fallback: BreakerState | None = None


@attrs.frozen
class Acquire:
    """
    Take a rate-limit slot: 0.0 when the send may go now, else how long to
    wait before asking again.
    """

    policy: str
    bucket: str
    now: float
    settings: RateLimitSettings
    fallback: float = 0.0


@attrs.frozen
class TakeRetryToken:
    """
    Spend one retry token: False when the retry budget forbids the retry.
    """

    policy: str
    host: str
    settings: BudgetSettings
    fallback: bool = True


@attrs.frozen
class Refund:
    """
    Give tokens back to the retry budget after a success.
    """

    policy: str
    host: str
    settings: BudgetSettings
    fallback: None = None


@attrs.frozen
class OpenBreaker:
    """
    Open the breaker *name* until *until*; *open_for* is for the log.
    """

    policy: str
    name: str
    until: float
    rule_id: str | None
    open_for: float
    fallback: None = None


@attrs.frozen
class RecordOutcome:
    """
    Count one outcome for the failure-ratio breaker: its state when this
    outcome opened it, else None.
    """

    policy: str
    failed: bool
    now: float
    settings: BreakerSettings
    fallback: BreakerState | None = None


@attrs.frozen
class RaiseAlert:
    """
    Raise the alert a decision asks for (the dispatcher de-duplicates it
    through the backend and delivers it off the call's path).
    """

    notice: AlertNotice
    policy: str
    rule: str | None
    status: int | None
    failure: str | None
    now: float
    fallback: None = None


@attrs.frozen
class SetPause:
    """
    Hold later calls in ``pause.scope`` until ``pause.until``.
    """

    policy: str
    pause: PauseState
    fallback: None = None


@attrs.frozen
class SeedLimit:
    """
    Pace *bucket*'s later sends at *seed* (what the server's
    ``RateLimit-Policy`` declared) until ``seed.until``, replacing the
    bucket's earlier seed; the policy's own rate limit stays the ceiling.
    """

    policy: str
    bucket: str
    seed: SeedState
    fallback: None = None


@attrs.frozen
class CheckPause:
    """
    The pause of one of *scopes* that holds a send now (a
    ``PauseState``), or None.
    """

    policy: str
    scopes: tuple[str, ...]
    now: float
    fallback: PauseState | None = None


@attrs.frozen
class Admit:
    """
    Everything a send must pass, as one operation (one round trip to a
    shared backend): the breakers that could stop it (*skip* as for
    :class:`CheckBreakers`; None: there are none to check), the pauses of
    *scopes*, and a rate-limit slot in *bucket* under *limit* (None: the
    send is not counted).  Answered with an
    :class:`~referee._core.backend.Admission`.
    """

    policy: str
    now: float
    skip: frozenset[str] | None
    scopes: tuple[str, ...]
    bucket: str | None
    limit: RateLimitSettings | None
    fallback: Admission = attrs.Factory(Admission)

    def parts(self) -> list[CheckBreakers | CheckPause | Acquire]:
        """
        The operations the admission is made of, in the order they are
        asked (:func:`admit_parts` stops at the first that holds the send).
        """
        found: list[CheckBreakers | CheckPause | Acquire] = []
        if self.skip is not None:
            found.append(CheckBreakers(self.policy, self.now, self.skip))
        if self.scopes:
            found.append(CheckPause(self.policy, self.scopes, self.now))
        if self.bucket is not None and self.limit is not None:
            found.append(
                Acquire(self.policy, self.bucket, self.now, self.limit)
            )
        return found


@attrs.frozen
class Settle:
    """
    Everything an outcome leaves in the state, as one operation: set its
    pause, open its breaker, count it for the failure-ratio breaker, refund
    the retry budget or spend a token for the retry, seed the rate limit,
    and raise its alert (the parts that are None are not done).  Answered
    with a :class:`~referee._core.backend.Settlement`.
    """

    policy: str
    now: float
    pause: SetPause | None = None
    open: OpenBreaker | None = None
    record: RecordOutcome | None = None
    refund: Refund | None = None
    token: TakeRetryToken | None = None
    alert: RaiseAlert | None = None
    seed: SeedLimit | None = None
    fallback: Settlement = attrs.Factory(Settlement)

    def parts(self) -> list[StateOp]:
        """
        The operations the settlement is made of, in the order they are
        done (the retry's token last: it is the answer that matters).
        """
        return [
            part
            for part in (
                self.alert,
                self.pause,
                self.open,
                self.record,
                self.refund,
                self.seed,
                self.token,
            )
            if part is not None
        ]


# --- Part by part -----------------------------------------------------------
#
# A backend that admits or settles in one operation (RedisState: one script
# each) does the parts itself; for any other, and for RedisState's local
# fallback, the operation is carried out part by part.  These generators
# say how: each yields a part and is sent its answer, and returns the
# operation's answer.  Whoever asks the parts drives them (by_parts).


def admit_parts(op: Admit) -> Generator[StateOp, Any, Admission]:
    """
    *op* part by part: the first open breaker stops the send, else the
    first pause still holding it (one ending within PAUSE_SLACK holds
    nothing), else the rate limit's wait; a held send takes no slot.
    """
    for part in op.parts():
        got = yield part
        if isinstance(part, CheckBreakers):
            if got is not None:
                return Admission(breaker=got)
        elif isinstance(part, CheckPause):
            if got is not None and got.until - op.now > PAUSE_SLACK:
                return Admission(pause=got)
        else:
            return Admission(wait=got)
    return Admission()


def settle_parts(op: Settle) -> Generator[StateOp, Any, Settlement]:
    """
    *op* part by part: the ratio breaker the outcome opened, and whether
    the retry's token was granted.
    """
    ratio = None
    token = True
    for part in op.parts():
        got = yield part
        if isinstance(part, RecordOutcome):
            ratio = got
        elif isinstance(part, TakeRetryToken):
            token = got is not False
    return Settlement(ratio=ratio, token=token)


def by_parts(
    parts: Generator[StateOp, Any, T], ask: Callable[[StateOp], Any]
) -> T:
    """
    Drive *parts* (:func:`admit_parts`, :func:`settle_parts`), answering
    each part with *ask*.
    """
    try:
        part = next(parts)
        while True:
            part = parts.send(ask(part))
    except StopIteration as stop:
        done: T = stop.value
        return done


StateOp: TypeAlias = (
    Admit
    | Settle
    | CheckBreakers
    | CheckPause
    | SetPause
    | SeedLimit
    | Acquire
    | TakeRetryToken
    | Refund
    | OpenBreaker
    | RecordOutcome
    | RaiseAlert
)

#: What a runner answers for each operation.
Answer: TypeAlias = Any
