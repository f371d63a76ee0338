"""
The flow of one call, driven by hand: every action it yields is answered
here, with no HTTP, no clock and no state backend (DESIGN.md §3: every
decision is the flow's; runners only answer).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import attrs
import pytest

import referee
from referee import (
    Abort,
    Accept,
    AuthenticationError,
    CircuitOpen,
    DeadlineExceeded,
    NotReplayable,
    Poll,
    PollRequest,
    RetriesExhausted,
    Retry,
    ServerError,
    Snapshot,
)
from referee._core.backend import (
    Admission,
    BreakerState,
    Settlement,
)
from referee._core.flow import (
    ERROR_BODY_WAIT,
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
from referee._core.ops import (
    Acquire,
    Admit,
    CheckBreakers,
    OpenBreaker,
    RaiseAlert,
    RecordOutcome,
    Refund,
    Settle,
    TakeRetryToken,
    admit_parts,
    by_parts,
    settle_parts,
)


if TYPE_CHECKING:
    from collections.abc import Callable

    from referee._core.flow import Action
    from referee._core.ops import StateOp


URL = "https://api.example.com/jobs"

# Retries 503 (and read failures) with delays of exactly 1, 2, 4 s;
# polls a 202 at the URL of its Location header, 5 s apart; aborts on 401;
# a 418 is accepted by a rule.  A call has a minute.
UNIT = """
policy: unit
defaults:
  retry: {attempts: 3, backoff: {initial: 1s, multiplier: 2, max: 8s, jitter: none}}
  poll: {initial: 5s, multiplier: 1, max: 5s, deadline: 1m}
  deadline: 1m
rules:
  - id: unavailable
    when: {status: 503}
    do: retry
    error: ServerError
  - id: broken
    when: {failure: [read, connect]}
    do: retry
  - id: accepted
    when: {status: 202}
    do: poll
    poll: {request: {url: "{header.Location}"}}
  - id: unauthorized
    when: {status: 401}
    do: abort
  - id: teapot
    when: {status: 418}
    do: accept
"""

# A rule opens the breaker 'credits' on a 402; the rate limit paces sends.
ADMITTED = """
policy: admitted
defaults:
  deadline: 2s
  rate_limit: {requests: 1, per: 1s}
rules:
  - id: out-of-credits
    when: {status: 402}
    do: abort
    breaker: {name: credits, open_for: 10m}
"""

# Every feature that keeps state across calls, and a rule for each kind of
# decision.
STATEFUL = """
policy: stateful
defaults:
  retry: {attempts: 3, backoff: {initial: 1s, multiplier: 2, max: 8s, jitter: none}}
  deadline: 1m
  breaker: {failure_ratio: 0.5, window: 60s, min_calls: 20, open_for: 30s}
  budget: {tokens: 10, refill: 0.1}
  rate_limit: {requests: 10, per: 1s}
rules:
  - id: unavailable
    when: {status: 503}
    do: retry
  - id: broken
    when: {status: 500}
    do: abort
  - id: refused
    when: {failure: connect}
    do: abort
  - id: missing
    when: {status: 404}
    do: abort
  - id: running
    when: {status: 202}
    do: poll
  - id: out-of-credits
    when: {status: 402}
    do: abort
    alert: {kind: topup, severity: critical}
    breaker: {name: credits, open_for: 10m}
"""

# Body conditions: a JSON body that says a job is still running is polled;
# an event stream whose first event is an error is aborted (the rule opts
# in to reading streams by naming their content type).
BODIES = """
policy: bodies
defaults:
  deadline: 1m
  body_limit: 1KiB
rules:
  - id: ongoing
    when: {status: 200, body: {state: ongoing}}
    do: poll
  - id: stream-error
    when:
      status: 201
      headers: {content-type: text/event-stream}
      body: {type: error}
    do: abort
  - id: no-stream-opt-in
    when: {status: 203, body: {type: error}}
    do: abort
  - id: expired
    when: {status: 401, body: {code: expired}}
    do: retry
  - id: unauthorized
    when: {status: 401}
    do: abort
  - id: slow
    when: {failure: timeout}
    do: retry
