"""
The attempt loop and its drivers, at unit level: the sans-I/O flow driven by
hand, the sync and async drivers over a hand-written fake exchange, and the
httpx transport over httpx.MockTransport (no sockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import pytest
import structlog

import referee
from referee import (
    Abort,
    Accept,
    AuthenticationError,
    Poll,
    PollRequest,
    RetriesExhausted,
    Retry,
    ServerError,
    Snapshot,
)
from referee._core.flow import Finished, Observed, Send, Sleep, call_flow
from referee._run.drivers import CallOutcome, run_async, run_sync
from referee.httpx import PolicyTransport
from referee.testing import no_sleep


if TYPE_CHECKING:
    from collections.abc import Iterator


URL = "https://api.example.com/jobs"

# Retries 503 (and read failures) with delays of exactly 1, 2, 4 s;
# polls a 202 at the URL of its Location header, 5 s apart; aborts on 401
# (logged at error) and a 418 is accepted by a rule that logs at debug.
POLICY_TEXT = """
policy: unit
defaults:
  retry: {attempts: 3, backoff: {initial: 1s, multiplier: 2, max: 8s, jitter: none}}
  poll: {initial: 5s, multiplier: 1, max: 5s, deadline: 1m}
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


@pytest.fixture
def policy() -> referee.Policy:
    return referee.load_policy_text(POLICY_TEXT)


def decisions(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "referee.decision"]


# --- A fake exchange ----------------------------------------------------------


@attrs.frozen
class FakeRequest:
    method: str = "GET"
    url: str = URL
    headers: tuple[tuple[str, str], ...] = ()


