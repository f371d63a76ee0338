"""
referee.httpx and referee.httpx2 over real HTTP: httpx.Client and
httpx.AsyncClient, httpx2.Client and httpx2.AsyncClient, each with the
policy transport around the library's real transport, against the scripted
loopback server of tests.server.

Every test runs four times, through a harness that makes the sync or the
async call (the async one inside ``asyncio.run``) with httpx or httpx2 and
its referee module; no test really sleeps:
``referee.testing.no_sleep()`` records the delays instead.
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import threading
from typing import TYPE_CHECKING, Any

import httpx
import httpx2
import pytest
import structlog
from tests.server import RESET, Reply, ScriptedServer, closed_port

import referee
import referee.httpx
import referee.httpx2
from referee import (
    Abort,
    AuthenticationError,
    CallOutcome,
    DeadlineExceeded,
    InsufficientCredits,
    RetriesExhausted,
    ServerError,
)
from referee.testing import no_sleep


if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Iterator
    from types import ModuleType


# Building an SSL context costs about 50 ms; every inner transport of these
# plain-HTTP tests shares one.  TestDefaults builds the transports as a user
# would.
SSL = ssl.create_default_context()


# --- Counting transports ----------------------------------------------------


@functools.cache
def counting_transports(lib: ModuleType) -> tuple[type[Any], type[Any]]:
    """
    *lib*'s real transports (sync, async), keeping every response they hand
    out and noting which of them were closed.
    """

    class _CountedStream(lib.SyncByteStream):
        """
        A response stream that notes whether it was closed.
        """

        def __init__(self, inner: Any) -> None:
            self.inner = inner
            self.closed = False

        def __iter__(self) -> Iterator[bytes]:
            yield from self.inner

        def close(self) -> None:
            self.closed = True
            self.inner.close()

    class _AsyncCountedStream(lib.AsyncByteStream):
        """
        The asyncio twin of _CountedStream.
        """

        def __init__(self, inner: Any) -> None:
            self.inner = inner
            self.closed = False

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in self.inner:
                yield chunk

        async def aclose(self) -> None:
            self.closed = True
            await self.inner.aclose()

    class CountingTransport(lib.HTTPTransport):
        def __init__(self) -> None:
            super().__init__(verify=SSL)
            self.responses: list[Any] = []
            self.streams: list[_CountedStream] = []

        def handle_request(self, request: Any) -> Any:
            response = super().handle_request(request)
            assert isinstance(response.stream, lib.SyncByteStream)
            stream = _CountedStream(response.stream)
            response.stream = stream
            self.responses.append(response)
            self.streams.append(stream)
            return response

        @property
        def closed(self) -> list[bool]:
            return [s.closed for s in self.streams]

    class AsyncCountingTransport(lib.AsyncHTTPTransport):
        def __init__(self) -> None:
            super().__init__(verify=SSL)
            self.responses: list[Any] = []
            self.streams: list[_AsyncCountedStream] = []

        async def handle_async_request(self, request: Any) -> Any:
            response = await super().handle_async_request(request)
            assert isinstance(response.stream, lib.AsyncByteStream)
            stream = _AsyncCountedStream(response.stream)
            response.stream = stream
            self.responses.append(response)
            self.streams.append(stream)
            return response

        @property
        def closed(self) -> list[bool]:
            return [s.closed for s in self.streams]

    return CountingTransport, AsyncCountingTransport


# --- The harness: one call, sync or async, httpx or httpx2 --------------------


class SyncHarness:
    """
    Calls through lib.Client(transport=PolicyTransport(policy)), *lib*
    httpx or httpx2 and PolicyTransport from referee.httpx or
    referee.httpx2.
    """

    def __init__(
        self, lib: ModuleType = httpx, adapter: ModuleType = referee.httpx
    ) -> None:
        self.lib, self.adapter = lib, adapter

    def counting(self) -> Any:
        return counting_transports(self.lib)[0]()

    def stream_body(self, chunks: Iterable[bytes]) -> Any:
        items = list(chunks)

        def gen() -> Iterator[bytes]:
            yield from items

        return gen()

    def call(
        self,
        policy: referee.Policy,
        method: str,
        url: str,
        *,
        inner: Any = None,
        raise_on_abort: bool = True,
        timeout: float = 5.0,
        while_open: Callable[[Any], None] | None = None,
        **kwargs: Any,
    ) -> Any:
        lib = self.lib
        if inner is None:
            inner = lib.HTTPTransport(verify=SSL)
        transport = self.adapter.PolicyTransport(
            policy, transport=inner, raise_on_abort=raise_on_abort
        )
        with lib.Client(transport=transport, timeout=timeout) as client:
            if while_open is None:
                return client.request(method, url, **kwargs)
            with client.stream(method, url, **kwargs) as response:
                while_open(response)
                response.read()
                return response


class AsyncHarness:
    """
    Calls through lib.AsyncClient(transport=AsyncPolicyTransport(policy)),
    inside asyncio.run.
    """

    def __init__(
        self, lib: ModuleType = httpx, adapter: ModuleType = referee.httpx
    ) -> None:
        self.lib, self.adapter = lib, adapter

    def counting(self) -> Any:
        return counting_transports(self.lib)[1]()

    def stream_body(self, chunks: Iterable[bytes]) -> Any:
        items = list(chunks)

        async def gen() -> AsyncIterator[bytes]:
            for item in items:
                yield item

        return gen()

    def call(
        self,
        policy: referee.Policy,
        method: str,
        url: str,
        *,
        inner: Any = None,
        raise_on_abort: bool = True,
        timeout: float = 5.0,
        while_open: Callable[[Any], None] | None = None,
        **kwargs: Any,
    ) -> Any:
        lib = self.lib

        async def go() -> Any:
            transport = self.adapter.AsyncPolicyTransport(
                policy,
                transport=inner or lib.AsyncHTTPTransport(verify=SSL),
                raise_on_abort=raise_on_abort,
            )
            async with lib.AsyncClient(
                transport=transport, timeout=timeout
            ) as client:
                if while_open is None:
                    return await client.request(method, url, **kwargs)
                async with client.stream(method, url, **kwargs) as response:
                    while_open(response)
                    await response.aread()
                    return response

        return asyncio.run(go())


Harness = SyncHarness | AsyncHarness

#: The two libraries of the httpx family, each with its referee module.
LIBRARIES = [(httpx, referee.httpx), (httpx2, referee.httpx2)]


@pytest.fixture(
    params=[
        (kind, lib, adapter)
        for lib, adapter in LIBRARIES
        for kind in (SyncHarness, AsyncHarness)
    ],
    ids=["httpx-sync", "httpx-async", "httpx2-sync", "httpx2-async"],
)
def harness(request: pytest.FixtureRequest) -> Harness:
    kind, lib, adapter = request.param
    return kind(lib, adapter)  # type: ignore[no-any-return]


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    # Workaround: ScriptedServer runs serve_forever() with its default
    # poll_interval of 0.5 s, so each shutdown() waits up to half a
    # second; a short interval keeps the tests fast.
    srv._thread = threading.Thread(
        target=srv._httpd.serve_forever, args=(0.01,), daemon=True
    )
    with srv:
        yield srv


def policy(name: str = "http-default") -> referee.Policy:
    """
    A freshly loaded policy, so that no state leaks between tests.
    """
    return referee.load_policy(name)


def decisions(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "referee.decision"]


# --- Retries ----------------------------------------------------------------


class TestRetry:
    def test_retry_after_is_honoured(self, harness, server):
        """
        A 429 with Retry-After: 7 is retried after exactly 7 seconds.
        """
        server.script(
            "/r", [Reply(429, {"Retry-After": "7"}), Reply(200, body=b"ok")]
        )

        with no_sleep() as slept:
            response = harness.call(policy(), "GET", server.url("/r"))

        assert [7.0] == slept.delays
        assert 200 == response.status_code
        assert b"ok" == response.content
        assert 2 == server.count("/r")

    def test_503_is_retried_then_200_returned(self, harness, server):
        """
        A 503 is retried and the 200 that follows is returned.
        """
        server.script("/r", [Reply(503), Reply(200, body={"ok": True})])

        with no_sleep() as slept:
            response = harness.call(policy(), "GET", server.url("/r"))

        assert 200 == response.status_code
        assert {"ok": True} == response.json()
        assert 2 == server.count("/r")
        assert 1 == len(slept.delays)

    def test_401_is_not_retried(self, harness, server):
        """
        A 401 under enrow raises AuthenticationError after one request.
        """
        server.script("/email/find/single", [Reply(401, body={"m": "no"})])

        with no_sleep() as slept, pytest.raises(AuthenticationError) as ei:
            harness.call(
                policy("enrow"), "GET", server.url("/email/find/single?id=x")
            )

        assert 1 == server.count("/email/find/single")
        assert [] == slept.delays
        assert 401 == ei.value.status
        assert "unauthorized" == ei.value.rule_id

    def test_401_passes_through_http_default(self, harness, server):
        """
        Under http-default a 401 is the caller's: returned after one request.
        """
        server.script("/r", [Reply(401)])

        with no_sleep():
            response = harness.call(policy(), "GET", server.url("/r"))

        assert 401 == response.status_code
        assert 1 == server.count("/r")

    def test_post_is_not_retried_on_500(self, harness, server):
        """
        A POST answered 500 raises ServerError, saying POST is not
        idempotent, after one request.
        """
        server.script("/p", [Reply(500), Reply(200)])

        with no_sleep() as slept, pytest.raises(ServerError) as ei:
            harness.call(policy(), "POST", server.url("/p"), json={"a": 1})

        assert 1 == server.count("/p")
        assert [] == slept.delays
        assert "idempotent" in ei.value.reason
        assert 500 == ei.value.status

    def test_post_is_retried_on_429_under_enrow(self, harness, server):
        """
        Under enrow a POST answered 429 is sent again with the same body.
        """
        server.script(
            "/email/find/single",
            [Reply(429, {"Retry-After": "1"}), Reply(201, body={"id": "x"})],
        )
        payload = {"fullname": "Ada Lovelace", "company_domain": "a.example"}

        with no_sleep() as slept:
            response = harness.call(
                policy("enrow"),
                "POST",
                server.url("/email/find/single"),
                json=payload,
            )

        assert 201 == response.status_code
        assert [1.0] == slept.delays
        first, second = server.requests
        assert ("POST", "POST") == (first.method, second.method)
        assert payload == json.loads(first.body)
        assert first.body == second.body


# --- Polling ----------------------------------------------------------------


class TestPoll:
    def test_enrow_ongoing_is_polled_to_completion(self, harness, server):
        """
        An ongoing single search is polled until it is valid, and the caller
        reads the final JSON.
        """
        ongoing = Reply(202, body={"qualification": "ongoing"})
        done = {"qualification": "valid", "email": "a@b.c"}
        server.script(
            "/email/find/single", [ongoing, ongoing, Reply(200, body=done)]
        )

        with no_sleep() as slept:
            response = harness.call(
                policy("enrow"), "GET", server.url("/email/find/single?id=x")
            )

        assert done == response.json()
        assert 3 == server.count("/email/find/single")
        assert ["/email/find/single?id=x"] * 3 == [
            r.path for r in server.requests
        ]
        assert [2.0, 3.0] == slept.delays

    def test_poll_follows_location_with_the_same_headers(
        self, harness, server
    ):
        """
        A poll built from the Location header goes to the new path and
        carries the original request's headers.
        """
        pol = referee.load_policy_text(
            """
