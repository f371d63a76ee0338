"""
referee.aiohttp over real HTTP: aiohttp.ClientSession with the policy
middleware, against the scripted loopback server of tests.server (and, for
answers that are not HTTP, a raw socket server defined here).

pytest-asyncio is not used: each test runs its coroutine with
``asyncio.run``.  No test really sleeps: ``referee.testing.no_sleep()``
records the delays instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import pytest
import structlog
from aiohttp.client_reqrep import ConnectionKey
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError
from multidict import CIMultiDict, CIMultiDictProxy
from tests.contract_servers import Drip, DripServer
from tests.server import RESET, Reply, ScriptedServer, closed_port
from yarl import URL

import referee
from referee import (
    Abort,
    Accept,
    AuthenticationError,
    CallOutcome,
    DeadlineExceeded,
    InsufficientCredits,
    NotReplayable,
    RetriesExhausted,
    ServerError,
)
from referee.aiohttp import (
    OUTCOME_ATTRIBUTE,
    PolicyMiddleware,
    _Exchange,
    _Replay,
    outcome,
)
from referee.testing import no_sleep


if TYPE_CHECKING:
    from collections.abc import (
        AsyncIterator,
        Callable,
        Coroutine,
        Iterator,
    )


T = TypeVar("T")

SINGLE = "/email/find/single"


# --- Helpers ------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    # serve_forever() polls for shutdown every 0.5 s by default, which would
    # add half a second to every test's teardown.
    srv._thread = threading.Thread(
        target=srv._httpd.serve_forever,
        kwargs={"poll_interval": 0.01},
        daemon=True,
    )
    httpd = srv._httpd
    # Without TCP_NODELAY a reply written in two pieces (head, then body)
    # meets the client's delayed ACK: 40 ms per keep-alive request.
    httpd.RequestHandlerClass = type(
        "NoDelayHandler",
        (httpd.RequestHandlerClass,),
        {"disable_nagle_algorithm": True},
    )
    report = httpd.handle_error

    def handle_error(request: Any, address: Any) -> None:
        # A slow reply written after the client gave up is expected here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            report(request, address)

    httpd.handle_error = handle_error  # type: ignore[method-assign]
    with srv:
        yield srv


def policy(name: str = "http-default") -> referee.Policy:
    """
    A freshly loaded policy, so that no state leaks between tests.
    """
    return referee.load_policy(name)


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(main())


def session(
    pol: referee.Policy,
    *,
    raise_on_abort: bool = True,
    timeout: aiohttp.ClientTimeout | None = None,
    response_class: type[aiohttp.ClientResponse] | None = None,
) -> aiohttp.ClientSession:
    """
    A session with the policy middleware; by default no attempt may take
    more than a few seconds, so that a broken test fails instead of hanging.
    """
    return aiohttp.ClientSession(
        middlewares=[PolicyMiddleware(pol, raise_on_abort=raise_on_abort)],
        timeout=timeout or aiohttp.ClientTimeout(total=10, sock_read=5),
        response_class=response_class,
    )


async def fetch(
    pol: referee.Policy, method: str, url: str, **kwargs: Any
) -> tuple[int, bytes]:
    """
    One call; the final status and body.
    """
    async with session(pol) as s, s.request(method, url, **kwargs) as r:
        return r.status, await r.read()


def counting_responses() -> tuple[type[aiohttp.ClientResponse], list[Any]]:
    """
    A response class that keeps every response made and notes which were
    released or closed, and the list it keeps them in.
    """
    made: list[Any] = []

    class Counting(aiohttp.ClientResponse):
        let_go = False

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

        def release(self) -> Any:
            self.let_go = True
            return super().release()

        def close(self) -> None:
            self.let_go = True
            super().close()

    return Counting, made


@contextlib.contextmanager
def raw_server(answer: bytes) -> Iterator[str]:
    """
    A loopback server that reads a request, writes *answer* (whatever it
    is) and hangs up; yields its base URL.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(5)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


@contextlib.contextmanager
def unanswered_port() -> Iterator[int]:
    """
    A loopback port whose accept queue is full: a connect hangs until it
    times out (Linux drops the SYN).
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def decisions(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "referee.decision"]


TWO_TRIES = """
policy: two-tries
defaults: {retry: {attempts: 2}}
rules:
  - {id: transport, when: {failure: [timeout, read, protocol]}, do: retry}
  - {id: unavailable, when: {status: 503}, do: retry}
