"""
The attempt loop of one call, written once, as a sans-I/O generator.

Rule 1: the flow never sends, sleeps, reads the clock or logs: it *asks*
the driver to, by yielding :class:`Send` or :class:`Sleep`, and the driver
answers a ``Send`` with an :class:`Observed` (the outcome's snapshot and the
driver's clock).  Both drivers, sync and async, run this one generator, so
they cannot drift apart.
Rule 2: the flow returns a :class:`Finished` holding the last decision and
the state (whose history is the call's trail); turning that into a response
or an exception is the driver's job.

::

    flow = call_flow(policy, started=now, rng=rng)
    action = next(flow)                 # Send(None): the original request
    while True:
        if isinstance(action, Send):
            observed = ...send action.request, snapshot the outcome...
            action = flow.send(observed)
        else:                           # Sleep
            ...sleep action.seconds...
            action = next(flow)
    # StopIteration.value is the Finished
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import attrs

from .decisions import Abort, Accept, Poll, PollRequest, Retry
from .engine import decide
from .state import AttemptState, advance


if TYPE_CHECKING:
    import random
    from collections.abc import Generator

    from .compile import Policy
    from .decisions import Decision
    from .snapshot import Snapshot


__all__ = [
    "Action",
    "Finished",
    "Observed",
    "Send",
    "Sleep",
    "call_flow",
]


@attrs.frozen
class Send:
    """
    Send a request and answer with an :class:`Observed`.

    *request* is None for the call's own request, or the
    :class:`~referee.PollRequest` a poll rule built.
    """

    request: PollRequest | None
    attempt: int
    poll: int


@attrs.frozen
class Sleep:
    """
    Wait *seconds*; *decision* is the retry or poll that asked for it, and
    *state* the call's state after it.
    """

    seconds: float
    decision: Retry | Poll
    state: AttemptState


@attrs.frozen
class Observed:
    """
    What a send led to: the outcome's snapshot, and the driver's clock when
    it was seen.
    """

    snap: Snapshot
    now: float


@attrs.frozen
class Finished:
    """
    The call is over: *decision* is an :class:`~referee.Accept` or an
    :class:`~referee.Abort`; *state.history* is the trail.
    """

    decision: Accept | Abort
    state: AttemptState
    snap: Snapshot


Action: TypeAlias = Send | Sleep


def call_flow(
    policy: Policy,
    *,
    started: float,
    rng: random.Random | None = None,
) -> Generator[Action, Observed | None, Finished]:
    """
    The attempts of one call, from the first send to the final decision.

    Args:
        policy: The compiled policy.
        started: The driver's clock when the call started.
        rng: The source of jitter.
    """
    state = AttemptState(started=started)
    request: PollRequest | None = None
    while True:
        observed = yield Send(request, state.attempt, state.polls)
        if observed is None:
            msg = "the driver must answer Send with an Observed"
            raise TypeError(msg)
        snap, now = observed.snap, observed.now
        decision: Decision = decide(policy, snap, state, now=now, rng=rng)
        state = advance(state, snap, decision, now=now)
        if isinstance(decision, Accept | Abort):
            return Finished(decision, state, snap)
        if isinstance(decision, Poll) and decision.request is not None:
            request = decision.request
        yield Sleep(decision.delay, decision, state)
