"""
referee.requests over real HTTP: a requests.Session with PolicyAdapter
mounted, against the scripted loopback server of tests.server (and, for
answers that are not HTTP, a raw socket server).

No test really sleeps: ``referee.testing.no_sleep()`` records the delays
instead.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import gzip
import io
import json
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest
import requests
import structlog
import urllib3.exceptions as u3
from requests import exceptions as rex
from tests.contract_servers import Drip, DripServer
from tests.server import RESET, Reply, ScriptedServer, closed_port
from urllib3.util import Timeout as Urllib3Timeout

import referee
from referee import (
    Abort,
    AuthenticationError,
    CallOutcome,
    DeadlineExceeded,
    InsufficientCredits,
    NotReplayable,
    PollRequest,
    RetriesExhausted,
    ServerError,
)
from referee.requests import (
    _BOUND,
    OUTCOME_ATTRIBUTE,
    PolicyAdapter,
    _bounded,
    _Exchange,
    _Replay,
)
from referee.testing import no_sleep


# --- Fixtures and helpers ---------------------------------------------------


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


@pytest.fixture
def slept() -> Iterator[referee.testing.SleepRecorder]:
    with no_sleep() as recorder:
        yield recorder


def policy(name: str = "http-default") -> referee.Policy:
    """
    A freshly loaded policy, so that no state leaks between tests.
    """
    return referee.load_policy(name)


class CountingAdapter(PolicyAdapter):
    """
    The policy adapter, keeping every response requests built for it and
    counting how often each was closed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.responses: list[requests.Response] = []
        self.closes: list[int] = []

    def build_response(
        self, req: requests.PreparedRequest, resp: Any
    ) -> requests.Response:
        response = super().build_response(req, resp)
        index = len(self.responses)
        self.responses.append(response)
        self.closes.append(0)
        close = response.close

        def counted() -> None:
            self.closes[index] += 1
            close()

        response.close = counted  # type: ignore[method-assign]
        return response


def session(adapter: PolicyAdapter) -> requests.Session:
    s = requests.Session()
    s.mount("http://", adapter)
    return s


def call(
    pol: referee.Policy,
    method: str,
    url: str,
    *,
    raise_on_abort: bool = True,
    adapter: PolicyAdapter | None = None,
    **kwargs: Any,
) -> requests.Response:
    """
    One call through a fresh session with *pol* mounted.
    """
    kwargs.setdefault("timeout", 5)
    adapter = adapter or PolicyAdapter(pol, raise_on_abort=raise_on_abort)
    with session(adapter) as s:
        return s.request(method, url, **kwargs)


def decisions(
    logs: Sequence[Mapping[str, Any]],
) -> list[Mapping[str, Any]]:
    return [e for e in logs if e["event"] == "referee.decision"]


class RawServer:
    """
    A loopback server that answers every request with the same raw bytes,
    then closes the connection: for answers that are not valid HTTP.
    """

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.requests = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen()
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.requests += 1
                conn.sendall(self.payload)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        # Closing alone does not wake a thread blocked in accept().
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(1)


# Retries every transport failure, and 503, twice in all, for any method.
FAILURES = referee.load_policy_text(
    """
policy: failures
defaults:
  retry: {attempts: 2}
rules:
  - id: failed
    when: {failure: [connect, timeout, read, protocol]}
    do: retry
  - id: busy
    when: {status: 503}
    do: retry
"""
)


# --- Retries ----------------------------------------------------------------


class TestRetry:
    @pytest.mark.parametrize(
        "name", ["http-default", "enrow"], ids=["http-default", "enrow"]
    )
    def test_retry_after_is_honoured(self, server, slept, name):
        """
        A 429 with Retry-After: 7 is retried after exactly 7 seconds.
        """
        server.script(
            "/r", [Reply(429, {"Retry-After": "7"}), Reply(200, body=b"ok")]
        )

        response = call(policy(name), "GET", server.url("/r"))

        assert [7.0] == slept.delays
        assert 200 == response.status_code
        assert b"ok" == response.content
        assert 2 == server.count("/r")

    def test_503_is_retried_then_200_returned(self, server, slept):
        """
        A 503 is retried and the 200 that follows is returned.
        """
        server.script("/r", [Reply(503), Reply(200, body={"ok": True})])

        response = call(policy(), "GET", server.url("/r"))

        assert 200 == response.status_code
        assert {"ok": True} == response.json()
        assert 2 == server.count("/r")
        assert 1 == len(slept.delays)

    @pytest.mark.parametrize("method", ["GET", "POST"], ids=["get", "post"])
    def test_401_is_not_retried(self, server, slept, method):
        """
        A 401 under enrow raises AuthenticationError after one request.
        """
        server.script("/email/find/single", [Reply(401, body={"m": "no"})])

        with pytest.raises(AuthenticationError) as ei:
            call(policy("enrow"), method, server.url("/email/find/single"))

        assert 1 == server.count("/email/find/single")
        assert [] == slept.delays
        assert 401 == ei.value.status
        assert "unauthorized" == ei.value.rule_id
        assert 401 == ei.value.response.status_code

    def test_urllib3_does_not_retry_underneath(self):
        """
        urllib3's own retries are off; the policy is the only one retrying.
        """
        adapter = PolicyAdapter(policy())

        assert 0 == adapter.max_retries.total
        assert adapter.max_retries.read is False


# --- Unsafe methods ---------------------------------------------------------


