"""
The attempts of one call, written once, as a sans-I/O generator.

Rule 1: the flow never sends, reads, sleeps, reads the clock, logs or
touches state: it *asks* the runner to, by yielding an action, and the
runner answers with a :class:`Reply` (what happened, and the runner's
clock).  Every runner — sync, async, ``referee.testing.simulate`` — runs
this one generator, so they cannot drift apart.
Rule 2: every decision is made here, those that span attempts or calls
included: whether a send may go (breakers; a rate-limit wait against the
deadline), whether a body is read to decide (and within what time),
whether a request can be sent again, whether a retry may spend the
budget, what counts as a failure, what a decision does to the state.
Rule 3: the flow returns a :class:`Finished`; turning it into a response
or an exception is the runner's job.
Rule 4: the actions and answers are values: never change one.  They are
not ``attrs.frozen`` because a frozen instance costs three times as much
to make, and a call makes several.

The actions and their answers (``Reply.value``)::

    Send(request, ...)     -> the outcome's Snapshot (its body unread)
    ReadBody(until, ...)   -> the body (bytes, or None: too long), or a
                              Snapshot of the failure that ended the read
    CanResend(request)     -> None, or why the request cannot be re-sent
    Store(op)              -> what the state backend answered
    Wait(seconds)          -> None, after a rate-limit wait
    Sleep(seconds, ...)    -> None, after the delay of a retry or a poll

::

    flow = call_flow(policy, method="GET", url=url, started=now)
    action = next(flow)
    while True:
        reply = Reply(...answer action..., clock())
        try:
            action = flow.send(reply)
        except StopIteration as stop:
            finished = stop.value
            break
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeAlias
from urllib.parse import urlsplit

import attrs

from .backend import (
    PAUSE_SLACK,
    Admission,
    PauseState,
    SeedState,
    Settlement,
)
from .bodies import declared_too_long, event_data, is_event_stream
from .decisions import Abort, Accept, Poll, PollRequest, Retry
from .engine import (
    NO_MATCH,
    call_end,
    decide,
    host_of,
    pause_key,
    poll_deadline,
    scope_words,
)
from .errors import (
    CircuitOpen,
    DeadlineExceeded,
    NotReplayable,
    RateLimited,
    RetriesExhausted,
)
from .hints import parse_quota_policy
from .ops import (
    Admit,
    OpenBreaker,
    RaiseAlert,
    RecordOutcome,
    Refund,
    SeedLimit,
    SetPause,
    Settle,
    StateOp,
    TakeRetryToken,
)
from .snapshot import Snapshot
from .state import FIRST_ATTEMPT, AttemptState, advance


if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Generator

    from .compile import Policy
    from .decisions import Decision
    from .errors import Aborted


__all__ = [
    "ERROR_BODY_WAIT",
    "Action",
    "CanResend",
    "Finished",
    "ReadBody",
    "Reply",
    "Send",
    "Sleep",
    "Store",
    "Wait",
    "call_flow",
    "first_read",
    "needs_admission",
    "unmatched",
    "with_read",
]

#: The longest wait for the body of a response the call aborts on, when
#: no rule needed it: the error should carry the API's own message, but a
#: slow error body must not hold the caller for the rest of the deadline.
ERROR_BODY_WAIT: Final = 0.5

#: A URL, or a function computing it: a client's URL object costs more to
#: turn into a string than most decisions, and most calls never need it.
Url: TypeAlias = "str | Callable[[], str]"


@attrs.define
class Send:
    """
    Send a request; answer with its outcome's snapshot (body unread).

    Attributes:
        request: None for the call's own request, or the
            :class:`~referee.PollRequest` a poll rule built.
        attempt: The attempt's number (1: the first send).
        poll: How many polls came before.
        timeout: For a re-send, the seconds left before the deadline: the
            send's timeouts are cut to them.  None for the first send (the
            client's own timeouts apply).
    """

    request: PollRequest | None
    attempt: int
    poll: int
    timeout: float | None


@attrs.define
class ReadBody:
    """
    Read the response's body to decide: at most *limit* bytes (and a
    chunk), and no later than *until* on the runner's clock.  With
    *event*, stop at the end of the stream's first event.  What was read
    goes back to the caller intact.

    The answer is the body, None when it is longer than *limit*, or a
    failure's snapshot when the read broke or ran out of time (then the
    runner has closed the response).  An *optional* read (the body of a
    response the call aborts on, for the error) answers None instead of a
    failure, and the response stays the call's.
    """

    limit: int
    until: float
    event: bool = False
    optional: bool = False


@attrs.define
class CanResend:
    """
    Whether the request of the next send (*request*: None for the call's
    own) can be sent again: answer None, or why not.
    """

    request: PollRequest | None


@attrs.define
class Store:
    """
    Carry out a state operation; answer with what the backend returned,
    or ``op.fallback`` when it failed.
    """

    op: StateOp


@attrs.define
class Wait:
    """
    Wait *seconds* for a rate-limit slot, then answer.
    """

    seconds: float


@attrs.define
class Sleep:
    """
    Wait *seconds*; *decision* is the retry or poll that asked for it
    (the runner logs it and releases the abandoned response first), and
    *state* the call's state after it.
    """

    seconds: float
    decision: Retry | Poll
    state: AttemptState


Action: TypeAlias = Send | ReadBody | CanResend | Store | Wait | Sleep


class _TimedOut:
    """
    The type of :data:`TIMED_OUT`.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "TIMED_OUT"


