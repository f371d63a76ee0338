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

from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from .backend import Admission, Settlement


if TYPE_CHECKING:
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
