"""
The state of one call: which attempt this is, how many polls, since when.

State is a value: it advances only through :func:`advance`, which returns a
new one, as urllib3's ``Retry.increment`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import attrs

from .decisions import Poll, Retry


if TYPE_CHECKING:
    from .decisions import Abort, Accept, AlertNotice, Decision
    from .errors import Aborted
    from .snapshot import Snapshot


__all__ = [
    "FIRST_ATTEMPT",
    "AttemptRecord",
    "AttemptState",
    "CallOutcome",
    "advance",
]


@attrs.frozen
class AttemptRecord:
    """
    One attempt of a call, as the trail keeps it.

    Attributes:
        status: The response's status, or None.
        failure: The transport failure, or None.
        rule_id: The rule that decided, or None.
        action: ``accept``, ``retry``, ``poll`` or ``abort``.
        delay: The delay before the next send, or None.
        at: When the outcome was decided (the runner's clock).
        alert: The alert the rule raised, or None.
        paused: The seconds this attempt's send waited for a pause the
            server asked for, or None.
    """

    status: int | None
    failure: str | None
    rule_id: str | None
    action: str
    delay: float | None
    at: float
    alert: AlertNotice | None = None
    paused: float | None = None


@attrs.frozen
class AttemptState:
    """
    Where a call stands.

    Attributes:
        attempt: The number of the attempt being decided: 1 for the first
            send, then one more per retry.  Polls do not count.
        polls: How many polls the call has made so far.
        started: When the call's first send started (the runner's clock).
        poll_started: When the call first polled, or None.
        history: One record per decided outcome, oldest first.
    """

    attempt: int = 1
    polls: int = 0
    started: float = 0.0
    poll_started: float | None = None
    history: tuple[AttemptRecord, ...] = ()


#: The state of a call's first attempt, for deciding whether a first
#: outcome needs the flow at all (a plain accept does not depend on the
#: clock).
FIRST_ATTEMPT: Final = AttemptState()

_ACTIONS = {"Accept": "accept", "Retry": "retry", "Poll": "poll"}


def advance(
    state: AttemptState, snap: Snapshot, decision: Decision, *, now: float
) -> AttemptState:
    """
    The state after *decision* was taken on *snap* at *now*.
    """
    delay = decision.delay if isinstance(decision, Retry | Poll) else None
    record = AttemptRecord(
        status=snap.status,
        failure=snap.failure,
        rule_id=decision.rule_id,
        action=_ACTIONS.get(type(decision).__name__, "abort"),
        delay=delay,
        at=now,
        alert=decision.alert,
    )
    history = (*state.history, record)
    # The constructor, not attrs.evolve: this runs once per decided
    # outcome, and evolve costs several times as much.
    if isinstance(decision, Retry):
        return AttemptState(
            decision.attempt,
            state.polls,
            state.started,
            state.poll_started,
            history,
        )
    if isinstance(decision, Poll):
        return AttemptState(
            state.attempt,
            state.polls + 1,
            state.started,
            now if state.poll_started is None else state.poll_started,
            history,
        )
    return AttemptState(
        state.attempt, state.polls, state.started, state.poll_started, history
    )


@attrs.frozen
class CallOutcome:
    """
    How a call ended, attached to the response returned when the caller
    asked for responses instead of exceptions.

    Attributes:
        decision: The last decision (an Accept or an Abort).
        trail: One record per decided outcome, oldest first.
        error: The error that would have been raised, or None.
    """

    decision: Accept | Abort
    trail: tuple[AttemptRecord, ...]
    error: Aborted | None
