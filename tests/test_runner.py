"""
The runners, sync and async, over a hand-written fake Exchange and
AsyncExchange: they answer what the flow asks (send, read a body, wait,
sleep, carry out a state operation) and turn how the call finished into
a response or an error.  No sockets, no HTTP library.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import structlog

import referee
from referee import (
    Abort,
    Accept,
    AuthenticationError,
    CallOutcome,
    CircuitOpen,
    InsufficientCredits,
    NotReplayable,
    PollRequest,
    RetriesExhausted,
    ServerError,
    Snapshot,
)
from referee._run import clock
from referee._run.runner import AsyncRunner, Runner
from referee.testing import no_sleep


if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator


URL = "https://api.example.com/jobs"

# Retries 503 (and read failures) with delays of exactly 1, 2, 4 s;
# polls a 202 at the URL of its Location header, 5 s apart; aborts on 401;
# a 418 is accepted by a rule that logs at debug, a 410 aborted by one.
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
    log: debug
  - id: quiet-abort
    when: {status: 410}
    do: abort
    log: debug
"""

# A job still running says so in its JSON body; an event stream whose first
# event is an error is aborted; a broken read is retried.
BODIES = """
policy: bodies
defaults:
  retry: {attempts: 3, backoff: {initial: 1s, multiplier: 2, max: 8s, jitter: none}}
  deadline: 1m
  body_limit: 1KiB
rules:
  - id: ongoing
    when: {status: 200, body: {state: ongoing}}
    do: poll
  - id: stream-error
    when:
      status: 200
      headers: {content-type: text/event-stream}
      body: {type: error}
    do: abort
  - id: broken
    when: {failure: read}
    do: retry
"""

# Every feature that keeps state across calls.
STATEFUL = """
policy: stateful
defaults:
  retry: {attempts: 3, backoff: {initial: 1s, multiplier: 2, max: 8s, jitter: none}}
  deadline: 1m
  breaker: {failure_ratio: 0.5, window: 60s, min_calls: 20, open_for: 30s}
  budget: {tokens: 10, refill: 0.1}
  rate_limit: {requests: 100, per: 1s}
rules:
  - id: unavailable
    when: {status: 503}
    do: retry
  - id: out-of-credits
    when: {status: 402}
    do: abort
    breaker: {name: credits, open_for: 10m}
"""


@pytest.fixture
def policy() -> referee.Policy:
    return referee.load_policy_text(UNIT)


def decisions(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "referee.decision"]


def chain(exc: BaseException) -> list[BaseException]:
    """
    Every exception in *exc*'s ``__cause__`` / ``__context__`` chain.
    """
    seen: list[BaseException] = []
    todo = [exc.__cause__, exc.__context__]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__]
    return seen


# --- A fake client, and its exchanges ----------------------------------------


@attrs.frozen
class FakeRequest:
    method: str = "GET"
    url: str = URL
    headers: tuple[tuple[str, str], ...] = ()


class FakeFailure(Exception):
    """
    A transport failure of the fake client, carrying its portable word.
    """

    def __init__(self, word: str) -> None:
        super().__init__(word)
        self.word = word


class FakeResponse:
    """
    A response whose body arrives in *chunks* (an exception among them is
    raised when the reader gets to it).
    """

    def __init__(
        self,
        status: int,
        headers: dict[str, str] | None = None,
        chunks: tuple[bytes | Exception, ...] = (),
    ) -> None:
        self.status = status
        self.headers = headers or {}
        self.stream: Iterator[bytes] = self._arrive(chunks)
        self.pulled = 0
        self.closed = False
        self.outcome: CallOutcome | None = None

    def _arrive(
        self, chunks: tuple[bytes | Exception, ...]
    ) -> Iterator[bytes]:
        for chunk in chunks:
            self.pulled += 1
            if isinstance(chunk, Exception):
                raise chunk
            yield chunk

    def read(self) -> bytes:
        """
        The body as the caller reads it.
        """
        return b"".join(self.stream)

    def __repr__(self) -> str:
        return f"FakeResponse({self.status})"