"""

# TWO_TRIES, with a rule that looks into the bodies of 503s.
TWO_TRIES_BODY = """
policy: two-tries-body
defaults: {retry: {attempts: 2}}
rules:
  - {id: transport, when: {failure: [timeout, read, protocol]}, do: retry}
  - {id: down, when: {status: 503, body: {state: down}}, do: abort}
  - {id: unavailable, when: {status: 503}, do: retry}
"""


# --- Retries ------------------------------------------------------------------


class TestRetry:
    def test_retry_after_is_honoured(self, server):
        """
        A 429 with Retry-After: 7 is retried after exactly 7 seconds.
        """
        server.script(
            "/r", [Reply(429, {"Retry-After": "7"}), Reply(200, body=b"ok")]
        )

        with no_sleep() as slept:
            got = run(lambda: fetch(policy(), "GET", server.url("/r")))

        assert (200, b"ok") == got
        assert [7.0] == slept.delays
        assert 2 == server.count("/r")

    def test_503_is_retried_then_200_returned(self, server):
        """
        A 503 is retried, the 200 that follows is returned, and each
        decision is one referee.decision event.
        """
        server.script("/r", [Reply(503), Reply(200, body={"ok": True})])

        with no_sleep() as slept, structlog.testing.capture_logs() as logs:
            status, body = run(
                lambda: fetch(policy(), "GET", server.url("/r"))
            )

        assert (200, {"ok": True}) == (status, json.loads(body))
        assert 2 == server.count("/r")
        assert 1 == len(slept.delays)
        assert [("server-unavailable", "retry"), (None, "accept")] == [
            (e["rule"], e["action"]) for e in decisions(logs)
        ]

    def test_401_is_not_retried(self, server):
        """
        A 401 under enrow raises AuthenticationError after one request.
        """
        server.script(SINGLE, [Reply(401, body={"message": "bad key"})])

        with no_sleep() as slept, pytest.raises(AuthenticationError) as ei:
            run(
                lambda: fetch(
                    policy("enrow"), "GET", server.url(f"{SINGLE}?id=x")
                )
            )

        assert 1 == server.count(SINGLE)
        assert [] == slept.delays
        assert (401, "unauthorized") == (ei.value.status, ei.value.rule_id)

    def test_post_is_not_retried_on_500(self, server):
        """
        Under enrow a POST answered 500 raises ServerError after one
        request: a paid search is not sent twice.
        """
        server.script(SINGLE, [Reply(500), Reply(201)])

        with no_sleep() as slept, pytest.raises(ServerError) as ei:
            run(
                lambda: fetch(
                    policy("enrow"),
                    "POST",
                    server.url(SINGLE),
                    json={"fullname": "Ada Lovelace"},
                )
            )

        assert 1 == server.count(SINGLE)
        assert [] == slept.delays
        assert 500 == ei.value.status
        assert "idempotent" in ei.value.reason

    @pytest.mark.parametrize(
        ("make", "sent"),
        [
            (lambda: {"data": b"\x00raw\xff"}, b"\x00raw\xff"),
            (lambda: {"data": "fullname=Ada"}, b"fullname=Ada"),
            (
                lambda: {"data": {"fullname": "Ada Lovelace"}},
                b"fullname=Ada+Lovelace",
            ),
            (lambda: {"json": {"fullname": "Ada"}}, b'{"fullname": "Ada"}'),
            (lambda: {"data": io.BytesIO(b"from a file")}, b"from a file"),
        ],
        ids=["bytes", "str", "form", "json", "file"],
    )
    def test_post_is_retried_on_429_under_enrow(self, server, make, sent):
        """
        Under enrow a POST answered 429 is sent again with the same body,
        whatever form the body was given in.
        """
        server.script(
            SINGLE,
            [Reply(429, {"Retry-After": "1"}), Reply(201, body={"id": "x"})],
        )

        with no_sleep() as slept:
            status, _ = run(
                lambda: fetch(
                    policy("enrow"), "POST", server.url(SINGLE), **make()
                )
            )

        assert 201 == status
        assert [1.0] == slept.delays
        assert [("POST", sent), ("POST", sent)] == [
            (r.method, r.body) for r in server.requests
        ]

    def test_deadline_is_respected(self, server):
        """
        A Retry-After of 5 s under a 1 s deadline raises DeadlineExceeded
        instead of sleeping.
        """
        pol = referee.load_policy_text(
            """
