"""
SDK mode (``sdk=True`` on every adapter), unit by unit: what is handed
back to an SDK, with which advice, and which requests are taken for an
SDK's own retry and answered without sending.  httpx over a MockTransport
(the runner's part is the same for every adapter), then requests and
aiohttp over loopback for their own translation.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

import aiohttp
import httpx
import pytest
import requests
import structlog
from tests.server import Reply, ScriptedServer, closed_port

import referee
from referee._core.sdk import hands_back, is_outer_retry
from referee.aiohttp import PolicyMiddleware, outcome
from referee.httpx import OUTCOME_EXTENSION, PolicyTransport
from referee.requests import OUTCOME_ATTRIBUTE, PolicyAdapter
from referee.testing import no_sleep


if TYPE_CHECKING:
    from collections.abc import Callable


POLICY = """
policy: sdk-unit
defaults:
  retry: {attempts: 3, backoff: {initial: 1s, multiplier: 2, max: 8s, jitter: none}}
  deadline: 1m
rules:
  - id: credits
    when: {status: 402}
    do: abort
    error: InsufficientCredits
    breaker: {name: credits, open_for: 10m}
  - id: busy
    when: {status: [429, 503]}
    do: retry
    retry: {unsafe_methods: true}
  - id: broken
    when: {failure: [connect, read]}
    do: retry
    retry: {unsafe_methods: true}
  - id: job-failed
    when: {status: 200, body: {state: failed}}
    do: abort
    error: JobFailed
  - id: stream-error
    when:
      status: 200
      headers: {content-type: {contains: event-stream}}
      body: {type: error}
    do: retry
    retry: {unsafe_methods: true}
