"""
The adapter contract: what every client gets from referee, whatever its
HTTP library — httpx and httpx2 (each sync and async), requests and aiohttp,
each used the way a user uses it, over real loopback HTTP
(tests.contract_servers).

Each test is written once, against a driver per client (:class:`Httpx`,
:class:`HttpxAsync`, :class:`Httpx2`, :class:`Httpx2Async`,
:class:`Requests`, :class:`Aiohttp`) that makes the call in its library's
own terms and hands back plain values; the fixture ``client`` runs every
test through the six.  A driver given no policy is
the bare client (the same library, no referee), for the tests that compare
with it.  The async drivers run their coroutines with ``asyncio.run``
(pytest-asyncio is not installed).

Tests that measure time (event streams, slow bodies) really sleep, with
small backoffs; the others run under ``referee.testing.no_sleep()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import time
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp
import httpx
import httpx2
import pytest
import requests
import structlog
from tests.contract_servers import Drip, DripServer
from tests.server import Reply, closed_port

import referee
import referee.httpx
import referee.httpx2
from referee import (
    Aborted,
    BadRequest,
    DeadlineExceeded,
    NotReplayable,
    ServerError,
)
from referee.aiohttp import PolicyMiddleware, outcome
from referee.httpx import (
    OUTCOME_EXTENSION,
)
from referee.requests import OUTCOME_ATTRIBUTE, PolicyAdapter
from referee.testing import no_sleep


if TYPE_CHECKING:
    from collections.abc import (
        AsyncIterator,
        Coroutine,
        Iterator,
        Sequence,
    )
    from pathlib import Path
    from types import ModuleType


#: Every client's own timeouts: long enough never to be what ends a call
#: here (the policies' deadlines are), short enough that a broken test
#: fails instead of hanging.
TIMEOUT = 10.0

Policy = referee.Policy | None


def run(main: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(main)


# --- The drivers: one call, in each library's own terms ----------------------


class Httpx:
    """
    httpx.Client(transport=PolicyTransport(policy)).
    """

    #: The library, and referee's module for it.
    lib: ClassVar[ModuleType] = httpx
    adapter: ClassVar[ModuleType] = referee.httpx
    #: The ways a caller reads a body, the plainest first.
    styles: ClassVar = ("read", "iter_bytes", "iter_lines")
    connect_error: ClassVar = httpx.ConnectError

    def client(self, policy: Policy) -> httpx.Client:
        if policy is None:
            return self.lib.Client(timeout=TIMEOUT)  # type: ignore[no-any-return]
        transport = self.adapter.PolicyTransport(policy)
        return self.lib.Client(transport=transport, timeout=TIMEOUT)  # type: ignore[no-any-return]

    def get(self, policy: Policy, url: str) -> tuple[int, bytes]:
        with self.client(policy) as client:
            response = client.get(url)
            return response.status_code, response.content

    def consume(self, policy: Policy, url: str, style: str) -> bytes:
        with self.client(policy) as client:
            if style == "read":
                return client.get(url).content
            with client.stream("GET", url) as response:
                if style == "iter_bytes":
                    return b"".join(response.iter_bytes())
                lines = response.iter_lines()
                return "".join(f"{line}\n" for line in lines).encode()

    def first_chunk(self, policy: Policy, url: str) -> float:
        with self.client(policy) as client:
            started = time.monotonic()
            with (
                client.stream("GET", url) as response,
                contextlib.closing(response.iter_bytes()) as chunks,
            ):
                next(chunks)
                return time.monotonic() - started

    def body(self, kind: str, file: io.BufferedReader) -> dict[str, Any]:
        data = file.read()
        file.seek(0)
        return {
            "bytes": {"content": data},
            "file": {"content": file},
            "bytesio": {"content": io.BytesIO(data)},
            "multipart": {"files": {"f": file}},
        }[kind]

    def post(self, policy: Policy, url: str, kind: str, path: Path) -> int:
        with self.client(policy) as client, path.open("rb") as file:
            return client.post(url, **self.body(kind, file)).status_code

    def post_stream(
        self, policy: Policy, url: str, chunks: Sequence[bytes]
    ) -> int:
        def body() -> Iterator[bytes]:
            yield from chunks

        with self.client(policy) as client:
            return client.post(url, content=body()).status_code

    def error_json(self, response: httpx.Response) -> Any:
        return response.json()


class HttpxAsync:
    """
    httpx.AsyncClient(transport=AsyncPolicyTransport(policy)).
    """

    lib: ClassVar[ModuleType] = httpx
    adapter: ClassVar[ModuleType] = referee.httpx
    styles: ClassVar = ("aread", "aiter_bytes", "aiter_lines")
    connect_error: ClassVar = httpx.ConnectError

    def client(self, policy: Policy) -> httpx.AsyncClient:
        if policy is None:
            return self.lib.AsyncClient(timeout=TIMEOUT)  # type: ignore[no-any-return]
        transport = self.adapter.AsyncPolicyTransport(policy)
        return self.lib.AsyncClient(transport=transport, timeout=TIMEOUT)  # type: ignore[no-any-return]

    def get(self, policy: Policy, url: str) -> tuple[int, bytes]:
        async def main() -> tuple[int, bytes]:
            async with self.client(policy) as client:
                response = await client.get(url)
                return response.status_code, response.content

        return run(main())  # type: ignore[no-any-return]

    def consume(self, policy: Policy, url: str, style: str) -> bytes:
        async def main() -> bytes:
            async with self.client(policy) as client:
                if style == "aread":
                    return (await client.get(url)).content
                async with client.stream("GET", url) as response:
                    if style == "aiter_bytes":
                        return b"".join(
                            [c async for c in response.aiter_bytes()]
                        )
                    lines = [f"{x}\n" async for x in response.aiter_lines()]
                    return "".join(lines).encode()

        return run(main())  # type: ignore[no-any-return]

    def first_chunk(self, policy: Policy, url: str) -> float:
        async def main() -> float:
            async with self.client(policy) as client:
                started = time.monotonic()
                async with (
                    client.stream("GET", url) as response,
                    contextlib.aclosing(response.aiter_bytes()) as chunks,
                ):
                    await anext(chunks)
                    return time.monotonic() - started

        return run(main())  # type: ignore[no-any-return]

    def post(self, policy: Policy, url: str, kind: str, path: Path) -> int:
        if kind in {"file", "bytesio"}:
            pytest.skip(
                f"{self.lib.__name__}.AsyncClient sends no sync file object "
                f"as content= ({self.lib.__name__} itself raises RuntimeError)"
            )

        async def main() -> int:
            with path.open("rb") as file:
                body = Httpx().body(kind, file)
                async with self.client(policy) as client:
                    return (await client.post(url, **body)).status_code

        return run(main())  # type: ignore[no-any-return]

    def post_stream(
        self, policy: Policy, url: str, chunks: Sequence[bytes]
    ) -> int:
        async def body() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        async def main() -> int:
            async with self.client(policy) as client:
                return (await client.post(url, content=body())).status_code

        return run(main())  # type: ignore[no-any-return]

    def error_json(self, response: httpx.Response) -> Any:
        return response.json()


class Httpx2(Httpx):
    """
    httpx2.Client(transport=referee.httpx2.PolicyTransport(policy)).
    """

    lib: ClassVar[ModuleType] = httpx2
    adapter: ClassVar[ModuleType] = referee.httpx2
    connect_error: ClassVar = httpx2.ConnectError


class Httpx2Async(HttpxAsync):
    """
    httpx2.AsyncClient(transport=referee.httpx2.AsyncPolicyTransport(policy)).
    """

    lib: ClassVar[ModuleType] = httpx2
    adapter: ClassVar[ModuleType] = referee.httpx2
    connect_error: ClassVar = httpx2.ConnectError


class Requests:
    """
    requests.Session() with PolicyAdapter(policy) mounted on http://.
    """

    styles: ClassVar = ("content", "iter_content", "raw")
    connect_error: ClassVar = requests.ConnectionError

    def session(self, policy: Policy) -> requests.Session:
        session = requests.Session()
        if policy is not None:
            session.mount("http://", PolicyAdapter(policy))
        return session

    def get(self, policy: Policy, url: str) -> tuple[int, bytes]:
        with self.session(policy) as session:
            response = session.get(url, timeout=TIMEOUT)
            return response.status_code, response.content

    def consume(self, policy: Policy, url: str, style: str) -> bytes:
        with self.session(policy) as session:
            if style == "content":
                return session.get(url, timeout=TIMEOUT).content
            with session.get(url, stream=True, timeout=TIMEOUT) as response:
                if style == "iter_content":
                    return b"".join(response.iter_content(chunk_size=1024))
                return response.raw.read(decode_content=True)  # type: ignore[no-any-return]

    def first_chunk(self, policy: Policy, url: str) -> float:
        with self.session(policy) as session:
            started = time.monotonic()
            with session.get(url, stream=True, timeout=TIMEOUT) as response:
                next(response.iter_content(chunk_size=None))
                return time.monotonic() - started

    def post(self, policy: Policy, url: str, kind: str, path: Path) -> int:
        with self.session(policy) as session, path.open("rb") as file:
            data = file.read()
            file.seek(0)
            body = {
                "bytes": {"data": data},
                "file": {"data": file},
                "bytesio": {"data": io.BytesIO(data)},
                "multipart": {"files": {"f": file}},
            }[kind]
            return session.post(url, timeout=TIMEOUT, **body).status_code

    def post_stream(
        self, policy: Policy, url: str, chunks: Sequence[bytes]
    ) -> int:
        def body() -> Iterator[bytes]:
            yield from chunks

        with self.session(policy) as session:
            return session.post(url, data=body(), timeout=TIMEOUT).status_code

    def error_json(self, response: requests.Response) -> Any:
        return response.json()


class Aiohttp:
    """
    aiohttp.ClientSession(middlewares=[PolicyMiddleware(policy)]).
    """

    styles: ClassVar = ("read", "iter_chunked", "iter_any")
    connect_error: ClassVar = aiohttp.ClientConnectorError

    def session(self, policy: Policy) -> aiohttp.ClientSession:
        middlewares = () if policy is None else (PolicyMiddleware(policy),)
        return aiohttp.ClientSession(
            middlewares=middlewares,
            timeout=aiohttp.ClientTimeout(
                total=TIMEOUT + 5, sock_read=TIMEOUT
            ),
        )

    def get(self, policy: Policy, url: str) -> tuple[int, bytes]:
        async def main() -> tuple[int, bytes]:
            async with self.session(policy) as s, s.get(url) as response:
                return response.status, await response.read()

        return run(main())  # type: ignore[no-any-return]

    def consume(self, policy: Policy, url: str, style: str) -> bytes:
        async def main() -> bytes:
            async with self.session(policy) as s, s.get(url) as response:
                if style == "read":
                    return await response.read()
                content = response.content
                chunks = (
                    content.iter_chunked(100)
                    if style == "iter_chunked"
                    else content.iter_any()
                )
                return b"".join([c async for c in chunks])

        return run(main())  # type: ignore[no-any-return]

    def first_chunk(self, policy: Policy, url: str) -> float:
        async def main() -> float:
            async with self.session(policy) as s:
                started = time.monotonic()
                async with s.get(url) as response:
                    async for _ in response.content.iter_any():
                        break
                    return time.monotonic() - started

        return run(main())  # type: ignore[no-any-return]

    def post(self, policy: Policy, url: str, kind: str, path: Path) -> int:
        async def main() -> int:
            with path.open("rb") as file:
                data = file.read()
                file.seek(0)
                form = aiohttp.FormData()
                form.add_field("f", file, filename=path.name)
                body = {
                    "bytes": data,
                    "file": file,
                    "bytesio": io.BytesIO(data),
                    "multipart": form,
                }[kind]
                async with (
                    self.session(policy) as s,
                    s.post(url, data=body) as response,
                ):
                    return response.status

        return run(main())  # type: ignore[no-any-return]

    def post_stream(
        self, policy: Policy, url: str, chunks: Sequence[bytes]
    ) -> int:
        async def body() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        async def main() -> int:
            async with (
                self.session(policy) as s,
                s.post(url, data=body()) as response,
            ):
                return response.status

        return run(main())  # type: ignore[no-any-return]

    def error_json(self, response: aiohttp.ClientResponse) -> Any:
        # The middleware released the response (its connection is back in
        # the pool) before the error reached the caller; the body it read
        # for the error stays readable, with aiohttp's own coroutines.
        return run(response.json())


Driver = Httpx | HttpxAsync | Requests | Aiohttp


@pytest.fixture(
    params=[Httpx, HttpxAsync, Httpx2, Httpx2Async, Requests, Aiohttp],
    ids=[
        "httpx",
        "httpx-async",
        "httpx2",
        "httpx2-async",
        "requests",
        "aiohttp",
    ],
)
def client(request: pytest.FixtureRequest) -> Driver:
    return request.param()  # type: ignore[no-any-return]


@pytest.fixture
def server() -> Iterator[DripServer]:
    with DripServer() as srv:
        yield srv


def policy(text: str) -> referee.Policy:
    """
    A freshly loaded policy, so that no state leaks between tests.
    """
    return referee.load_policy_text(text)


def chain(exc: BaseException) -> list[BaseException]:
    """
    *exc* and every exception in its ``__cause__``/``__context__`` chain.
    """
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        found = todo.pop()
        if found is None or any(found is s for s in seen):
            continue
        seen.append(found)
        todo += [found.__cause__, found.__context__]
    return seen


# --- Policies and bodies ---------------------------------------------------------


# A body rule on 200 that an event stream never matches.
SSE_POLICY = """
policy: sse
extends: openai
rules:
  - id: sse-error
    when: {status: 200, body: {error.type: server_error}}
    do: retry
