"""
Helpers for testing code that uses referee — public API, like
``structlog.testing`` or ``stamina.set_testing``.

- :func:`no_sleep`: the runners record every delay but do not sleep, so a
  client's tests run instantly; each call's clock still moves on by the
  delays it skipped, so deadlines hold.
- :func:`simulate`: a scripted sequence of outcomes in, the decisions and
  their virtual times out, with no HTTP at all.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import attrs

from ._core.flow import (
    CanResend,
    Finished,
    ReadBody,
    Reply,
    Send,
    Sleep,
    Store,
    Wait,
    call_flow,
)
from ._core.snapshot import FAILURES, Snapshot
from ._core.units import round_seconds
from ._run.clock import SleepRecorder, recording
from ._run.runner import next_step
from ._tools.fake_enrow import FakeEnrow, FakeEnrowStats


if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from ._core.compile import Policy
    from ._core.decisions import Decision


__all__ = [
    "FakeEnrow",
    "FakeEnrowStats",
    "Simulation",
    "SleepRecorder",
    "Step",
    "no_sleep",
    "simulate",
]


@contextmanager
def no_sleep() -> Iterator[SleepRecorder]:
    """
    Within the block, referee's runners record every delay in the yielded
    recorder's ``delays`` instead of sleeping.  Blocks nest: the innermost
    recorder gets the delays.

    ::

        with referee.testing.no_sleep() as slept:
            client.get("https://api.example/search")
        assert [1.0, 2.0] == slept.delays
    """
    with recording() as recorder:
        yield recorder


@attrs.frozen
class Step:
    """
    One decided outcome of a simulation.

    Attributes:
        at: The virtual time (seconds from the call's start) of the
            outcome.
        snapshot: The outcome.
        decision: What the policy decided.
    """

    at: float
    snapshot: Snapshot
    decision: Decision


@attrs.frozen
class Simulation:
    """
    The result of :func:`simulate`.

    Attributes:
        steps: One per outcome consumed, in order.
        finished: True when the policy ended the call (an accept or an
            abort); False when the script ran out first.
        elapsed: The virtual time when it stopped.
    """

    steps: tuple[Step, ...]
    finished: bool
    elapsed: float

    @property
    def decision(self) -> Decision | None:
        """
        The last decision.
        """
        return self.steps[-1].decision if self.steps else None


Outcome = int | str | Snapshot

_END: Any = object()


def _snapshot(outcome: Outcome, method: str, url: str) -> Snapshot:
    if isinstance(outcome, Snapshot):
        return outcome
    if isinstance(outcome, str) and outcome in FAILURES:
        return Snapshot.failed(outcome, method=method, url=url)
    status: int | None = None
    if isinstance(outcome, int) and not isinstance(outcome, bool):
        status = outcome
    elif isinstance(outcome, str) and outcome.strip().isdigit():
        status = int(outcome.strip())
    if status is None or not 100 <= status <= 599:
        msg = (
            f"outcome {outcome!r}: expected a status code from 100 to 599, "
            f"a failure word ({', '.join(sorted(FAILURES))}) or a Snapshot"
        )
        raise ValueError(msg)
    return Snapshot.response(status, method=method, url=url)


def simulate(
    policy: Policy,
    outcomes: Iterable[Outcome],
    *,
    method: str = "GET",
    url: str = "https://api.example.com/",
    seed: int = 0,
    start: float = 0.0,
) -> Simulation:
    """
    Run the policy's attempt loop over scripted outcomes, on a virtual
    clock: each outcome is seen at the time the previous delays add up to.

    Args:
        policy: The compiled policy.
        outcomes: Status codes (``429``), failure words (``"connect"``) or
            snapshots, in the order the attempts meet them.
        method: The request's method, for outcomes given as codes or words.
        url: The request's URL, likewise.
        seed: Seeds the jitter.
        start: The virtual clock's start (a Unix time, if HTTP-date hints
            are to be read against it).
    """
    flow = call_flow(
        policy, method=method, url=url, started=start, rng=random.Random(seed)
    )
    now = start
    steps: list[Step] = []
    script = iter(outcomes)
    snap: Snapshot | None = None
    step = next_step(flow, None)
    while not isinstance(step, Finished):
        value: Any = None
        match step:
            case Send():
                outcome = next(script, _END)
                if outcome is _END:
                    return Simulation(
                        tuple(steps), False, round_seconds(now - start)
                    )
                snap = value = _snapshot(outcome, method, url)
            case Sleep():
                assert snap is not None  # noqa: S101 - a send came first
                steps.append(
                    Step(round_seconds(now - start), snap, step.decision)
                )
                now += step.seconds
            case Wait():
                now += step.seconds
            case Store():
                # No fleet state in a simulation: every operation answers
                # as a backend that knows nothing (no breaker open, no
                # wait, budget left).
                value = step.op.fallback
            case ReadBody() | CanResend():
                value = None  # the script's snapshots carry their bodies
        step = next_step(flow, Reply(value, now))
    assert snap is not None  # noqa: S101 - nothing stops a simulated send
    steps.append(Step(round_seconds(now - start), snap, step.decision))
    return Simulation(tuple(steps), True, round_seconds(now - start))