class TestUnsafeMethods:
    @pytest.mark.parametrize(
        "name", ["http-default", "enrow"], ids=["http-default", "enrow"]
    )
    def test_post_is_not_retried_on_500(self, server, slept, name):
        """
        A POST answered 500 raises ServerError, saying POST is not
        idempotent, after one request.
        """
        server.script("/email/find/single", [Reply(500), Reply(200)])

        with pytest.raises(ServerError) as ei:
            call(
                policy(name),
                "POST",
                server.url("/email/find/single"),
                json={"a": 1},
            )

        assert 1 == server.count("/email/find/single")
        assert [] == slept.delays
        assert "idempotent" in ei.value.reason
        assert 500 == ei.value.status

    def test_post_is_retried_on_429_under_enrow(self, server, slept):
        """
        Under enrow a POST answered 429 is sent again with the same body.
        """
        server.script(
            "/email/find/single",
            [Reply(429, {"Retry-After": "1"}), Reply(200, body={"id": "x"})],
        )
        payload = {"fullname": "Ada Lovelace", "company_domain": "a.example"}

        response = call(
            policy("enrow"),
            "POST",
            server.url("/email/find/single"),
            json=payload,
        )

        assert 200 == response.status_code
        assert {"id": "x"} == response.json()
        assert [1.0] == slept.delays
        first, second = server.requests
        assert ("POST", "POST") == (first.method, second.method)
        assert b'"Ada Lovelace"' in first.body
        assert first.body == second.body

    @pytest.mark.parametrize(
        "body",
        [b"\x00payload\xff", "caf\u00e9 payload"],
        ids=["bytes", "str"],
    )
    def test_bytes_and_str_bodies_are_resent_intact(self, server, slept, body):
        """
        A PUT with a bytes or str body that meets a 503 is sent again, body
        intact.
        """
        server.script("/r", [Reply(503), Reply(204)])

        response = call(policy(), "PUT", server.url("/r"), data=body)

        expected = body if isinstance(body, bytes) else body.encode()
        assert 204 == response.status_code
        assert [expected] * 2 == [r.body for r in server.requests]

    def test_generator_body_is_not_resent(self, server, slept):
        """
        Under enrow a POST whose body was a generator meets a 429: it is not
        sent again; NotReplayable names the rule and says the body was a
        stream.
        """
        server.script(
            "/email/find/single",
            [Reply(429, {"Retry-After": "1"}), Reply(200)],
        )

        def body() -> Iterator[bytes]:
            yield b'{"fullname": '
            yield b'"Ada Lovelace"}'

        with pytest.raises(NotReplayable) as ei:
            call(
                policy("enrow"),
                "POST",
                server.url("/email/find/single"),
                data=body(),
            )

        assert 1 == server.count("/email/find/single")
        assert "body was a stream" in ei.value.reason
        assert "body was a stream" in str(ei.value)
        assert "rate-limited" == ei.value.rule_id

    def test_generator_body_gives_up_before_sleeping(self, server, slept):
        """
        A retry that cannot re-send a generator body gives up at once with
        NotReplayable, which carries the last response.
        """
        server.script("/r", [Reply(503, {"Retry-After": "9"}), Reply(200)])

        with pytest.raises(NotReplayable) as ei:
            call(policy(), "PUT", server.url("/r"), data=iter([b"chunk"]))

        assert [] == slept.delays
        assert isinstance(ei.value.response, requests.Response)
        assert 503 == ei.value.response.status_code
        assert ["abort"] == [r.action for r in ei.value.trail]
        assert 1 == server.count("/r")

    def test_generator_body_returns_the_response_when_asked(
        self, server, slept
    ):
        """
        With raise_on_abort=False, a retry that cannot re-send a generator
        body returns the last response, the reason in its outcome.
        """
        server.script("/r", [Reply(503, body=b"busy"), Reply(200)])

        response = call(
            policy(),
            "PUT",
            server.url("/r"),
            data=iter([b"chunk"]),
            raise_on_abort=False,
        )

        outcome = getattr(response, OUTCOME_ATTRIBUTE)
        assert 503 == response.status_code
        assert b"busy" == response.content
        assert isinstance(outcome.error, NotReplayable)
        assert "body was a stream" in outcome.error.reason
        assert [b"chunk"] == [r.body for r in server.requests]


# --- Polling ----------------------------------------------------------------


class TestPoll:
    def test_enrow_ongoing_is_polled_to_completion(self, server, slept):
        """
        An ongoing single search is polled until it is valid, and the caller
        reads the final JSON.
        """
        ongoing = Reply(202, body={"qualification": "ongoing"})
        done = {"qualification": "valid", "email": "a@b.c"}
        server.script(
            "/email/find/single", [ongoing, ongoing, Reply(200, body=done)]
        )

        response = call(
            policy("enrow"), "GET", server.url("/email/find/single?id=x")
        )

        assert 200 == response.status_code
        assert done == response.json()
        assert ["/email/find/single?id=x"] * 3 == [
            r.path for r in server.requests
        ]
        assert [2.0, 3.0] == slept.delays

    def test_poll_with_another_method_drops_the_body(self, server, slept):
        """
        A POST answered 202 with a Location is polled with a GET there: the
        same headers, no body and no content headers.
        """
        pol = referee.load_policy_text(
            """
policy: jobs
rules:
  - id: accepted
    when: {status: 202}
    do: poll
    poll: {request: {method: GET, url: "{header.Location}"}}
"""
        )
        server.script("/start", [Reply(202, {"Location": "/jobs/1"})])
        server.script("/jobs/1", [Reply(200, body={"done": True})])

        response = call(
            pol,
            "POST",
            server.url("/start"),
            json={"job": "big"},
            headers={"x-api-key": "k-123"},
        )

        assert {"done": True} == response.json()
        start, poll = server.requests
        assert ("POST", "/start") == (start.method, start.path)
        assert ("GET", "/jobs/1") == (poll.method, poll.path)
        assert "k-123" == poll.headers["x-api-key"]
        assert b"" == poll.body
        assert "content-type" not in poll.headers
        assert "content-length" not in poll.headers