policy: jobs
rules:
  - id: accepted
    when: {status: 202}
    do: poll
    poll: {request: {url: "{header.Location}"}}
"""
        )
        server.script("/start", [Reply(202, {"Location": "/jobs/1"})])
        server.script("/jobs/1", [Reply(200, body={"done": True})])
        headers = {"x-api-key": "k-123", "Authorization": "Bearer t-456"}

        with no_sleep():
            response = harness.call(
                pol, "GET", server.url("/start"), headers=headers
            )

        assert {"done": True} == response.json()
        assert ["/start", "/jobs/1"] == [r.path for r in server.requests]
        poll = server.requests[1]
        assert "k-123" == poll.headers["x-api-key"]
        assert "Bearer t-456" == poll.headers["authorization"]

    def test_poll_to_another_origin_is_refused(self, harness, server):
        """
        A Location on another origin is not polled: the call aborts and the
        credentials go nowhere else.
        """
        pol = referee.load_policy_text(
            """
policy: jobs
rules:
  - id: accepted
    when: {status: 202}
    do: poll
    poll: {request: {url: "{header.Location}"}}
"""
        )
        server.script(
            "/start", [Reply(202, {"Location": "http://elsewhere.invalid/1"})]
        )

        with no_sleep() as slept, pytest.raises(referee.Aborted) as ei:
            harness.call(
                pol, "GET", server.url("/start"), headers={"x-api-key": "k"}
            )

        assert ["/start"] == [r.path for r in server.requests]
        assert [] == slept.delays
        assert "origin" in ei.value.reason

    #: The issue-12 policy: a POST's 202 polled with no poll request.
    POLL_POST = """
