"""
Helpers for testing code that uses referee — public API, like
``structlog.testing`` or ``stamina.set_testing``.

- :func:`no_sleep`: the drivers record every delay but do not sleep, so a
  client's tests run instantly; each call's clock still moves on by the
  delays it skipped, so deadlines hold.
- :func:`simulate`: a scripted sequence of outcomes in, the decisions and
  their virtual times out, with no HTTP at all.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import TYPE_CHECKING

import attrs

from ._core.flow import Finished, Observed, Send, Sleep, call_flow
from ._core.snapshot import FAILURES, Snapshot
from ._run.drivers import _RECORDER, SleepRecorder
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
    Within the block, referee's drivers record every delay in the yielded
    recorder's ``delays`` instead of sleeping.  Blocks nest: the innermost
    recorder gets the delays.

    ::

        with referee.testing.no_sleep() as slept:
            client.get("https://api.example/search")
        assert [1.0, 2.0] == slept.delays
    """
    recorder = SleepRecorder()
    _RECORDER.append(recorder)
    try:
        yield recorder
    finally:
        _RECORDER.remove(recorder)


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
    flow = call_flow(policy, started=start, rng=random.Random(seed))
    now = start
    steps: list[Step] = []
    script = iter(outcomes)
    action = next(flow)
    while True:
        if isinstance(action, Send):
            try:
                outcome = next(script)
            except StopIteration:
                return Simulation(tuple(steps), False, now - start)
            snap = _snapshot(outcome, method, url)
            try:
                action = flow.send(Observed(snap, now))
            except StopIteration as stop:
                finished: Finished = stop.value
                steps.append(Step(now - start, snap, finished.decision))
                return Simulation(tuple(steps), True, now - start)
            assert isinstance(action, Sleep)  # noqa: S101 - a send, then a sleep
            steps.append(Step(now - start, snap, action.decision))
        else:
            now += action.seconds
            action = next(flow)