#: A runner's answer to a Send or a ReadBody that the time left cut short:
#: the runner itself ended the attempt (the client raised nothing).  The
#: flow decides it as a ``timeout`` failure; one that no rule takes up ends
#: the call with DeadlineExceeded, since there is no client exception to
#: let through.
TIMED_OUT: Final = _TimedOut()


@attrs.define
class Reply:
    """
    A runner's answer to an action: *value* (see the module's table) and
    the runner's clock when it was had.
    """

    value: Any
    now: float


@attrs.define
class Finished:
    """
    The call is over.

    Attributes:
        decision: An :class:`~referee.Accept` or an :class:`~referee.Abort`.
        state: The call's state; its history is the trail.
        snap: The last outcome, or None when nothing was sent.
        sent: False when the call ended before its first send (a breaker
            was open, or a rate-limit wait would overrun the deadline).
        suppressed: The retry budget refused the last retry.
        breaker: The open breaker that stopped the call, or None.
        paused: The seconds the call's sends waited for pauses the
            server asked for (0.0: none).
        pause: The pause that stopped the call (it fails fast, or would
            wait past the deadline), or None.
    """

    decision: Accept | Abort
    state: AttemptState
    snap: Snapshot | None
    sent: bool = True
    suppressed: bool = False
    breaker: str | None = None
    paused: float = 0.0
    pause: PauseState | None = None


def call_flow(
    policy: Policy,
    *,
    method: str,
    url: Url,
    started: float,
    rng: random.Random | None = None,
) -> Generator[Action, Reply, Finished]:
    """
    The attempts of one call, from admitting the first send to the final
    decision.

    Args:
        policy: The compiled policy.
        method: The request's method, upper case.
        url: The request's URL (or a function computing it).
        started: The runner's clock when the call started.
        rng: The source of jitter.
    """
    state = AttemptState(started=started)
    request: PollRequest | None = None
    now = started
    paused = 0.0  # the call's waits for pauses, all sends together
    while True:
        send_method = method if request is None else request.method
        target = url if request is None else request.url
        waited = 0.0
        if needs_admission(policy, send_method):
            stopped = yield from _admit(
                policy, state, send_method, target, now, paused
            )
            if isinstance(stopped, Finished):
                return stopped
            waited, now = stopped
            paused += waited
        first = state.attempt == 1 and state.polls == 0
        timeout = None if first else _left(policy, state, now)
        if timeout == math.inf:
            timeout = None
        # The state the send went out under: its trail's last retry says
        # whose deadline bounds it (a rule may have one of its own).
        sent = state
        reply = yield Send(request, state.attempt, state.polls, timeout)
        now = reply.now
        cut = reply.value is TIMED_OUT
        snap: Snapshot = (
            _timed_out(send_method, target) if cut else reply.value
        )
        event = _reads_body(policy, snap)
        asked = event is not None
        if event is not None:
            snap, now, cut = yield from _read_body(
                policy, state, snap, now, event
            )
        decision: Decision = decide(policy, snap, state, now=now, rng=rng)
        if cut and isinstance(decision, Accept):
            # The runner ended the attempt on the deadline: there is no
            # client exception to let through.
            decision = _out_of_time(snap)
        state = advance(state, snap, decision, now=now)
        if waited:
            state = _waited(state, waited)
        suppressed = False
        token = False  # whether settling spends a retry token
        if isinstance(decision, Retry | Poll):
            nxt = request
            if isinstance(decision, Poll) and decision.request is not None:
                nxt = decision.request
            reply = yield CanResend(nxt)
            if reply.value is not None:
                decision, state = _cannot_resend(
                    state, snap, reply.value, NotReplayable
                )
            else:
                token = (
                    isinstance(decision, Retry)
                    and policy.budget is not None
                    and policy.runtime is not None
                )
        if isinstance(decision, Abort) and _error_body(policy, snap, asked):
            # The error keeps the API's own words: the body the rule did
            # not need is read now, if it comes quickly.
            snap, now, _ = yield from _read_body(
                policy, sent, snap, now, False, most=ERROR_BODY_WAIT
            )
        granted = yield from _settle(policy, decision, snap, now, token)
        if not granted:
            # The retry budget refused the retry: the call ends here.
            suppressed = True
            decision, state = _cannot_resend(
                state, snap, _BUDGET_SPENT, RetriesExhausted
            )
            if _error_body(policy, snap, asked):
                snap, now, _ = yield from _read_body(
                    policy, sent, snap, now, False, most=ERROR_BODY_WAIT
                )
        if isinstance(decision, Accept | Abort):
            return Finished(
                decision, state, snap, suppressed=suppressed, paused=paused
            )
        if isinstance(decision, Poll) and decision.request is not None:
            request = decision.request
        reply = yield Sleep(decision.delay, decision, state)
        now = reply.now


