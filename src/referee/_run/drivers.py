"""
The drivers: they carry out what the flow asks — send, sleep, finish — and
own the clock, the sleeping and the logging.  Nothing else does.

An adapter hands a driver its native request, a function that sends it,
and an :class:`Exchange`: how to snapshot a response, which exceptions are
transport failures (and in which portable word), how to build a poll
request, how to close an abandoned response.  The sync and the async driver
run the same :func:`~referee._core.flow.call_flow`; only their ``send`` and
``sleep`` differ.

Tree of what a call ends with:

- the policy accepts: the response is returned, or the transport failure
  is re-raised as the client raised it;
- the policy aborts: the decision's error is raised (chained to the
  transport failure, if that was the last outcome), or, when the caller
  asked for responses, the last response is returned with the outcome
  attached.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from typing import TYPE_CHECKING, Final, Generic, Protocol, TypeAlias, TypeVar
from urllib.parse import urlsplit

import attrs
import structlog

from referee._core.compile import default_error
from referee._core.decisions import Abort, Accept, Poll, Retry
from referee._core.engine import poll_deadline
from referee._core.errors import (
    CircuitOpen,
    DeadlineExceeded,
    RetriesExhausted,
)
from referee._core.flow import Finished, Observed, Send, Sleep, call_flow
from referee._core.redact import redact_url
from referee._core.snapshot import Snapshot
from referee._core.state import CallOutcome


if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator

    from referee._core.compile import Policy
    from referee._core.decisions import Decision, PollRequest
    from referee._core.errors import Aborted
    from referee._core.flow import Action
    from referee._core.state import AttemptRecord, AttemptState


__all__ = [
    "AsyncExchange",
    "BreakerEvent",
    "CallOutcome",
    "DecisionEvent",
    "DecisionHook",
    "Exchange",
    "SleepRecorder",
    "run_async",
    "run_sync",
]

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Resp_contra = TypeVar("Resp_contra", contravariant=True)

_log = structlog.get_logger("referee")


class Exchange(Protocol[Req, Resp_contra]):
    """
    What an adapter tells a driver about its HTTP client.
    """

    def snapshot(self, request: Req, response: Resp_contra) -> Snapshot:
        """
        A snapshot of *response*, the answer to *request*.
        """

    def failure(self, exc: BaseException) -> str | None:
        """
        The portable word for a transport failure (``connect``,
        ``timeout``, ``read``, ``protocol``), or None when *exc* is not
        one: then it propagates untouched.
        """

    def method_url(self, request: Req) -> tuple[str, str]:
        """
        The request's method (upper case) and URL.
        """

    def poll_request(self, request: Req, poll: PollRequest) -> Req:
        """
        *request* turned into the poll request: same headers, the poll's
        method and URL (the engine has checked it is on the same origin).
        """

    def replayable(self, request: Req) -> str | None:
        """
        None when *request* can be sent again; otherwise why not (a
        streaming body that has been consumed).
        """

    def close(self, response: Resp_contra) -> None:
        """
        Release an abandoned response (the one before a retry or a poll).
        """


class SleepRecorder:
    """
    Under :func:`referee.testing.no_sleep`, the delays the drivers were
    asked to sleep, in order; nothing really sleeps, and the drivers' clock
    moves on by every delay skipped in the block (*offset*), so deadlines
    and rate limits still hold across the calls of a test.
    """

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.offset = 0.0
        self._lock = threading.Lock()

    def record(self, seconds: float) -> None:
        with self._lock:
            self.delays.append(seconds)
            self.offset += seconds


#: The active recorder, or None: drivers sleep for real.
_RECORDER: list[SleepRecorder] = []


def active_recorder() -> SleepRecorder | None:
    return _RECORDER[-1] if _RECORDER else None


class _Clock:
    """
    The drivers' clock: real time, plus the sleeps skipped under no_sleep.
    """

    __slots__ = ()

    def now(self) -> float:
        recorder = _RECORDER[-1] if _RECORDER else None
        return time.time() + (recorder.offset if recorder else 0.0)


# --- Instrumentation hooks -------------------------------------------------
#
# What referee.otel (or anyone) listens to.  With no hook registered, each
# point below costs one truthiness check of _HOOKS; the events are built
# only when someone listens.  The adapters' fast paths (a first-try
# response no rule matches) return before the driver and emit nothing.


@attrs.frozen
class DecisionEvent:
    """
    One decision the drivers carried out (or a send an open breaker
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
    A breaker seen open, in the drivers' clock.

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
    A listener registered in ``_HOOKS``: called on the calling thread, so
    it must be quick; what it raises is logged and swallowed.
    """

    def __call__(self, event: DecisionEvent | BreakerEvent) -> None: ...


#: The registered hooks (referee.otel.instrument() adds one).  Replace the
#: list's contents, do not mutate it while a call may be iterating it.
_HOOKS: list[DecisionHook] = []


def _emit(event: DecisionEvent | BreakerEvent) -> None:
    for hook in tuple(_HOOKS):
        try:
            hook(event)
        except Exception as exc:  # noqa: BLE001 - a listener never fails a call
            _log.warning(
                "referee.hook_failed", hook=repr(hook), error=repr(exc)
            )


#: The jitter source when the caller gives none: one per process, because
#: seeding a Random from os.urandom costs more than a whole decision.
_RNG: Final = random.Random()


class _Call(Generic[Req, Resp]):
    """
    The state a driver keeps about one call, besides the flow's.
    """

    def __init__(
        self,
        policy: Policy,
        exchange: Exchange[Req, Resp],
        request: Req,
        *,
        raise_on_abort: bool,
        rng: random.Random | None,
        first_sent: bool = False,
    ) -> None:
        self.policy = policy
        #: Whether the adapter sent the first request itself (and admitted
        #: it past breakers and rate limits).
        self.first_sent = first_sent
        self.exchange = exchange
        self.request = request
        self.raise_on_abort = raise_on_abort
        self.clock = _Clock()
        self.started = self.clock.now()
        self.flow: Generator[Action, Observed | None, Finished] = call_flow(
            policy, started=self.started, rng=rng or _RNG
        )
        self.response: Resp | None = None
        self.exc: BaseException | None = None
        self.sent: Req = request
        self.state: AttemptState | None = None
        self.attempt = 1
        #: The async driver closes abandoned responses itself (closing
        #: needs an await); the sync one lets the exchange close them.
        self.closing: list[Resp] | None = None
        #: The retry budget refused the last retry (for the hooks).
        self.suppressed = False

    def admission(self, action: Send, req: Req) -> Aborted | float:
        """
        Whether *req* may be sent now (see :func:`admit`).
        """
        if action.attempt == 1 and action.poll == 0 and self.first_sent:
            return 0.0
        if not self.policy.breakers and self.policy.rate_limit is None:
            return 0.0
        method, url = self.exchange.method_url(req)
        trail = self.state.history if self.state is not None else ()
        polling = (
            self.state is not None and self.state.poll_started is not None
        )
        # A call that polls is bounded by its poll deadline, decided at each
        # poll; a rate-limit wait does not cut it on the call's deadline.
        started = math.inf if polling else self.started
        return admit(self.policy, method, url, self.clock, started, trail)

    def to_send(self, action: Send) -> Req:
        """
        The request to send for *action* (its replayability was checked
        before the sleep that preceded it).
        """
        self.attempt = action.attempt
        req = self.request
        if action.request is not None:
            req = self.exchange.poll_request(self.request, action.request)
        bound = getattr(self.exchange, "bound", None)
        if bound is not None and action.attempt + action.poll > 1:
            # A retry or a poll must not outlive its deadline: its timeouts
            # shrink to what is left of the call's (or, once the call
            # polls, of the poll's).
            end = self._deadline()
            if end != math.inf:
                req = bound(req, max(end - self.clock.now(), 0.001))
        self.sent = req
        return req

    def _deadline(self) -> float:
        state = self.state
        if state is None or state.poll_started is None:
            return self.started + self.policy.deadline
        return state.poll_started + poll_deadline(self.policy, state)

    def _cannot_resend(
        self, why: str, error: type[Aborted] | None = None
    ) -> Finished:
        state = self.state
        assert state is not None  # noqa: S101 - a re-send follows a sleep
        last = state.history[-1]
        rule = self.policy.rule(last.rule_id) if last.rule_id else None
        snap = self.last_snap
        error = (
            error
            or (rule.error if rule else None)
            or default_error(snap.status)
        )
        decision = Abort(
            last.rule_id,
            (
                "{0}: rule {1!r} would send the request again, but {2}",
                f"{snap.method} {snap.status or snap.failure}",
                last.rule_id,
                why,
            ),
            error,
        )
        # The trail says what happened: the outcome was not retried.
        record = attrs.evolve(last, action="abort", delay=None)
        state = attrs.evolve(state, history=(*state.history[:-1], record))
        return Finished(decision, state, snap)

    def observe(
        self, response: Resp | None, exc: BaseException | None
    ) -> Observed:
        """
        The snapshot of what a send led to; an exception that is no
        transport failure propagates from here.
        """
        if self.response is not None and response is not self.response:
            self._close(self.response)
        self.response, self.exc = response, exc
        if exc is not None:
            custom = getattr(self.exchange, "error_snapshot", None)
            if custom is not None:
                # The generic runner: an SDK's exception may stand for a
                # response (an error status), not a transport failure.
                found: Snapshot | None = custom(self.sent, exc)
                if found is None:
                    raise exc
                snap = found
            else:
                word = self.exchange.failure(exc)
                if word is None:
                    raise exc
                method, url = self.exchange.method_url(self.sent)
                snap = Snapshot.failed(word, method=method, url=url)
        else:
            snap = self.exchange.snapshot(self.sent, response)  # type: ignore[arg-type]
        self.last_snap = snap
        return Observed(snap, self.clock.now())

    def _close(self, response: Resp) -> None:
        if self.closing is not None:
            self.closing.append(response)
            return
        try:
            self.exchange.close(response)
        except Exception as exc:  # noqa: BLE001 - closing is best effort
            _log.debug("referee.close_failed", error=repr(exc))

    def before_sleep(self, action: Sleep) -> float | Finished | None:
        """
        Log the decision, release the response; the seconds to really
        sleep, None under no_sleep, or how the call ends when the request
        cannot be sent again (then nothing is slept or released).
        """
        self.state = action.state
        decision = action.decision
        nxt = self.sent
        if isinstance(decision, Poll) and decision.request is not None:
            nxt = self.exchange.poll_request(self.request, decision.request)
        why = self.exchange.replayable(nxt)
        if why is not None:
            return self._cannot_resend(why)
        if isinstance(decision, Retry) and not spend_retry(
            self.policy, self.last_snap
        ):
            self.suppressed = True
            return self._cannot_resend(
                "the retry budget for this host is spent (too many retries "
                "for the successes seen: the API looks down, and retrying "
                "would only add load)",
                error=RetriesExhausted,
            )
        settle(self.policy, decision, self.last_snap, self.clock.now())
        self._log(decision, self.last_snap)
        if self.response is not None:
            self._close(self.response)
            self.response = None
        recorder = active_recorder()
        if recorder is not None:
            recorder.record(action.seconds)
            return None
        return action.seconds

    def finish(self, finished: Finished) -> Resp:
        """
        The response to return, or the exception to raise.
        """
        decision, state = finished.decision, finished.state
        plain = (
            isinstance(decision, Accept)
            and decision.rule_id is None
            and len(state.history) == 1
        )
        if not plain:
            self._log(decision, finished.snap)
        elif _HOOKS:
            self._notify(decision, finished.snap)
        settle(self.policy, decision, finished.snap, self.clock.now())
        if isinstance(decision, Accept):
            if self.exc is not None:
                raise self.exc
            return self.response  # type: ignore[return-value]
        snap = finished.snap
        error = decision.error(
            decision.reason,
            rule_id=decision.rule_id,
            status=snap.status,
            failure=snap.failure,
            response=self.response,
            trail=state.history,
        )
        if self.raise_on_abort or self.response is None:
            if self.exc is not None:
                raise error from self.exc
            raise error
        return self.response

    def outcome(self, finished: Finished) -> CallOutcome:
        decision = finished.decision
        error = None
        if isinstance(decision, Abort):
            snap = finished.snap
            error = decision.error(
                decision.reason,
                rule_id=decision.rule_id,
                status=snap.status,
                failure=snap.failure,
                response=self.response,
                trail=finished.state.history,
            )
        return CallOutcome(decision, finished.state.history, error)

    def _log(self, decision: Decision, snap: Snapshot) -> None:
        action = _ACTION[type(decision)]
        delay = decision.delay if isinstance(decision, Retry | Poll) else None
        level = decision.log or ("warning" if action == "abort" else "info")
        getattr(_log, level)(
            "referee.decision",
            policy=self.policy.name,
            rule=decision.rule_id,
            action=action,
            method=snap.method,
            url=redact_url(snap.url),
            status=snap.status,
            failure=snap.failure,
            attempt=self.attempt,
            delay=delay,
            elapsed=round(self.clock.now() - self.started, 6),
            reason=decision.reason,
            alert=None if decision.alert is None else decision.alert.kind,
        )
        if _HOOKS:
            self._notify(decision, snap)

    def _notify(self, decision: Decision, snap: Snapshot) -> None:
        _emit(
            DecisionEvent(
                policy=self.policy.name,
                rule=decision.rule_id,
                action=_ACTION[type(decision)],
                method=snap.method,
                url=redact_url(snap.url),
                status=snap.status,
                failure=snap.failure,
                attempt=self.attempt,
                delay=(
                    decision.delay
                    if isinstance(decision, Retry | Poll)
                    else None
                ),
                reason=decision.reason,
                alert=None if decision.alert is None else decision.alert.kind,
                error=(
                    decision.error.__name__
                    if isinstance(decision, Abort)
                    else None
                ),
                elapsed=round(self.clock.now() - self.started, 6),
                budget_suppressed=self.suppressed,
            )
        )


_ACTION: Final[dict[type, str]] = {
    Accept: "accept",
    Retry: "retry",
    Poll: "poll",
    Abort: "abort",
}


def run_sync(
    policy: Policy,
    request: Req,
    send: Callable[[Req], Resp],
    exchange: Exchange[Req, Resp],
    *,
    raise_on_abort: bool = True,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_finish: Callable[[Resp, CallOutcome], None] | None = None,
    first_sent: bool = False,
) -> Resp:
    """
    Run one call to the end with blocking sends and sleeps.

    *first_sent*: the adapter sent the first request itself, after
    :func:`admit_sync`; *send* hands its outcome over on the first call.
    """
    call = _Call(
        policy,
        exchange,
        request,
        raise_on_abort=raise_on_abort,
        rng=rng,
        first_sent=first_sent,
    )
    action = next(call.flow)
    while True:
        if isinstance(action, Send):
            req = call.to_send(action)
            while (got := call.admission(action, req)) != 0.0:
                if not isinstance(got, float):
                    raise got
                if not _skip(got):
                    sleep(got)
            try:
                response: Resp | None = send(req)
                exc: BaseException | None = None
            except Exception as e:  # noqa: BLE001 - sorted by the exchange
                response, exc = None, e
            observed = call.observe(response, exc)
            try:
                action = call.flow.send(observed)
            except StopIteration as stop:
                return _end(call, stop.value, on_finish)
        else:
            seconds = call.before_sleep(action)
            if isinstance(seconds, Finished):
                return _end(call, seconds, on_finish)
            if seconds:
                sleep(seconds)
            action = next(call.flow)


class AsyncExchange(Exchange[Req, Resp_contra], Protocol):
    """
    An exchange whose responses are closed with an await.
    """

    async def aclose(self, response: Resp_contra) -> None:
        """
        Release an abandoned response.
        """


async def run_async(
    policy: Policy,
    request: Req,
    send: Callable[[Req], Awaitable[Resp]],
    exchange: AsyncExchange[Req, Resp],
    *,
    raise_on_abort: bool = True,
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_finish: Callable[[Resp, CallOutcome], None] | None = None,
    first_sent: bool = False,
) -> Resp:
    """
    Run one call to the end with awaited sends and sleeps.
    """
    call = _Call(
        policy,
        exchange,
        request,
        raise_on_abort=raise_on_abort,
        rng=rng,
        first_sent=first_sent,
    )
    closing: list[Resp] = []
    call.closing = closing
    action = next(call.flow)
    while True:
        if isinstance(action, Send):
            req = call.to_send(action)
            while (got := call.admission(action, req)) != 0.0:
                if not isinstance(got, float):
                    raise got
                if not _skip(got):
                    await sleep(got)
            try:
                response: Resp | None = await send(req)
                exc: BaseException | None = None
            except Exception as e:  # noqa: BLE001 - sorted by the exchange
                response, exc = None, e
            observed = call.observe(response, exc)
            try:
                action = call.flow.send(observed)
            except StopIteration as stop:
                return await _aend(call, stop.value, on_finish)
        else:
            seconds = call.before_sleep(action)
            if isinstance(seconds, Finished):
                return await _aend(call, seconds, on_finish)
            while closing:
                try:
                    await exchange.aclose(closing.pop())
                except Exception as exc:  # noqa: BLE001 - best effort
                    _log.debug("referee.close_failed", error=repr(exc))
            if seconds:
                await sleep(seconds)
            action = next(call.flow)


def _end(
    call: _Call[Req, Resp],
    finished: Finished,
    on_finish: Callable[[Resp, CallOutcome], None] | None,
    *,
    kept: bool = False,
) -> Resp:
    if on_finish is not None and call.response is not None:
        on_finish(call.response, call.outcome(finished))
    if not kept and _raises(call, finished):
        _best_effort(call.exchange.close, call.response)
    return call.finish(finished)


async def _aend(
    call: _Call[Req, Resp],
    finished: Finished,
    on_finish: Callable[[Resp, CallOutcome], None] | None,
) -> Resp:
    if _raises(call, finished):
        aclose = getattr(call.exchange, "aclose", None)
        try:
            if aclose is not None:
                await aclose(call.response)
            else:
                call.exchange.close(call.response)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - best effort
            _log.debug("referee.close_failed", error=repr(exc))
    return _end(call, finished, on_finish, kept=True)


def _raises(call: _Call[Req, Resp], finished: Finished) -> bool:
    # The call ends in an error that carries its last response: the
    # response is closed, so its connection goes back to the pool now, not
    # when the error is collected.  Its body stays readable when a rule
    # read it; reading an unread one here could wait on a slow server past
    # the deadline.
    return (
        isinstance(finished.decision, Abort)
        and call.response is not None
        and call.raise_on_abort
    )


def _best_effort(fn: Callable[..., object], *args: object) -> None:
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - best effort
        _log.debug("referee.close_failed", error=repr(exc))


# --- State: breakers, rate limits, budgets, alerts -------------------------
#
# Everything that outlives one call goes through the policy's runtime (its
# state backend and alert dispatcher).  A policy that uses none of it costs
# nothing here: each helper returns at its first check.


#: URLs are given as strings or as functions computing them: the adapters'
#: URL objects cost more to turn into strings than the rest of a check.
Url: TypeAlias = "str | Callable[[], str]"


def _text(url: Url) -> str:
    return url if isinstance(url, str) else url()


_SKIPS: dict[tuple[int, str], frozenset[str]] = {}


def _skips(policy: Policy, method: str) -> frozenset[str]:
    # The breakers scoped to other methods than *method*: computed once per
    # (policy, method).  Keyed by the scopes mapping's identity, which lives
    # as long as the compiled policy (and its reloads share nothing).
    key = (id(policy.breaker_scopes), method)
    found = _SKIPS.get(key)
    if found is None:
        found = frozenset(
            name
            for name, scope in policy.breaker_scopes.items()
            if scope is not None and method not in scope
        )
        if len(_SKIPS) > 4096:
            _SKIPS.clear()
        _SKIPS[key] = found
    return found


_ADMITS: dict[tuple[int, str], bool] = {}


def _admits(policy: Policy, method: str) -> bool:
    """
    Whether a send of *method* may have to wait or be stopped: a breaker
    that stops it, or a rate limit that counts it.  Computed once per
    (policy, method), as :func:`_skips`.
    """
    key = (id(policy.breaker_scopes), method)
    found = _ADMITS.get(key)
    if found is None:
        limit = policy.rate_limit
        found = (
            policy.breaker is not None
            or len(_skips(policy, method)) < len(policy.breaker_scopes)
            or (
                limit is not None
                and (limit.methods is None or method in limit.methods)
            )
        )
        if len(_ADMITS) > 4096:
            _ADMITS.clear()
        _ADMITS[key] = found
    return found


def _breaker_error(
    policy: Policy,
    method: str,
    now: float,
    trail: tuple[AttemptRecord, ...] = (),
    url: Url = "",
) -> Aborted | None:
    runtime = policy.runtime
    if runtime is None or not policy.breakers:
        return None
    skip = _skips(policy, method)
    if policy.breaker is None and len(skip) == len(policy.breaker_scopes):
        return None  # every breaker stops other methods: nothing to ask
    try:
        found = (
            runtime.state.check_breakers(policy.name, now, skip)
            if skip
            else runtime.state.check_breakers(policy.name, now)
        )
    except Exception as exc:  # noqa: BLE001 - state trouble never fails a call
        _log.warning(
            "referee.state_failed", operation="check_breakers", error=repr(exc)
        )
        return None
    if found is None:
        return None
    until = time.strftime("%H:%M:%S", time.gmtime(found.until))
    opener = (
        f"opened by rule {found.rule_id!r}"
        if found.rule_id
        else "opened by the failure ratio"
    )
    reason = (
        f"breaker {found.name!r} is open until {until} UTC "
        f"({max(found.until - now, 0.0):.0f}s more; {opener}); nothing was "
        f"sent"
    )
    _log.warning(
        "referee.decision",
        policy=policy.name,
        rule=found.rule_id,
        action="abort",
        reason=reason,
        breaker=found.name,
    )
    if _HOOKS:
        _emit(
            BreakerEvent(
                policy.name, found.name, found.rule_id, found.until, False
            )
        )
        _emit(
            DecisionEvent(
                policy=policy.name,
                rule=found.rule_id,
                action="abort",
                method=method,
                url=redact_url(_text(url)) or None,
                status=None,
                failure=None,
                attempt=len(trail) + 1,
                delay=None,
                reason=reason,
                alert=None,
                error=CircuitOpen.__name__,
                elapsed=0.0,
                sent=False,
            )
        )
    return CircuitOpen(reason, rule_id=found.rule_id, trail=trail)


def _rate_wait(policy: Policy, method: str, url: Url, now: float) -> float:
    limit = policy.rate_limit
    runtime = policy.runtime
    if limit is None or runtime is None:
        return 0.0
    if limit.methods is not None and method not in limit.methods:
        return 0.0
    bucket = _path(_text(url)) if limit.by_path else "*"
    try:
        wait: float = runtime.state.acquire(policy.name, bucket, now, limit)
    except Exception as exc:  # noqa: BLE001 - state trouble never fails a call
        _log.warning(
            "referee.state_failed", operation="acquire", error=repr(exc)
        )
        return 0.0
    return wait


def _path(url: str) -> str:
    try:
        return urlsplit(url).path or "/"
    except ValueError:
        return "/"


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def admit(
    policy: Policy,
    method: str,
    url: Url,
    clock: _Clock,
    started: float,
    trail: tuple[AttemptRecord, ...] = (),
) -> Aborted | float:
    """
    Whether a send may go: the error that stops it (an open breaker, or
    waiting for a rate-limit slot past the deadline), or how long to wait
    first (0.0: go now; the slot is taken).
    """
    now = clock.now()
    error = _breaker_error(policy, method, now, trail, url)
    if error is not None:
        return error
    if policy.rate_limit is None:
        return 0.0
    wait = _rate_wait(policy, method, url, now)
    if wait > 0 and now + wait > started + policy.deadline:
        return DeadlineExceeded(
            f"{method}: waiting {wait:.3g}s for a rate-limit slot "
            f"({policy.rate_limit.requests} per {policy.rate_limit.per:g}s) "
            f"would overrun the call's deadline",
            trail=trail,
        )
    return wait


def admit_sync(
    policy: Policy, method: str, url: Url, clock: _Clock | None = None
) -> None:
    """
    Block until a send may go, or raise why it may not.
    """
    if not policy.breakers and policy.rate_limit is None:
        return
    if not _admits(policy, method):
        return
    clock = clock or _Clock()
    started = clock.now()
    while True:
        got = admit(policy, method, url, clock, started)
        if not isinstance(got, float):
            raise got
        if got <= 0:
            return
        if not _skip(got):
            time.sleep(got)


async def admit_async(
    policy: Policy, method: str, url: Url, clock: _Clock | None = None
) -> None:
    """
    Wait (asynchronously) until a send may go, or raise why it may not.
    """
    if not policy.breakers and policy.rate_limit is None:
        return
    if not _admits(policy, method):
        return
    clock = clock or _Clock()
    started = clock.now()
    while True:
        got = admit(policy, method, url, clock, started)
        if not isinstance(got, float):
            raise got
        if got <= 0:
            return
        if not _skip(got):
            await asyncio.sleep(got)


def _skip(seconds: float) -> bool:
    recorder = active_recorder()
    if recorder is None:
        return False
    recorder.record(seconds)
    return True


def settle(
    policy: Policy, decision: Decision, snap: Snapshot, now: float
) -> None:
    """
    What a decision does beyond the call: raise its alert, open its
    breaker, count it for the failure-ratio breaker, refund the retry
    budget after a success.  Never raises.
    """
    runtime = policy.runtime
    if runtime is None:
        return
    try:
        alert = decision.alert
        if alert is not None:
            runtime.alerts.submit(
                alert,
                policy=policy.name,
                rule=decision.rule_id,
                status=snap.status,
                failure=snap.failure,
                now=now,
            )
        spec = decision.breaker
        if spec is not None:
            runtime.state.open_breaker(
                policy.name, spec.name, now + spec.open_for, decision.rule_id
            )
            _log.warning(
                "referee.breaker_opened",
                policy=policy.name,
                breaker=spec.name,
                rule=decision.rule_id,
                open_for=spec.open_for,
            )
            if _HOOKS:
                _emit(
                    BreakerEvent(
                        policy.name,
                        spec.name,
                        decision.rule_id,
                        now + spec.open_for,
                        True,
                    )
                )
        if policy.breaker is not None:
            failed = isinstance(decision, Retry) or (
                isinstance(decision, Abort)
                and (snap.failure is not None or (snap.status or 0) >= 500)
            )
            opened = runtime.state.record_outcome(
                policy.name, failed, now, policy.breaker
            )
            if opened is not None:
                _log.warning(
                    "referee.breaker_opened",
                    policy=policy.name,
                    breaker=opened.name,
                    rule=None,
                    open_for=policy.breaker.open_for,
                )
                if _HOOKS:
                    _emit(
                        BreakerEvent(
                            policy.name, opened.name, None, opened.until, True
                        )
                    )
        if policy.budget is not None and isinstance(decision, Accept):
            runtime.state.refund(policy.name, _host(snap.url), policy.budget)
    except Exception as exc:  # noqa: BLE001 - state trouble never fails a call
        _log.warning(
            "referee.state_failed", operation="settle", error=repr(exc)
        )


def settle_plain(policy: Policy, url: Callable[[], str], now: float) -> None:
    """
    :func:`settle` for a first-try accept an adapter returned on its fast
    path: a success for the ratio breaker and the budget.
    """
    runtime = policy.runtime
    if runtime is None or (policy.breaker is None and policy.budget is None):
        return
    try:
        if policy.breaker is not None:
            runtime.state.record_outcome(
                policy.name, False, now, policy.breaker
            )
        if policy.budget is not None:
            runtime.state.refund(policy.name, _host(url()), policy.budget)
    except Exception as exc:  # noqa: BLE001 - state trouble never fails a call
        _log.warning(
            "referee.state_failed", operation="settle", error=repr(exc)
        )


def spend_retry(policy: Policy, snap: Snapshot) -> bool:
    """
    Whether the retry budget lets this retry go (True without a budget).
    """
    runtime = policy.runtime
    if policy.budget is None or runtime is None:
        return True
    try:
        allowed: bool = runtime.state.take_retry_token(
            policy.name, _host(snap.url), policy.budget
        )
    except Exception as exc:  # noqa: BLE001 - state trouble never fails a call
        _log.warning(
            "referee.state_failed", operation="budget", error=repr(exc)
        )
        return True
    return allowed
