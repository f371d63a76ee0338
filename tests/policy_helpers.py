"""
What the bundled-policy tests share: decisions in comparable form, cases
decided row by row (as received from a local fake and behind a proxy), and
a search for host conditions (bundled policies must have none).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

import referee
from referee import Abort, AttemptState, Poll, Retry, Snapshot


@dataclass(frozen=True)
class Outcome:
    """
    What a decision amounts to, in comparable form.
    """

    action: str
    rule: str | None
    error: type[Exception] | None = None
    alert: tuple[str, str] | None = None
    breaker: str | None = None


def outcome(decision: referee.Decision) -> Outcome:
    """
    *decision* as an Outcome.
    """
    action = type(decision).__name__.lower()
    error = decision.error if isinstance(decision, Abort) else None
    alert = (
        (decision.alert.kind, decision.alert.severity)
        if decision.alert is not None
        else None
    )
    breaker = decision.breaker.name if decision.breaker is not None else None
    return Outcome(action, decision.rule_id, error, alert, breaker)


def hosts(cond: Any) -> list[Any]:
    """
    Every host condition in *cond*, nested ones included.
    """
    if cond is None:
        return []
    found = [cond.host] if cond.host is not None else []
    for sub in [*(cond.any or ()), *(cond.all or ())]:
        found += hosts(sub)
    return found + hosts(cond.not_)


# A fixed Unix time, so that reset headers and deadlines give exact delays.
NOW = 1_700_000_000.0

# A local fake and a proxy that prefixes the paths: neither is the
# vendor's host, and the decisions must not depend on it.
BASES = ["http://127.0.0.1:8080", "http://proxy.internal:3128/vendor"]
BASE_IDS = ["local-fake", "proxy"]


@dataclass(frozen=True)
class Case:
    """
    One outcome of a call and what the policy must make of it.

    *delay* is an exact delay, ``(low, high)`` bounds, or None when there is
    none to check.  *polling_for* is how long the call has been polling.
    """

    id: str
    status: int
    method: str
    path: str
    expected: Outcome
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    request_headers: dict[str, str] = field(default_factory=dict)
    attempt: int = 1
    polls: int = 0
    polling_for: float | None = None
    delay: float | tuple[float, float] | None = None


def state(case: Case) -> AttemptState:
    """
    The state of a call that started now, as *case* says it stands.
    """
    if case.polling_for is not None:
        poll_started: float | None = NOW - case.polling_for
    else:
        poll_started = NOW if case.polls else None
    return AttemptState(
        attempt=case.attempt,
        polls=case.polls,
        started=NOW,
        poll_started=poll_started,
    )


def snapshot(case: Case, base: str) -> Snapshot:
    """
    The response of *case*, as received from *base*.
    """
    body = case.body
    if body is not None and not isinstance(body, str):
        body = json.dumps(body)
    return Snapshot.response(
        case.status,
        method=case.method,
        url=base + case.path,
        headers={"Content-Type": "application/json", **case.headers},
        request_headers=case.request_headers,
        body=body,
    )


def decide(
    policy: referee.Policy, snap: Snapshot, st: AttemptState
) -> referee.Decision:
    """
    *policy*'s decision on *snap* at NOW, with reproducible jitter.
    """
    return referee.decide(policy, snap, st, now=NOW, rng=random.Random(0))


def check_decision(policy: referee.Policy, case: Case, base: str) -> None:
    """
    *policy* decides *case*, as received from *base*, as it expects.
    """
    decision = decide(policy, snapshot(case, base), state(case))

    assert case.expected == outcome(decision)


def check_delay(policy: referee.Policy, case: Case, base: str) -> None:
    """
    *policy* waits what *case* expects before its retry or poll.
    """
    decision = decide(policy, snapshot(case, base), state(case))

    assert isinstance(decision, Retry | Poll)
    if isinstance(case.delay, tuple):
        low, high = case.delay
        assert low <= decision.delay <= high
    else:
        assert case.delay == decision.delay


def with_delay(cases: list[Case]) -> list[Case]:
    """
    The cases of *cases* whose delay is checked.
    """
    return [c for c in cases if c.delay is not None]


def rows(cases: list[Case]) -> set[str]:
    """
    The decision-table rows *cases* cover: their ids up to the first dash.
    """
    return {c.id.split("-", 1)[0] for c in cases}


def ids(cases: list[Case]) -> list[str]:
    """
    The ids of *cases*.
    """
    return [c.id for c in cases]


ACCEPT = Outcome("accept", None)
TOPUP = ("topup", "critical")
CONFIG = ("config", "critical")