# --- Typed errors and outcomes ----------------------------------------------


class TestErrors:
    def test_402_raises_insufficient_credits(self, server, slept):
        """
        A 402 raises InsufficientCredits with the rule, the status, the
        response and the trail, whose record (and log event) names the
        top-up alert.
        """
        body = {"reason": "Insufficient credits", "success": False}
        server.script("/email/find/single", [Reply(402, body=body)])

        with (
            structlog.testing.capture_logs() as logs,
            pytest.raises(InsufficientCredits) as ei,
        ):
            call(policy("enrow"), "GET", server.url("/email/find/single?id=x"))

        err = ei.value
        assert isinstance(err, referee.Aborted)
        assert "out-of-credits" == err.rule_id
        assert 402 == err.status
        assert err.failure is None
        assert isinstance(err.response, requests.Response)
        assert body == err.response.json()
        assert [(402, "out-of-credits", "abort")] == [
            (r.status, r.rule_id, r.action) for r in err.trail
        ]
        assert err.trail[0].alert is not None
        assert "topup" == err.trail[0].alert.kind
        assert ["topup"] == [e["alert"] for e in decisions(logs)]
        assert 1 == server.count("/email/find/single")

    def test_402_outcome_carries_the_alert(self, server, slept):
        """
        With raise_on_abort=False the 402 is returned, and its outcome holds
        the top-up alert the rule asks for.
        """
        server.script("/email/find/single", [Reply(402)])

        response = call(
            policy("enrow"),
            "GET",
            server.url("/email/find/single?id=x"),
            raise_on_abort=False,
        )

        outcome = getattr(response, OUTCOME_ATTRIBUTE)
        assert 402 == response.status_code
        assert isinstance(outcome.error, InsufficientCredits)
        assert outcome.decision.alert is not None
        assert ("topup", "critical") == (
            outcome.decision.alert.kind,
            outcome.decision.alert.severity,
        )

    def test_connect_failure_is_retried_then_chained(self, slept):
        """
        A refused connection is tried three times in all, then raises
        RetriesExhausted chained to requests' ConnectionError.
        """
        url = f"http://127.0.0.1:{closed_port()}/r"

        with pytest.raises(RetriesExhausted) as ei:
            call(policy(), "GET", url)

        err = ei.value
        assert isinstance(err.__cause__, requests.ConnectionError)
        assert "connect" == err.failure
        assert err.status is None
        assert err.response is None
        assert ["connect"] * 3 == [r.failure for r in err.trail]
        assert 2 == len(slept.delays)

    def test_deadline_is_respected(self, server, slept):
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
    when: {status: 429}
    do: retry