# --- Bodies -----------------------------------------------------------------


def _reads_body(policy: Policy, snap: Snapshot) -> bool | None:
    """
    Whether *snap*'s body must be read before deciding — None: no; False:
    yes; True: yes, an event stream's first event.  It must when a
    candidate rule looks into it, it is not there yet, it is not declared
    longer than the policy parses, and it is no event stream (unless a
    candidate opts in).
    """
    if snap.status is None or snap.body is not None or snap.load_body:
        return None
    rules = policy.bucket(snap.status, snap.method)
    if not rules.needs_body:
        return None
    # declared_too_long and is_event_stream, inline: this runs on every
    # response a body rule may match.
    headers = snap.headers
    declared = headers.get("content-length")
    if (
        declared is not None
        and declared.isdigit()
        and int(declared) > policy.body_limit
    ):
        return None
    kind = headers.get("content-type")
    if kind is not None and kind.lstrip().lower().startswith(
        "text/event-stream"
    ):
        return True if rules.reads_events else None
    # A rule that can match an event stream only reads no other body.
    if rules.only_events:
        return None
    return False


# --- The first outcome, for the runners' fast path -------------------------
#
# A call whose policy needs no admission and no settling, and whose first
# outcome no rule matches, ends with that outcome as it is: the runners
# find this out with the three functions below — the same decisions the
# flow's first step makes — without starting the flow, which costs more
# than the decision itself.


def first_read(
    policy: Policy, snap: Snapshot, started: float
) -> ReadBody | None:
    """
    The read the flow's first step asks for on *snap*, or None.
    """
    event = _reads_body(policy, snap)
    if event is None:
        return None
    return ReadBody(policy.body_limit, started + policy.deadline, event)


def with_read(snap: Snapshot, got: bytes | None, read: ReadBody) -> Snapshot:
    """
    *snap* with the body a runner read for *read* (what the flow's first
    step decides on).
    """
    if read.event and got is not None:
        return snap.with_body(event_data(got))
    return snap.with_body(got)


def unmatched(policy: Policy, snap: Snapshot) -> bool:
    """
    Whether no rule matches *snap* as a first outcome (no rule's decision
    on a first attempt depends on the clock then).
    """
    return decide(policy, snap, FIRST_ATTEMPT, now=0.0) is NO_MATCH