"""


@pytest.fixture
def unit() -> referee.Policy:
    return referee.load_policy_text(UNIT)


@pytest.fixture
def bodies() -> referee.Policy:
    return referee.load_policy_text(BODIES)


def outcome(
    what: int | str, *, url: str = URL, method: str = "GET", **kwargs: Any
) -> Snapshot:
    """
    A snapshot of a response (a status) or a transport failure (a word),
    its body unread unless *body* is given.
    """
    if isinstance(what, str):
        return Snapshot.failed(what, method=method, url=url)
    return Snapshot.response(what, method=method, url=url, **kwargs)


def drive(
    policy: referee.Policy,
    *sends: Snapshot | int | str,
    reads: tuple[bytes | Snapshot | None, ...] = (),
    resend: str | None = None,
    store: Callable[[StateOp], Any] | None = None,
    method: str = "GET",
    url: str = URL,
    started: float = 0.0,
) -> tuple[list[Action], Finished]:
    """
    Run one call's flow to its end, answering each Send with the next of
    *sends*, each ReadBody with the next of *reads*, each CanResend with
    *resend* and each Store with *store* (default: the operation's
    fallback, as a backend that knows nothing).  The clock starts at
    *started* and moves by each Sleep and Wait.  Returns the actions
    yielded and how the call finished.
    """
    flow = call_flow(
        policy, method=method, url=url, started=started, rng=random.Random(0)
    )
    outcomes = [
        s if isinstance(s, Snapshot) else outcome(s, url=url, method=method)
        for s in sends
    ]
    bodies = list(reads)
    actions: list[Action] = []
    now = started
    reply: Reply | None = None
    while True:
        try:
            action = next(flow) if reply is None else flow.send(reply)
        except StopIteration as stop:
            return actions, stop.value
        value: Any = None
        match action:
            case Store(op=Admit() | Settle() as op):
                # One operation, answered part by part as a backend
                # without its own admit/settle is; the parts are listed.
                value, parts = _by_parts(op, store)
                actions.extend(Store(part) for part in parts)
                reply = Reply(value, now)
                continue
            case Send():
                value = outcomes.pop(0)
            case ReadBody():
                value = bodies.pop(0)
            case CanResend():
                value = resend
            case Store():
                op = action.op
                value = op.fallback if store is None else store(op)
            case Wait() | Sleep():
                now += action.seconds
        actions.append(action)
        reply = Reply(value, now)


def _by_parts(
    op: Admit | Settle, store: Callable[[StateOp], Any] | None
) -> tuple[Admission | Settlement, list[StateOp]]:
    """
    *op* answered part by part with *store* (default: each part's
    fallback), as ``referee._run.stateio`` does for a backend without
    ``admit``/``settle``, and the parts asked.
    """

    def ask(part: StateOp) -> Any:
        asked.append(part)
        return part.fallback if store is None else store(part)

    asked: list[StateOp] = []
    parts = admit_parts(op) if isinstance(op, Admit) else settle_parts(op)
    return by_parts(parts, ask), asked


def names(actions: list[Action]) -> list[str]:
    """
    The actions' class names, a Store's with its operation's.
    """
    return [
        f"Store:{type(a.op).__name__}"
        if isinstance(a, Store)
        else type(a).__name__
        for a in actions
    ]


def ops(actions: list[Action], kind: type[Any]) -> list[Any]:
    """
    The state operations of type *kind* the flow asked for.
    """
    return [
        a.op
        for a in actions
        if isinstance(a, Store) and isinstance(a.op, kind)
    ]


class TestCallFlow:
    def test_retry_then_accept(self, unit):
        """
        Send, CanResend, Sleep, Send: the flow returns Finished with the
        trail and the state.
        """
        flow = call_flow(
            unit, method="GET", url=URL, started=100.0, rng=random.Random(0)
        )

        first = next(flow)
        check = flow.send(Reply(outcome(503), 100.0))
        sleep = flow.send(Reply(None, 100.0))
        second = flow.send(Reply(None, 101.0))
        with pytest.raises(StopIteration) as stop:
            flow.send(Reply(outcome(200), 101.5))

        assert Send(None, 1, 0, None) == first
        assert CanResend(None) == check
        assert isinstance(sleep, Sleep)
        assert 1.0 == sleep.seconds
        assert isinstance(sleep.decision, Retry)
        assert "unavailable" == sleep.decision.rule_id
        assert 2 == sleep.state.attempt
        assert Send(None, 2, 0, 59.0) == second
        finished = stop.value.value
        assert isinstance(finished, Finished)
        assert isinstance(finished.decision, Accept)
        assert 200 == finished.snap.status
        assert finished.sent
        assert not finished.suppressed
        assert 2 == finished.state.attempt
        assert 100.0 == finished.state.started
        assert [
            (503, "unavailable", "retry", 1.0, 100.0),
            (200, None, "accept", None, 101.5),
        ] == [
            (r.status, r.rule_id, r.action, r.delay, r.at)
            for r in finished.state.history
        ]

    def test_abort_finishes_at_once(self, unit):
        """
        An abort on the first send (its body in hand) finishes without a
        Sleep.
        """
        actions, finished = drive(unit, outcome(401, body=b"{}"))

        assert ["Send"] == names(actions)
        assert isinstance(finished.decision, Abort)
        assert AuthenticationError is finished.decision.error
        assert ["abort"] == [r.action for r in finished.state.history]

    def test_retries_run_out(self, unit):
        """
        Three 503s: two Sleeps with the backoff delays, then an Abort.
        """
        actions, finished = drive(unit, 503, 503, 503, reads=(b"",))

        assert [
            Send(None, 1, 0, None),
            CanResend(None),
            1.0,
            Send(None, 2, 0, 59.0),
            CanResend(None),
            2.0,
            Send(None, 3, 0, 57.0),
            ReadBody(unit.body_limit, 3.5, optional=True),
        ] == [a.seconds if isinstance(a, Sleep) else a for a in actions]
        assert isinstance(finished.decision, Abort)
        assert ServerError is finished.decision.error

    def test_poll_resends_the_poll_request(self, unit):
        """
        A poll asks whether its PollRequest can be sent, then sends it;
        a retry after the poll sends the poll request again, not the
        original.
        """
        start = "https://api.example.com/start"
        job = PollRequest("GET", "https://api.example.com/jobs/1")

        actions, finished = drive(
            unit,
            outcome(202, url=start, headers={"Location": "/jobs/1"}),
            outcome(503, url=job.url),
            outcome(200, url=job.url),
            url=start,
        )

        sends = [a for a in actions if isinstance(a, Send)]
        checks = [a for a in actions if isinstance(a, CanResend)]
        sleeps = [a for a in actions if isinstance(a, Sleep)]
        assert [(None, 1, 0), (job, 1, 1), (job, 2, 1)] == [
            (s.request, s.attempt, s.poll) for s in sends
        ]
        assert [CanResend(job), CanResend(job)] == checks
        assert isinstance(sleeps[0].decision, Poll)
        assert job == sleeps[0].decision.request
        assert 5.0 == sleeps[0].seconds
        assert isinstance(sleeps[1].decision, Retry)
        assert ["poll", "retry", "accept"] == [
            r.action for r in finished.state.history
        ]
        assert 1 == finished.state.polls
        assert 0.0 == finished.state.poll_started

    def test_accept_by_a_rule(self, unit):
        """
        A status a rule accepts finishes with that rule's Accept.
        """
        _, finished = drive(unit, 418)

        assert isinstance(finished.decision, Accept)
        assert "teapot" == finished.decision.rule_id


class TestAdmission:
    def test_open_breaker_stops_the_next_call(self):
        """
        A breaker a rule opened makes the next call ask CheckBreakers and
        finish with CircuitOpen before any Send.
        """
        policy = referee.load_policy_text(
            ADMITTED, state=referee.MemoryState()
        )
        opened: list[OpenBreaker] = []

        def first_call(op: StateOp) -> Any:
            if isinstance(op, OpenBreaker):
                opened.append(op)
            return op.fallback

        drive(policy, 402, reads=(b"",), store=first_call, started=1000.0)
        [op] = opened
        found = BreakerState(op.name, op.until, op.rule_id)
        actions, finished = drive(
            policy,
            store=lambda op: found if isinstance(op, CheckBreakers) else None,
            started=1060.0,
        )

        assert ["Store:CheckBreakers"] == names(actions)
        assert not finished.sent
        assert finished.snap is None
        assert isinstance(finished.decision, Abort)
        assert CircuitOpen is finished.decision.error
        assert "out-of-credits" == finished.decision.rule_id
        reason = finished.decision.reason
        assert "breaker 'credits' is open" in reason
        assert "(9m more;" in reason
        assert "opened by rule 'out-of-credits'" in reason
        assert "nothing was sent" in reason

    def test_closed_breaker_lets_the_send_go(self):
        """
        CheckBreakers answered None: the rate limit is asked next, then
        the request is sent.
        """
        policy = referee.load_policy_text(ADMITTED)

        actions, _ = drive(policy, 200)

        assert ["Store:CheckBreakers", "Store:Acquire", "Send"] == names(
            actions
        )

    def test_breaker_scoped_to_other_methods_is_not_checked(self):
        """
        A call whose method no breaker stops asks no CheckBreakers; a call
        it stops does.
        """
        policy = referee.load_policy_text(
            """