"""
        )
        server.script("/r", [Reply(429, {"Retry-After": "5"}), Reply(200)])

        with pytest.raises(DeadlineExceeded) as ei:
            call(pol, "GET", server.url("/r"))

        assert [] == slept.delays
        assert 1 == server.count("/r")
        assert "busy" == ei.value.rule_id
        assert 429 == ei.value.status

    def test_responses_instead_of_exceptions(self, server, slept):
        """
        With raise_on_abort=False the last 503 is returned, carrying the
        outcome: the trail and the error that was not raised.
        """
        server.script("/r", [Reply(503, body=b"down")])

        response = call(
            policy(), "GET", server.url("/r"), raise_on_abort=False
        )

        assert 503 == response.status_code
        assert b"down" == response.content
        outcome = getattr(response, OUTCOME_ATTRIBUTE)
        assert isinstance(outcome, CallOutcome)
        assert isinstance(outcome.decision, Abort)
        assert ["retry", "retry", "abort"] == [r.action for r in outcome.trail]
        assert isinstance(outcome.error, ServerError)
        assert 503 == outcome.error.status
        assert 3 == server.count("/r")


# --- Transport failures, in portable words ----------------------------------


Setup = Callable[[ScriptedServer, list[RawServer]], tuple[str, Any]]


@pytest.fixture
def raw_servers() -> Iterator[list[RawServer]]:
    servers: list[RawServer] = []
    yield servers
    for raw in servers:
        raw.close()


def _refused(
    server: ScriptedServer, raws: list[RawServer]
) -> tuple[str, Callable[[], int]]:
    return f"http://127.0.0.1:{closed_port()}/r", lambda: 0


def _scripted(reply: Reply) -> Setup:
    def setup(
        server: ScriptedServer, raws: list[RawServer]
    ) -> tuple[str, Callable[[], int]]:
        server.script("/r", [reply])
        return server.url("/r"), lambda: server.settled_count("/r", 2)

    return setup


def _raw(payload: bytes) -> Setup:
    def setup(
        server: ScriptedServer, raws: list[RawServer]
    ) -> tuple[str, Callable[[], int]]:
        raw = RawServer(payload)
        raws.append(raw)
        return raw.url("/r"), lambda: raw.requests

    return setup


class TestFailures:
    @pytest.mark.parametrize(
        ("setup", "word", "cause", "sends"),
        [
            (_refused, "connect", requests.ConnectionError, 0),
            (_scripted(RESET), "read", requests.ConnectionError, 2),
            (
                _scripted(Reply(200, delay=0.3)),
                "timeout",
                requests.ReadTimeout,
                2,
            ),
            (
                _raw(b"garbage\r\n\r\n"),
                "protocol",
                requests.ConnectionError,
                2,
            ),
            (
                _raw(b"HTTP/9.9 200 OK\r\nContent-Length: 0\r\n\r\n"),
                "protocol",
                requests.ConnectionError,
                2,
            ),
            (_raw(b""), "read", requests.ConnectionError, 2),
        ],
        ids=[
            "refused",
            "reset",
            "read-timeout",
            "bad-status-line",
            "unknown-protocol",
            "closed-without-answer",
        ],
    )
    def test_failure_words(
        self, server, raw_servers, slept, setup, word, cause, sends
    ):
        """
        Each real transport fault reaches the policy as its portable word,
        is retried, and the final error is chained to requests' exception.
        """
        url, count = setup(server, raw_servers)

        with pytest.raises(RetriesExhausted) as ei:
            call(FAILURES, "GET", url, timeout=0.1)

        err = ei.value
        assert word == err.failure
        assert [word, word] == [r.failure for r in err.trail]
        assert isinstance(err.__cause__, cause)
        assert sends == count()

    def test_bad_content_length_is_a_protocol_failure(
        self, raw_servers, slept
    ):
        """
        An answer with conflicting Content-Length values is a 'protocol'
        failure, chained to requests' InvalidHeader.
        """
        raw = RawServer(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nab")
        raw_servers.append(raw)

        with warnings.catch_warnings():
            # urllib3 raises InvalidHeader without closing the socket file
            # it made: the socket is freed only by the garbage collector,
            # with a ResourceWarning.  Collect it here, not in a later test.
            warnings.simplefilter("ignore", ResourceWarning)
            with pytest.raises(RetriesExhausted) as ei:
                call(FAILURES, "GET", raw.url("/r"))
            gc.collect()

        err = ei.value
        assert ["protocol", "protocol"] == [r.failure for r in err.trail]
        assert isinstance(err.__cause__, rex.InvalidHeader)
        assert 2 == raw.requests

    def test_body_cut_short_no_rule_reads_is_decided_on_its_status(
        self, raw_servers, slept
    ):
        """
        A 503 whose body is cut short, that no rule looks into, is not read
        to decide: it is retried on its status alone, and the error it ends
        in (whose body could not be read) still says 503.
        """
        raw = RawServer(b"HTTP/1.1 503 Busy\r\nContent-Length: 10\r\n\r\nab")
        raw_servers.append(raw)

        with pytest.raises(RetriesExhausted) as ei:
            call(FAILURES, "GET", raw.url("/r"))

        err = ei.value
        assert (503, None) == (err.status, err.failure)
        assert [503, 503] == [r.status for r in err.trail]
        assert err.body is None
        assert 2 == raw.requests

    def test_unhandled_failure_propagates_untouched(self, server, slept):
        """
        A failure no rule names propagates as requests raised it, after one
        request: urllib3 did not retry underneath.
        """
        pol = referee.load_policy_text(
            """
policy: only-503
rules:
  - id: busy
    when: {status: 503}
    do: retry