class FakeExchange:
    """
    A hand-written Exchange over the fake types, recording what the
    runner asked of it.
    """

    def __init__(self, unreplayable: str | None = None) -> None:
        self.unreplayable = unreplayable
        self.snapshots = 0
        self.prepared: list[float | None] = []
        self.replay_checks: list[FakeRequest] = []
        self.closed: list[FakeResponse] = []

    def method_url(
        self, request: FakeRequest
    ) -> tuple[str, Callable[[], str]]:
        return request.method, lambda: request.url

    def status(self, response: FakeResponse) -> int:
        return response.status

    def snapshot(
        self, request: FakeRequest, response: FakeResponse
    ) -> Snapshot:
        self.snapshots += 1
        return Snapshot.response(
            response.status,
            method=request.method,
            url=request.url,
            headers=response.headers,
            request_headers=dict(request.headers),
        )

    def exception_snapshot(
        self, request: FakeRequest, exc: Exception
    ) -> Snapshot | None:
        if not isinstance(exc, FakeFailure):
            return None
        return Snapshot.failed(
            exc.word, method=request.method, url=request.url
        )

    def poll_request(
        self, request: FakeRequest, poll: PollRequest
    ) -> FakeRequest:
        return FakeRequest(poll.method, poll.url, request.headers)

    def with_header(
        self, request: FakeRequest, name: str, value: str
    ) -> FakeRequest:
        if name.lower() in {k.lower() for k, _v in request.headers}:
            return request
        return FakeRequest(
            request.method, request.url, (*request.headers, (name, value))
        )

    def replayable(self, request: FakeRequest) -> str | None:
        self.replay_checks.append(request)
        return self.unreplayable

    def arrived(self, response: FakeResponse, limit: int) -> bytes | None:
        return None  # the fake's bodies come in chunks

    def attach(self, response: FakeResponse, outcome: CallOutcome) -> None:
        response.outcome = outcome

    def prepare(
        self, request: FakeRequest, *, time_left: float | None
    ) -> FakeRequest:
        self.prepared.append(time_left)
        return request

    def chunks(self, response: FakeResponse) -> Iterator[bytes]:
        return response.stream

    def restore(
        self,
        response: FakeResponse,
        head: list[bytes],
        rest: Iterator[bytes] | None,
    ) -> bytes | None:
        response.stream = itertools.chain(head, rest or ())
        return b"".join(head) if rest is None else None

    def close(self, response: FakeResponse) -> None:
        response.closed = True
        self.closed.append(response)


class AsyncFakeExchange(FakeExchange):
    """
    The AsyncExchange twin: its I/O methods are coroutines.
    """

    def __init__(self, unreplayable: str | None = None) -> None:
        super().__init__(unreplayable)
        self.aclosed: list[FakeResponse] = []

    async def prepare(  # type: ignore[override]
        self, request: FakeRequest, *, time_left: float | None
    ) -> FakeRequest:
        self.prepared.append(time_left)
        return request

    def chunks(self, response: FakeResponse) -> AsyncIterator[bytes]:  # type: ignore[override]
        async def arrive() -> AsyncIterator[bytes]:
            for chunk in response.stream:
                yield chunk

        return arrive()

    async def restore(  # type: ignore[override]
        self,
        response: FakeResponse,
        head: list[bytes],
        rest: AsyncIterator[bytes] | None,
    ) -> bytes | None:
        tail = [] if rest is None else [c async for c in rest]
        response.stream = iter([*head, *tail])
        return b"".join(head) if rest is None else None

    async def close(self, response: FakeResponse) -> None:  # type: ignore[override]
        response.closed = True
        self.aclosed.append(response)


class Script:
    """
    A send function serving scripted responses (or raising scripted
    exceptions), recording what was sent.
    """

    def __init__(self, *outcomes: FakeResponse | Exception) -> None:
        self.outcomes = list(outcomes)
        self.sent: list[FakeRequest] = []

    def __call__(self, request: FakeRequest) -> FakeResponse:
        self.sent.append(request)
        got = self.outcomes.pop(0)
        if isinstance(got, Exception):
            raise got
        return got

    async def asend(self, request: FakeRequest) -> FakeResponse:
        return self(request)