"""

# A 200 whose body a candidate rule inspects, and does not match.
INSPECTS = """
policy: inspects
extends: http-default
defaults: {body_limit: %s}
rules:
  - id: ongoing
    when: {status: 200, body: {qualification: ongoing}}
    do: poll
"""

# A body rule on the status of a body that drips, and a short deadline.
DRIP_POLICY = """
policy: drip
extends: http-default
defaults:
  deadline: 2s
  retry: {backoff: {initial: 10ms, multiplier: 1, jitter: none}}
rules:
  - id: job-failed
    when: {status: 200, body: {state: failed}}
    do: abort
    error: JobFailed
"""

# http-default alone (no body condition anywhere), with a tiny backoff.
STATUS_ONLY = """
policy: status-only
extends: http-default
defaults:
  retry: {attempts: 2, backoff: {initial: 10ms, multiplier: 1, jitter: none}}
"""

RESEND = """
policy: resend
defaults:
  retry: {attempts: 2, backoff: {initial: 1ms, jitter: none}}
rules:
  - id: busy
    description: the test server's 503 says nothing was done
    when: {status: 503}
    do: retry
    retry: {unsafe_methods: true}
"""

BAD_REQUEST = """
policy: bad-request
extends: http-default
rules:
  - id: bad-request
    when: {status: 400}
    do: abort
    error: BadRequest