policy: short
defaults: {deadline: 1s}
rules:
  - {id: rate-limited, when: {status: 429}, do: retry, error: RateLimited}
"""
        )
        server.script("/r", [Reply(429, {"Retry-After": "5"}), Reply(200)])

        with no_sleep() as slept, pytest.raises(DeadlineExceeded) as ei:
            run(lambda: fetch(pol, "GET", server.url("/r")))

        assert [] == slept.delays
        assert 1 == server.count("/r")
        assert 429 == ei.value.status


# --- Transport failures ---------------------------------------------------------


class TestFailures:
    def test_connect_failure_is_retried_then_exhausted(self):
        """
        A refused connection is retried, then RetriesExhausted is raised,
        chained to aiohttp's ClientConnectorError.
        """
        url = f"http://127.0.0.1:{closed_port()}/r"

        with no_sleep() as slept, pytest.raises(RetriesExhausted) as ei:
            run(lambda: fetch(policy(), "GET", url))

        assert "connect" == ei.value.failure
        assert ei.value.status is None
        assert ei.value.response is None
        assert 3 == len(ei.value.trail)
        assert 2 == len(slept.delays)
        assert isinstance(ei.value.__cause__, aiohttp.ClientConnectorError)

    def test_connect_timeout_is_a_connect_failure(self):
        """
        A connect timeout never reached the server: a POST is retried.
        """
        timeout = aiohttp.ClientTimeout(
            total=5, sock_connect=0.05, sock_read=1
        )

        async def main() -> None:
            with unanswered_port() as port:
                async with session(policy(), timeout=timeout) as s:
                    await s.post(f"http://127.0.0.1:{port}/", data=b"x")

        with no_sleep() as slept, pytest.raises(RetriesExhausted) as ei:
            run(main)

        assert "connect" == ei.value.failure
        assert 2 == len(slept.delays)
        assert isinstance(ei.value.__cause__, aiohttp.ConnectionTimeoutError)

    def test_server_hanging_up_is_a_read_failure(self, server):
        """
        A server that drops the connection without answering is a read
        failure, retried for a GET.
        """
        server.script("/r", [RESET, RESET, Reply(200, body=b"ok")])

        with no_sleep(), structlog.testing.capture_logs() as logs:
            got = run(lambda: fetch(policy(), "GET", server.url("/r")))

        assert (200, b"ok") == got
        assert 3 == server.count("/r")
        assert ["read", "read", None] == [
            e["failure"] for e in decisions(logs)
        ]

    def test_server_hanging_up_on_a_post_is_not_retried(self, server):
        """
        A POST whose connection broke may have been processed: not retried,
        and the error is chained to ServerDisconnectedError.
        """
        server.script("/r", [RESET, Reply(200)])

        with no_sleep(), pytest.raises(referee.Aborted) as ei:
            run(lambda: fetch(policy(), "POST", server.url("/r"), data=b"x"))

        assert "read" == ei.value.failure
        assert 1 == server.count("/r")
        assert isinstance(ei.value.__cause__, aiohttp.ServerDisconnectedError)

    def test_read_timeout_is_a_timeout(self, server):
        """
        A response slower than sock_read is a timeout failure.
        """
        server.script("/r", [Reply(200, body=b"late", delay=0.3)])
        timeout = aiohttp.ClientTimeout(total=5, sock_read=0.05)

        async def main() -> None:
            async with session(
                referee.load_policy_text(TWO_TRIES), timeout=timeout
            ) as s:
                await s.get(server.url("/r"))

        with no_sleep(), pytest.raises(RetriesExhausted) as ei:
            run(main)

        assert "timeout" == ei.value.failure
        assert 2 == server.count("/r")
        assert isinstance(ei.value.__cause__, aiohttp.SocketTimeoutError)

    def test_total_timeout_propagates_untouched(self, server):
        """
        The session's total timeout bounds the whole call: when it expires
        aiohttp's TimeoutError is raised as it is, and nothing is re-sent.
        """
        server.script("/r", [Reply(200, body=b"late", delay=0.3)])
        timeout = aiohttp.ClientTimeout(total=0.05)

        async def main() -> None:
            async with session(policy(), timeout=timeout) as s:
                await s.get(server.url("/r"))

        with no_sleep(), pytest.raises(asyncio.TimeoutError) as ei:
            run(main)

        assert not isinstance(ei.value, referee.RefereeError)
        assert 1 == server.settled_count("/r", 1)

    def test_bad_status_line_is_a_protocol_failure(self):
        """
        An answer that is not HTTP is a protocol failure.
        """
        with (
            raw_server(b"garbage\r\n\r\n") as base,
            no_sleep(),
            pytest.raises(RetriesExhausted) as ei,
        ):
            run(
                lambda: fetch(
                    referee.load_policy_text(TWO_TRIES), "GET", base + "/"
                )
            )

        assert "protocol" == ei.value.failure
        assert 2 == len(ei.value.trail)
        assert isinstance(ei.value.__cause__, aiohttp.ClientResponseError)

    def test_truncated_body_is_a_read_failure(self):
        """
        A body cut short, read because a rule looks into it, is a read
        failure.
        """
        answer = b"HTTP/1.1 503 Unavailable\r\nContent-Length: 10\r\n\r\nabc"
        with (
            raw_server(answer) as base,
            no_sleep(),
            pytest.raises(RetriesExhausted) as ei,
        ):
            run(
                lambda: fetch(
                    referee.load_policy_text(TWO_TRIES_BODY), "GET", base + "/"
                )
            )

        assert "read" == ei.value.failure
        assert isinstance(ei.value.__cause__, aiohttp.ClientPayloadError)

    def test_truncated_body_no_rule_reads_is_decided_on_its_status(self):
        """
        A body cut short that no rule looks into is not read to decide: the
        503 is retried on its status alone, and the error it ends in (whose
        body could not be read) still says 503.
        """
        answer = b"HTTP/1.1 503 Unavailable\r\nContent-Length: 10\r\n\r\nabc"
        with (
            raw_server(answer) as base,
            no_sleep(),
            pytest.raises(RetriesExhausted) as ei,
        ):
            run(
                lambda: fetch(
                    referee.load_policy_text(TWO_TRIES), "GET", base + "/"
                )
            )

        assert (503, None) == (ei.value.status, ei.value.failure)
        assert [503, 503] == [rec.status for rec in ei.value.trail]
        assert ei.value.body is None

    def test_unhandled_failure_propagates_untouched(self):
        """
        A failure no rule matches is raised as aiohttp raised it.
        """
        pol = referee.load_policy_text(
            "policy: t\nrules: [{id: r, when: {status: 503}, do: retry}]"
        )
        url = f"http://127.0.0.1:{closed_port()}/"

        with no_sleep() as slept, pytest.raises(aiohttp.ClientConnectorError):
            run(lambda: fetch(pol, "GET", url))

        assert [] == slept.delays


def _key() -> ConnectionKey:
    return ConnectionKey("h.example", 80, False, True, None, None, None, None)


def _response_error(cause: BaseException | None) -> BaseException:
    url = URL("http://h.example/")
    info = aiohttp.RequestInfo(
        url, "GET", CIMultiDictProxy(CIMultiDict()), url
    )
    exc = aiohttp.ClientResponseError(info, (), status=400, message="bad")
    exc.__cause__ = cause
    return exc


class TestFailureWords:
    @pytest.mark.parametrize(
        ("exc", "word"),
        [
            (
                aiohttp.ClientConnectorError(_key(), OSError(111, "no")),
                "connect",
            ),
            (
                aiohttp.ClientConnectorDNSError(_key(), OSError(-2, "dns")),
                "connect",
            ),
            (aiohttp.ConnectionTimeoutError("t"), "connect"),
            (aiohttp.SocketTimeoutError("t"), "timeout"),
            (aiohttp.ServerTimeoutError("t"), "timeout"),
            (aiohttp.ServerDisconnectedError(), "read"),
            (aiohttp.ClientPayloadError("cut"), "read"),
            (aiohttp.ClientOSError(104, "reset"), "read"),
            (aiohttp.ClientConnectionResetError("reset"), "read"),
            (_response_error(HttpProcessingError(code=400)), "protocol"),
            (BadHttpMessage("bad"), "protocol"),
            (_response_error(None), None),
            (TimeoutError(), None),
            (aiohttp.InvalidURL("x"), None),
            (ValueError("x"), None),
        ],
        ids=[
            "refused",
            "dns",
            "connect-timeout",
            "socket-timeout",
            "server-timeout",
            "disconnected",
            "payload",
            "os-error",
            "reset",
            "bad-status-line",
            "bad-message",
            "response-error",
            "total-timeout",
            "invalid-url",
            "other",
        ],
    )
    def test_word(self, exc, word):
        """
        Each aiohttp exception maps to its portable word, or to None.
        """
        assert word == _Exchange().failure(exc)


# --- Polling --------------------------------------------------------------------


class TestPoll:
    def test_enrow_ongoing_is_polled_to_completion(self, server):
        """
        An ongoing single search is polled until it is valid, and the caller
        reads the final JSON.
        """
        ongoing = Reply(202, body={"qualification": "ongoing"})
        done = {"qualification": "valid", "email": "ada@a.example"}
        server.script(SINGLE, [ongoing, ongoing, Reply(200, body=done)])

        async def main() -> Any:
            async with (
                session(policy("enrow")) as s,
                s.get(server.url(f"{SINGLE}?id=x")) as r,
            ):
                return await r.json()

        with no_sleep() as slept:
            got = run(main)

        assert done == got
        assert [f"{SINGLE}?id=x"] * 3 == [r.path for r in server.requests]
        assert [2.0, 3.0] == slept.delays

    def test_poll_request_changes_method_and_url(self, server):
        """
        A poll built from the body goes to the job's URL with GET, without
        the POST's body, keeping the other headers.
        """
        pol = referee.load_policy_text(
            """