def _read_body(
    policy: Policy,
    state: AttemptState,
    snap: Snapshot,
    now: float,
    event: bool,
    most: float | None = None,
) -> Generator[Action, Reply, tuple[Snapshot, float, bool]]:
    """
    Ask for *snap*'s body (*event*: an event stream's first event), within
    the time the call has left.  Returns the
    snapshot to decide with (a ``read`` or ``timeout`` failure when the
    read did not end well), the clock after the read, and whether the
    runner cut the read on the deadline.  With *most*, the read is
    optional: it takes at most *most* seconds, and *snap* stands whatever
    happens.
    """
    left = _left(policy, state, now)
    optional = most is not None
    if most is not None:
        left = min(left, most)
    reply = yield ReadBody(policy.body_limit, now + left, event, optional)
    got = reply.value
    if got is None or isinstance(got, bytes):
        body = event_data(got) if event and got is not None else got
        return snap.with_body(body), reply.now, False
    if optional:
        return snap, reply.now, False
    if got is TIMED_OUT:
        return _timed_out(snap.method, snap.url), reply.now, True
    found: Snapshot = got  # the read broke: its failure stands for it
    return found, reply.now, False


def _error_body(policy: Policy, snap: Snapshot, asked: bool) -> bool:
    """
    Whether to read the body of a response the call aborts on, for the
    error: one not read yet (nor asked for: one found too long stays
    unread), not declared too long, and no event stream.
    """
    if asked or snap.status is None or snap.body is not None:
        return False
    headers = snap.headers
    return (
        snap.load_body is None
        and not declared_too_long(headers, policy.body_limit)
        and not is_event_stream(headers)
    )


def _timed_out(method: str, url: Url) -> Snapshot:
    """
    The snapshot of an attempt the runner cut on the deadline.
    """
    return Snapshot.failed(
        "timeout", method=method, url=url if isinstance(url, str) else url()
    )


def _out_of_time(snap: Snapshot) -> Abort:
    """
    The end of a call whose attempt the deadline cut, when no rule takes
    up a timeout.
    """
    return Abort(
        None,
        (
            (
                "{0}: the call's deadline ran out before the answer was in, "
                "and no rule handles a timeout"
            ),
            snap.method,
        ),
        DeadlineExceeded,
    )


def _left(policy: Policy, state: AttemptState, now: float) -> float:
    """
    The seconds the call has left (at least a millisecond): before its
    deadline (or that of the rule whose retry made the send, when it has
    one of its own), or once it polls, before its poll's.
    """
    if state.poll_started is None:
        end = call_end(policy, state)
    else:
        end = state.poll_started + poll_deadline(policy, state)
    return math.inf if end == math.inf else max(end - now, 0.001)


# --- Admission: breakers, pauses and rate limits -----------------------------


def needs_admission(policy: Policy, method: str) -> bool:
    """
    Whether a send of *method* may have to wait or be stopped: a breaker
    that can stop it, a pause a rule may set, or a rate limit that counts
    it.  Computed once per (policy, method); False for a policy with no
    state attached.
    """
    if policy.runtime is None or (
        not policy.breakers
        and policy.rate_limit is None
        and not policy.pause_scopes
    ):
        return False
    return _by_method(policy, method)[0]


def _skips(policy: Policy, method: str) -> frozenset[str]:
    """
    The breakers scoped to other methods than *method*.
    """
    return _by_method(policy, method)[1]


def _by_method(policy: Policy, method: str) -> tuple[bool, frozenset[str]]:
    """
    Whether a send of *method* needs admission, and the breakers it skips:
    computed once per method, kept on the compiled policy.
    """
    found = policy.by_method.get(method)
    if found is not None:
        return found
    scopes = policy.breaker_scopes
    skip = frozenset(
        name
        for name, scope in scopes.items()
        if scope is not None and method not in scope
    )
    limit = policy.rate_limit
    admits = (
        any(m is None or method in m for _k, m in policy.pause_scopes)
        or policy.breaker is not None
        or len(skip) < len(scopes)
        or (
            limit is not None
            and (limit.methods is None or method in limit.methods)
        )
    )
    found = policy.by_method[method] = (admits, skip)
    return found