policy: jobs
rules:
  - id: job-accepted
    when: {method: POST, status: 202}
    do: poll
"""

    def test_poll_never_sends_a_post_again(self, harness, server):
        """
        A poll that would send the same POST again is refused as a retry
        would be: exactly one POST reaches the server, nothing is slept,
        and the call ends with an error naming the rule and saying why.
        """
        pol = referee.load_policy_text(self.POLL_POST)
        server.script("/jobs", [Reply(202, body={"id": "j1"})])

        with no_sleep() as slept, pytest.raises(referee.Aborted) as ei:
            harness.call(
                pol, "POST", server.url("/jobs"), json={"email": "a@b.c"}
            )

        assert ["POST"] == [r.method for r in server.requests]
        assert [] == slept.delays
        assert "job-accepted" == ei.value.rule_id
        assert 202 == ei.value.status
        assert (
            "POST got 202: rule 'job-accepted' would poll by sending the "
            "POST again, but POST is not idempotent"
        ) in str(ei.value)
        assert ["abort"] == [r.action for r in ei.value.trail]

    def test_poll_with_an_idempotency_key_sends_the_post_again(
        self, harness, server
    ):
        """
        An Idempotency-Key opens the gate, as it does for retries: the
        server recognises the second send.
        """
        pol = referee.load_policy_text(self.POLL_POST)
        server.script("/jobs", [Reply(202), Reply(200, body={"done": True})])

        with no_sleep():
            response = harness.call(
                pol,
                "POST",
                server.url("/jobs"),
                json={"email": "a@b.c"},
                headers={"Idempotency-Key": "k-1"},
            )

        assert {"done": True} == response.json()
        assert ["POST", "POST"] == [r.method for r in server.requests]

    def test_poll_of_a_post_may_get_its_location(self, harness, server):
        """
        A poll rule that builds its request from the 202's Location sends
        one POST, then GETs the job.
        """
        pol = referee.load_policy_text(
            """