policy: jobs
rules:
  - id: running
    when: {status: 202}
    do: poll
    poll: {request: {method: GET, url: "/jobs/{body.id}"}}
"""
        )
        server.script("/jobs", [Reply(202, body={"id": "j1"})])
        server.script(
            "/jobs/j1",
            [Reply(202, body={"id": "j1"}), Reply(200, body="done")],
        )

        async def main() -> tuple[str, bytes]:
            async with (
                session(pol) as s,
                s.post(
                    server.url("/jobs"),
                    json={"name": "n"},
                    headers={"x-api-key": "k-1"},
                ) as r,
            ):
                return str(r.url), await r.read()

        with no_sleep():
            url, body = run(main)

        assert (server.url("/jobs/j1"), b"done") == (url, body)
        assert [
            ("POST", "/jobs", b'{"name": "n"}'),
            ("GET", "/jobs/j1", b""),
            ("GET", "/jobs/j1", b""),
        ] == [(r.method, r.path, r.body) for r in server.requests]
        poll = server.requests[1].headers
        assert "k-1" == poll["x-api-key"]
        assert "content-type" not in poll
        assert "content-length" not in poll


# --- Errors and outcomes --------------------------------------------------------


class TestErrors:
    def test_402_raises_insufficient_credits(self, server):
        """
        A 402 raises InsufficientCredits with the rule, the status, the
        response (whose body is still readable) and the trail.
        """
        body = {"reason": "Insufficient credits", "success": False}
        server.script(SINGLE, [Reply(402, body=body)])

        async def main() -> Any:
            async with session(policy("enrow")) as s:
                try:
                    await s.get(server.url(f"{SINGLE}?id=x"))
                except InsufficientCredits as e:
                    return e, await e.response.json()
            return None

        with no_sleep():
            err, got = run(main)

        assert "out-of-credits" == err.rule_id
        assert 402 == err.status
        assert isinstance(err.response, aiohttp.ClientResponse)
        assert body == got
        assert [402] == [rec.status for rec in err.trail]

    def test_raise_on_abort_false_returns_the_response(self, server):
        """
        With raise_on_abort=False an abort returns the last response, with
        the outcome and the error that would have been raised attached.
        """
        server.script(SINGLE, [Reply(402, body={"reason": "none left"})])

        async def main() -> tuple[int, Any, CallOutcome | None]:
            async with (
                session(policy("enrow"), raise_on_abort=False) as s,
                s.get(server.url(f"{SINGLE}?id=x")) as r,
            ):
                return r.status, await r.json(), outcome(r)

        with no_sleep():
            status, body, got = run(main)

        assert (402, {"reason": "none left"}) == (status, body)
        assert isinstance(got, CallOutcome)
        assert isinstance(got.decision, Abort)
        assert isinstance(got.error, InsufficientCredits)
        assert 1 == len(got.trail)

    def test_outcome_of_a_retried_success(self, server):
        """
        With raise_on_abort=False a call that a rule retried carries its
        trail and no error; a response no rule looked at carries nothing.
        """
        server.script("/r", [Reply(503), Reply(200)])
        server.script("/plain", [Reply(200)])

        async def main() -> tuple[Any, Any, bool]:
            async with session(policy(), raise_on_abort=False) as s:
                async with s.get(server.url("/r")) as r:
                    retried = getattr(r, OUTCOME_ATTRIBUTE)
                async with s.get(server.url("/plain")) as r:
                    return retried, outcome(r), hasattr(r, OUTCOME_ATTRIBUTE)

        with no_sleep():
            retried, plain, has = run(main)

        assert isinstance(retried.decision, Accept)
        assert retried.error is None
        assert [503, 200] == [rec.status for rec in retried.trail]
        assert (None, False) == (plain, has)


# --- Bodies -------------------------------------------------------------------


class TestBodies:
    def test_body_read_by_a_rule_is_still_readable(self, server):
        """
        A body a rule looked into (an enrow 200 may be ongoing) is still
        readable by the caller, as text and as JSON; no rule matching, no
        decision is logged.
        """
        done = {"qualification": "valid", "email": "ada@a.example"}
        server.script(SINGLE, [Reply(200, body=done)])

        async def main() -> tuple[bool, str, Any]:
            async with (
                session(policy("enrow")) as s,
                s.get(server.url(f"{SINGLE}?id=x")) as r,
            ):
                was_read = r._body is not None
                return was_read, await r.text(), await r.json()

        with no_sleep(), structlog.testing.capture_logs() as logs:
            was_read, text, got = run(main)

        assert was_read
        assert (done, done) == (json.loads(text), got)
        assert [] == decisions(logs)

    def test_fast_path_leaves_the_body_unread(self, server):
        """
        A status no rule can match is returned without reading its body.
        """
        server.script("/r", [Reply(200, body=b"big")])

        async def main() -> tuple[bool, bytes]:
            async with session(policy()) as s, s.get(server.url("/r")) as r:
                return r._body is None, await r.read()

        got = run(main)

        assert (True, b"big") == got

    def test_streaming_body_is_not_resent(self, server):
        """
        A POST whose body was an async generator is not sent twice:
        NotReplayable is raised at once, names the retry rule, says why,
        and carries the response.
        """
        server.script(SINGLE, [Reply(429, {"Retry-After": "3"}), Reply(201)])

        async def chunks() -> AsyncIterator[bytes]:
            yield b"part1"
            yield b"part2"

        async def main() -> None:
            async with session(policy("enrow")) as s:
                await s.post(
                    server.url(SINGLE),
                    data=chunks(),
                    # tests.server reads Content-Length bodies only.
                    headers={"Content-Length": "10"},
                )

        with no_sleep() as slept, pytest.raises(NotReplayable) as ei:
            run(main)

        assert [b"part1part2"] == [r.body for r in server.requests]
        assert [] == slept.delays
        assert "stream" in ei.value.reason
        assert "rate-limited" == ei.value.rule_id
        assert 429 == ei.value.response.status

    def test_abandoned_responses_are_released(self, server):
        """
        The responses of attempts that were retried are released before the
        call returns, the returned one is left open for the caller, and the
        connection is reused throughout (the retried bodies are empty: one
        that no rule reads is released unread, and aiohttp closes its
        connection unless the body had all come already).
        """
        server.script("/r", [Reply(503), Reply(503), Reply(200)])
        counting, made = counting_responses()

        async def main() -> list[bool]:
            async with (
                session(policy(), response_class=counting) as s,
                s.get(server.url("/r")) as r,
            ):
                let_go = [m.let_go for m in made]
                await r.read()
                return let_go

        with no_sleep():
            let_go = run(main)

        assert [True, True, False] == let_go
        assert 3 == server.count("/r")
        assert 1 == server.connections


# --- Bodies given back, and bounded -------------------------------------------


@pytest.fixture
def drip_server() -> Iterator[DripServer]:
    with DripServer() as srv:
        yield srv


# A rule that looks into the bodies of 200s (and matches none here).
INSPECTS = """
policy: inspects
extends: http-default
defaults: {body_limit: %s}
rules:
  - id: ongoing
    when: {status: 200, body: {qualification: ongoing}}
    do: poll