def _admit(
    policy: Policy,
    state: AttemptState,
    method: str,
    url: Url,
    now: float,
    paused: float,
) -> Generator[Action, Reply, Finished | tuple[float, float]]:
    """
    Ask until the send may go: the seconds it waited for a pause and the
    clock then, or how the call ends instead (an open breaker, a pause
    that fails fast, or a wait past the deadline).  *paused* is what the
    call's earlier sends waited for pauses.
    """
    waited = 0.0
    skip = _skips(policy, method)
    check = policy.breaker is not None or len(skip) < len(
        policy.breaker_scopes
    )
    limit = policy.rate_limit
    counted = limit is not None and (
        limit.methods is None or method in limit.methods
    )
    # A call that polls is bounded by its poll deadline, decided at each
    # poll; a rate-limit wait does not cut it on the call's deadline.
    end = (
        math.inf if state.poll_started is not None else call_end(policy, state)
    )
    scopes = _pause_scopes(policy, method, url)
    bucket: str | None = None
    if counted and limit is not None:
        text = url if isinstance(url, str) else url()
        bucket = _path(text) if limit.by_path else "*"
    op = Admit(
        policy.name,
        now,
        skip if check else None,
        scopes,
        bucket,
        limit if bucket is not None else None,
    )
    while True:
        reply = yield Store(op)
        now = reply.now
        got: Admission = reply.value
        if got.breaker is not None:
            return _breaker_open(state, method, got.breaker, now)
        found = got.pause
        if found is not None and found.until - now > PAUSE_SLACK:
            held = found.until - now
            if found.then == "fail" or now + held > end:
                return _paused(state, method, found, now, end, paused + waited)
            reply = yield Wait(held)
            waited += reply.now - now
            now = reply.now
            op = attrs.evolve(op, now=now)
            continue  # another pause may have come meanwhile
        wait = got.wait
        if wait <= 0 or limit is None:
            return waited, now
        if now + wait > end:
            decision = Abort(
                None,
                (
                    (
                        "{0}: waiting {1!d} for a rate-limit slot ({2} "
                        "per {3!d}) would overrun the call's deadline"
                    ),
                    method,
                    wait,
                    limit.requests,
                    limit.per,
                ),
                DeadlineExceeded,
            )
            return Finished(
                decision, state, None, sent=False, paused=paused + waited
            )
        reply = yield Wait(wait)
        now = reply.now
        op = attrs.evolve(op, now=now)


def _pause_scopes(policy: Policy, method: str, url: Url) -> tuple[str, ...]:
    """
    The pause scopes a send of *method* to *url* is held by: the policy's
    (``*``) and its host's, those of every call and those of *method*, as
    far as the policy's rules pause them.
    """
    keys: list[str] = []
    host: str | None = None
    for kind, methods in policy.pause_scopes:
        if methods is not None and method not in methods:
            continue
        if kind == "policy":
            base = "*"
        else:
            if host is None:
                host = host_of(url if isinstance(url, str) else url())
            base = host
        keys.append(pause_key(base, methods))
    return tuple(keys)


def _paused(
    state: AttemptState,
    method: str,
    found: PauseState,
    now: float,
    end: float,
    paused: float,
) -> Finished:
    """
    The end of a call a pause holds: it fails fast (``then: fail``), or
    its wait would overrun the deadline.
    """
    until = datetime.fromtimestamp(found.until, UTC).strftime("%H:%M:%S")
    where = scope_words(found.scope)
    left = found.until - now
    if found.then == "fail":
        decision = Abort(
            found.rule_id,
            (
                (
                    "{0}: the API asked for a pause of {1} until {2} UTC "
                    "({3!d} more; set by rule {4!r}, then: fail); nothing "
                    "was sent"
                ),
                method,
                where,
                until,
                left,
                found.rule_id,
            ),
            RateLimited,
        )
    else:
        decision = Abort(
            found.rule_id,
            (
                (
                    "{0}: the API asked for a pause of {1} until {2} UTC "
                    "(set by rule {3!r}); waiting {4!d} would overrun the "
                    "call's deadline ({5!d} left); nothing was sent"
                ),
                method,
                where,
                until,
                found.rule_id,
                left,
                max(end - now, 0.0),
            ),
            DeadlineExceeded,
        )
    return Finished(
        decision, state, None, sent=False, paused=paused, pause=found
    )


def _waited(state: AttemptState, waited: float) -> AttemptState:
    """
    *state* whose last record says its send waited *waited* seconds for a
    pause.
    """
    last = attrs.evolve(state.history[-1], paused=round(waited, 6))
    return attrs.evolve(state, history=(*state.history[:-1], last))


def _breaker_open(
    state: AttemptState, method: str, found: Any, now: float
) -> Finished:
    until = datetime.fromtimestamp(found.until, UTC).strftime("%H:%M:%S")
    opener = (
        f"opened by rule {found.rule_id!r}"
        if found.rule_id
        else "opened by the failure ratio"
    )
    decision = Abort(
        found.rule_id,
        (
            (
                "{0}: breaker {1!r} is open until {2} UTC ({3!d} more; "
                "{4}); nothing was sent"
            ),
            method,
            found.name,
            until,
            max(found.until - now, 0.0),
            opener,
        ),
        CircuitOpen,
    )
    return Finished(decision, state, None, sent=False, breaker=found.name)