policy: jobs
rules:
  - id: job-accepted
    when: {method: POST, status: 202}
    do: poll
    poll: {request: {url: "{header.Location}"}}
"""
        )
        server.script("/jobs", [Reply(202, {"Location": "/jobs/1"})])
        server.script("/jobs/1", [Reply(200, body={"done": True})])

        with no_sleep():
            response = harness.call(
                pol, "POST", server.url("/jobs"), json={"email": "a@b.c"}
            )

        assert {"done": True} == response.json()
        assert [("POST", "/jobs"), ("GET", "/jobs/1")] == [
            (r.method, r.path) for r in server.requests
        ]


# --- Typed errors -----------------------------------------------------------


class TestErrors:
    def test_402_raises_insufficient_credits(self, harness, server):
        """
        A 402 raises InsufficientCredits with the rule, the status, the
        response and the trail.
        """
        body = {"reason": "Insufficient credits", "success": False}
        server.script("/email/find/single", [Reply(402, body=body)])

        with no_sleep(), pytest.raises(InsufficientCredits) as ei:
            harness.call(
                policy("enrow"), "GET", server.url("/email/find/single?id=x")
            )

        err = ei.value
        assert isinstance(err, referee.Aborted)
        assert "out-of-credits" == err.rule_id
        assert 402 == err.status
        assert err.failure is None
        assert isinstance(err.response, harness.lib.Response)
        assert 402 == err.response.status_code
        assert 1 == len(err.trail)
        assert (402, "out-of-credits", "abort") == (
            err.trail[0].status,
            err.trail[0].rule_id,
            err.trail[0].action,
        )

    def test_connect_failure_is_retried_then_chained(self, harness):
        """
        A refused connection is retried three times in all, then raises
        RetriesExhausted chained to the library's ConnectError (httpx2's
        own under httpx2, not left to propagate).
        """
        url = f"http://127.0.0.1:{closed_port()}/r"

        with no_sleep() as slept, pytest.raises(RetriesExhausted) as ei:
            harness.call(policy(), "GET", url)

        err = ei.value
        assert isinstance(err.__cause__, harness.lib.ConnectError)
        assert "connect" == err.failure
        assert err.status is None
        assert err.response is None
        assert 3 == len(err.trail)
        assert ["connect"] * 3 == [r.failure for r in err.trail]
        assert 2 == len(slept.delays)

    def test_connect_failure_retries_a_post(self, harness):
        """
        A POST that never reached the server is retried like a GET.
        """
        url = f"http://127.0.0.1:{closed_port()}/r"

        with no_sleep(), pytest.raises(RetriesExhausted) as ei:
            harness.call(policy(), "POST", url, content=b"x")

        assert 3 == len(ei.value.trail)
        assert isinstance(ei.value.__cause__, harness.lib.ConnectError)

    @pytest.mark.parametrize(
        ("lib", "adapter"), LIBRARIES, ids=["httpx", "httpx2"]
    )
    def test_exception_tree_in_portable_words(self, lib, adapter):
        """
        Each library's own exception tree maps to the same failure words;
        the other library's exceptions, and anything else, are no failure
        of it (they propagate untouched).
        """
        other = httpx2 if lib is httpx else httpx
        words = {
            name: adapter._LIBRARY.failure_word(getattr(lib, name)("x"))
            for name in (
                "ConnectError",
                "ConnectTimeout",
                "PoolTimeout",
                "ReadTimeout",
                "WriteTimeout",
                "RemoteProtocolError",
                "LocalProtocolError",
                "ReadError",
                "WriteError",
                "CloseError",
            )
        }
        hang_up = lib.RemoteProtocolError("Server disconnected without ...")

        assert {
            "ConnectError": "connect",
            "ConnectTimeout": "connect",
            "PoolTimeout": "connect",
            "ReadTimeout": "timeout",
            "WriteTimeout": "timeout",
            "RemoteProtocolError": "protocol",
            "LocalProtocolError": "protocol",
            "ReadError": "read",
            "WriteError": "read",
            "CloseError": "read",
        } == words
        assert "read" == adapter._LIBRARY.failure_word(hang_up)
        assert None is adapter._LIBRARY.failure_word(other.ConnectError("x"))
        assert None is adapter._LIBRARY.failure_word(ValueError("x"))

    def test_hang_up_is_a_read_failure(self, harness, server):
        """
        A server that drops the connection without answering is a 'read'
        failure.
        """
        server.script("/r", [RESET])

        with no_sleep(), pytest.raises(RetriesExhausted) as ei:
            harness.call(policy(), "GET", server.url("/r"))

        err = ei.value
        assert "read" == err.failure
        assert ["read"] * 3 == [r.failure for r in err.trail]
        assert isinstance(err.__cause__, harness.lib.TransportError)
        assert 3 == server.count("/r")

    def test_read_timeout_is_a_timeout_failure(self, harness, server):
        """
        A server slower than the client's read timeout is a 'timeout'
        failure.
        """
        server.script("/r", [Reply(200, delay=0.5)])

        with no_sleep(), pytest.raises(RetriesExhausted) as ei:
            harness.call(policy(), "GET", server.url("/r"), timeout=0.1)

        err = ei.value
        assert "timeout" == err.failure
        assert isinstance(err.__cause__, harness.lib.ReadTimeout)

    def test_deadline_is_respected(self, harness, server):
        """
        A Retry-After beyond the deadline raises DeadlineExceeded without
        sleeping.
        """
        pol = referee.load_policy_text(
            """