"""

# A rule that opts in to reading an event stream's first event.
READS_EVENTS = """
policy: reads-events
extends: http-default
rules:
  - id: stream-error
    when:
      status: 200
      headers: {content-type: {contains: text/event-stream}}
      body: {error.type: server_error}
    do: retry
"""

# http-default's status rules alone, with a tiny backoff.
STATUS_ONLY = """
policy: status-only
extends: http-default
defaults:
  retry: {attempts: 2, backoff: {initial: 10ms, multiplier: 1, jitter: none}}
"""

#: A JSON document on many lines, about 40 KB: sent in 4 KB chunks, its
#: lines straddle the chunks.
DOCUMENT = (
    json.dumps(
        {
            "qualification": "valid",
            "items": [
                {"n": n, "text": "lorem ipsum " * 4} for n in range(500)
            ],
        },
        indent=2,
    )
    + "\n"
).encode()


async def consume(response: aiohttp.ClientResponse, style: str) -> bytes:
    """
    The body of *response*, read the way *style* names.
    """
    content = response.content
    if style == "readline":
        lines = []
        while line := await content.readline():
            lines.append(line)
        return b"".join(lines)
    if style == "lines":
        return b"".join([line async for line in content])
    if style == "iter_chunks":
        return b"".join([chunk async for chunk, _ in content.iter_chunks()])
    if style == "readexactly":
        return await content.readexactly(len(DOCUMENT))
    assert style == "text"
    return (await response.text()).encode()


JSON = {"Content-Type": "application/json"}

STYLES = ["readline", "lines", "iter_chunks", "readexactly", "text"]


class TestBodiesGivenBack:
    @pytest.mark.parametrize("style", STYLES)
    @pytest.mark.parametrize(
        ("limit", "whole"),
        [("1MiB", True), ("1KiB", False)],
        ids=["read-whole", "over-the-limit"],
    )
    def test_a_body_a_rule_read_reaches_every_reader(
        self, drip_server, limit, whole, style
    ):
        """
        A chunked body a rule looked into reaches the caller intact,
        whether the middleware read it all (it is then on the response
        already) or stopped at the body limit (the rest still streams from
        the connection): by lines, by HTTP chunks, exactly, as text.
        """
        chunks = tuple(
            DOCUMENT[i : i + 4096] for i in range(0, len(DOCUMENT), 4096)
        )
        drip_server.script(
            "/r", [Drip(200, JSON, chunks, immediate=len(chunks))]
        )

        async def main() -> tuple[bool, bytes]:
            async with (
                session(referee.load_policy_text(INSPECTS % limit)) as s,
                s.get(drip_server.url("/r")) as r,
            ):
                return r._body is not None, await consume(r, style)

        with no_sleep():
            read, body = run(main)

        assert (whole, DOCUMENT) == (read, body)

    def test_an_event_stream_a_rule_read_keeps_flowing(self, drip_server):
        """
        An event stream whose first event a rule reads reaches the caller
        event by event, as the server sends them: the first at once, the
        last only when it is sent, all of them whole and in order.
        """
        events = [f'data: {{"n": {n}}}\n\n'.encode() for n in range(5)]
        drip_server.script(
            "/events",
            [
                Drip(
                    200,
                    {"Content-Type": "text/event-stream"},
                    tuple(events),
                    interval=0.25,
                )
            ],
        )

        policy = referee.load_policy_text(READS_EVENTS)

        async def main() -> tuple[bool, list[tuple[bytes, float]]]:
            loop = asyncio.get_running_loop()
            started = loop.time()
            async with (
                session(policy) as s,
                s.get(drip_server.url("/events")) as r,
            ):
                replayed = isinstance(r.content, _Replay)
                seen = [
                    (line, loop.time() - started)
                    async for line in r.content
                    if line.startswith(b"data:")
                ]
            return replayed, seen

        with no_sleep():
            replayed, seen = run(main)

        assert replayed
        assert [e.split(b"\n")[0] + b"\n" for e in events] == [
            line for line, _ in seen
        ]
        # Held back, the events would all arrive together at the end; as
        # sent, they span the four intervals (a loaded machine may delay
        # the first, not bring the last forward).
        first, last = seen[0][1], seen[-1][1]
        assert first < 0.5
        assert last - first > 0.8

    def test_a_broken_rest_fails_the_callers_read(self):
        """
        A body over the limit whose connection breaks after the part the
        middleware read fails the caller's read as it fails without
        referee: with aiohttp's ClientPayloadError.
        """
        chunk = b"x" * 2000
        answer = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            b"%x\r\n%s\r\n" % (len(chunk), chunk)
        )

        async def main(base: str) -> bytes:
            pol = referee.load_policy_text(INSPECTS % "1KiB")
            async with session(pol) as s, s.get(base + "/") as r:
                return await r.read()

        with (
            raw_server(answer) as base,
            no_sleep(),
            pytest.raises(aiohttp.ClientPayloadError),
        ):
            asyncio.run(main(base))

    def test_a_dripping_503_no_rule_reads_is_not_read(self, drip_server):
        """
        A dripping 503 that no rule looks into is decided on its status:
        it is retried at once, not after its body (5.2 s) has come, and
        the call ends within the half second the error's body may take.
        """
        drip_server.script(
            "/drip",
            [
                Drip(
                    503,
                    JSON,
                    tuple(bytes([b]) for b in b'{"state": "running"}'),
                    interval=0.26,
                    immediate=0,
                    sized=True,
                )
            ],
        )
        pol = referee.load_policy_text(STATUS_ONLY)
        started = time.monotonic()

        with no_sleep() as slept, pytest.raises(ServerError) as ei:
            run(lambda: fetch(pol, "GET", drip_server.url("/drip")))

        first, second = ei.value.trail
        assert time.monotonic() - started < 1.0
        assert second.at - first.at - sum(slept.delays) < 0.2
        assert 2 == drip_server.count("/drip")

    def test_a_resend_is_cut_at_the_deadline(self, server):
        """
        A re-send gets only the time the call has left: one that would
        take 3 s under a 1 s deadline is cut short (a timeout), not waited
        for as aiohttp's own sock_read of 5 s would.
        """
        pol = referee.load_policy_text(
            """
