"""
What the bundled-policy tests share: decisions in comparable form, and a
search for host conditions (bundled policies must have none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import referee
from referee import Abort


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