policy: short
defaults:
  deadline: 1s
rules:
  - id: busy
    when: {status: 503}
    do: retry
"""
        )
        server.script("/r", [Reply(503, {"Retry-After": "5"}), Reply(200)])

        with no_sleep() as slept, pytest.raises(DeadlineExceeded) as ei:
            harness.call(pol, "GET", server.url("/r"))

        assert [] == slept.delays
        assert 1 == server.count("/r")
        assert "busy" == ei.value.rule_id

    def test_responses_instead_of_exceptions(self, harness, server):
        """
        With raise_on_abort=False the last 503 is returned, carrying the
        outcome: the trail and the error that was not raised.
        """
        server.script("/r", [Reply(503, body=b"down")])

        with no_sleep():
            response = harness.call(
                policy(), "GET", server.url("/r"), raise_on_abort=False
            )

        assert 503 == response.status_code
        assert b"down" == response.content
        outcome = response.extensions[harness.adapter.OUTCOME_EXTENSION]
        assert isinstance(outcome, CallOutcome)
        assert isinstance(outcome.decision, Abort)
        assert 3 == len(outcome.trail)
        assert ["retry", "retry", "abort"] == [r.action for r in outcome.trail]
        assert isinstance(outcome.error, ServerError)
        assert 503 == outcome.error.status
        assert 3 == server.count("/r")


# tests.server reads request bodies by Content-Length only: a streamed body
# is sent with one, not chunked.
CHUNKS = [b"chunk-1 ", b"chunk-2"]
SIZED = {"Content-Length": str(len(b"".join(CHUNKS)))}


# --- Bodies -----------------------------------------------------------------


class TestBodies:
    def test_body_is_readable_after_a_rule_read_it(self, harness, server):
        """
        A 200 whose body a rule looked into is still readable by the caller.
        """
        done = {"qualification": "valid", "email": "a@b.c"}
        server.script("/email/find/single", [Reply(200, body=done)])
        url = server.url("/email/find/single?id=x")

        with no_sleep():
            response = harness.call(policy("enrow"), "GET", url)
            streamed = harness.call(
                policy("enrow"), "GET", url, while_open=lambda r: None
            )

        assert done == response.json()
        assert done == streamed.json()

    def test_body_over_the_limit_is_left_unread(self, harness, server):
        """
        A body whose Content-Length exceeds body_limit is not read by the
        policy: the caller still streams it.
        """
        pol = referee.load_policy_text(
            """