"""


def document(items: int) -> bytes:
    """
    A JSON document on many lines (ending with one), that no rule here
    matches.
    """
    doc = {
        "qualification": "valid",
        "email": "ada@example.com",
        "items": [{"n": n, "text": "lorem ipsum " * 4} for n in range(items)],
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


#: About 8 KB: well under the default body limit.
SMALL = document(100)
#: About 100 KB: far over a 1 KiB body limit.
LARGE = document(1200)

JSON = {"Content-Type": "application/json"}

#: Twenty bytes at a quarter of a second and a bit each: 5.2 s in all.
DRIP_BODY = b'{"state": "running"}'
DRIP_INTERVAL = 0.26

#: An event stream: the first event at once, then one every 0.4 s for 2 s.
EVENTS = tuple(f'data: {{"n": {n}}}\n\n'.encode() for n in range(6))

API_ERROR = json.dumps(
    {
        "error": {
            "message": "This model's maximum context length is 8192 tokens "
            "(context_length_exceeded)",
            "type": "invalid_request_error",
        }
    }
).encode()

#: A file to upload: binary, and longer than httpx's 64 KiB read size.
FILE_DATA = bytes(range(256)) * 400


@pytest.fixture
def upload(tmp_path: Path) -> Path:
    path = tmp_path / "upload.bin"
    path.write_bytes(FILE_DATA)
    return path


# --- 1. Event streams ----------------------------------------------------------


class TestEventStream:
    def test_first_event_is_not_held_back(self, client, server):
        """
        An event stream under a policy with a body rule on its status
        reaches the caller as a stream: the first event arrives within
        0.1 s of when it reaches the bare client, not when the stream ends
        (2 s later).
        """
        server.script(
            "/events",
            [
                Drip(
                    200,
                    {"Content-Type": "text/event-stream"},
                    EVENTS,
                    interval=0.4,
                )
            ],
        )
        url = server.url("/events")

        bare = client.first_chunk(None, url)
        guarded = client.first_chunk(policy(SSE_POLICY), url)

        assert guarded < bare + 0.1, (
            f"first event after {guarded:.2f} s under referee, "
            f"{bare:.2f} s bare"
        )


# --- 2. Bodies a rule looked into ------------------------------------------------


class TestBodyAfterRule:
    def test_every_style_reads_the_whole_body(self, client, server):
        """
        A 200 whose JSON body a candidate rule inspects (and does not
        match) reaches the caller whole, however the caller reads it.
        """
        server.script("/r", [Reply(200, JSON, SMALL)])
        pol = policy(INSPECTS % "1MiB")

        with no_sleep():
            got = {
                style: client.consume(pol, server.url("/r"), style)
                for style in client.styles
            }

        assert dict.fromkeys(client.styles, SMALL) == got

    def test_chunked_body_over_the_limit_reaches_the_caller(
        self, client, server
    ):
        """
        A body longer than body_limit, sent chunked without Content-Length,
        reaches the caller whole, however the caller reads it.
        """
        chunks = tuple(LARGE[i : i + 4096] for i in range(0, len(LARGE), 4096))
        server.script("/r", [Drip(200, JSON, chunks, immediate=len(chunks))])
        pol = policy(INSPECTS % "1KiB")

        with no_sleep():
            got = {
                style: client.consume(pol, server.url("/r"), style)
                for style in client.styles
            }

        assert dict.fromkeys(client.styles, LARGE) == got

    def test_gzip_body_is_decoded_as_the_bare_client_decodes_it(
        self, client, server
    ):
        """
        A gzip-encoded body (Content-Encoding: gzip) a rule looked into
        reaches the caller decoded, as the bare client gives it.
        """
        headers = {**JSON, "Content-Encoding": "gzip"}
        server.script("/r", [Reply(200, headers, gzip.compress(SMALL))])
        pol = policy(INSPECTS % "1MiB")
        url = server.url("/r")

        with no_sleep():
            bare = {s: client.consume(None, url, s) for s in client.styles}
            got = {s: client.consume(pol, url, s) for s in client.styles}

        assert dict.fromkeys(client.styles, SMALL) == bare
        assert bare == got


# --- 3. Slow bodies --------------------------------------------------------------


class TestSlowBody:
    def test_drip_a_rule_must_read_ends_at_the_deadline(self, client, server):
        """
        A body a rule must read, dripping for 5.2 s, does not hold the call
        past its 2 s deadline (+ 1.5 s of slack): the read that overruns
        it is a `timeout` failure, and with no time left to retry the call
        ends in a referee.Aborted — DeadlineExceeded, or the error of the
        rule that handled the timeout (then its trail ends with that
        timeout).
        """
        server.script(
            "/drip",
            [
                Drip(
                    200,
                    JSON,
                    tuple(bytes([b]) for b in DRIP_BODY),
                    interval=DRIP_INTERVAL,
                    immediate=0,
                    sized=True,
                )
            ],
        )
        started = time.monotonic()

        with pytest.raises(Aborted) as ei:
            client.get(policy(DRIP_POLICY), server.url("/drip"))

        elapsed = time.monotonic() - started
        err = ei.value
        assert elapsed < 2 + 1.5
        assert isinstance(err, DeadlineExceeded) or (
            "timeout" == err.trail[-1].failure
        ), (type(err).__name__, err.trail)

    def test_drip_no_rule_reads_is_left_unread(self, client, server):
        """
        A dripping 503 under http-default (no candidate rule has a body
        condition) is decided on its status alone: retried once, then the
        call raises ServerError, in a fraction of the body's 5.2 s.
        """
        server.script(
            "/drip",
            [
                Drip(
                    503,
                    JSON,
                    tuple(bytes([b]) for b in DRIP_BODY),
                    interval=DRIP_INTERVAL,
                    immediate=0,
                    sized=True,
                )
            ],
        )
        started = time.monotonic()

        with pytest.raises(ServerError):
            client.get(policy(STATUS_ONLY), server.url("/drip"))

        elapsed = time.monotonic() - started
        assert elapsed < 1.5
        assert 2 == server.count("/drip")


# --- 4, 5. Request bodies -----------------------------------------------------------


class TestRequestBody:
    @pytest.mark.parametrize("kind", ["bytes", "file", "bytesio", "multipart"])
    def test_body_is_resent_intact(self, client, server, upload, kind):
        """
        A POST retried after a 503 is sent again with the same, complete
        body, whether it was bytes, an open file, a BytesIO or a multipart
        upload of a file (httpx files=, requests files=, aiohttp FormData).
        """
        server.script("/upload", [Reply(503), Reply(200, body=b"ok")])

        with no_sleep():
            status = client.post(
                policy(RESEND), server.url("/upload"), kind, upload
            )

        first, *again = [r.body for r in server.requests]
        assert 200 == status
        assert [first] == again
        assert FILE_DATA in first

    def test_generator_body_is_not_replayable(self, client, server):
        """
        A POST whose body was a generator (an async generator for the async
        clients) cannot be sent again: NotReplayable, naming the retry
        rule, and the server saw exactly one request.
        """
        server.script("/upload", [Reply(503), Reply(200)])

        with no_sleep(), pytest.raises(NotReplayable) as ei:
            client.post_stream(
                policy(RESEND), server.url("/upload"), [b"part-1 ", b"part-2"]
            )

        assert "busy" == ei.value.rule_id
        assert [b"part-1 part-2"] == [r.body for r in server.requests]


# --- 6. The API's own error ---------------------------------------------------------


class TestApiError:
    def test_abort_keeps_the_apis_error(self, client, server):
        """
        A 400 aborted by a rule without a body condition keeps the API's
        error: the body on exc.body, its message on exc.detail and in the
        exception's text.
        """
        server.script("/chat", [Reply(400, JSON, API_ERROR)])

        with no_sleep(), pytest.raises(BadRequest) as ei:
            client.get(policy(BAD_REQUEST), server.url("/chat"))

        err = ei.value
        assert API_ERROR == err.body
        assert "context_length_exceeded" in (err.detail or "")
        assert "context_length_exceeded" in str(err)

    def test_the_clients_response_still_gives_the_json(self, client, server):
        """
        The client's own response on exc.response still gives the API's
        JSON after the call, where the client can read a body then (httpx,
        requests).
        """
        server.script("/chat", [Reply(400, JSON, API_ERROR)])

        with no_sleep(), pytest.raises(BadRequest) as ei:
            client.get(policy(BAD_REQUEST), server.url("/chat"))

        assert json.loads(API_ERROR) == client.error_json(ei.value.response)


# --- 7. Clean exception chains --------------------------------------------------------


class TestChain:
    @pytest.mark.parametrize(
        "case", ["status-abort", "retries-exhausted", "failure"]
    )
    def test_no_iteration_machinery_in_the_chain(self, client, server, case):
        """
        The chain of an abort (__cause__ and __context__, all the way down)
        holds no StopIteration, StopAsyncIteration or GeneratorExit: a
        status abort, a 503 retried until the attempts ran out, and a
        refused connection retried until they ran out.
        """
        server.script("/400", [Reply(400, JSON, API_ERROR)])
        server.script("/503", [Reply(503)])
        url = {
            "status-abort": server.url("/400"),
            "retries-exhausted": server.url("/503"),
            "failure": f"http://127.0.0.1:{closed_port()}/r",
        }[case]

        with no_sleep(), pytest.raises(Aborted) as ei:
            client.get(policy(BAD_REQUEST), url)

        err = ei.value
        machinery = (StopIteration, StopAsyncIteration, GeneratorExit)
        assert [] == [
            type(e).__name__ for e in chain(err) if isinstance(e, machinery)
        ]

    def test_failure_is_chained_to_the_clients_exception(self, client):
        """
        A refused connection the policy gave up on raises a referee error
        whose __cause__ is the client's own exception.
        """
        url = f"http://127.0.0.1:{closed_port()}/r"

        with no_sleep(), pytest.raises(Aborted) as ei:
            client.get(policy(BAD_REQUEST), url)

        assert isinstance(ei.value.__cause__, client.connect_error)


# --- The fast path ---------------------------------------------------------------------


def _recording(lib: ModuleType) -> Any:
    """
    *lib*'s real sync transport, keeping every response it hands out.
    """

    class Recording(lib.HTTPTransport):
        def __init__(self) -> None:
            super().__init__()
            self.responses: list[Any] = []

        def handle_request(self, request: Any) -> Any:
            response = super().handle_request(request)
            self.responses.append(response)
            return response

    return Recording()


def _async_recording(lib: ModuleType) -> Any:
    """
    The asyncio twin of :func:`_recording`.
    """

    class Recording(lib.AsyncHTTPTransport):
        def __init__(self) -> None:
            super().__init__()
            self.responses: list[Any] = []

        async def handle_async_request(self, request: Any) -> Any:
            response = await super().handle_async_request(request)
            self.responses.append(response)
            return response

    return Recording()


class _RecordingAdapter(PolicyAdapter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.responses: list[requests.Response] = []

    def build_response(
        self, req: requests.PreparedRequest, resp: Any
    ) -> requests.Response:
        response = super().build_response(req, resp)
        self.responses.append(response)
        return response


def _http_default() -> referee.Policy:
    return referee.load_policy("http-default")


UNNAMED = [Reply(204), Reply(200, body=b"fine")]

#: The httpx family: each library with referee's module for it.
FAMILY = pytest.mark.parametrize(
    ("lib", "adapter"),
    [(httpx, referee.httpx), (httpx2, referee.httpx2)],
    ids=["httpx", "httpx2"],
)


class TestFastPath:
    @FAMILY
    @pytest.mark.parametrize("reply", UNNAMED, ids=["204", "200"])
    def test_httpx(self, server, reply, lib, adapter):
        """
        A status no rule names is the inner transport's very response,
        unread while the caller streams it, with nothing attached and
        nothing logged (httpx and httpx2).
        """
        server.script("/r", [reply])
        inner = _recording(lib)
        transport = adapter.PolicyTransport(_http_default(), transport=inner)

        with (
            structlog.testing.capture_logs() as logs,
            lib.Client(transport=transport) as c,
            c.stream("GET", server.url("/r")) as response,
        ):
            seen = (
                response is inner.responses[0],
                response.is_stream_consumed,
                OUTCOME_EXTENSION in response.extensions,
            )
            body = response.read()

        assert (True, False, False) == seen
        assert reply.body == body
        assert [] == logs

    @FAMILY
    @pytest.mark.parametrize("reply", UNNAMED, ids=["204", "200"])
    def test_httpx_async(self, server, reply, lib, adapter):
        """
        The same, through httpx.AsyncClient and httpx2.AsyncClient.
        """
        server.script("/r", [reply])
        inner = _async_recording(lib)

        async def main() -> tuple[tuple[bool, bool, bool], bytes]:
            transport = adapter.AsyncPolicyTransport(
                _http_default(), transport=inner
            )
            async with (
                lib.AsyncClient(transport=transport) as c,
                c.stream("GET", server.url("/r")) as response,
            ):
                seen = (
                    response is inner.responses[0],
                    response.is_stream_consumed,
                    OUTCOME_EXTENSION in response.extensions,
                )
                return seen, await response.aread()

        with structlog.testing.capture_logs() as logs:
            seen, body = run(main())

        assert (True, False, False) == seen
        assert reply.body == body
        assert [] == logs

    @pytest.mark.parametrize("reply", UNNAMED, ids=["204", "200"])
    def test_requests(self, server, reply):
        """
        The same, through a requests session with stream=True: the response
        HTTPAdapter built, its body unread.
        """
        server.script("/r", [reply])
        adapter = _RecordingAdapter(_http_default())

        with (
            structlog.testing.capture_logs() as logs,
            requests.Session() as s,
        ):
            s.mount("http://", adapter)
            with s.get(server.url("/r"), stream=True, timeout=5) as response:
                seen = (
                    [response] == adapter.responses,
                    response._content_consumed,
                    hasattr(response, OUTCOME_ATTRIBUTE),
                )
                body = response.content

        assert (True, False, False) == seen
        assert reply.body == body
        assert [] == logs

    @pytest.mark.parametrize("reply", UNNAMED, ids=["204", "200"])
    def test_aiohttp(self, server, reply):
        """
        The same, through an aiohttp session: the response the next handler
        made, its body unread.
        """
        server.script("/r", [reply])
        made: list[aiohttp.ClientResponse] = []

        class Recording(aiohttp.ClientResponse):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                made.append(self)

        async def main() -> tuple[tuple[bool, bool, bool], bytes]:
            async with (
                aiohttp.ClientSession(
                    middlewares=[PolicyMiddleware(_http_default())],
                    response_class=Recording,
                ) as s,
                s.get(server.url("/r")) as response,
            ):
                seen = (
                    [response] == made,
                    response._body is not None,
                    outcome(response) is not None,
                )
                return seen, await response.read()

        with structlog.testing.capture_logs() as logs:
            seen, body = run(main())

        assert (True, False, False) == seen
        assert reply.body == body
        assert [] == logs