class FakeResponse:
    def __init__(
        self,
        status: int,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> None:
        self.status = status
        self.headers = headers or {}
        self.body = body
        self.closed = False

    def __repr__(self) -> str:
        return f"FakeResponse({self.status})"


class FakeFailure(Exception):
    """
    A transport failure of the fake client, carrying its portable word.
    """

    def __init__(self, word: str) -> None:
        super().__init__(word)
        self.word = word


class FakeExchange:
    """
    A hand-written Exchange (and AsyncExchange) over the fake types.
    """

    def __init__(self, unreplayable: str | None = None) -> None:
        self.unreplayable = unreplayable
        self.closed: list[FakeResponse] = []
        self.aclosed: list[FakeResponse] = []
        self.replay_checks: list[FakeRequest] = []

    def snapshot(
        self, request: FakeRequest, response: FakeResponse
    ) -> Snapshot:
        return Snapshot.response(
            response.status,
            method=request.method,
            url=request.url,
            headers=response.headers,
            request_headers=dict(request.headers),
            body=response.body,
        )

    def failure(self, exc: BaseException) -> str | None:
        return exc.word if isinstance(exc, FakeFailure) else None

    def method_url(self, request: FakeRequest) -> tuple[str, str]:
        return request.method, request.url

    def poll_request(
        self, request: FakeRequest, poll: PollRequest
    ) -> FakeRequest:
        return FakeRequest(poll.method, poll.url, request.headers)

    def replayable(self, request: FakeRequest) -> str | None:
        self.replay_checks.append(request)
        return self.unreplayable

    def close(self, response: FakeResponse) -> None:
        response.closed = True
        self.closed.append(response)

    async def aclose(self, response: FakeResponse) -> None:
        response.closed = True
        self.aclosed.append(response)


class Script:
    """
    A send function serving scripted responses (or raising scripted
    exceptions), recording what was sent.
    """

    def __init__(self, *outcomes: FakeResponse | BaseException) -> None:
        self.outcomes = list(outcomes)
        self.sent: list[FakeRequest] = []

    def __call__(self, request: FakeRequest) -> FakeResponse:
        self.sent.append(request)
        got = self.outcomes.pop(0)
        if isinstance(got, BaseException):
            raise got
        return got

    async def asend(self, request: FakeRequest) -> FakeResponse:
        return self(request)


def drive(
    policy: referee.Policy,
    script: Script,
    exchange: FakeExchange | None = None,
    *,
    request: FakeRequest | None = None,
    **kwargs: Any,
) -> Any:
    """
    run_sync over the fake exchange, recording the sleeps it asks for.
    """
    slept: list[float] = []
    result = run_sync(
        policy,
        request or FakeRequest(),
        script,
        exchange or FakeExchange(),
        rng=random.Random(0),
        sleep=slept.append,
        **kwargs,
    )
    return result, slept


# --- The flow, by hand --------------------------------------------------------


class TestCallFlow:
    def test_retry_then_accept(self, policy):
        """
        Send, Observed, Sleep, Send, Observed: the flow returns Finished with
        the trail and the state.
        """
        flow = call_flow(policy, started=100.0, rng=random.Random(0))

        first = next(flow)
        sleep = flow.send(Observed(Snapshot.response(503, url=URL), 100.0))
        second = next(flow)
        with pytest.raises(StopIteration) as stop:
            flow.send(Observed(Snapshot.response(200, url=URL), 101.0))

        assert Send(None, 1, 0) == first
        assert isinstance(sleep, Sleep)
        assert 1.0 == sleep.seconds
        assert isinstance(sleep.decision, Retry)
        assert "unavailable" == sleep.decision.rule_id
        assert 2 == sleep.state.attempt
        assert Send(None, 2, 0) == second
        finished = stop.value.value
        assert isinstance(finished, Finished)
        assert isinstance(finished.decision, Accept)
        assert 200 == finished.snap.status
        assert 2 == finished.state.attempt
        assert 100.0 == finished.state.started
        assert [
            (503, "unavailable", "retry", 1.0, 100.0),
            (200, None, "accept", None, 101.0),
        ] == [
            (r.status, r.rule_id, r.action, r.delay, r.at)
            for r in finished.state.history
        ]

    def test_abort_finishes_at_once(self, policy):
        """
        An abort on the first send finishes without a Sleep.
        """
        flow = call_flow(policy, started=0.0)
        next(flow)

        with pytest.raises(StopIteration) as stop:
            flow.send(Observed(Snapshot.response(401, url=URL), 0.0))

        finished = stop.value.value
        assert isinstance(finished.decision, Abort)
        assert AuthenticationError is finished.decision.error
        assert ["abort"] == [r.action for r in finished.state.history]

    def test_retries_run_out(self, policy):
        """
        Three 503s: two Sleeps with the backoff delays, then an Abort.
        """
        flow = call_flow(policy, started=0.0)
        actions = [next(flow)]
        now = 0.0
        finished = None
        while finished is None:
            try:
                action = flow.send(Observed(Snapshot.response(503), now))
            except StopIteration as stop:
                finished = stop.value
                break
            actions.append(action)
            now += action.seconds
            actions.append(next(flow))

        assert [
            Send(None, 1, 0),
            1.0,
            Send(None, 2, 0),
            2.0,
            Send(None, 3, 0),
        ] == [a.seconds if isinstance(a, Sleep) else a for a in actions]
        assert isinstance(finished.decision, Abort)
        assert ServerError is finished.decision.error

    def test_poll_resends_the_poll_request(self, policy):
        """
        A poll asks for its PollRequest to be sent, and a retry after the
        poll sends the poll request again, not the original.
        """
        flow = call_flow(policy, started=0.0)
        started = "https://api.example.com/start"
        job = PollRequest("GET", "https://api.example.com/jobs/1")

        first = next(flow)
        poll = flow.send(
            Observed(
                Snapshot.response(
                    202, url=started, headers={"Location": "/jobs/1"}
                ),
                0.0,
            )
        )
        second = next(flow)
        retry = flow.send(Observed(Snapshot.response(503, url=job.url), 5.0))
        third = next(flow)
        with pytest.raises(StopIteration) as stop:
            flow.send(Observed(Snapshot.response(200, url=job.url), 6.0))

        assert Send(None, 1, 0) == first
        assert isinstance(poll.decision, Poll)
        assert job == poll.decision.request
        assert 5.0 == poll.seconds
        assert Send(job, 1, 1) == second
        assert isinstance(retry.decision, Retry)
        assert Send(job, 2, 1) == third
        finished = stop.value.value
        assert ["poll", "retry", "accept"] == [
            r.action for r in finished.state.history
        ]
        assert 1 == finished.state.polls
        assert 0.0 == finished.state.poll_started

    def test_send_must_be_answered(self, policy):
        """
        Answering a Send with None is a driver bug: TypeError.
        """
        flow = call_flow(policy, started=0.0)
        next(flow)

        with pytest.raises(TypeError, match="Observed"):
            flow.send(None)


# --- The sync driver ----------------------------------------------------------


class TestRunSync:
    def test_plain_accept_returns_the_response(self, policy):
        """
        A 200 on the first send is returned as it is, without a sleep.
        """
        ok = FakeResponse(200)

        result, slept = drive(policy, Script(ok))

        assert result is ok
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

    def test_abort_raises_the_error_with_the_trail(self, policy):
        """
        Running out of retries raises the rule's error carrying the last
        response and the trail.
        """
        last = FakeResponse(503)
        script = Script(FakeResponse(503), FakeResponse(503), last)

        with pytest.raises(ServerError) as ei:
            drive(policy, script)

        err = ei.value
        assert "unavailable" == err.rule_id
        assert 503 == err.status
        assert err.response is last
        assert ["retry", "retry", "abort"] == [r.action for r in err.trail]
        assert 3 == len(script.sent)

    def test_abort_returns_the_response_when_asked(self, policy):
        """
        With raise_on_abort=False the last response is returned and
        on_finish gets the outcome.
        """
        last = FakeResponse(401)
        seen: list[tuple[Any, CallOutcome]] = []

        result, _ = drive(
            policy,
            Script(last),
            raise_on_abort=False,
            on_finish=lambda r, o: seen.append((r, o)),
        )

        assert result is last
        [(response, outcome)] = seen
        assert response is last
        assert isinstance(outcome.decision, Abort)
        assert isinstance(outcome.error, AuthenticationError)
        assert 1 == len(outcome.trail)

    def test_on_finish_gets_an_accept(self, policy):
        """
        on_finish also hears of an accept, with no error.
        """
        seen: list[CallOutcome] = []

        drive(
            policy,
            Script(FakeResponse(503), FakeResponse(200)),
            raise_on_abort=False,
            on_finish=lambda r, o: seen.append(o),
        )

        [outcome] = seen
        assert isinstance(outcome.decision, Accept)
        assert outcome.error is None
        assert 2 == len(outcome.trail)

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

        drive(policy, script, exchange, request=original)

        job = FakeRequest(
            "GET", "https://api.example.com/jobs/1", original.headers
        )
        assert [original, job, job] == script.sent
        assert [job, job] == exchange.replay_checks
        assert 2 == len(exchange.closed)

    def test_unreplayable_request_is_not_resent(self, policy):
        """
        A request the exchange cannot replay is sent once and nothing is
        slept; the error says why and carries the last response.
        """
        script = Script(FakeResponse(503), FakeResponse(200))
        exchange = FakeExchange(unreplayable="its body was a stream")

        with no_sleep() as slept, pytest.raises(ServerError) as ei:
            drive(policy, script, exchange)

        assert 1 == len(script.sent)
        assert [] == slept.delays
        assert "its body was a stream" in ei.value.reason
        assert ["abort"] == [r.action for r in ei.value.trail]
        assert 503 == ei.value.response.status
        # The error carries the response, released: its connection is
        # back in the pool before the caller catches the error.
        assert ei.value.response.closed

    def test_first_send_is_not_checked_for_replay(self, policy):
        """
        The first send never asks whether the request can be replayed.
        """
        exchange = FakeExchange(unreplayable="never")

        drive(policy, Script(FakeResponse(200)), exchange)

        assert [] == exchange.replay_checks

    def test_unknown_exception_propagates_untouched(self, policy):
        """
        An exception the exchange does not recognize propagates as the very
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
        A transport failure no rule accepts is re-raised as the original
        exception.
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

        with pytest.raises(FakeFailure) as ei:
            drive(policy, Script(FakeResponse(503), timeout))

        assert ei.value is timeout

    def test_failure_given_up_on_is_chained(self, policy):
        """
        A failure the policy handles and then gives up on raises a referee
        error chained to the original exception.
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

    def test_no_sleep_skips_the_sleep_function(self, policy):
        """
        Under no_sleep the driver's sleep function is never called.
        """
        with no_sleep() as recorder:
            _, slept = drive(
                policy, Script(FakeResponse(503), FakeResponse(200))
            )

        assert [] == slept
        assert [1.0] == recorder.delays


# --- The async driver ---------------------------------------------------------


class TestRunAsync:
    def run(
        self,
        policy: referee.Policy,
        script: Script,
        exchange: FakeExchange,
        **kwargs: Any,
    ) -> tuple[Any, list[float]]:
        slept: list[float] = []

        async def sleep(seconds: float) -> None:
            slept.append(seconds)

        result = asyncio.run(
            run_async(
                policy,
                FakeRequest(),
                script.asend,
                exchange,
                rng=random.Random(0),
                sleep=sleep,
                **kwargs,
            )
        )
        return result, slept

    def test_retry_closes_with_aclose(self, policy):
        """
        The async driver closes abandoned responses with aclose, not close.
        """
        first, ok = FakeResponse(503), FakeResponse(200)
        exchange = FakeExchange()

        result, slept = self.run(policy, Script(first, ok), exchange)

        assert result is ok
        assert [1.0] == slept
        assert [first] == exchange.aclosed
        assert [] == exchange.closed
        assert not ok.closed

    def test_abort_raises(self, policy):
        """
        An abort raises the policy's error, as in the sync driver.
        """
        with pytest.raises(AuthenticationError) as ei:
            self.run(policy, Script(FakeResponse(401)), FakeExchange())

        assert "unauthorized" == ei.value.rule_id

    def test_unknown_exception_propagates_untouched(self, policy):
        """
        An exception the exchange does not recognize propagates as is.
        """
        boom = RuntimeError("boom")
        script = Script(FakeResponse(503), boom)

        with pytest.raises(RuntimeError) as ei:
            self.run(policy, script, FakeExchange())

        assert ei.value is boom
        assert 2 == len(script.sent)

    def test_failure_given_up_on_is_chained(self, policy):
        """
        Running out of retries on failures chains the referee error to the
        last one.
        """
        last = FakeFailure("connect")
        script = Script(FakeFailure("connect"), FakeFailure("connect"), last)

        with pytest.raises(RetriesExhausted) as ei:
            self.run(policy, script, FakeExchange())

        assert ei.value.__cause__ is last


# --- Decision events ----------------------------------------------------------


def mock_transport(
    policy: referee.Policy, *responses: httpx.Response | Exception
) -> tuple[PolicyTransport, list[httpx.Request]]:
    """
    A PolicyTransport over a MockTransport serving *responses* in order.
    """
    queue = list(responses)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        got = queue.pop(0)
        if isinstance(got, Exception):
            raise got
        return got

    return (
        PolicyTransport(
            policy, httpx.MockTransport(handler), rng=random.Random(0)
        ),
        seen,
    )


def call(
    transport: PolicyTransport, method: str = "GET", url: str = URL
) -> httpx.Response:
    with httpx.Client(transport=transport) as client:
        return client.request(method, url)


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    with no_sleep(), structlog.testing.capture_logs() as captured:
        yield captured


class TestDecisionEvents:
    def test_plain_200_logs_nothing(self, policy, logs):
        """
        A plain first-try 200 logs no decision.
        """
        transport, _ = mock_transport(policy, httpx.Response(200))

        call(transport)

        assert [] == logs

    def test_one_event_per_retry_and_one_for_the_end(self, policy, logs):
        """
        Two retries and an accept make three events, with every field.
        """
        transport, _ = mock_transport(
            policy,
            httpx.Response(503),
            httpx.Response(503),
            httpx.Response(200),
        )

        call(transport, url=URL + "?q=1")

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
        assert isinstance(first["reason"], str)
        assert "503" in first["reason"]
        # The clock moves by the sleeps skipped under no_sleep.
        assert [True, True, True] == [
            isinstance(e["elapsed"], float) for e in events
        ]
        assert events[1]["elapsed"] >= 1.0
        assert events[2]["elapsed"] >= 3.0

    def test_poll_events(self, policy, logs):
        """
        A poll is logged as a poll with its delay, then the accept.
        """
        transport, seen = mock_transport(
            policy,
            httpx.Response(202, headers={"Location": "/jobs/1"}),
            httpx.Response(200),
        )

        call(transport, url="https://api.example.com/start")

        assert [("accepted", "poll", 5.0), (None, "accept", None)] == [
            (e["rule"], e["action"], e["delay"]) for e in decisions(logs)
        ]
        assert "https://api.example.com/jobs/1" == str(seen[1].url)

    def test_failure_event(self, policy, logs):
        """
        A transport failure is logged with its word and no status.
        """
        transport, _ = mock_transport(
            policy, httpx.ReadError("broken"), httpx.Response(200)
        )

        call(transport)

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
        transport, _ = mock_transport(policy, httpx.Response(401))

        with pytest.raises(AuthenticationError):
            call(transport)

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
        transport, _ = mock_transport(policy, httpx.Response(status))

        with contextlib.suppress(referee.Aborted):
            call(transport)

        [event] = decisions(logs)
        assert (action, "debug") == (event["action"], event["log_level"])

    def test_first_try_accept_by_a_rule_is_logged(self, policy, logs):
        """
        An accept by a rule is not plain: it is logged even on the first
        try.
        """
        transport, _ = mock_transport(policy, httpx.Response(418))

        call(transport)

        assert ["teapot"] == [e["rule"] for e in decisions(logs)]

    def test_secret_query_is_redacted(self, policy, logs):
        """
        The URL of an event has its credentials masked.
        """
        transport, _ = mock_transport(
            policy, httpx.Response(503), httpx.Response(200)
        )

        call(transport, url=URL + "?api_key=SECRET&q=1")

        assert [URL + "?api_key=REDACTED&q=1"] * 2 == [
            e["url"] for e in decisions(logs)
        ]


# --- The transport over MockTransport -----------------------------------------


class TestPolicyTransportUnit:
    def test_unknown_exception_propagates_untouched(self, policy):
        """
        An exception that is no httpx transport failure propagates as the
        same object, without a retry.
        """
        boom = ValueError("bug in a hook")
        transport, seen = mock_transport(policy, boom, httpx.Response(200))

        with no_sleep(), pytest.raises(ValueError) as ei:
            call(transport)

        assert ei.value is boom
        assert 1 == len(seen)

    def test_unknown_exception_on_a_retry_propagates(self, policy):
        """
        The same exception on a later attempt also propagates untouched.
        """
        boom = ValueError("bug in a hook")
        transport, seen = mock_transport(
            policy, httpx.Response(503), boom, httpx.Response(200)
        )

        with no_sleep(), pytest.raises(ValueError) as ei:
            call(transport)

        assert ei.value is boom
        assert 2 == len(seen)

    def test_unmatched_failure_is_reraised(self, policy):
        """
        A timeout the policy names nowhere is re-raised as httpx raised it.
        """
        timeout = httpx.ReadTimeout("slow")
        transport, seen = mock_transport(policy, timeout)

        with no_sleep(), pytest.raises(httpx.ReadTimeout) as ei:
            call(transport)

        assert ei.value is timeout
        assert 1 == len(seen)

    def test_unmatched_failure_after_retry_is_reraised(self, policy):
        """
        After a retried 503, a timeout no rule names is re-raised as is.
        """
        timeout = httpx.ReadTimeout("slow")
        transport, seen = mock_transport(policy, httpx.Response(503), timeout)

        with no_sleep(), pytest.raises(httpx.ReadTimeout) as ei:
            call(transport)

        assert ei.value is timeout
        assert 2 == len(seen)

    @pytest.mark.parametrize(
        ("exc", "word"),
        [
            (httpx.ConnectError("refused"), "connect"),
            (httpx.ConnectTimeout("slow"), "connect"),
            (httpx.PoolTimeout("full"), "connect"),
            (httpx.ReadTimeout("slow"), "timeout"),
            (httpx.WriteTimeout("slow"), "timeout"),
            (httpx.ReadError("reset"), "read"),
            (httpx.WriteError("reset"), "read"),
            (
                httpx.RemoteProtocolError(
                    "Server disconnected without sending a response."
                ),
                "read",
            ),
            (httpx.RemoteProtocolError("illegal header"), "protocol"),
            (httpx.LocalProtocolError("bad"), "protocol"),
        ],
        ids=[
            "connect-error",
            "connect-timeout",
            "pool-timeout",
            "read-timeout",
            "write-timeout",
            "read-error",
            "write-error",
            "hang-up",
            "remote-protocol",
            "local-protocol",
        ],
    )
    def test_failure_words(self, exc, word):
        """
        Each httpx transport exception maps to its portable word.
        """
        pol = referee.load_policy("http-default")
        transport, _ = mock_transport(pol, exc, httpx.Response(200))

        with no_sleep(), structlog.testing.capture_logs() as logs:
            call(transport)

        assert word == decisions(logs)[0]["failure"]