"""
        )
        server.script("/r", [RESET])

        with (
            structlog.testing.capture_logs() as logs,
            pytest.raises(requests.ConnectionError) as ei,
        ):
            call(pol, "GET", server.url("/r"))

        assert not isinstance(ei.value, referee.RefereeError)
        assert 1 == server.count("/r")
        assert [] == slept.delays
        assert [] == decisions(logs)

    def test_invalid_url_propagates(self, slept):
        """
        An error that is no transport failure (a URL without a host) is
        raised as requests raised it.
        """
        adapter = PolicyAdapter(policy())
        request = requests.Request("GET", "http://127.0.0.1:1/").prepare()
        request.url = "http:///nowhere"

        with pytest.raises(rex.InvalidURL):
            adapter.send(request)

        assert [] == slept.delays


def _max_retry(reason: Exception) -> u3.MaxRetryError:
    return u3.MaxRetryError(None, "/r", reason)  # type: ignore[arg-type]


def _aborted(inner: Exception) -> u3.ProtocolError:
    return u3.ProtocolError("Connection aborted.", inner)


class TestFailureWords:
    @pytest.mark.parametrize(
        ("exc", "word"),
        [
            (
                rex.ConnectionError(
                    _max_retry(u3.NewConnectionError(None, "refused"))  # type: ignore[arg-type]
                ),
                "connect",
            ),
            (
                rex.ConnectionError(
                    _max_retry(
                        u3.NameResolutionError(
                            "nowhere.invalid",
                            None,  # type: ignore[arg-type]
                            socket.gaierror("no such host"),
                        )
                    )
                ),
                "connect",
            ),
            (
                rex.ConnectTimeout(
                    _max_retry(u3.ConnectTimeoutError("connect timed out"))
                ),
                "connect",
            ),
            (rex.SSLError(_max_retry(u3.SSLError("bad cert"))), "connect"),
            (
                rex.ProxyError(_max_retry(u3.ProxyError("no", OSError()))),
                "connect",
            ),
            (
                rex.ReadTimeout(
                    u3.ReadTimeoutError(None, "/r", "read timed out")  # type: ignore[arg-type]
                ),
                "timeout",
            ),
            (
                rex.ConnectionError(
                    u3.ReadTimeoutError(None, "/r", "read timed out")  # type: ignore[arg-type]
                ),
                "timeout",
            ),
            (
                rex.ConnectionError(
                    _aborted(ConnectionResetError("reset by peer"))
                ),
                "read",
            ),
            (rex.ConnectionError(ConnectionResetError()), "read"),
            (
                rex.ChunkedEncodingError(
                    u3.ProtocolError(
                        "Connection broken", u3.IncompleteRead(2, 8)
                    )
                ),
                "read",
            ),
            (
                rex.ContentDecodingError(u3.DecodeError("not gzip")),
                "protocol",
            ),
            (rex.InvalidHeader("bad header from the caller"), None),
            (
                rex.ConnectionError(u3.ClosedPoolError(None, "closed")),  # type: ignore[arg-type]
                None,
            ),
            (rex.ConnectionError(), None),
            (rex.InvalidURL("no host"), None),
            (rex.MissingSchema("no scheme"), None),
            (rex.RetryError("too many 500s"), None),
            (ValueError("not requests"), None),
        ],
        ids=[
            "refused",
            "dns",
            "connect-timeout",
            "tls",
            "proxy",
            "read-timeout",
            "read-timeout-in-body",
            "reset-mid-response",
            "bare-oserror",
            "incomplete-body",
            "bad-gzip",
            "caller-invalid-header",
            "closed-pool",
            "empty-connection-error",
            "invalid-url",
            "missing-schema",
            "retry-error",
            "foreign",
        ],
    )
    def test_word(self, exc, word):
        """
        requests' and urllib3's exceptions map to the portable words; what
        is no transport failure has no snapshot.
        """
        request = _prepared("GET")

        snap = _Exchange().exception_snapshot(request, exc)

        assert word == (None if snap is None else snap.failure)
        if snap is not None:
            assert ("GET", request.url) == (snap.method, snap.url)


# --- Requests and bodies ----------------------------------------------------


def _prepared(method: str, **kwargs: Any) -> requests.PreparedRequest:
    return requests.Request(
        method,
        "http://127.0.0.1:1/start?x=1",
        headers={"x-api-key": "k"},
        **kwargs,
    ).prepare()


class _Unseekable(io.BytesIO):
    """
    A file that cannot seek, like a pipe.
    """

    def seekable(self) -> bool:
        return False


class TestExchange:
    @pytest.mark.parametrize(
        "body",
        [None, b"raw", "text", {"form": "field"}, io.BytesIO(b"file")],
        ids=["none", "bytes", "str", "form", "file"],
    )
    def test_replayable_bodies(self, body):
        """
        A request whose body is bytes, str, nothing or a seekable file can
        be sent again.
        """
        assert None is _Exchange().replayable(_prepared("POST", data=body))

    @pytest.mark.parametrize(
        ("body", "kind"),
        [
            ((b for b in [b"a", b"b"]), "generator"),
            (iter([b"a"]), "list_iterator"),
            (_Unseekable(b"pipe"), "_Unseekable"),
        ],
        ids=["generator", "iterator", "unseekable-file"],
    )
    def test_stream_bodies_are_not_replayable(self, body, kind):
        """
        A request whose body is a stream cannot be sent again, and the
        reason says so and how to fix it.
        """
        why = _Exchange().replayable(_prepared("POST", data=body))

        assert why is not None
        assert f"its body was a stream ({kind})" in why
        assert "bytes" in why

    def test_poll_with_the_same_method_keeps_the_body(self):
        """
        A poll with the request's own method keeps its headers and body.
        """
        request = _prepared("POST", json={"a": 1})

        polled = _Exchange().poll_request(
            request, PollRequest("POST", "http://127.0.0.1:1/jobs/1")
        )

        assert ("POST", "http://127.0.0.1:1/jobs/1") == (
            polled.method,
            polled.url,
        )
        assert request.body == polled.body
        assert dict(request.headers) == dict(polled.headers)
        assert "http://127.0.0.1:1/start?x=1" == request.url

    def test_poll_with_another_method_drops_the_body(self):
        """
        A GET poll of a POST has the same headers but no body and no content
        headers; the original request is left as it was.
        """
        request = _prepared("POST", json={"a": 1})

        polled = _Exchange().poll_request(
            request, PollRequest("GET", "http://127.0.0.1:1/jobs/1")
        )

        assert "GET" == polled.method
        assert polled.body is None
        assert "k" == polled.headers["x-api-key"]
        assert "content-type" not in polled.headers
        assert "content-length" not in polled.headers
        assert "POST" == request.method
        assert "content-length" in request.headers


class TestBodies:
    @pytest.mark.parametrize("stream", [False, True], ids=["read", "stream"])
    def test_body_is_readable_after_a_rule_read_it(
        self, server, slept, stream
    ):
        """
        A 200 whose body a rule looked into is still readable by the caller.
        """
        done = {"qualification": "valid", "email": "a@b.c"}
        server.script("/email/find/single", [Reply(200, body=done)])

        response = call(
            policy("enrow"),
            "GET",
            server.url("/email/find/single?id=x"),
            stream=stream,
        )

        assert done == response.json()

    def test_streamed_body_no_rule_needs_is_not_read(self, server, slept):
        """
        With stream=True, a body no rule looks into is left unread for the
        caller (a 200 after a retried 503: the call ran through the flow).
        """
        server.script("/r", [Reply(503), Reply(200, body=b"fine")])

        response = call(policy(), "GET", server.url("/r"), stream=True)

        assert response._content_consumed is False
        assert b"fine" == response.content
        assert 2 == server.count("/r")

    def test_streamed_error_body_is_read_for_the_error(self, server, slept):
        """
        With stream=True, the body of the response the call aborts on is
        read (briefly) so that the outcome's error carries the API's
        words; the caller still reads it whole.
        """
        server.script("/r", [Reply(503, body=b"down")])

        response = call(
            policy(),
            "GET",
            server.url("/r"),
            stream=True,
            raise_on_abort=False,
        )

        outcome = getattr(response, OUTCOME_ATTRIBUTE)
        assert b"down" == outcome.error.body
        assert b"down" == response.content

    def test_streamed_body_over_the_limit_is_not_read(self, server, slept):
        """
        With stream=True, a body declared longer than body_limit is not
        read, even for a rule that looks into bodies: it does not match.
        """
        pol = referee.load_policy_text(
            """
