"""
The closed set of decisions: :class:`Accept`, :class:`Retry`, :class:`Poll`
and :class:`Abort`, and the side effects that ride on them.

A decision says what to do with one outcome and why; carrying it out
(sleeping, re-sending, raising, alerting, opening a breaker) is the runner's
job.  Callers ``match`` on the four classes.

Decisions are values: never change one.  They are not ``attrs.frozen``
because a frozen attrs instance costs three times as much to make, and a
decision is made on the hot path of every response a rule looks at; for the
same reason the human ``reason`` is rendered from ``why`` (a format string
and its arguments) only when someone reads it.
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import attrs

from .units import format_duration


class _Reasons(string.Formatter):
    """
    ``str.format``, plus the conversion ``!d``: seconds as a duration
    (``{3!d}`` renders 1500.0 as ``25m``), so that every reason writes
    its numbers one way.
    """

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion == "d":
            return format_duration(value)
        return super().convert_field(value, conversion)


_REASONS: Final = _Reasons()


def _render(why: tuple[Any, ...]) -> str:
    if not why:
        return ""
    text = str(why[0])
    if "!d}" in text:
        return _REASONS.vformat(text, why[1:], {})
    return text.format(*why[1:])


if TYPE_CHECKING:
    from .errors import Aborted


__all__ = [
    "Abort",
    "Accept",
    "AlertNotice",
    "BreakerSpec",
    "Decision",
    "PauseNotice",
    "PauseSpec",
    "Poll",
    "PollRequest",
    "Retry",
]


@attrs.frozen
class AlertNotice:
    """
    An alert a rule asks for; delivering it is not the engine's business.

    Attributes:
        kind: What kind of trouble (``topup``, ``config``, …).
        severity: ``info``, ``warning``, ``error`` or ``critical``.
        message: The rendered message.
        key: The de-duplication key: repeats with the same key inside
            *dedupe* seconds are held back and counted.
        dedupe: The de-duplication window in seconds, or None.
    """

    kind: str
    severity: str
    message: str
    key: str
    dedupe: float | None = None


@attrs.frozen
class BreakerSpec:
    """
    Open the breaker *name* for *open_for* seconds; while it is open, calls
    with one of *methods* (None: every call) fail fast.
    """

    name: str
    open_for: float
    methods: frozenset[str] | None = None


@attrs.frozen
class PauseSpec:
    """
    A rule's ``pause:``: read the pause's end from *sources* (``(lower-case
    header, format, header as written)``, the first that parses wins),
    hold later calls in *scope* (``policy`` or ``host``) with one of
    *methods* (None: every call) until then, no longer than *max*
    seconds; they wait or fail fast, as *then* says.
    """

    sources: tuple[tuple[str, str, str], ...]
    scope: str
    then: str
    max: float
    methods: frozenset[str] | None = None


@attrs.frozen
class PauseNotice:
    """
    The pause a decision asks for: calls in *scope* (``*`` for the
    policy, else a host; with ``|POST,PUT`` after it when the pause holds
    those methods only) are held until *until* (the runner's clock);
    they wait or fail fast, as *then* says.  *source* is the header it
    came from (``capped`` when the rule's max cut it).
    """

    until: float
    scope: str
    then: str
    source: str


@attrs.frozen
class PollRequest:
    """
    The request a poll sends instead of the original one.
    """

    method: str
    url: str


class _Reasoned:
    """
    What every decision shares: *why*, a format string and its arguments,
    rendered only when someone reads :attr:`reason`.
    """

    __slots__ = ()
    why: tuple[Any, ...]

    @property
    def reason(self) -> str:
        """
        Why, in words.
        """
        return _render(self.why)


@attrs.define(eq=True)
class Accept(_Reasoned):
    """
    Hand the outcome back as it is: return the response, or raise the
    transport failure as the client raised it.

    *rule_id* is None when no rule matched.  *why* is a format string and
    its arguments; :attr:`reason` renders it.
    """

    rule_id: str | None
    why: tuple[Any, ...]
    alert: AlertNotice | None = None
    breaker: BreakerSpec | None = None
    log: str | None = None
    pause: PauseNotice | None = None


@attrs.define(eq=True)
class Retry(_Reasoned):
    """
    Send the same request again after *delay* seconds; the next send is
    attempt number *attempt*.

    *delay_source* is ``backoff`` or the header the delay came from; a
    delay the rule's ``delay_min`` raised says so after it (``Retry-After
    5s, raised to the 1m floor``).
    """

    rule_id: str
    why: tuple[Any, ...]
    delay: float
    attempt: int
    delay_source: str = "backoff"
    alert: AlertNotice | None = None
    breaker: BreakerSpec | None = None
    log: str | None = None
    pause: PauseNotice | None = None


@attrs.define(eq=True)
class Poll(_Reasoned):
    """
    The job is still running: ask again after *delay* seconds, with
    *request* (None: the same request).  This is poll number *poll* of the
    call.
    """

    rule_id: str
    why: tuple[Any, ...]
    delay: float
    poll: int
    request: PollRequest | None = None
    delay_source: str = "schedule"
    alert: AlertNotice | None = None
    breaker: BreakerSpec | None = None
    log: str | None = None
    pause: PauseNotice | None = None


@attrs.define(eq=True)
class Abort(_Reasoned):
    """
    Stop and raise *error* (or return the response, when the caller asked
    for responses instead of exceptions).
    """

    rule_id: str | None
    why: tuple[Any, ...]
    error: type[Aborted]
    alert: AlertNotice | None = None
    breaker: BreakerSpec | None = None
    log: str | None = None
    pause: PauseNotice | None = None


Decision: TypeAlias = Accept | Retry | Poll | Abort
