"""
Helpers for testing code that uses referee — public API, like
``structlog.testing`` or ``stamina.set_testing``.

- :func:`no_sleep`: the runners record every delay but do not sleep, so a
  client's tests run instantly; each call's clock still moves on by the
  delays it skipped, so deadlines hold.
- :func:`simulate`: a scripted sequence of outcomes in, the decisions and
  their virtual times out, with no HTTP at all.  An outcome is a status
  code, a failure word, a :class:`~referee.Snapshot`, or a mapping with
  headers, a body, request headers and the time it is seen at.
- :class:`ScriptedServer`: a fake API on a loopback port, with scripted
  replies per path, served in order, and every request recorded.
- :class:`AlertCollector`: an alert sink that keeps what it receives.
- :func:`assert_trail`: asserts the actions and statuses of a call's
  trail, with a readable message when they differ.

The pytest plugin (``referee.pytest_plugin``, registered through the
``pytest11`` entry point) serves these as fixtures.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import attrs

from ._core.flow import (
    CanResend,
    Finished,
    ReadBody,
    Send,
    Sleep,
    Store,
    Wait,
    call_flow,
)
from ._core.flow import Reply as FlowReply
from ._core.idempotency import mint
from ._core.ops import (
    Admit,
    CheckPause,
    SetPause,
    Settle,
    StateOp,
    admit_parts,
    by_parts,
    settle_parts,
)
from ._core.snapshot import FAILURES, Snapshot
from ._core.state import AttemptRecord
from ._core.units import parse_duration, round_seconds
from ._run.alerts import Alert, flush_alerts
from ._run.clock import SleepRecorder, recording
from ._run.memory import MemoryState
from ._run.runner import next_step
from ._tools.fake_enrow import FakeEnrow, FakeEnrowStats
from ._tools.scripted_server import RESET, Recorded, Reply, ScriptedServer


if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from ._core.compile import Policy
    from ._core.decisions import Decision, PollRequest


__all__ = [
    "RESET",
    "AlertCollector",
    "FakeEnrow",
    "FakeEnrowStats",
    "Recorded",
    "Reply",
    "ScriptedServer",
    "Simulation",
    "SleepRecorder",
    "Step",
    "assert_trail",
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
        attempt: The attempt the outcome answered (1: the first send;
            polls do not count).
        polls: How many polls the call had made before it.
        paused: The seconds its send waited for a pause the API asked
            for (an earlier outcome's rule set it).
        sent: False for the last step of a call a pause stopped before
            its send (``then: fail``, or a wait past the deadline): then
            *snapshot* is the previous outcome's, and no outcome of the
            script was used.
    """

    at: float
    snapshot: Snapshot
    decision: Decision
    attempt: int = 1
    polls: int = 0
    paused: float = 0.0
    sent: bool = True


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


Outcome = int | str | Snapshot | Mapping[str, Any]

#: The keys of an outcome given as a mapping.
OUTCOME_KEYS = (
    "status",
    "failure",
    "headers",
    "body",
    "request_headers",
    "method",
    "url",
    "at",
)

_END: Any = object()


def _status_of(outcome: object) -> int | None:
    status: int | None = None
    if isinstance(outcome, int) and not isinstance(outcome, bool):
        status = outcome
    elif isinstance(outcome, str) and outcome.strip().isdigit():
        status = int(outcome.strip())
    if status is None or not 100 <= status <= 599:
        return None
    return status