policy: small
defaults: {body_limit: 16}
rules:
  - id: ongoing
    when: {body: {state: ongoing}}
    do: poll
"""
        )
        body = {"state": "ongoing", "padding": "x" * 32}
        server.script("/r", [Reply(200, body=body)])

        response = call(pol, "GET", server.url("/r"), stream=True)

        assert response._content_consumed is False
        assert body == response.json()
        assert 1 == server.count("/r")

    @pytest.mark.parametrize("stream", [False, True], ids=["read", "stream"])
    def test_body_broken_half_way_is_a_read_failure(
        self, raw_servers, slept, stream
    ):
        """
        A body a rule needs that breaks half-way is a 'read' failure the
        policy retries, chained to requests' ChunkedEncodingError.
        """
        raw = RawServer(
            b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n"
            b'{"qualification": "ongo'
        )
        raw_servers.append(raw)

        with pytest.raises(RetriesExhausted) as ei:
            call(
                policy("enrow"),
                "GET",
                raw.url("/email/find/single?id=x"),
                stream=stream,
            )

        err = ei.value
        assert ["read"] * 4 == [r.failure for r in err.trail]
        assert isinstance(err.__cause__, rex.ChunkedEncodingError)
        assert 4 == raw.requests


# --- Resources --------------------------------------------------------------


class TestClosing:
    @pytest.mark.parametrize("stream", [False, True], ids=["read", "stream"])
    @pytest.mark.parametrize(
        ("name", "path", "replies", "abandoned"),
        [
            ("http-default", "/r", [Reply(503), Reply(502), Reply(200)], 2),
            ("http-default", "/r", [Reply(429), Reply(200)], 1),
            (
                "enrow",
                "/email/find/single",
                [
                    Reply(202, body={"qualification": "ongoing"}),
                    Reply(202, body={"qualification": "ongoing"}),
                    Reply(200, body={"qualification": "valid"}),
                ],
                2,
            ),
        ],
        ids=["two-retries", "one-retry", "two-polls"],
    )
    def test_abandoned_responses_are_closed(
        self, server, slept, stream, name, path, replies, abandoned
    ):
        """
        Every response but the returned one is closed, once; the returned
        one is left open for the caller.
        """
        server.script(path, replies)
        adapter = CountingAdapter(policy(name))

        response = call(
            policy(name),
            "GET",
            server.url(path),
            adapter=adapter,
            stream=stream,
        )

        assert [1] * abandoned + [0] == adapter.closes
        assert response is adapter.responses[-1]
        assert all(r.raw.closed for r in adapter.responses[:-1])
        assert len(replies) == server.count(path)
        response.close()

    def test_read_responses_free_the_connection(self, server, slept):
        """
        The abandoned responses, whose bodies are empty (nothing is left to
        read), give their connection back: one connection serves the three
        attempts.
        """
        server.script("/r", [Reply(503), Reply(503), Reply(200)])

        call(policy(), "GET", server.url("/r"))

        assert 3 == server.count("/r")
        assert 1 == server.connections


# --- Bodies given back -------------------------------------------------------


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

JSON = {"Content-Type": "application/json"}

#: A JSON document on many lines, about 40 KB, that no rule here matches.
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


def in_chunks(data: bytes, size: int = 4096) -> tuple[bytes, ...]:
    return tuple(data[i : i + size] for i in range(0, len(data), size))


def consume(response: requests.Response, style: str) -> bytes:
    """
    The body of *response*, read the way *style* names.
    """
    if style == "content":
        return response.content
    if style == "iter_content":
        return b"".join(response.iter_content(chunk_size=1000))
    if style == "iter_lines":
        return b"".join(line + b"\n" for line in response.iter_lines())
    if style == "raw.read":
        return response.raw.read(decode_content=True)  # type: ignore[no-any-return]
    if style == "raw.read(amt)":
        parts = []
        while part := response.raw.read(1000, decode_content=True):
            parts.append(part)
        return b"".join(parts)
    assert style == "raw.stream"
    return b"".join(response.raw.stream(decode_content=True))


STYLES = [
    "content",
    "iter_content",
    "iter_lines",
    "raw.read",
    "raw.read(amt)",
    "raw.stream",
]


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
        With stream=True, a chunked body a rule looked into reaches the
        caller intact, whether the adapter read it all (requests holds it,
        and the raw response replays it) or stopped at the body limit (the
        rest still streams from the connection).
        """
        chunks = in_chunks(DOCUMENT)
        drip_server.script(
            "/r", [Drip(200, JSON, chunks, immediate=len(chunks))]
        )

        with no_sleep():
            response = call(
                referee.load_policy_text(INSPECTS % limit),
                "GET",
                drip_server.url("/r"),
                stream=True,
            )
            with response:
                read = response._content_consumed
                body = consume(response, style)

        assert (whole, DOCUMENT) == (read, body)

    @pytest.mark.parametrize("style", STYLES)
    @pytest.mark.parametrize(
        ("limit", "whole"),
        [("1MiB", True), ("1KiB", False)],
        ids=["read-whole", "over-the-limit"],
    )
    def test_gzip_is_decoded_once(self, drip_server, limit, whole, style):
        """
        A gzip body (chunked, so its length is not declared) a rule looked
        into reaches the caller decoded, once, however it is read; the
        response's headers still say how it came.
        """
        chunks = in_chunks(gzip.compress(DOCUMENT), 1024)
        headers = {**JSON, "Content-Encoding": "gzip"}
        drip_server.script(
            "/r", [Drip(200, headers, chunks, immediate=len(chunks))]
        )

        with no_sleep():
            response = call(
                referee.load_policy_text(INSPECTS % limit),
                "GET",
                drip_server.url("/r"),
                stream=True,
            )
            with response:
                read = response._content_consumed
                body = consume(response, style)

        assert (whole, DOCUMENT) == (read, body)
        assert "gzip" == response.headers["Content-Encoding"]

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
        started = time.monotonic()

        with no_sleep():
            response = call(
                policy,
                "GET",
                drip_server.url("/events"),
                stream=True,
            )
            with response:
                replayed = isinstance(response.raw, _Replay)
                seen = [
                    (line, time.monotonic() - started)
                    for line in response.iter_lines(chunk_size=None)
                    if line
                ]

        assert [e.split(b"\n")[0] for e in events] == [
            line for line, _ in seen
        ]
        # Held back, the events would all arrive together at the end; as
        # sent, they span the four intervals (a loaded machine may delay
        # the first, not bring the last forward).
        first, last = seen[0][1], seen[-1][1]
        assert replayed
        assert first < 0.5
        assert last - first > 0.8

    def test_a_slow_error_body_still_reaches_the_caller(self, drip_server):
        """
        The body of the response a call aborts on, read for the error, that
        has not all come when that brief read gives up still reaches a
        caller who asked for responses, whole.
        """
        body = b'{"state": "down"}'
        drip_server.script(
            "/drip",
            [
                Drip(
                    503,
                    JSON,
                    tuple(bytes([b]) for b in body),
                    interval=0.1,
                    immediate=2,
                    sized=True,
                )
            ],
        )
        pol = referee.load_policy_text(
            """
policy: once
rules:
  - {id: down, when: {status: 503}, do: abort, error: ServerError}
"""
        )
        started = time.monotonic()

        with no_sleep():
            response = call(
                pol,
                "GET",
                drip_server.url("/drip"),
                stream=True,
                raise_on_abort=False,
            )
            returned = time.monotonic() - started
            with response:
                got = response.content

        outcome = getattr(response, OUTCOME_ATTRIBUTE)
        assert returned < 1.0
        assert outcome.error.body is None
        assert body == got

    def test_a_broken_rest_fails_the_callers_read(self, raw_servers, slept):
        """
        A body over the limit whose connection breaks after the part the
        adapter read fails the caller's read as it fails without referee:
        with requests' ChunkedEncodingError.
        """
        chunk = b"x" * 2000
        raw = RawServer(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            b"%x\r\n%s\r\n" % (len(chunk), chunk)
        )
        raw_servers.append(raw)

        with pytest.raises(rex.ChunkedEncodingError):
            call(referee.load_policy_text(INSPECTS % "1KiB"), "GET", raw.url())

    def test_cookies_of_a_read_response_reach_the_session(self, server):
        """
        The session keeps the cookies of a response whose body a rule read
        (they come from the raw response the adapter put in its place).
        """
        done = {"qualification": "valid", "email": "a@b.c"}
        server.script(
            "/email/find/single",
            [Reply(200, {"Set-Cookie": "sid=abc; Path=/"}, done)],
        )
        adapter = PolicyAdapter(policy("enrow"))

        with session(adapter) as s:
            response = s.get(server.url("/email/find/single"), timeout=5)
            jar = s.cookies.get_dict()

        assert done == response.json()
        assert {"sid": "abc"} == jar


