"""
Listeners to the runners: what ``referee.otel`` (or an application)
registers with :func:`add_hook` to see every decision and every breaker.

With no hook registered, each point that could emit costs one truthiness
check; the events are built only when someone listens.  A response the
runner returns on its fast path (a first outcome no rule can match)
emits nothing.
"""

from __future__ import annotations

import threading
from typing import Protocol

import attrs
import structlog


__all__ = [
    "BreakerEvent",
    "DecisionEvent",
    "DecisionHook",
    "add_hook",
    "emit",
    "hooks",
    "remove_hook",
]

_log = structlog.get_logger("referee")


@attrs.frozen
class DecisionEvent:
    """
    One decision the runners carried out (or a send an open breaker
    refused), as ``referee.decision`` logs it.

    Attributes:
        policy: The policy's name.
        rule: The rule that decided, or None.
        action: ``accept``, ``retry``, ``poll`` or ``abort``.
        method: The request's method.
        url: The request's URL, redacted.
        status: The response's status, or None after a transport failure.
        failure: The transport failure's portable word, or None.
        attempt: The attempt's number in the call (1 for the first send).
        delay: The seconds before the next send (retry, poll), or None.
        reason: Why, in words.
        alert: The kind of alert the decision raised, or None.
        error: The name of the error an abort raises, or None.
        elapsed: Seconds since the call started.
        budget_suppressed: A retry the retry budget refused: the call ends
            here with ``RetriesExhausted``.
        sent: False when nothing was sent: an open breaker stopped the
            send (the abort raises ``CircuitOpen``).
    """

    policy: str
    rule: str | None
    action: str
    method: str | None
    url: str | None
    status: int | None
    failure: str | None
    attempt: int
    delay: float | None
    reason: str
    alert: str | None
    error: str | None
    elapsed: float
    budget_suppressed: bool = False
    sent: bool = True


@attrs.frozen
class BreakerEvent:
    """
    A breaker seen open, in the runners' clock.

    Attributes:
        policy: The policy's name.
        breaker: The breaker's name.
        rule: The rule that opened it, or None (the failure ratio).
        until: When it closes (seconds since the epoch).
        opened: True when this process opened it just now; False when a
            send found it open (perhaps opened by another process).
    """

    policy: str
    breaker: str
    rule: str | None
    until: float
    opened: bool


class DecisionHook(Protocol):
    """
    A listener: called on the calling thread, so it must be quick; what
    it raises is logged and swallowed.
    """

    def __call__(self, event: DecisionEvent | BreakerEvent) -> None: ...


#: The registered hooks.  Replaced, never mutated, so emitting needs no
#: lock and a hook may remove itself while being called.
_HOOKS: tuple[DecisionHook, ...] = ()
_LOCK = threading.Lock()


def add_hook(hook: DecisionHook) -> None:
    """
    Call *hook* with every :class:`DecisionEvent` and
    :class:`BreakerEvent` from now on (once, however often it is added).
    """
    global _HOOKS  # noqa: PLW0603 - the registry is this module's
    with _LOCK:
        if hook not in _HOOKS:
            _HOOKS = (*_HOOKS, hook)


def remove_hook(hook: DecisionHook) -> None:
    """
    Stop calling *hook*; nothing happens when it was not added.
    """
    global _HOOKS  # noqa: PLW0603 - the registry is this module's
    with _LOCK:
        _HOOKS = tuple(h for h in _HOOKS if h != hook)


def hooks() -> tuple[DecisionHook, ...]:
    """
    The hooks registered, in the order they were added.
    """
    return _HOOKS


def emit(event: DecisionEvent | BreakerEvent) -> None:
    """
    Call every hook with *event*; a hook that raises is logged.
    """
    for hook in _HOOKS:
        try:
            hook(event)
        except Exception as exc:  # noqa: BLE001 - a listener never fails a call
            _log.warning(
                "referee.hook_failed", hook=repr(hook), error=repr(exc)
            )