policy: capped
defaults:
  body_limit: 1KiB
rules:
  - id: running
    when: {status: 200, body: {state: running}}
    do: poll
"""
        )
        big = b"x" * 64 * 1024
        server.script("/file", [Reply(200, body=big)])
        consumed: list[bool] = []

        with no_sleep():
            response = harness.call(
                pol,
                "GET",
                server.url("/file"),
                while_open=lambda r: consumed.append(r.is_stream_consumed),
            )

        assert [False] == consumed
        assert big == response.content

    def test_streaming_body_is_not_resent(self, harness, server):
        """
        A request whose body was a consumed stream is not sent again; the
        error, NotReplayable, names the rule that wanted it and says why.
        """
        server.script("/r", [Reply(503), Reply(200)])
        body = harness.stream_body(CHUNKS)

        with no_sleep(), pytest.raises(referee.NotReplayable) as ei:
            harness.call(
                policy(),
                "PUT",
                server.url("/r"),
                content=body,
                headers=SIZED,
            )

        assert [b"".join(CHUNKS)] == [r.body for r in server.requests]
        assert "server-unavailable" == ei.value.rule_id
        assert "stream" in ei.value.reason
        assert "stream" in str(ei.value)

    @pytest.mark.parametrize(
        ("lib", "adapter"), LIBRARIES, ids=["httpx", "httpx2"]
    )
    def test_iterator_body_is_not_resent(self, server, lib, adapter):
        """
        A sync request whose body was a plain iterator, already consumed, is
        not sent again (it would go out empty).
        """
        server.script("/r", [Reply(503), Reply(200)])
        body = iter([b"chunk-1 ", b"chunk-2"])

        with no_sleep(), pytest.raises(referee.NotReplayable) as ei:
            SyncHarness(lib, adapter).call(
                policy(), "PUT", server.url("/r"), content=body
            )

        assert 1 == server.count("/r")
        assert "stream" in ei.value.reason

    def test_streaming_body_gives_up_before_sleeping(self, harness, server):
        """
        A retry that cannot re-send a stream body gives up at once, and the
        error carries the last response.
        """
        server.script("/r", [Reply(503, {"Retry-After": "9"}), Reply(200)])
        body = harness.stream_body(CHUNKS)

        with no_sleep() as slept, pytest.raises(referee.NotReplayable) as ei:
            harness.call(
                policy(),
                "PUT",
                server.url("/r"),
                content=body,
                headers=SIZED,
            )

        assert [] == slept.delays
        assert isinstance(ei.value.response, harness.lib.Response)
        assert 503 == ei.value.response.status_code
        assert ["abort"] == [r.action for r in ei.value.trail]
        assert 1 == server.count("/r")

    def test_streaming_body_with_responses_instead_of_exceptions(
        self, harness, server
    ):
        """
        With raise_on_abort=False, a retry that cannot re-send a stream body
        returns the last response with the outcome attached.
        """
        server.script("/r", [Reply(503), Reply(200)])
        body = harness.stream_body(CHUNKS)

        with no_sleep():
            response = harness.call(
                policy(),
                "PUT",
                server.url("/r"),
                content=body,
                headers=SIZED,
                raise_on_abort=False,
            )

        assert 503 == response.status_code
        outcome = response.extensions[harness.adapter.OUTCOME_EXTENSION]
        assert isinstance(outcome.error, referee.NotReplayable)
        assert "stream" in outcome.error.reason

    def test_httpx2_file_is_resent_from_where_it_stood(self, server, tmp_path):
        """
        httpx2 sends a file from where it stands (its Content-Length is
        what remains): a PUT of a file already partly read that meets a
        503 is sent again from that point, not from the file's start (which
        would overrun the declared length).
        """
        server.script("/r", [Reply(503), Reply(204)])
        path = tmp_path / "body.bin"
        path.write_bytes(b"header:" + bytes(range(256)) * 300)

        with no_sleep(), path.open("rb") as file:
            file.read(7)
            response = SyncHarness(httpx2, referee.httpx2).call(
                policy(), "PUT", server.url("/r"), content=file
            )

        assert 204 == response.status_code
        assert [bytes(range(256)) * 300] * 2 == [
            r.body for r in server.requests
        ]

    def test_bytes_body_is_resent_intact(self, harness, server):
        """
        A PUT with a bytes body that meets a 503 is sent again, body intact.
        """
        server.script("/r", [Reply(503), Reply(204)])

        with no_sleep():
            response = harness.call(
                policy(), "PUT", server.url("/r"), content=b"\x00payload\xff"
            )

        assert 204 == response.status_code
        assert [b"\x00payload\xff"] * 2 == [r.body for r in server.requests]


# --- Resources --------------------------------------------------------------


class TestClosing:
    def test_abandoned_responses_are_closed(self, harness, server):
        """
        After a three-attempt call, every response but the returned one is
        closed while the caller holds it.
        """
        server.script("/r", [Reply(503), Reply(502), Reply(200, body=b"ok")])
        inner = harness.counting()
        seen: list[list[bool]] = []

        with no_sleep():
            response = harness.call(
                policy(),
                "GET",
                server.url("/r"),
                inner=inner,
                while_open=lambda r: seen.append(inner.closed),
            )

        assert [[True, True, False]] == seen
        assert [True, True, True] == inner.closed
        assert b"ok" == response.content
        assert response is inner.responses[-1]

    def test_no_connection_stays_checked_out(self, harness, server):
        """
        While the caller holds the response of a three-attempt call, the
        connection pool has only that one request in flight; none after.
        """
        server.script("/r", [Reply(503), Reply(503), Reply(200)])
        inner = harness.counting()
        in_flight: list[int] = []

        with no_sleep():
            harness.call(
                policy(),
                "GET",
                server.url("/r"),
                inner=inner,
                while_open=lambda r: in_flight.append(
                    len(inner._pool._requests)
                ),
            )

        assert [1] == in_flight
        assert 0 == len(inner._pool._requests)
        assert 3 == server.count("/r")


# --- Secrets ----------------------------------------------------------------


SECRETS = ("SECRET123", "SECRET456", "SECRET789")


class TestSecrets:
    def test_secrets_are_redacted(self, harness, server):
        """
        No secret of the URL or the headers reaches a log event, the error's
        message or repr, or its trail.
        """
        server.script("/x", [Reply(503)])
        headers = {
            "x-api-key": "SECRET456",
            "Authorization": "Bearer SECRET789",
        }

        with (
            no_sleep(),
            structlog.testing.capture_logs() as logs,
            pytest.raises(ServerError) as ei,
        ):
            harness.call(
                policy(),
                "GET",
                server.url("/x?api_key=SECRET123&q=ok"),
                headers=headers,
            )

        err = ei.value
        assert 3 == len(decisions(logs))
        texts = [repr(v) for e in logs for v in e.values()]
        texts += [str(err), repr(err), err.reason, repr(err.trail)]
        leaks = [t for t in texts for s in SECRETS if s in t]
        assert [] == leaks
        assert all("q=ok" in e["url"] for e in decisions(logs))
        assert 3 == server.count("/x")


# --- The fast path ----------------------------------------------------------


class TestFastPath:
    def test_plain_200_is_the_inner_response(self, harness, server):
        """
        A 200 no rule can match is the inner transport's very response, and
        nothing is logged.
        """
        server.script("/r", [Reply(200, body=b"fine")])
        inner = harness.counting()

        with structlog.testing.capture_logs() as logs:
            response = harness.call(
                policy(), "GET", server.url("/r"), inner=inner
            )

        assert [] == logs
        assert 1 == len(inner.responses)
        assert response is inner.responses[0]
        assert b"fine" == response.content


# --- As a user writes it ------------------------------------------------------


class TestDefaults:
    @pytest.mark.parametrize(
        ("lib", "adapter"), LIBRARIES, ids=["httpx", "httpx2"]
    )
    def test_sync_default_transport(self, server, lib, adapter):
        """
        httpx.Client(transport=PolicyTransport(policy)) retries a 503; so
        does httpx2.Client with referee.httpx2's, whose inner transport is
        httpx2's own.
        """
        server.script("/r", [Reply(503), Reply(200, body=b"ok")])
        transport = adapter.PolicyTransport(policy())

        with no_sleep(), lib.Client(transport=transport) as client:
            response = client.get(server.url("/r"))

        assert b"ok" == response.content
        assert 2 == server.count("/r")
        assert isinstance(transport, lib.BaseTransport)
        assert type(transport.transport) is lib.HTTPTransport

    @pytest.mark.parametrize(
        ("lib", "adapter"), LIBRARIES, ids=["httpx", "httpx2"]
    )
    def test_async_default_transport(self, server, lib, adapter):
        """
        httpx.AsyncClient(transport=AsyncPolicyTransport(policy)) retries a
        503; so does httpx2.AsyncClient with referee.httpx2's.
        """
        server.script("/r", [Reply(503), Reply(200, body=b"ok")])
        transport = adapter.AsyncPolicyTransport(policy())

        async def go() -> Any:
            async with lib.AsyncClient(transport=transport) as client:
                return await client.get(server.url("/r"))

        with no_sleep():
            response = asyncio.run(go())

        assert b"ok" == response.content
        assert 2 == server.count("/r")
        assert isinstance(transport, lib.AsyncBaseTransport)
        assert type(transport.transport) is lib.AsyncHTTPTransport