# --- Request bodies and timeouts ------------------------------------------------


class TestResend:
    def test_a_file_is_rewound_to_where_it_started(self, server, slept):
        """
        A file body whose reading started part-way is sent again from that
        same place, whole (as requests rewinds it for a redirect).
        """
        server.script("/upload", [Reply(503), Reply(204)])
        file = io.BytesIO(b"skip" + bytes(range(256)) * 300)
        file.seek(4)

        response = call(policy(), "PUT", server.url("/upload"), data=file)

        assert 204 == response.status_code
        assert [bytes(range(256)) * 300] * 2 == [
            r.body for r in server.requests
        ]

    def test_a_resend_is_cut_at_the_deadline(self, server):
        """
        A re-send gets only the time the call has left: one that would
        take 3 s under a 1 s deadline is cut short (a timeout), not waited
        for as the caller's 10 s timeout would.
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
            call(pol, "GET", server.url("/r"), timeout=10)

        assert time.monotonic() - started < 2
        assert [(503, None), (None, "timeout")] == [
            (rec.status, rec.failure) for rec in ei.value.trail
        ]

    def test_the_callers_request_is_not_marked(self):
        """
        A re-send's cut timeouts ride on a copy of the request: the
        caller's own is sent as it is by any later call.
        """
        request = _prepared("POST", data=b"body")

        again = _Exchange().prepare(request, time_left=0.5)

        assert again is not request
        assert 0.5 == getattr(again, _BOUND)
        assert not hasattr(request, _BOUND)
        assert (request.method, request.url, request.body) == (
            again.method,
            again.url,
            again.body,
        )

    @pytest.mark.parametrize(
        ("timeout", "cut"),
        [
            (None, 2.0),
            (5, 2.0),
            (1.5, 1.5),
            ((1, 9), (1, 2.0)),
            ((None, None), (2.0, 2.0)),
            (Urllib3Timeout(connect=1, read=9), (1.0, 2.0)),
            (Urllib3Timeout(), (2.0, 2.0)),
        ],
        ids=[
            "none",
            "number",
            "shorter",
            "pair",
            "pair-of-none",
            "urllib3",
            "urllib3-default",
        ],
    )
    def test_timeouts_are_cut(self, timeout, cut):
        """
        Every form of requests' timeout is cut to the time left, each part
        on its own.
        """
        assert cut == _bounded(timeout, 2.0)


class TestAdapter:
    def test_a_copy_enforces_the_same_policy(self, server, slept):
        """
        A copy of the adapter (made through its pickling state) enforces
        the same policy, with the same raise_on_abort.
        """
        server.script("/r", [Reply(503, body=b"down")])
        adapter = copy.copy(PolicyAdapter(policy(), raise_on_abort=False))

        response = call(policy(), "GET", server.url("/r"), adapter=adapter)

        assert 503 == response.status_code
        assert isinstance(
            getattr(response, OUTCOME_ATTRIBUTE).error, ServerError
        )
        assert 3 == server.count("/r")


# --- Secrets ----------------------------------------------------------------


SECRETS = ("SECRET123", "SECRET456", "SECRET789")


class TestSecrets:
    @pytest.mark.parametrize(
        ("reply", "error"),
        [(Reply(503), ServerError), (None, RetriesExhausted)],
        ids=["503", "refused"],
    )
    def test_secrets_are_redacted(self, server, slept, reply, error):
        """
        No secret of the URL or the headers reaches a log event, the error's
        message or repr, or its trail.
        """
        if reply is None:
            base = f"http://127.0.0.1:{closed_port()}"
        else:
            server.script("/x", [reply])
            base = server.url("")
        headers = {
            "x-api-key": "SECRET456",
            "Authorization": "Bearer SECRET789",
        }

        with (
            structlog.testing.capture_logs() as logs,
            pytest.raises(error) as ei,
        ):
            call(
                policy(),
                "GET",
                f"{base}/x?api_key=SECRET123&q=ok",
                headers=headers,
            )

        err = ei.value
        assert 3 == len(decisions(logs))
        texts = [repr(v) for e in logs for v in e.values()]
        texts += [str(err), repr(err), err.reason, repr(err.trail)]
        leaks = [t for t in texts for s in SECRETS if s in t]
        assert [] == leaks
        assert all("q=ok" in e["url"] for e in decisions(logs))


# --- The fast path ----------------------------------------------------------


class TestFastPath:
    @pytest.mark.parametrize(
        "raise_on_abort", [True, False], ids=["raise", "return"]
    )
    def test_plain_200_is_untouched(self, server, monkeypatch, raise_on_abort):
        """
        A 200 no rule can match is the adapter's very response: no snapshot,
        no outcome attached, nothing logged.
        """
        server.script("/r", [Reply(200, body=b"fine")])
        snapshots: list[object] = []
        monkeypatch.setattr(
            _Exchange, "snapshot", lambda *a: snapshots.append(a)
        )
        adapter = CountingAdapter(policy(), raise_on_abort=raise_on_abort)

        with structlog.testing.capture_logs() as logs:
            response = call(policy(), "GET", server.url("/r"), adapter=adapter)

        assert [] == logs
        assert [] == snapshots
        assert [response] == adapter.responses
        assert not hasattr(response, OUTCOME_ATTRIBUTE)
        assert b"fine" == response.content

    @pytest.mark.parametrize(
        "raise_on_abort", [True, False], ids=["raise", "return"]
    )
    def test_unmatched_200_skips_the_driver(self, server, raise_on_abort):
        """
        A 200 that rules name but do not match (a valid search) is returned
        after one decision, without the flow: the response HTTPAdapter
        built, open, no outcome attached, nothing logged.
        """
        done = {"qualification": "valid", "email": "a@b.c"}
        server.script("/email/find/single", [Reply(200, body=done)])
        adapter = CountingAdapter(
            policy("enrow"), raise_on_abort=raise_on_abort
        )

        with structlog.testing.capture_logs() as logs:
            response = call(
                policy("enrow"),
                "GET",
                server.url("/email/find/single?id=x"),
                adapter=adapter,
            )

        assert [] == logs
        assert [response] == adapter.responses
        assert [0] == adapter.closes
        assert not hasattr(response, OUTCOME_ATTRIBUTE)
        assert done == response.json()