class RecordingState(referee.MemoryState):
    """
    The in-memory backend, recording which of its methods were called:
    the blocking ones by name, the async twins with their ``a``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.called: list[str] = []


# Each wrapper calls MemoryState's blocking method directly: its async twins
# call the blocking ones through self, which would record both.
for _name in (
    "check_breakers",
    "acquire",
    "take_retry_token",
    "refund",
    "open_breaker",
    "record_outcome",
    "alert_gate",
):

    def _blocking(self: Any, *args: Any, _name: str = _name) -> Any:
        self.called.append(_name)
        return getattr(referee.MemoryState, _name)(self, *args)

    async def _awaited(self: Any, *args: Any, _name: str = _name) -> Any:
        self.called.append("a" + _name)
        return getattr(referee.MemoryState, _name)(self, *args)

    setattr(RecordingState, _name, _blocking)
    setattr(RecordingState, "a" + _name, _awaited)
del _name


def drive(
    policy: referee.Policy,
    script: Script,
    exchange: FakeExchange | None = None,
    *,
    request: FakeRequest | None = None,
    raise_on_abort: bool = True,
) -> tuple[Any, list[float]]:
    """
    The sync runner over the fake exchange, recording the sleeps it takes.
    """
    slept: list[float] = []
    runner = Runner(
        exchange or FakeExchange(),
        raise_on_abort=raise_on_abort,
        rng=random.Random(0),
        sleep=slept.append,
    )
    return runner.call(policy, request or FakeRequest(), script), slept


def adrive(
    policy: referee.Policy,
    script: Script,
    exchange: AsyncFakeExchange | None = None,
    *,
    request: FakeRequest | None = None,
    raise_on_abort: bool = True,
) -> tuple[Any, list[float]]:
    """
    The async runner over the fake exchange, recording the sleeps it
    takes.
    """
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    runner = AsyncRunner(
        exchange or AsyncFakeExchange(),
        raise_on_abort=raise_on_abort,
        rng=random.Random(0),
        sleep=sleep,
    )
    result = asyncio.run(
        runner.call(policy, request or FakeRequest(), script.asend)
    )
    return result, slept


# --- The sync runner ---------------------------------------------------------


class TestRunner:
    def test_fast_path_returns_the_response_untouched(self, policy):
        """
        A first 200 no rule names is returned as it is: no snapshot, no
        sleep, not closed.
        """
        ok = FakeResponse(200)
        exchange = FakeExchange()

        result, slept = drive(policy, Script(ok), exchange)

        assert result is ok
        assert 0 == exchange.snapshots
        assert [] == exchange.prepared
        assert [] == slept
        assert not ok.closed

    def test_retry_sleeps_and_closes_abandoned(self, policy):
        """
        Two 503s are closed, slept over, and the 200 is returned open.
        """
        first, second, ok = (
            FakeResponse(503),
            FakeResponse(503),
            FakeResponse(200),
        )
        exchange = FakeExchange()

        result, slept = drive(policy, Script(first, second, ok), exchange)

        assert result is ok
        assert [1.0, 2.0] == slept
        assert [first, second] == exchange.closed
        assert not ok.closed

    def test_resend_is_prepared_with_the_time_left(self, policy):
        """
        The first send goes as it is; a re-send is prepared with the
        seconds left before the deadline (the clock moved by the sleep).
        """
        exchange = FakeExchange()

        with no_sleep():
            drive(
                policy, Script(FakeResponse(503), FakeResponse(200)), exchange
            )

        [left] = exchange.prepared
        assert 58.5 < left <= 59.0

    def test_abort_raises_the_error_with_the_trail(self, policy):
        """
        Running out of retries raises the rule's error carrying the last
        response (closed) and the trail.
        """
        last = FakeResponse(503)
        script = Script(FakeResponse(503), FakeResponse(503), last)

        with pytest.raises(ServerError) as ei:
            drive(policy, script)

        err = ei.value
        assert "unavailable" == err.rule_id
        assert 503 == err.status
        assert err.response is last
        assert last.closed
        assert ["retry", "retry", "abort"] == [r.action for r in err.trail]
        assert 3 == len(script.sent)

    @pytest.mark.parametrize(
        "outcomes",
        [
            (FakeResponse(401),),
            (FakeFailure("read"), FakeFailure("read"), FakeFailure("read")),
        ],
        ids=["response", "failure"],
    )
    def test_abort_carries_no_stop_iteration(self, policy, outcomes):
        """
        The error of an abort has no StopIteration anywhere in its chain:
        the flow's end is not what it was raised from.
        """
        with pytest.raises(referee.Aborted) as ei:
            drive(policy, Script(*outcomes))

        assert [] == [
            e for e in chain(ei.value) if isinstance(e, StopIteration)
        ]

    def test_abort_error_carries_the_body_and_the_api_message(self, policy):
        """
        The body read for the error is on exc.body, the API's own message on
        exc.detail and at the end of its text.
        """
        body = b'{"error": {"message": "bad key"}}'
        last = FakeResponse(401, chunks=(body[:10], body[10:]))

        with pytest.raises(AuthenticationError) as ei:
            drive(policy, Script(last))

        assert body == ei.value.body
        assert "bad key" == ei.value.detail
        assert str(ei.value).endswith("the API said: bad key")
        assert last.closed

    def test_broken_error_body_keeps_the_status(self, policy):
        """
        When the body of the response aborted on breaks while it is read,
        the error is still the status's, with no body and no cause.
        """
        last = FakeResponse(401, chunks=(b"{", FakeFailure("read")))

        with pytest.raises(AuthenticationError) as ei:
            drive(policy, Script(last))

        assert (401, None, None) == (
            ei.value.status,
            ei.value.failure,
            ei.value.body,
        )
        assert ei.value.__cause__ is None
        assert last.closed

    def test_abort_returns_the_response_when_asked(self, policy):
        """
        With raise_on_abort=False the last response is returned, its body
        intact, with the outcome attached.
        """
        last = FakeResponse(401, chunks=(b'{"message": ', b'"bad key"}'))

        result, _ = drive(policy, Script(last), raise_on_abort=False)

        assert result is last
        assert not last.closed
        assert b'{"message": "bad key"}' == last.read()
        outcome = last.outcome
        assert isinstance(outcome.decision, Abort)
        assert isinstance(outcome.error, AuthenticationError)
        assert "bad key" == outcome.error.detail
        assert 1 == len(outcome.trail)

    def test_accept_is_attached_when_asked(self, policy):
        """
        With raise_on_abort=False an accept is attached too, with no error.
        """
        ok = FakeResponse(200)

        result, _ = drive(
            policy,
            Script(FakeResponse(503), ok),
            raise_on_abort=False,
        )

        assert result is ok
        assert isinstance(ok.outcome.decision, Accept)
        assert ok.outcome.error is None
        assert 2 == len(ok.outcome.trail)

    def test_poll_sends_the_poll_request(self, policy):
        """
        A poll sends the request the exchange built from the PollRequest,
        with the original headers, and a retry re-sends it.
        """
        original = FakeRequest(
            url="https://api.example.com/start", headers=(("x-api-key", "k"),)
        )
        script = Script(
            FakeResponse(202, {"Location": "/jobs/1"}),
            FakeResponse(503),
            FakeResponse(200),
        )
        exchange = FakeExchange()

        with no_sleep():
            drive(policy, script, exchange, request=original)

        job = FakeRequest(
            "GET", "https://api.example.com/jobs/1", original.headers
        )
        assert [original, job, job] == script.sent
        assert [job, job] == exchange.replay_checks
        assert 2 == len(exchange.closed)

    def test_unreplayable_request_is_not_resent(self, policy):
        """
        A request the exchange cannot send again is sent once and nothing
        is slept; NotReplayable says why and carries the last response,
        released.
        """
        script = Script(FakeResponse(503), FakeResponse(200))
        exchange = FakeExchange(unreplayable="its body was a stream")

        with no_sleep() as slept, pytest.raises(NotReplayable) as ei:
            drive(policy, script, exchange)

        assert 1 == len(script.sent)
        assert [] == slept.delays
        assert "unavailable" == ei.value.rule_id
        assert "its body was a stream" in ei.value.reason
        assert ["abort"] == [r.action for r in ei.value.trail]
        assert 503 == ei.value.response.status
        assert ei.value.response.closed

    def test_first_send_is_not_checked_for_replay(self, policy):
        """
        The first send never asks whether the request can be sent again.
        """
        exchange = FakeExchange(unreplayable="never")

        drive(policy, Script(FakeResponse(418)), exchange)

        assert [] == exchange.replay_checks

    def test_unknown_exception_propagates_untouched(self, policy):
        """
        An exception the exchange does not recognise propagates as the very
        same object, without a retry.
        """
        boom = ValueError("not a transport failure")
        script = Script(boom, FakeResponse(200))

        with pytest.raises(ValueError) as ei:
            drive(policy, script)

        assert ei.value is boom
        assert 1 == len(script.sent)

    def test_unknown_exception_after_a_retry_propagates(self, policy):
        """
        The same holds on a later attempt, and the abandoned response is
        closed.
        """
        boom = KeyError("oops")
        first = FakeResponse(503)
        script = Script(first, boom, FakeResponse(200))

        with pytest.raises(KeyError) as ei:
            drive(policy, script)

        assert ei.value is boom
        assert 2 == len(script.sent)
        assert first.closed

    def test_unmatched_failure_is_reraised(self):
        """
        A transport failure no rule names is re-raised as the client raised
        it.
        """
        pol = referee.load_policy_text(
            "policy: p\nrules:\n  - {id: u, when: {status: 503}, do: retry}\n"
        )
        timeout = FakeFailure("timeout")

        with pytest.raises(FakeFailure) as ei:
            drive(pol, Script(timeout))

        assert ei.value is timeout
        assert ei.value.__cause__ is None

    def test_unmatched_failure_after_a_retry_is_reraised(self, policy):
        """
        After a retry, a failure no rule names is re-raised as it is.
        """
        timeout = FakeFailure("timeout")

        with no_sleep(), pytest.raises(FakeFailure) as ei:
            drive(policy, Script(FakeResponse(503), timeout))

        assert ei.value is timeout

    def test_failure_given_up_on_is_chained(self, policy):
        """
        A failure the policy retries and then gives up on raises a referee
        error chained to the client's last exception.
        """
        last = FakeFailure("read")
        script = Script(FakeFailure("read"), FakeFailure("connect"), last)

        with pytest.raises(RetriesExhausted) as ei:
            drive(policy, script)

        assert ei.value.__cause__ is last
        assert "read" == ei.value.failure
        assert ei.value.response is None
        assert ["read", "connect", "read"] == [
            r.failure for r in ei.value.trail
        ]

    def test_failure_then_response(self, policy):
        """
        A failure that is retried, then a 200: the 200 is returned.
        """
        ok = FakeResponse(200)

        result, slept = drive(policy, Script(FakeFailure("connect"), ok))

        assert result is ok
        assert [1.0] == slept

    def test_no_sleep_records_the_sleeps(self, policy):
        """
        Under no_sleep the runner's sleep function is never called; the
        delays are recorded.
        """
        with no_sleep() as recorder:
            _, slept = drive(
                policy,
                Script(
                    FakeResponse(503), FakeResponse(503), FakeResponse(200)
                ),
            )

        assert [] == slept
        assert [1.0, 2.0] == recorder.delays


class TestRunnerBodies:
    @pytest.fixture
    def bodies(self) -> referee.Policy:
        return referee.load_policy_text(BODIES)

    def test_body_read_to_decide_is_given_back(self, bodies):
        """
        A body read for a body rule is decided on and handed back whole.
        """
        ok = FakeResponse(200, chunks=(b'{"state": ', b'"done"}'))

        result, slept = drive(bodies, Script(ok))

        assert result is ok
        assert [] == slept
        assert b'{"state": "done"}' == ok.read()

    def test_body_decides(self, bodies):
        """
        A body that says the job is running is polled.
        """
        running = FakeResponse(200, chunks=(b'{"state": "ongoing"}',))
        done = FakeResponse(200, chunks=(b'{"state": "done"}',))

        result, slept = drive(bodies, Script(running, done))

        assert result is done
        assert running.closed
        assert 1 == len(slept)

    def test_body_over_the_limit_is_given_back_unparsed(self, bodies):
        """
        A body longer than body_limit is read no further than the limit
        (and a chunk), not decided on, and handed back whole.
        """
        chunks = (
            b'{"state": "ongoing", "pad": "',
            b"x" * 1000,
            b"x" * 1000,
            b'"}',
        )
        big = FakeResponse(200, chunks=chunks)

        result, _ = drive(bodies, Script(big))

        assert result is big
        assert b"".join(chunks) == big.read()

    def test_body_read_stops_short_of_what_it_does_not_need(self, bodies):
        """
        The read for a decision pulls no chunk beyond the body limit.
        """
        big = FakeResponse(
            200, chunks=(b"x" * 600, b"x" * 600, FakeFailure("read"))
        )

        result, _ = drive(bodies, Script(big))

        assert result is big
        assert 2 == big.pulled

    def test_broken_body_is_decided_as_a_read_failure(self, bodies):
        """
        A body whose read breaks is decided as a read failure: retried, the
        broken response closed.
        """
        broken = FakeResponse(200, chunks=(b"{", FakeFailure("read")))
        ok = FakeResponse(200, chunks=(b"{}",))

        result, slept = drive(bodies, Script(broken, ok))

        assert result is ok
        assert broken.closed
        assert [1.0] == slept

    def test_event_stream_read_stops_at_the_first_event(self, bodies):
        """
        A rule that opts in to event streams is decided on the first event,
        read no further; the stream is handed back whole.
        """
        events = (b'data: {"type": "error"}\n\n', b"data: more\n\n")
        stream = FakeResponse(
            200, {"content-type": "text/event-stream"}, chunks=events
        )

        result, _ = drive(bodies, Script(stream), raise_on_abort=False)

        assert 1 == stream.pulled
        assert result is stream
        assert "stream-error" == stream.outcome.decision.rule_id
        assert b"".join(events) == stream.read()

    def test_deadline_cuts_the_read_to_decide(self, bodies):
        """
        A body still arriving at the deadline is not waited for: the call
        ends with an error, never with no response at all.
        """

        def drip() -> Iterator[bytes | Exception]:
            yield b'{"state": '
            clock.skip(120.0)  # the runner's clock passes the deadline
            yield b'"ongoing"}'

        slow = FakeResponse(200)
        slow.stream = iter(drip())

        with no_sleep(), pytest.raises((referee.RefereeError, TimeoutError)):
            drive(bodies, Script(slow))


class TestRunnerState:
    def test_open_breaker_stops_the_next_call(self):
        """
        A breaker a rule opened stops the next call with CircuitOpen:
        nothing sent, and nothing in the error's chain.
        """
        policy = referee.load_policy_text(STATEFUL)
        script = Script(FakeResponse(402), FakeResponse(200))

        with pytest.raises(InsufficientCredits):
            drive(policy, script)
        with pytest.raises(CircuitOpen) as ei:
            drive(policy, script)

        assert 1 == len(script.sent)
        assert "out-of-credits" == ei.value.rule_id
        assert ei.value.response is None
        assert [] == chain(ei.value)

    def test_no_runtime_no_state_trouble(self, logs):
        """
        A policy with no state attached retries without a state operation,
        so no state failure is logged.
        """
        policy = attrs.evolve(referee.load_policy_text(STATEFUL), runtime=None)
        ok = FakeResponse(200)

        result, _ = drive(policy, Script(FakeResponse(503), ok))

        assert result is ok
        assert [] == [e for e in logs if e["event"] == "referee.state_failed"]

    def test_sync_runner_uses_the_blocking_methods(self):
        """
        The sync runner answers state operations with the backend's
        blocking methods.
        """
        state = RecordingState()
        policy = referee.load_policy_text(STATEFUL, state=state)

        with no_sleep():
            drive(policy, Script(FakeResponse(503), FakeResponse(200)))
            with pytest.raises(InsufficientCredits):
                drive(policy, Script(FakeResponse(402)))

        assert [
            "acquire",
            "check_breakers",
            "open_breaker",
            "record_outcome",
            "refund",
            "take_retry_token",
        ] == sorted(set(state.called))

    def test_async_runner_awaits_the_async_methods(self):
        """
        The async runner answers state operations with the backend's async
        twins only.
        """
        state = RecordingState()
        policy = referee.load_policy_text(STATEFUL, state=state)

        with no_sleep():
            adrive(policy, Script(FakeResponse(503), FakeResponse(200)))
            with pytest.raises(InsufficientCredits):
                adrive(policy, Script(FakeResponse(402)))

        assert [
            "aacquire",
            "acheck_breakers",
            "aopen_breaker",
            "arecord_outcome",
            "arefund",
            "atake_retry_token",
        ] == sorted(set(state.called))


# --- The async runner ---------------------------------------------------------


class TestAsyncRunner:
    def test_fast_path_returns_the_response_untouched(self, policy):
        """
        A first 200 no rule names is returned as it is, with no snapshot.
        """
        ok = FakeResponse(200)
        exchange = AsyncFakeExchange()

        result, slept = adrive(policy, Script(ok), exchange)

        assert result is ok
        assert 0 == exchange.snapshots
        assert [] == slept

    def test_retry_closes_with_the_async_close(self, policy):
        """
        The async runner closes abandoned responses with the exchange's
        coroutine.
        """
        first, ok = FakeResponse(503), FakeResponse(200)
        exchange = AsyncFakeExchange()

        result, slept = adrive(policy, Script(first, ok), exchange)

        assert result is ok
        assert [1.0] == slept
        assert [first] == exchange.aclosed
        assert [] == exchange.closed
        assert not ok.closed

    def test_abort_raises(self, policy):
        """
        An abort raises the policy's error, with no StopIteration or
        StopAsyncIteration in its chain.
        """
        with pytest.raises(AuthenticationError) as ei:
            adrive(policy, Script(FakeResponse(401, chunks=(b"{}",))))

        assert "unauthorized" == ei.value.rule_id
        assert [] == [
            e
            for e in chain(ei.value)
            if isinstance(e, StopIteration | StopAsyncIteration)
        ]

    def test_abort_error_carries_the_body_and_the_api_message(self, policy):
        """
        The body read for the error is on exc.body, the API's message on
        exc.detail.
        """
        body = b'{"detail": "key revoked"}'
        last = FakeResponse(401, chunks=(body,))

        with pytest.raises(AuthenticationError) as ei:
            adrive(policy, Script(last))

        assert body == ei.value.body
        assert "key revoked" == ei.value.detail
        assert last.closed

    def test_abort_returns_the_response_when_asked(self, policy):
        """
        With raise_on_abort=False the last response is returned with the
        outcome attached, its body intact.
        """
        last = FakeResponse(401, chunks=(b'{"message": "no"}',))

        result, _ = adrive(policy, Script(last), raise_on_abort=False)

        assert result is last
        assert isinstance(last.outcome.error, AuthenticationError)
        assert b'{"message": "no"}' == last.read()

    def test_unknown_exception_propagates_untouched(self, policy):
        """
        An exception the exchange does not recognise propagates as is.
        """
        boom = RuntimeError("boom")
        script = Script(FakeResponse(503), boom)

        with pytest.raises(RuntimeError) as ei:
            adrive(policy, script)

        assert ei.value is boom
        assert 2 == len(script.sent)

    def test_failure_given_up_on_is_chained(self, policy):
        """
        Running out of retries on failures chains the referee error to the
        client's last exception.
        """
        last = FakeFailure("connect")
        script = Script(FakeFailure("connect"), FakeFailure("connect"), last)

        with pytest.raises(RetriesExhausted) as ei:
            adrive(policy, script)

        assert ei.value.__cause__ is last

    def test_no_sleep_records_the_sleeps(self, policy):
        """
        Under no_sleep the async runner records its delays instead of
        awaiting its sleep.
        """
        with no_sleep() as recorder:
            _, slept = adrive(
                policy, Script(FakeResponse(503), FakeResponse(200))
            )

        assert [] == slept
        assert [1.0] == recorder.delays

    def test_resend_past_the_deadline_is_cut(self):
        """
        A re-send still unanswered when the call's time runs out is cut,
        and the call ends with an error, never with no response at all.
        """
        policy = referee.load_policy_text(
            "policy: p\n"
            "defaults:\n"
            "  retry: {backoff: {initial: 10ms, jitter: none}}\n"
            "  deadline: 200ms\n"
            "rules:\n"
            "  - {id: unavailable, when: {status: 503}, do: retry}\n"
        )
        sent: list[FakeRequest] = []

        async def send(request: FakeRequest) -> FakeResponse:
            sent.append(request)
            if len(sent) == 1:
                return FakeResponse(503)
            await asyncio.sleep(5)
            return FakeResponse(200)

        async def go() -> Any:
            runner = AsyncRunner(AsyncFakeExchange(), sleep=asyncio.sleep)
            return await runner.call(policy, FakeRequest(), send)

        with pytest.raises((referee.RefereeError, TimeoutError)):
            asyncio.run(go())

        assert 2 == len(sent)


# --- Decision events ------------------------------------------------------------


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    with no_sleep(), structlog.testing.capture_logs() as captured:
        yield captured


class TestDecisionEvents:
    def test_plain_200_logs_nothing(self, policy, logs):
        """
        A plain first-try 200 logs no decision.
        """
        drive(policy, Script(FakeResponse(200)))

        assert [] == logs

    def test_one_event_per_retry_and_one_for_the_end(self, policy, logs):
        """
        Two retries and an accept make three events, with every field.
        """
        script = Script(
            FakeResponse(503), FakeResponse(503), FakeResponse(200)
        )

        drive(policy, script, request=FakeRequest(url=URL + "?q=1"))

        events = decisions(logs)
        assert [
            ("unavailable", "retry", 503, 1, 1.0, "info"),
            ("unavailable", "retry", 503, 2, 2.0, "info"),
            (None, "accept", 200, 3, None, "info"),
        ] == [
            (
                e["rule"],
                e["action"],
                e["status"],
                e["attempt"],
                e["delay"],
                e["log_level"],
            )
            for e in events
        ]
        first = events[0]
        assert {
            "event",
            "log_level",
            "policy",
            "rule",
            "action",
            "method",
            "url",
            "status",
            "failure",
            "attempt",
            "delay",
            "elapsed",
            "reason",
            "alert",
        } == set(first)
        assert first["alert"] is None
        assert "unit" == first["policy"]
        assert "GET" == first["method"]
        assert URL + "?q=1" == first["url"]
        assert first["failure"] is None
        assert "503" in first["reason"]
        # The clock moves by the sleeps skipped under no_sleep.
        assert events[1]["elapsed"] >= 1.0
        assert events[2]["elapsed"] >= 3.0

    def test_poll_events(self, policy, logs):
        """
        A poll is logged as a poll with its delay, then the accept.
        """
        script = Script(
            FakeResponse(202, {"Location": "/jobs/1"}), FakeResponse(200)
        )

        drive(
            policy,
            script,
            request=FakeRequest(url="https://api.example.com/start"),
        )

        assert [("accepted", "poll", 5.0), (None, "accept", None)] == [
            (e["rule"], e["action"], e["delay"]) for e in decisions(logs)
        ]
        assert "https://api.example.com/jobs/1" == script.sent[1].url

    def test_failure_event(self, policy, logs):
        """
        A transport failure is logged with its word and no status.
        """
        drive(policy, Script(FakeFailure("read"), FakeResponse(200)))

        first = decisions(logs)[0]
        assert ("broken", "retry", "read", None) == (
            first["rule"],
            first["action"],
            first["failure"],
            first["status"],
        )

    def test_abort_logs_a_warning(self, policy, logs):
        """
        An abort is logged at warning.
        """
        with pytest.raises(AuthenticationError):
            drive(policy, Script(FakeResponse(401)))

        [event] = decisions(logs)
        assert ("abort", "warning", "unauthorized") == (
            event["action"],
            event["log_level"],
            event["rule"],
        )

    @pytest.mark.parametrize(
        ("status", "action"),
        [(418, "accept"), (410, "abort")],
        ids=["accept", "abort"],
    )
    def test_rule_log_level(self, policy, logs, status, action):
        """
        A rule with log: debug is logged at debug, even an abort.
        """
        with contextlib.suppress(referee.Aborted):
            drive(policy, Script(FakeResponse(status)))

        [event] = decisions(logs)
        assert (action, "debug") == (event["action"], event["log_level"])

    def test_first_try_accept_by_a_rule_is_logged(self, policy, logs):
        """
        An accept by a rule is not plain: it is logged even on the first
        try.
        """
        drive(policy, Script(FakeResponse(418)))

        assert ["teapot"] == [e["rule"] for e in decisions(logs)]

    def test_circuit_open_is_logged_as_not_sent(self, logs):
        """
        A call an open breaker stops is logged as an abort with sent=False.
        """
        policy = referee.load_policy_text(STATEFUL)
        with pytest.raises(InsufficientCredits):
            drive(policy, Script(FakeResponse(402)))

        with pytest.raises(CircuitOpen):
            drive(policy, Script())

        last = decisions(logs)[-1]
        assert ("abort", False, None) == (
            last["action"],
            last["sent"],
            last["status"],
        )

    def test_secret_query_is_redacted(self, policy, logs):
        """
        The URL of an event has its credentials masked.
        """
        drive(
            policy,
            Script(FakeResponse(503), FakeResponse(200)),
            request=FakeRequest(url=URL + "?api_key=SECRET&q=1"),
        )

        assert [URL + "?api_key=REDACTED&q=1"] * 2 == [
            e["url"] for e in decisions(logs)
        ]


# --- httpx's failure words ---------------------------------------------------------


class TestHttpxFailureWord:
    # Kept from the old tests/test_drivers.py, which ran these through the
    # httpx transport: the mapping is the httpx adapter's translation, a
    # pure function, and tests/test_adapter_httpx.py covers only some of it.
    @pytest.mark.parametrize(
        ("exc", "word"),
        [
            ("ConnectError", "connect"),
            ("ConnectTimeout", "connect"),
            ("PoolTimeout", "connect"),
            ("ReadTimeout", "timeout"),
            ("WriteTimeout", "timeout"),
            ("ReadError", "read"),
            ("WriteError", "read"),
            ("RemoteProtocolError", "protocol"),
            ("LocalProtocolError", "protocol"),
        ],
    )
    def test_failure_words(self, exc, word):
        """
        Each httpx transport exception maps to its portable word.
        """
        import httpx

        from referee.httpx import failure_word

        assert word == failure_word(getattr(httpx, exc)("x"))

    def test_hang_up_is_a_read(self):
        """
        A server that hangs up before answering is a broken read, though
        httpx calls it a protocol error.
        """
        import httpx

        from referee.httpx import failure_word

        exc = httpx.RemoteProtocolError(
            "Server disconnected without sending a response."
        )

        assert "read" == failure_word(exc)

    def test_other_exceptions_are_not_failures(self):
        """
        An exception that is no httpx transport failure has no word: it
        propagates untouched.
        """
        from referee.httpx import failure_word

        assert failure_word(ValueError("bug in a hook")) is None


class TestAsyncSendBound:
    """
    The async runner bounds every send by the time the call has left, and
    tells its own timer from anyone else's cancellation.
    """

    POLICY = """
