"""
What a runner keeps about one call besides the flow's state, and what
both runners do the same way: turn sends into snapshots, log decisions,
and turn the flow's :class:`~referee._core.flow.Finished` into a response
or an error.

Nothing here sends, reads, sleeps or awaits: the runners do
(``referee._run.runner``).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Final, Generic, TypeVar

import structlog

from referee._core.bodies import api_detail
from referee._core.decisions import Abort, Accept, Poll, Retry
from referee._core.flow import TIMED_OUT
from referee._core.snapshot import Snapshot
from referee._core.state import CallOutcome

from . import hooks


if TYPE_CHECKING:
    from collections.abc import Callable

    from referee._core.compile import Policy
    from referee._core.decisions import Decision, PollRequest
    from referee._core.errors import Aborted
    from referee._core.flow import Finished

    from .exchange import Exchange


__all__ = ["RNG", "Call", "close_failed"]

Req = TypeVar("Req")
Resp = TypeVar("Resp")

_log = structlog.get_logger("referee")

#: The jitter source when the caller gives none: one per process, because
#: seeding a Random from os.urandom costs more than a whole decision.
RNG: Final = random.Random()

_ACTION: Final[dict[type, str]] = {
    Accept: "accept",
    Retry: "retry",
    Poll: "poll",
    Abort: "abort",
}


class Call(Generic[Req, Resp]):
    """
    One call in progress: its request, the last thing a send led to, and
    when it started.
    """

    __slots__ = (
        "attempt",
        "exc",
        "exchange",
        "method",
        "policy",
        "request",
        "response",
        "sent",
        "snap",
        "started",
        "url",
    )

    def __init__(
        self,
        policy: Policy,
        exchange: Exchange[Req, Resp] | object,
        request: Req,
        method: str,
        url: Callable[[], str],
        started: float,
    ) -> None:
        self.policy = policy
        self.exchange: Exchange[Req, Resp] = exchange  # type: ignore[assignment]
        self.request = request
        self.method = method
        self.url = url
        self.started = started
        #: The request last sent, and what it led to (the response, or the
        #: transport failure it raised).
        self.sent: Req = request
        self.response: Resp | None = None
        self.exc: Exception | None = None
        #: The snapshot of the last outcome (for the log).
        self.snap: Snapshot | None = None
        self.attempt = 1

    def target(self, poll: PollRequest | None) -> Req:
        """
        The native request of a send: the call's own, or the poll's.
        """
        if poll is None:
            return self.request
        return self.exchange.poll_request(self.request, poll)

    def observed(
        self, request: Req, response: Resp | None, exc: Exception | None
    ) -> Snapshot:
        """
        Keep what sending *request* led to and return its snapshot; an
        exception that is no transport failure propagates from here.
        """
        self.sent = request
        if exc is not None:
            snap = self.exchange.exception_snapshot(request, exc)
            if snap is None:
                raise exc
            self.response, self.exc = None, exc
        else:
            assert response is not None  # noqa: S101 - one or the other
            self.response, self.exc = response, None
            snap = self.exchange.snapshot(request, response)
        self.snap = snap
        return snap

    def timed_out(self) -> object:
        """
        The answer to a send or a read the deadline cut short (the
        response is dropped: the runner releases it).
        """
        self.response, self.exc = None, None
        method, url = self.exchange.method_url(self.sent)
        self.snap = Snapshot.failed("timeout", method=method, url=url())
        return TIMED_OUT

    def read_failed(self, exc: Exception) -> Snapshot:
        """
        The snapshot of a body read that raised *exc*; an exception that
        is no transport failure propagates from here.
        """
        snap = self.exchange.exception_snapshot(self.sent, exc)
        if snap is None:
            raise exc
        self.response, self.exc = None, exc
        self.snap = snap
        return snap

    def finish(self, finished: Finished, now: float) -> Aborted | None:
        """
        Log how the call ended and attach the outcome for a caller that
        asked for responses; the error an abort raises, else None.
        """
        decision, state, snap = (
            finished.decision,
            finished.state,
            finished.snap,
        )
        plain = (
            isinstance(decision, Accept)
            and decision.rule_id is None
            and len(state.history) == 1
            and not finished.paused
        )
        if not plain:
            self.log(
                decision,
                snap,
                now,
                finished.suppressed,
                finished.sent,
                finished.breaker,
                finished.paused,
                None if finished.pause is None else finished.pause.until,
            )
        elif hooks.hooks():
            self.notify(decision, snap, now)
        error = None
        if isinstance(decision, Abort):
            body = snap.body if snap is not None else None
            # The message and the API's detail travel to logs and error
            # trackers: no credentials (the body stays the API's own).
            masked = self.policy.redaction.text
            detail = api_detail(body)
            error = decision.error(
                masked(decision.reason),
                rule_id=decision.rule_id,
                status=snap.status if snap is not None else None,
                failure=snap.failure if snap is not None else None,
                response=self.response,
                trail=state.history,
                body=body,
                detail=None if detail is None else masked(detail),
                resume_at=(
                    None if finished.pause is None else finished.pause.until
                ),
            )
        return error

    def outcome(self, finished: Finished, error: Aborted | None) -> None:
        """
        Attach the outcome to the response returned instead of an error.
        """
        if self.response is not None:
            self.exchange.attach(
                self.response,
                CallOutcome(finished.decision, finished.state.history, error),
            )

    def log(
        self,
        decision: Decision,
        snap: Snapshot | None,
        now: float,
        suppressed: bool = False,
        sent: bool = True,
        breaker: str | None = None,
        paused: float = 0.0,
        resume_at: float | None = None,
    ) -> None:
        """
        One ``referee.decision`` event (and the hooks' event); a call an
        open breaker stopped says ``sent=False`` and names the breaker; a
        call whose sends waited for a pause the API asked for says how
        long (``paused``, seconds), one a pause stopped when it ends
        (``resume_at``, Unix seconds).
        """
        action = _ACTION[type(decision)]
        level = decision.log or ("warning" if action == "abort" else "info")
        method, url = self._where(snap)
        redaction = self.policy.redaction
        getattr(_log, level)(
            "referee.decision",
            policy=self.policy.name,
            rule=decision.rule_id,
            action=action,
            method=method,
            url=redaction.url(url),
            status=None if snap is None else snap.status,
            failure=None if snap is None else snap.failure,
            attempt=self.attempt,
            delay=_delay(decision),
            elapsed=round(now - self.started, 6),
            reason=redaction.text(decision.reason),
            alert=None if decision.alert is None else decision.alert.kind,
            **({} if sent else {"sent": False, "breaker": breaker}),
            **({"paused": round(paused, 6)} if paused else {}),
            **({} if resume_at is None else {"resume_at": resume_at}),
        )
        if hooks.hooks():
            self.notify(decision, snap, now, suppressed, sent)

    def notify(
        self,
        decision: Decision,
        snap: Snapshot | None,
        now: float,
        suppressed: bool = False,
        sent: bool = True,
    ) -> None:
        """
        Tell the hooks about *decision*.
        """
        method, url = self._where(snap)
        redaction = self.policy.redaction
        hooks.emit(
            hooks.DecisionEvent(
                policy=self.policy.name,
                rule=decision.rule_id,
                action=_ACTION[type(decision)],
                method=method,
                url=redaction.url(url),
                status=None if snap is None else snap.status,
                failure=None if snap is None else snap.failure,
                attempt=self.attempt,
                delay=_delay(decision),
                reason=redaction.text(decision.reason),
                alert=None if decision.alert is None else decision.alert.kind,
                error=(
                    decision.error.__name__
                    if isinstance(decision, Abort)
                    else None
                ),
                elapsed=round(now - self.started, 6),
                budget_suppressed=suppressed,
                sent=sent,
            )
        )

    def _where(self, snap: Snapshot | None) -> tuple[str, str]:
        if snap is None:
            return self.method, self.url()
        return snap.method, snap.url


def outer_retry_refused(
    policy: Policy, method: str, url: str, error: BaseException
) -> None:
    """
    Log an SDK's retry of a call the policy gave up on, refused without
    sending (SDK mode).
    """
    _log.info(
        "referee.outer_retry_refused",
        policy=policy.name,
        method=method,
        url=policy.redaction.url(url),
        error=type(error).__name__,
    )


def close_failed(exc: BaseException) -> None:
    """
    Log a response that could not be released (closing is best effort).
    """
    _log.debug("referee.close_failed", error=repr(exc))


def _delay(decision: Decision) -> float | None:
    return decision.delay if isinstance(decision, Retry | Poll) else None