"""


@pytest.fixture
def policy() -> referee.Policy:
    return referee.load_policy_text(POLICY)


class Counting:
    """
    A MockTransport handler answering from a list (the last repeats), that
    records every request it is sent.
    """

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = (
            self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        )
        if isinstance(answer, Exception):
            raise answer
        return answer


def client(
    policy: referee.Policy, handler: Callable[[httpx.Request], httpx.Response]
) -> httpx.Client:
    return httpx.Client(
        transport=PolicyTransport(
            policy, httpx.MockTransport(handler), sdk=True
        ),
        base_url="https://api.example.com",
    )


class TestPure:
    @pytest.mark.parametrize(
        ("status", "stream", "expected"),
        [
            (400, False, True),
            (429, False, True),
            (503, False, True),
            (200, False, False),
            (200, True, True),
            (None, False, False),
        ],
    )
    def test_hands_back(self, status, stream, expected):
        assert expected is hands_back(status, stream)

    @pytest.mark.parametrize(
        ("headers", "key", "expected"),
        [
            ({"x-stainless-retry-count": "1"}, None, True),
            ({"x-stainless-retry-count": "2"}, "k", True),
            ({"x-stainless-retry-count": "0"}, None, False),
            ({}, None, False),
            ({"idempotency-key": "k"}, "k", True),
            ({"idempotency-key": "other"}, "k", False),
            ({"idempotency-key": "k"}, None, False),
        ],
    )
    def test_is_outer_retry(self, headers, key, expected):
        assert expected is is_outer_retry(headers.get, key)


class TestHandBack:
    def test_error_response_is_returned_with_advice(self, policy):
        """
        A 429 the policy gave up on comes back as the response, told not
        to be retried, with the outcome and referee's error attached.
        """
        handler = Counting(httpx.Response(429, json={"error": "slow down"}))

        with no_sleep(), client(policy, handler) as http:
            response = http.post("/v1/x", content=b"{}")

        assert 429 == response.status_code
        assert "false" == response.headers["x-should-retry"]
        assert "false" == response.headers["stripe-should-retry"]
        assert {"error": "slow down"} == response.json()
        outcome = response.extensions[OUTCOME_EXTENSION]
        assert isinstance(outcome.error, referee.RetriesExhausted)
        assert 3 == len(handler.requests)

    def test_unmatched_error_is_advised_too(self, policy):
        """
        An error status no rule names passes through, still told not to
        be retried: the policy has decided it (by saying nothing).
        """
        handler = Counting(httpx.Response(500))

        with client(policy, handler) as http:
            response = http.get("/v1/x")

        assert 500 == response.status_code
        assert "false" == response.headers["x-should-retry"]
        assert 1 == len(handler.requests)

    def test_success_is_untouched(self, policy):
        handler = Counting(httpx.Response(200, json={"ok": True}))

        with client(policy, handler) as http:
            response = http.get("/v1/x")

        assert "x-should-retry" not in response.headers

    def test_abort_on_a_success_status_raises(self, policy):
        """
        A 200 whose body the policy aborts on is raised: an SDK would take
        the response for a success.
        """
        handler = Counting(httpx.Response(200, json={"state": "failed"}))

        with client(policy, handler) as http, pytest.raises(referee.JobFailed):
            http.get("/v1/x")

    def test_event_stream_error_is_handed_back(self, policy):
        """
        A 200 event stream whose first event the policy matched, every
        time: after the policy's attempts the last stream goes back to the
        SDK whole (the SDK raises the error it carries), not raised.
        """
        body = b'event: error\ndata: {"type": "error"}\n\n'
        sent: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            sent.append(request)
            return httpx.Response(
                200,
                headers={"content-type": "text/event-stream"},
                stream=httpx.ByteStream(body),
            )

        with (
            no_sleep(),
            client(policy, handler) as http,
            http.stream("POST", "/v1/x", content=b"{}") as response,
        ):
            got = response.read()

        assert body == got
        assert "false" == response.headers["x-should-retry"]
        assert 3 == len(sent)


class TestOuterRetry:
    def test_stainless_retry_of_a_failure_is_not_sent(self, policy):
        """
        A connect failure the policy gave up on raises referee's error; the
        same request again with x-stainless-retry-count: 1 and 2 is
        answered with that same error, and nothing more is sent.
        """
        handler = Counting(httpx.ConnectError("refused"))

        with no_sleep(), client(policy, handler) as http:
            errors = []
            for count in range(3):
                with pytest.raises(referee.RefereeError) as caught:
                    http.post(
                        "/v1/x",
                        content=b"{}",
                        headers={"x-stainless-retry-count": str(count)},
                    )
                errors.append(caught.value)

        assert 3 == len(handler.requests)  # the policy's attempts, once
        assert errors[0] is errors[1] is errors[2]

    def test_same_idempotency_key_is_not_sent(self, policy):
        handler = Counting(httpx.ConnectError("refused"))
        key = {"Idempotency-Key": "k-1"}

        with no_sleep(), client(policy, handler) as http:
            for _ in range(2):
                with pytest.raises(referee.RefereeError):
                    http.post("/v1/x", content=b"{}", headers=key)

        assert 3 == len(handler.requests)

    def test_a_new_call_is_sent(self, policy):
        """
        Without a retry marker the same request is a new call, sent under
        the policy as usual; and any other call in between forgets the
        failure.
        """
        handler = Counting(httpx.ConnectError("refused"))

        with no_sleep(), client(policy, handler) as http:
            with pytest.raises(referee.RefereeError):
                http.post("/v1/x", content=b"{}")
            with pytest.raises(referee.RefereeError):
                http.post("/v1/x", content=b"{}")

        assert 6 == len(handler.requests)

    def test_another_url_clears_the_memory(self, policy):
        handler = Counting(httpx.ConnectError("refused"))
        marked = {"x-stainless-retry-count": "1"}

        with no_sleep(), client(policy, handler) as http:
            with pytest.raises(referee.RefereeError):
                http.post("/v1/x", content=b"{}")
            with pytest.raises(referee.RefereeError):
                http.post("/v1/y", content=b"{}", headers=marked)
            with pytest.raises(referee.RefereeError):
                http.post("/v1/x", content=b"{}", headers=marked)

        assert 9 == len(handler.requests)

    def test_another_thread_does_not_see_it(self, policy):
        """
        The memory is the thread's (or task's): a marked request in another
        thread is sent.
        """
        handler = Counting(httpx.ConnectError("refused"))
        marked = {"x-stainless-retry-count": "1"}

        with no_sleep(), client(policy, handler) as http:
            with pytest.raises(referee.RefereeError):
                http.post("/v1/x", content=b"{}")

            def other() -> None:
                with no_sleep(), pytest.raises(referee.RefereeError):
                    http.post("/v1/x", content=b"{}", headers=marked)

            thread = threading.Thread(target=other)
            thread.start()
            thread.join()

        assert 6 == len(handler.requests)

    def test_breaker_stop_and_its_retries_send_nothing(self, policy):
        handler = Counting(httpx.Response(402))
        marked = {"x-stainless-retry-count": "1"}

        with client(policy, handler) as http:
            first = http.post("/v1/x", content=b"{}")
            with pytest.raises(referee.CircuitOpen) as stopped:
                http.post("/v1/x", content=b"{}")
            with pytest.raises(referee.CircuitOpen) as again:
                http.post("/v1/x", content=b"{}", headers=marked)

        assert 402 == first.status_code
        assert 1 == len(handler.requests)
        assert stopped.value is again.value

    def test_refusal_is_logged(self, policy):
        handler = Counting(httpx.ConnectError("refused"))

        with (
            no_sleep(),
            client(policy, handler) as http,
            structlog.testing.capture_logs() as logs,
        ):
            for count in range(2):
                with pytest.raises(referee.RefereeError):
                    http.post(
                        "/v1/x?key=secret",
                        content=b"{}",
                        headers={"x-stainless-retry-count": str(count)},
                    )

        refused = [
            e for e in logs if e["event"] == "referee.outer_retry_refused"
        ]
        assert 1 == len(refused)
        assert "sdk-unit" == refused[0]["policy"]
        assert "POST" == refused[0]["method"]


class TestRequests:
    def test_hand_back_and_refusal(self, policy):
        """
        requests: the advice is on the response's headers, the outcome on
        its attribute; a marked retry of a connect failure is not sent.
        """
        with ScriptedServer() as server:
            server.script("/v1/x", [Reply(429, body={"error": "slow"})])
            with requests.Session() as session:
                session.mount("http://", PolicyAdapter(policy, sdk=True))
                with no_sleep():
                    response = session.post(server.url("/v1/x"), data=b"{}")
            assert 3 == server.count("/v1/x")

        assert 429 == response.status_code
        assert "false" == response.headers["x-should-retry"]
        outcome = getattr(response, OUTCOME_ATTRIBUTE)
        assert isinstance(outcome.error, referee.RetriesExhausted)

        url = f"http://127.0.0.1:{closed_port()}/v1/x"
        with requests.Session() as session:
            adapter = PolicyAdapter(policy, sdk=True)
            session.mount("http://", adapter)
            with no_sleep():
                with pytest.raises(referee.RefereeError) as first:
                    session.post(url, data=b"{}")
                with pytest.raises(referee.RefereeError) as second:
                    session.post(
                        url,
                        data=b"{}",
                        headers={"x-stainless-retry-count": "1"},
                    )
        assert first.value is second.value


class TestAiohttp:
    def test_hand_back_attaches_the_outcome(self, policy):
        """
        aiohttp: the response goes back with the outcome attached (its
        headers are read-only: no advice is written, and no aiohttp-based
        SDK reads any).
        """

        async def main(url: str) -> tuple[int, referee.CallOutcome | None]:
            async with (
                aiohttp.ClientSession(
                    middlewares=[PolicyMiddleware(policy, sdk=True)]
                ) as session,
                session.post(url, data=b"{}") as response,
            ):
                await response.read()
                return response.status, outcome(response)

        with ScriptedServer() as server:
            server.script("/v1/x", [Reply(429, body={"error": "slow"})])
            with no_sleep():
                status, got = asyncio.run(main(server.url("/v1/x")))
            assert 3 == server.count("/v1/x")

        assert 429 == status
        assert got is not None
        assert isinstance(got.error, referee.RetriesExhausted)


class TestAsyncOuterRetry:
    def test_retry_in_the_same_task_is_refused_another_task_sends(
        self, policy
    ):
        """
        The async runner remembers per task: the SDK's retry, awaited in
        the task that made the call, is answered without sending; the same
        marked request from a task running beside it is sent.
        """
        from referee.httpx import AsyncPolicyTransport

        sent: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            sent.append(request)
            raise httpx.ConnectError("refused")

        marked = {"x-stainless-retry-count": "1"}

        async def main() -> None:
            async with httpx.AsyncClient(
                transport=AsyncPolicyTransport(
                    policy, httpx.MockTransport(handler), sdk=True
                ),
                base_url="https://api.example.com",
            ) as http:

                async def call(headers: dict[str, str]) -> None:
                    with pytest.raises(referee.RefereeError):
                        await http.post(
                            "/v1/x", content=b"{}", headers=headers
                        )

                go = asyncio.Event()

                async def beside() -> None:
                    await go.wait()
                    await call(marked)

                other = asyncio.create_task(beside())
                await call({})
                await call(marked)  # refused: same task
                assert 3 == len(sent)
                go.set()
                await other
                assert 6 == len(sent)

        with no_sleep():
            asyncio.run(main())