# --- Re-sends ---------------------------------------------------------------

_BUDGET_SPENT: Final = (
    "the retry budget for this host is spent (too many retries for the "
    "successes seen: the API looks down, and retrying would only add load)"
)


def _cannot_resend(
    state: AttemptState,
    snap: Snapshot,
    why: str,
    error: type[Aborted],
) -> tuple[Abort, AttemptState]:
    """
    The abort that ends a call whose retry or poll cannot be sent, and the
    state whose trail says so (the outcome was not retried).
    """
    last = state.history[-1]
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
    record = attrs.evolve(last, action="abort", delay=None)
    return decision, attrs.evolve(state, history=(*state.history[:-1], record))


# --- Settling: what a decision does beyond the call ------------------------


def _settle(
    policy: Policy,
    decision: Decision,
    snap: Snapshot,
    now: float,
    token: bool,
) -> Generator[Action, Reply, bool]:
    """
    Leave the outcome in the state, in one operation: set the decision's
    pause, open its breaker, count the outcome for the failure-ratio
    breaker, refund the retry budget after a success or spend a token for
    the retry (*token*), raise its alert.  Whether the token was granted
    (True when none was asked for).
    """
    if policy.runtime is None:
        return True
    pause = decision.pause
    spec = decision.breaker
    alert = decision.alert
    budget = policy.budget
    op = Settle(
        policy.name,
        now,
        pause=(
            None
            if pause is None
            else SetPause(
                policy.name,
                PauseState(
                    pause.scope, pause.until, decision.rule_id, pause.then
                ),
            )
        ),
        open=(
            None
            if spec is None
            else OpenBreaker(
                policy.name,
                spec.name,
                now + spec.open_for,
                decision.rule_id,
                spec.open_for,
            )
        ),
        record=(
            None
            if policy.breaker is None
            else RecordOutcome(
                policy.name, failed(decision, snap), now, policy.breaker
            )
        ),
        refund=(
            Refund(policy.name, _host(snap.url), budget)
            if budget is not None and isinstance(decision, Accept)
            else None
        ),
        token=(
            TakeRetryToken(policy.name, _host(snap.url), budget)
            if token and budget is not None
            else None
        ),
        alert=(
            None
            if alert is None
            else RaiseAlert(
                alert,
                policy.name,
                decision.rule_id,
                snap.status,
                snap.failure,
                now,
            )
        ),
        seed=_seed(policy, snap, now),
    )
    if (
        op.pause is None
        and op.open is None
        and op.record is None
        and op.refund is None
        and op.token is None
        and op.alert is None
        and op.seed is None
    ):
        return True
    reply = yield Store(op)
    settled: Settlement = reply.value
    return settled.token


def _seed(policy: Policy, snap: Snapshot, now: float) -> SeedLimit | None:
    """
    What a response's ``RateLimit-Policy`` field seeds, when the policy's
    rate limit asks for it (``seed: ratelimit-policy``) and counts the
    request: its strictest item paces the request's bucket for two
    windows of that item (one would end before the slot it grants when
    the quota is 1).  None when the field is absent, malformed or names
    no rate of requests.
    """
    limit = policy.rate_limit
    if limit is None or not limit.seed:
        return None
    if limit.methods is not None and snap.method not in limit.methods:
        return None
    value = snap.headers.get("ratelimit-policy")
    if value is None:
        return None
    found = parse_quota_policy(value)
    if found is None:
        return None
    requests, per = found
    bucket = _path(snap.url) if limit.by_path else "*"
    return SeedLimit(
        policy.name, bucket, SeedState(requests, float(per), now + 2 * per)
    )


def failed(decision: Decision, snap: Snapshot) -> bool:
    """
    Whether the failure-ratio breaker counts this outcome as a failure: a
    retry, or an abort on a transport failure or a 5xx.  A poll is
    progress; a 4xx abort is the caller's problem, not the API's health.
    """
    return isinstance(decision, Retry) or (
        isinstance(decision, Abort)
        and (snap.failure is not None or (snap.status or 0) >= 500)
    )


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