def _body(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    # Any other JSON value is sent as its JSON text.
    try:
        return json.dumps(value, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        msg = f"body {value!r}: not bytes, a string or a JSON value ({exc})"
        raise ValueError(msg) from None


def _strings(value: object, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        msg = f"{what}: expected a mapping of names to values"
        raise ValueError(msg)
    return {str(k): _text(v) for k, v in value.items()}


def _text(value: object) -> str:
    # A header written as a YAML number (Retry-After: 3) is its text.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _at_of(outcome: Outcome) -> float | None:
    """
    The time from the call's start at which a mapping outcome says it is
    seen (its ``at``: seconds or a duration such as ``"3s"``), or None.

    Raises:
        ValueError: ``at`` is not a duration.
    """
    if not isinstance(outcome, Mapping) or outcome.get("at") is None:
        return None
    return parse_duration(outcome["at"])


def _from_mapping(
    outcome: Mapping[str, Any],
    method: str,
    url: str,
    request_headers: Mapping[str, str] | None,
) -> Snapshot:
    unknown = sorted(str(k) for k in outcome if k not in OUTCOME_KEYS)
    if unknown:
        msg = (
            f"outcome {dict(outcome)!r}: unknown key "
            f"{', '.join(map(repr, unknown))}; the keys are "
            f"{', '.join(OUTCOME_KEYS)}"
        )
        raise ValueError(msg)
    method = str(outcome.get("method") or method)
    url = str(outcome.get("url") or url)
    sent = {
        **(request_headers or {}),
        **_strings(outcome.get("request_headers"), "request_headers"),
    }
    status, failure = outcome.get("status"), outcome.get("failure")
    if (status is None) == (failure is None):
        msg = (
            f"outcome {dict(outcome)!r}: give exactly one of status "
            f"(a response) and failure (a transport failure)"
        )
        raise ValueError(msg)
    if failure is not None:
        if "headers" in outcome or "body" in outcome:
            msg = (
                f"outcome {dict(outcome)!r}: a transport failure has no "
                f"response headers or body"
            )
            raise ValueError(msg)
        return Snapshot.failed(
            str(failure), method=method, url=url, request_headers=sent
        )
    code = _status_of(status)
    if code is None:
        msg = (
            f"outcome {dict(outcome)!r}: status {status!r} is not a "
            f"status code from 100 to 599"
        )
        raise ValueError(msg)
    body = outcome.get("body")
    return Snapshot.response(
        code,
        method=method,
        url=url,
        headers=_strings(outcome.get("headers"), "headers"),
        request_headers=sent,
        # A scripted response without a body has an empty one: there is
        # nothing to read later.
        body=b"" if body is None else _body(body),
    )


def _snapshot(
    outcome: Outcome,
    method: str,
    url: str,
    request_headers: Mapping[str, str] | None = None,
) -> Snapshot:
    if isinstance(outcome, Snapshot):
        return outcome
    if isinstance(outcome, Mapping):
        return _from_mapping(outcome, method, url, request_headers)
    if isinstance(outcome, str) and outcome in FAILURES:
        return Snapshot.failed(
            outcome, method=method, url=url, request_headers=request_headers
        )
    status = _status_of(outcome)
    if status is None:
        msg = (
            f"outcome {outcome!r}: expected a status code from 100 to 599, "
            f"a failure word ({', '.join(sorted(FAILURES))}), a Snapshot "
            f"or a mapping"
        )
        raise ValueError(msg)
    return Snapshot.response(
        status, method=method, url=url, request_headers=request_headers
    )


def _target(
    request: PollRequest | None, method: str, url: str
) -> tuple[str, str]:
    if request is None:
        return method, url
    return request.method, request.url


def simulate(
    policy: Policy,
    outcomes: Iterable[Outcome],
    *,
    method: str = "GET",
    url: str = "https://api.example.com/",
    seed: int = 0,
    start: float = 0.0,
    request_headers: Mapping[str, str] | None = None,
) -> Simulation:
    """
    Run the policy's attempt loop over scripted outcomes, on a virtual
    clock: each outcome is seen at the time the previous delays add up to,
    or later, at its own ``at``.  There is no state across calls, except
    that a pause an outcome's rule sets (``pause:``) holds the call's later
    sends: they wait for it (:attr:`Step.paused`), or the call stops
    before sending (the last step's :attr:`Step.sent` is False).

    Args:
        policy: The compiled policy.
        outcomes: In the order the attempts meet them: status codes
            (``429``), failure words (``"connect"``), snapshots, or
            mappings with the keys ``status`` or ``failure``, and
            optionally ``headers``, ``body`` (bytes or a string, sent as
            they are, or any other JSON value, sent as JSON),
            ``request_headers``, ``method``, ``url`` and ``at`` (seconds
            from the call's start, or a duration such as ``"3s"``: the
            outcome is seen then, unless the policy sends later).
        method: The request's method, for outcomes that do not carry one.
            A poll that builds its own request (a ``Location``) sends
            that request's method and URL instead.
        url: The request's URL, likewise.
        seed: Seeds the jitter.
        start: The virtual clock's start (a Unix time, if HTTP-date or
            epoch hints are to be read against it).
        request_headers: The request's headers, for outcomes that do not
            carry their own (a mapping's ``request_headers`` add to them).

    Raises:
        ValueError: An outcome is none of the above.
    """
    rng = random.Random(seed)
    key = mint(policy.idempotency, method, rng)
    if key is not None and key[0].lower() not in {
        name.lower() for name in request_headers or {}
    }:
        # As a runner does: the key minted once, on every send.
        request_headers = {**(request_headers or {}), key[0]: key[1]}
    flow = call_flow(policy, method=method, url=url, started=start, rng=rng)
    now = start
    steps: list[Step] = []
    script = iter(outcomes)
    snap: Snapshot | None = None
    counters = (1, 0)
    # The pauses the call's own outcomes ask for hold its later sends.
    pauses = MemoryState()

    def pauses_only(part: StateOp) -> Any:
        # The parts of an admission or a settlement, answered as a backend
        # that knows nothing but this call's pauses.
        if isinstance(part, SetPause):
            pauses.set_pause(part.policy, part.pause)
        elif isinstance(part, CheckPause):
            return pauses.check_pause(part.policy, part.scopes, part.now)
        return part.fallback

    waited = 0.0
    paused = 0.0
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
                snap = value = _snapshot(
                    outcome,
                    *_target(step.request, method, url),
                    request_headers,
                )
                seen = _at_of(outcome)
                if seen is not None:
                    now = max(now, start + seen)
                counters = (step.attempt, step.poll)
                paused, waited = waited, 0.0
            case Sleep():
                assert snap is not None  # noqa: S101 - a send came first
                steps.append(
                    Step(
                        round_seconds(now - start),
                        snap,
                        step.decision,
                        *counters,
                        round_seconds(paused),
                    )
                )
                now += step.seconds
            case Wait():
                now += step.seconds
                waited += step.seconds
            case Store():
                # No fleet state in a simulation: every operation answers
                # as a backend that knows nothing (no breaker open, no
                # wait, budget left) -- except the pauses the call's own
                # outcomes set, which hold its later sends.
                op = step.op
                if isinstance(op, Admit):
                    value = by_parts(admit_parts(op), pauses_only)
                elif isinstance(op, Settle):
                    value = by_parts(settle_parts(op), pauses_only)
                else:
                    value = op.fallback
            case ReadBody() | CanResend():
                value = None  # the script's snapshots carry their bodies
        step = next_step(flow, FlowReply(value, now))
    assert snap is not None  # noqa: S101 - only its own pauses stop a send
    if not step.sent:
        # A pause stopped the next send: the step shows the last outcome.
        steps.append(
            Step(
                round_seconds(now - start),
                snap,
                step.decision,
                *counters,
                round_seconds(waited),
                sent=False,
            )
        )
        return Simulation(tuple(steps), True, round_seconds(now - start))
    steps.append(
        Step(
            round_seconds(now - start),
            snap,
            step.decision,
            *counters,
            round_seconds(paused),
        )
    )
    return Simulation(tuple(steps), True, round_seconds(now - start))


class AlertCollector:
    """
    An alert sink that keeps every :class:`~referee.Alert` it receives:
    pass it in ``alert_sinks=`` when loading the policy under test.

    Alerts are delivered off the caller's thread, so reading
    :attr:`alerts` first waits (up to *timeout* seconds) for the alerts
    already raised to be delivered.

    ::

        alerts = AlertCollector()
        policy = referee.load_policy("enrow", alert_sinks=[alerts])
        ...
        assert ["topup"] == [a.kind for a in alerts.alerts]
    """

    def __init__(self, timeout: float = 5.0) -> None:
        self._lock = threading.Lock()
        self._alerts: list[Alert] = []
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"<AlertCollector: {len(self._alerts)} alert(s)>"

    def __call__(self, alert: Alert) -> None:
        with self._lock:
            self._alerts.append(alert)

    @property
    def alerts(self) -> list[Alert]:
        """
        The alerts received so far, oldest first, after those raised were
        delivered.
        """
        flush_alerts(self.timeout)
        with self._lock:
            return list(self._alerts)

    @property
    def kinds(self) -> list[str]:
        """
        The ``kind`` of each alert in :attr:`alerts`.
        """
        return [a.kind for a in self.alerts]

    def clear(self) -> None:
        """
        Forget the alerts received so far.
        """
        flush_alerts(self.timeout)
        with self._lock:
            self._alerts.clear()


#: One expected step of a trail: an action, or an action and the status
#: (or failure word) it answered.
TrailStep = str | tuple[str, int | str | None]


def _trail_of(source: object) -> list[tuple[str, int | str | None, str]]:
    """
    (action, status or failure, rule) per step of *source*.
    """
    if isinstance(source, Simulation):
        return [
            (
                _ACTIONS.get(type(s.decision).__name__, "abort"),
                s.snapshot.status
                if s.snapshot.status is not None
                else s.snapshot.failure,
                s.decision.rule_id or "-",
            )
            for s in source.steps
        ]
    records = getattr(source, "trail", source)
    if not isinstance(records, Sequence) or not all(
        isinstance(r, AttemptRecord) for r in records
    ):
        msg = (
            f"assert_trail: {source!r} has no trail; give a referee error "
            f"(an Aborted), a Simulation or a sequence of its trail records"
        )
        raise TypeError(msg)
    return [
        (
            r.action,
            r.status if r.status is not None else r.failure,
            r.rule_id or "-",
        )
        for r in records
    ]


_ACTIONS = {"Accept": "accept", "Retry": "retry", "Poll": "poll"}


def _show(step: TrailStep) -> str:
    if isinstance(step, str):
        return step
    return f"{step[0]} {step[1]}"


def assert_trail(source: object, expected: Sequence[TrailStep]) -> None:
    """
    Assert the steps of a call's trail, oldest first.

    Args:
        source: A referee error (its ``trail``), a :class:`Simulation`,
            or a sequence of trail records.
        expected: One entry per step: an action (``"retry"``), or an
            action and the status or failure word it answered
            (``("retry", 503)``, ``("retry", "connect")``).

    Raises:
        AssertionError: The trail differs; the message lines up the
            expected and the actual steps, with the rule of each.

    ::

        with pytest.raises(referee.RetriesExhausted) as ei:
            client.get(url)
        assert_trail(ei.value, [("retry", 503), ("abort", 503)])
    """
    actual = _trail_of(source)
    got: list[TrailStep] = [
        a if isinstance(e, str) else (a, what)
        for (a, what, _), e in zip(actual, expected, strict=False)
    ]
    got += [(a, what) for a, what, _ in actual[len(expected) :]]
    if len(actual) == len(expected) and got == list(expected):
        return
    n = len(actual)
    width = max((len(_show(e)) for e in expected), default=0)
    width = max(width, len("expected"))
    lines = [
        f"trail differs: expected {len(expected)} step(s), got {n}",
        f"     {'expected':<{width}}  actual",
    ]
    for i in range(max(len(actual), len(expected))):
        want = _show(expected[i]) if i < len(expected) else "(none)"
        if i < len(actual):
            a, what, rule = actual[i]
            have = f"{a} {what} (rule {rule})"
        else:
            have = "(none)"
        same = i < len(expected) and i < len(got) and got[i] == expected[i]
        mark = "   " if same else ">> "
        lines.append(f"{mark}{i + 1}. {want:<{width}}  {have}")
    raise AssertionError("\n".join(lines))