policy: scoped
rules:
  - id: out-of-credits
    when: {status: 402}
    do: abort
    breaker: {name: credits, open_for: 10m, methods: [POST]}
"""
        )

        get, _ = drive(policy, 200, method="GET")
        post, _ = drive(policy, 200, method="POST")

        assert ["Send"] == names(get)
        assert ["Store:CheckBreakers", "Send"] == names(post)

    def test_rate_limit_wait_then_ask_again(self):
        """
        An Acquire answered with a wait yields Wait(seconds), then asks
        again at the later time; a zero answer lets the send go.
        """
        policy = referee.load_policy_text(ADMITTED)
        waits = iter([0.5, 0.0])

        actions, finished = drive(
            policy,
            200,
            store=lambda op: next(waits) if isinstance(op, Acquire) else None,
            started=10.0,
        )

        assert [
            "Store:CheckBreakers",
            "Store:Acquire",
            "Wait",
            "Store:CheckBreakers",
            "Store:Acquire",
            "Send",
        ] == names(actions)
        assert Wait(0.5) == actions[2]
        assert [10.0, 10.5] == [op.now for op in ops(actions, Acquire)]
        assert ["*", "*"] == [op.bucket for op in ops(actions, Acquire)]
        assert isinstance(finished.decision, Accept)

    def test_rate_limit_by_path(self):
        """
        With by_path, the slot is taken in the bucket of the request's
        path.
        """
        policy = referee.load_policy_text(
            "policy: paced\n"
            "defaults:\n"
            "  rate_limit: {requests: 1, per: 1s, by_path: true}\n"
            "rules: []\n"
        )

        actions, _ = drive(policy, 200, url=URL + "?page=2")

        assert ["/jobs"] == [op.bucket for op in ops(actions, Acquire)]

    def test_wait_past_the_deadline(self):
        """
        A rate-limit wait that would overrun the deadline finishes with
        DeadlineExceeded, waiting for nothing and sending nothing.
        """
        policy = referee.load_policy_text(ADMITTED)

        actions, finished = drive(
            policy,
            store=lambda op: 5.0 if isinstance(op, Acquire) else None,
        )

        assert ["Store:CheckBreakers", "Store:Acquire"] == names(actions)
        assert not finished.sent
        assert finished.snap is None
        assert isinstance(finished.decision, Abort)
        assert DeadlineExceeded is finished.decision.error
        assert "would overrun the call's deadline" in (
            finished.decision.reason
        )

    def test_no_runtime_asks_no_store(self):
        """
        A policy with no state attached asks for no state operation at
        all, though it has breakers, a budget, a rate limit and alerts.
        """
        policy = attrs.evolve(referee.load_policy_text(STATEFUL), runtime=None)

        actions, finished = drive(policy, 503, 503, 402, reads=(b"",))

        assert [] == ops(actions, object)
        assert 3 == names(actions).count("Send")
        assert CanResend(None) in actions
        assert isinstance(finished.decision, Abort)


class TestBodies:
    @pytest.mark.parametrize(
        ("body", "action"),
        [(b'{"state": "ongoing"}', "poll"), (b'{"state": "done"}', "accept")],
        ids=["ongoing", "done"],
    )
    def test_body_condition_reads_the_body(self, bodies, body, action):
        """
        A candidate rule with a body condition makes the flow ask for the
        body (up to the limit, within the deadline) and decide on it.
        """
        actions, finished = drive(
            bodies,
            200,
            outcome(200, body=b'{"state": "done"}'),
            reads=(body,),
            started=5.0,
        )

        assert ReadBody(1024, 65.0, event=False) == actions[1]
        assert action == finished.state.history[0].action

    def test_no_body_condition_reads_nothing(self, unit):
        """
        A retry decided on the status alone asks for no body.
        """
        actions, _ = drive(unit, 503, 200)

        assert ["Send", "CanResend", "Sleep", "Send"] == names(actions)

    def test_body_declared_too_long_is_not_read(self, bodies):
        """
        A Content-Length above body_limit: no ReadBody, and the body rule
        does not match.
        """
        actions, finished = drive(
            bodies, outcome(200, headers={"content-length": "1025"})
        )

        assert ["Send"] == names(actions)
        assert isinstance(finished.decision, Accept)

    def test_event_stream_is_not_read(self, bodies):
        """
        An event stream is not read for a body rule that does not name its
        content type.
        """
        actions, finished = drive(
            bodies,
            outcome(203, headers={"content-type": "text/event-stream"}),
        )

        assert ["Send"] == names(actions)
        assert isinstance(finished.decision, Accept)

    def test_event_stream_read_when_a_rule_opts_in(self, bodies):
        """
        A candidate rule naming content-type: text/event-stream with a body
        condition makes the flow read up to the first event, and decide on
        that event's data.
        """
        stream = (
            b"event: status\n"
            b'data: {"type": "error",\n'
            b'data:  "message": "overloaded"}\n\n'
            b"data: {}\n\n"
        )

        actions, finished = drive(
            bodies,
            outcome(201, headers={"content-type": "text/event-stream"}),
            reads=(stream,),
        )

        assert ["Send", "ReadBody"] == names(actions)
        assert ReadBody(1024, 60.0, event=True) == actions[1]
        assert 201 == finished.snap.status
        assert isinstance(finished.decision, Abort)
        assert "stream-error" == finished.decision.rule_id
        assert b'{"type": "error",\n "message": "overloaded"}' == (
            finished.snap.body
        )

    def test_read_failure_is_decided_as_that_failure(self, bodies):
        """
        A ReadBody answered with a failure's snapshot (the read timed out)
        is decided as that failure.
        """
        actions, finished = drive(
            bodies,
            200,
            200,
            reads=(outcome("timeout"), b'{"state": "done"}'),
        )

        assert [
            "Send",
            "ReadBody",
            "CanResend",
            "Sleep",
            "Send",
            "ReadBody",
        ] == (names(actions))
        first = finished.state.history[0]
        assert (None, "timeout", "slow", "retry") == (
            first.status,
            first.failure,
            first.rule_id,
            first.action,
        )

    def test_abort_reads_the_body_for_the_message(self, unit):
        """
        An abort on a status whose body was not read asks for it before
        finishing: the error keeps the API's message.  The read is
        optional, and waits ERROR_BODY_WAIT at most.
        """
        actions, finished = drive(
            unit, 401, reads=(b'{"message": "bad key"}',), started=10.0
        )

        assert [
            Send(None, 1, 0, None),
            ReadBody(unit.body_limit, 10.0 + ERROR_BODY_WAIT, optional=True),
        ] == actions
        assert b'{"message": "bad key"}' == finished.snap.body
        assert 401 == finished.snap.status

    def test_abort_on_an_event_stream_reads_nothing(self, unit):
        """
        An abort on an event stream finishes without reading it.
        """
        actions, finished = drive(
            unit, outcome(401, headers={"content-type": "text/event-stream"})
        )

        assert ["Send"] == names(actions)
        assert isinstance(finished.decision, Abort)

    def test_abort_on_a_failure_reads_nothing(self):
        """
        An abort on a transport failure has no body to read.
        """
        policy = referee.load_policy_text(STATEFUL)

        actions, finished = drive(
            attrs.evolve(policy, runtime=None), "connect"
        )

        assert ["Send"] == names(actions)
        assert "refused" == finished.decision.rule_id

    def test_error_body_read_is_cut_to_the_deadline(self, unit):
        """
        The optional read of an abort's body never runs past the deadline.
        """
        policy = attrs.evolve(unit, deadline=3.2)

        actions, _ = drive(policy, 503, 503, 503, reads=(b"",))

        assert [1.0, 2.0] == [
            a.seconds for a in actions if isinstance(a, Sleep)
        ]
        assert pytest.approx(3.2) == actions[-1].until

    def test_abort_without_its_body_keeps_its_status(self, unit):
        """
        An optional read answered None (the body was slow, broken or too
        long) finishes on the 401 the call was decided on, with no body.
        """
        _, finished = drive(unit, 401, reads=(None,))

        assert AuthenticationError is finished.decision.error
        assert (401, None, None) == (
            finished.snap.status,
            finished.snap.failure,
            finished.snap.body,
        )

    def test_body_too_long_is_not_asked_for_twice(self, bodies):
        """
        A body the read found longer than the limit is not asked for again
        before the abort it led to.
        """
        actions, finished = drive(bodies, 401, reads=(None, None))

        assert ["Send", "ReadBody"] == names(actions)
        assert "unauthorized" == finished.decision.rule_id

    def test_abort_reads_no_body_declared_too_long(self, unit):
        """
        An abort on a response declaring a body above the limit does not
        ask for it: the read could only answer None.
        """
        actions, _ = drive(
            unit,
            outcome(401, headers={"content-length": str(unit.body_limit + 1)}),
            reads=(None,),
        )

        assert ["Send"] == names(actions)


class TestResends:
    def test_unreplayable_request_is_not_resent(self, unit):
        """
        A CanResend answered with a reason finishes with NotReplayable
        naming the rule; the trail's last record is an abort.
        """
        actions, finished = drive(
            unit, outcome(503, body=b""), resend="its body was a generator"
        )

        assert ["Send", "CanResend"] == names(actions)
        decision = finished.decision
        assert isinstance(decision, Abort)
        assert NotReplayable is decision.error
        assert "unavailable" == decision.rule_id
        assert "rule 'unavailable' would send the request again" in (
            decision.reason
        )
        assert decision.reason.endswith("but its body was a generator")
        assert [("abort", None)] == [
            (r.action, r.delay) for r in finished.state.history
        ]

    def test_budget_refuses_the_retry(self):
        """
        With a budget, a retry spends a token; a False answer finishes with
        RetriesExhausted, and the call is marked as suppressed.
        """
        policy = referee.load_policy_text(STATEFUL)

        actions, finished = drive(
            policy,
            503,
            reads=(b"",),
            store=lambda op: (
                False if isinstance(op, TakeRetryToken) else op.fallback
            ),
        )

        assert "Sleep" not in names(actions)
        [token] = ops(actions, TakeRetryToken)
        assert ("stateful", "api.example.com") == (token.policy, token.host)
        assert policy.budget == token.settings
        assert names(actions).index("CanResend") < names(actions).index(
            "Store:TakeRetryToken"
        )
        assert finished.suppressed
        assert RetriesExhausted is finished.decision.error
        assert "the retry budget for this host is spent" in (
            finished.decision.reason
        )
        assert ["abort"] == [r.action for r in finished.state.history]

    def test_budget_allows_the_retry(self):
        """
        A True answer to the token lets the retry sleep and re-send.
        """
        policy = referee.load_policy_text(STATEFUL)

        actions, finished = drive(policy, 503, 200)

        assert 1 == len(ops(actions, TakeRetryToken))
        assert 2 == names(actions).count("Send")
        assert not finished.suppressed

    def test_poll_spends_no_token(self):
        """
        A poll is no retry: it asks whether it can re-send, but spends no
        token.
        """
        policy = referee.load_policy_text(STATEFUL)

        actions, _ = drive(policy, 202, 200)

        assert [] == ops(actions, TakeRetryToken)
        assert CanResend(None) in actions

    def test_resend_carries_the_time_left(self, unit):
        """
        The first Send carries no timeout; a re-send carries the seconds
        left before the deadline.
        """
        actions, _ = drive(unit, 503, 503, 200, started=1000.0)

        assert [None, 59.0, 57.0] == [
            a.timeout for a in actions if isinstance(a, Send)
        ]

    def test_resend_without_a_deadline_has_no_timeout(self):
        """
        A re-send of a call with no deadline carries no timeout: there is
        nothing to cut the client's own timeouts to.
        """
        policy = referee.load_policy_text(
            "policy: endless\n"
            "rules:\n"
            "  - {id: unavailable, when: {status: 503}, do: retry}\n"
        )

        actions, _ = drive(policy, 503, 200)

        assert [None, None] == [
            a.timeout for a in actions if isinstance(a, Send)
        ]


class TestSettling:
    def test_alert_and_breaker(self):
        """
        A decision with an alert and a breaker asks to raise the alert and
        open the breaker, at the time it was decided.
        """
        policy = referee.load_policy_text(STATEFUL)

        actions, _ = drive(policy, 402, reads=(b"",), started=100.0)

        [alert] = ops(actions, RaiseAlert)
        assert ("topup", "critical") == (
            alert.notice.kind,
            alert.notice.severity,
        )
        assert ("stateful", "out-of-credits", 402, None, 100.0) == (
            alert.policy,
            alert.rule,
            alert.status,
            alert.failure,
            alert.now,
        )
        assert [
            OpenBreaker("stateful", "credits", 700.0, "out-of-credits", 600.0)
        ] == ops(actions, OpenBreaker)

    def test_alert_is_raised_after_the_body_read(self):
        """
        The alert of an abort is raised once the body was read (so its
        message can quote the body).
        """
        policy = referee.load_policy_text(STATEFUL)

        actions, _ = drive(policy, 402, reads=(b"",))

        assert names(actions).index("ReadBody") < names(actions).index(
            "Store:RaiseAlert"
        )

    @pytest.mark.parametrize(
        ("sends", "failed"),
        [
            ((503, 200), [True, False]),
            ((500,), [True]),
            (("connect",), [True]),
            ((404,), [False]),
            ((200,), [False]),
            ((202, 200), [False, False]),
        ],
        ids=[
            "retry-then-accept",
            "5xx-abort",
            "failure-abort",
            "4xx-abort",
            "accept",
            "poll",
        ],
    )
    def test_ratio_breaker_counts_every_outcome(self, sends, failed):
        """
        With a failure-ratio breaker every outcome is recorded: retries and
        aborts on a 5xx or a failure as failures, everything else not.
        """
        policy = referee.load_policy_text(STATEFUL)

        actions, _ = drive(policy, *sends, reads=(b"",))

        assert failed == [op.failed for op in ops(actions, RecordOutcome)]
        assert {policy.breaker} == {
            op.settings for op in ops(actions, RecordOutcome)
        }

    def test_budget_refunded_on_accept(self):
        """
        With a budget, an accept refunds it; an abort does not.
        """
        policy = referee.load_policy_text(STATEFUL)

        accepted, _ = drive(policy, 200)
        aborted, _ = drive(policy, 404, reads=(b"",))

        assert [Refund("stateful", "api.example.com", policy.budget)] == ops(
            accepted, Refund
        )
        assert [] == ops(aborted, Refund)

    def test_plain_call_settles_nothing(self, unit):
        """
        A policy with no alert, breaker or budget asks for no state
        operation, though its runtime is attached.
        """
        actions, _ = drive(unit, 503, 401, reads=(b"",))

        assert unit.runtime is not None
        assert [] == ops(actions, object)