policy: short
defaults:
  deadline: 1s
  retry: {backoff: {initial: 10ms, multiplier: 1, jitter: none}}
rules:
  - {id: busy, when: {status: 503}, do: retry}
  - {id: slow, when: {failure: timeout}, do: retry}
"""
        )
        server.script("/r", [Reply(503), Reply(200, delay=3)])
        started = time.monotonic()

        with pytest.raises(DeadlineExceeded) as ei:
            run(lambda: fetch(pol, "GET", server.url("/r")))

        assert time.monotonic() - started < 2
        assert [(503, None), (None, "timeout")] == [
            (rec.status, rec.failure) for rec in ei.value.trail
        ]
        assert 2 == server.count("/r")


# --- Secrets --------------------------------------------------------------------


class TestSecrets:
    def test_secrets_stay_out_of_logs_and_errors(self, server):
        """
        An API key in the query or in a header never appears in a decision
        event or in the error's message.
        """
        server.script("/r", [Reply(503)])

        async def main() -> None:
            async with session(policy()) as s:
                await s.get(
                    server.url("/r?api_key=SECRET&q=1"),
                    headers={"x-api-key": "SECRET"},
                )

        with (
            no_sleep(),
            structlog.testing.capture_logs() as logs,
            pytest.raises(ServerError) as ei,
        ):
            run(main)

        assert 3 == len(decisions(logs))
        assert "SECRET" not in repr(logs)
        assert "SECRET" not in str(ei.value)
        assert "SECRET" not in repr(ei.value.trail)
        assert "api_key=REDACTED" in decisions(logs)[0]["url"]

    def test_secrets_stay_out_of_transport_errors(self):
        """
        A failed connection to a URL with a key in its query gives an error
        and events without the key.
        """
        url = f"http://127.0.0.1:{closed_port()}/r?api_key=SECRET"

        with (
            no_sleep(),
            structlog.testing.capture_logs() as logs,
            pytest.raises(RetriesExhausted) as ei,
        ):
            run(lambda: fetch(policy(), "GET", url))

        assert "SECRET" not in repr(logs)
        assert "SECRET" not in str(ei.value)