policy: bound
defaults: {deadline: 200ms}
rules: []
"""

    def test_a_send_past_the_deadline_ends_the_call(self):
        """
        A first send that never answers ends with DeadlineExceeded at the
        deadline: the runner's timer cut it.
        """
        policy = referee.load_policy_text(self.POLICY)
        runner = AsyncRunner(AsyncFakeExchange(), rng=random.Random(0))

        async def never(request: FakeRequest) -> FakeResponse:
            await asyncio.sleep(30)
            raise AssertionError  # pragma: no cover

        with pytest.raises(referee.DeadlineExceeded):
            asyncio.run(
                asyncio.wait_for(runner.call(policy, FakeRequest(), never), 5)
            )

    def test_someone_elses_cancel_is_not_a_timeout(self):
        """
        A task cancelled from outside while its send waits is cancelled:
        the runner lets the CancelledError through, and its timer does
        not fire later.
        """
        policy = referee.load_policy_text(self.POLICY.replace("200ms", "10s"))
        runner = AsyncRunner(AsyncFakeExchange(), rng=random.Random(0))

        async def slow(request: FakeRequest) -> FakeResponse:
            await asyncio.sleep(30)
            raise AssertionError  # pragma: no cover

        async def main() -> tuple[bool, int]:
            task = asyncio.create_task(
                runner.call(policy, FakeRequest(), slow)
            )
            await asyncio.sleep(0.05)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                return True, task.cancelling()
            return False, task.cancelling()  # pragma: no cover

        assert (True, 1) == asyncio.run(main())
