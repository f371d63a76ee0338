"""
referee for httpx: transports that wrap any other transport.

::

    policy = referee.load_policy("enrow")
    client = httpx.Client(transport=PolicyTransport(policy))
    client = httpx.AsyncClient(
        transport=AsyncPolicyTransport(policy, transport=inner)
    )

The transports only translate — httpx requests and responses to
snapshots, httpx's exceptions to the portable failure words, a body read
in chunks back into the response — and hand every call to a runner
(``referee._run.runner``), which runs the flow.

- A body is read to decide only when a candidate rule looks into it, up to
  the policy's ``body_limit``, within the time the call has left; never an
  event stream unless a rule opts in.  What was read is given back: the
  caller's ``read()``, ``iter_bytes()``, ``iter_lines()`` (and the async
  twins) see the whole body.
- A request is sent again with its body: bytes as they are, a file (or
  ``BytesIO``) rewound to its start, multipart forms as httpx rebuilds
  them.  A generator's body cannot be: the call ends with
  :class:`referee.NotReplayable`.
- A re-send's timeouts are cut to what is left of the deadline.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any, Final, Self

import httpx

from ._core.compile import Policy
from ._core.snapshot import Snapshot
from ._run.runner import AsyncRunner, Runner


if TYPE_CHECKING:
    import random
    from collections.abc import AsyncIterator, Callable, Iterator
    from types import TracebackType

    from ._core.decisions import PollRequest
    from ._core.state import CallOutcome
    from ._files.watch import PolicyWatcher


__all__ = ["OUTCOME_EXTENSION", "AsyncPolicyTransport", "PolicyTransport"]

#: Where a response returned instead of an exception carries its
#: :class:`~referee.CallOutcome`: ``response.extensions[...]``.
OUTCOME_EXTENSION: Final = "referee.outcome"
_OWN_TIMEOUT: Final = "referee.own_timeout"

# httpx's exception tree, in portable words.  A connect timeout never
# reached the server: it is a connect failure, not a timeout.
_FAILURES: Final[tuple[tuple[type[BaseException], str], ...]] = (
    (httpx.ConnectError, "connect"),
    (httpx.ConnectTimeout, "connect"),
    (httpx.PoolTimeout, "connect"),
    (httpx.TimeoutException, "timeout"),
    (httpx.RemoteProtocolError, "protocol"),
    (httpx.LocalProtocolError, "protocol"),
    (httpx.ReadError, "read"),
    (httpx.WriteError, "read"),
    (httpx.CloseError, "read"),
    (httpx.NetworkError, "read"),
)

_NOT_REPLAYABLE: Final = (
    "its body was a stream ({kind}) that the first send consumed; pass "
    "the body as bytes, a file or a BytesIO (content=...) to let referee "
    "send it again"
)


def failure_word(exc: BaseException) -> str | None:
    """
    The portable word for an httpx exception, or None when it is not a
    transport failure.
    """
    # A server that hangs up before answering is a broken read, in every
    # adapter; httpx calls it a protocol error.
    if isinstance(exc, httpx.RemoteProtocolError) and str(exc).startswith(
        "Server disconnected"
    ):
        return "read"
    for cls, word in _FAILURES:
        if isinstance(exc, cls):
            return word
    return None


class _Translate:
    """
    What both runners need to know about httpx, I/O aside.
    """

    def method_url(
        self, request: httpx.Request
    ) -> tuple[str, Callable[[], str]]:
        return request.method, request.url.__str__

    #: The response's status code (a C-level getter: this is on the path
    #: of every call).
    status: Callable[[httpx.Response], int] = staticmethod(
        operator.attrgetter("status_code")
    )

    def snapshot(
        self, request: httpx.Request, response: httpx.Response
    ) -> Snapshot:
        # A body httpx has already (a transport that built the response
        # from bytes) is handed over; a stream is left for the flow.
        return Snapshot(
            response.status_code,
            None,
            request.method,
            None,
            response.headers,
            request.headers,
            getattr(response, "_content", None),
            None,
            response.status_code,
            request.url.__str__,
        )

    def exception_snapshot(
        self, request: httpx.Request, exc: Exception
    ) -> Snapshot | None:
        word = failure_word(exc)
        if word is None:
            return None
        return Snapshot.failed(
            word,
            method=request.method,
            url=str(request.url),
            request_headers=request.headers,
        )

    def poll_request(
        self, request: httpx.Request, poll: PollRequest
    ) -> httpx.Request:
        same = poll.method == request.method
        headers = request.headers
        if not same:
            headers = httpx.Headers(request.headers)
            for name in (
                "content-length",
                "content-type",
                "transfer-encoding",
            ):
                headers.pop(name, None)
        return httpx.Request(
            poll.method,
            poll.url,
            headers=headers,
            stream=request.stream if same else None,
            extensions=request.extensions,
        )

    def with_header(
        self, request: httpx.Request, name: str, value: str
    ) -> httpx.Request:
        if name not in request.headers:
            request.headers[name] = value
        return request

    def replayable(self, request: httpx.Request) -> str | None:
        stream = request.stream
        if isinstance(stream, httpx.ByteStream) or _rewinds_itself(stream):
            return None
        if _file(stream) is not None or _content(request) is not None:
            return None
        return _NOT_REPLAYABLE.format(kind=_kind(stream))

    def arrived(self, response: httpx.Response, limit: int) -> bytes | None:
        # A body httpx holds already is in the snapshot; a stream is read.
        return None

    def attach(self, response: httpx.Response, outcome: CallOutcome) -> None:
        response.extensions = {
            **response.extensions,
            OUTCOME_EXTENSION: outcome,
        }

    def request_header(self, request: httpx.Request, name: str) -> str | None:
        value: str | None = request.headers.get(name)
        return value

    def advise(
        self, response: httpx.Response, headers: tuple[tuple[str, str], ...]
    ) -> None:
        for name, value in headers:
            response.headers[name] = value


def _rewinds_itself(stream: object) -> bool:
    # httpx's multipart forms seek every file back to its start each time
    # they are sent.
    return type(stream).__name__ == "MultipartStream"


def _file(stream: object) -> Any:
    """
    The seekable file behind a request body httpx streams from it, or
    None.  (httpx keeps it as the stream's ``_stream``: there is no public
    way to reach it.)
    """
    inner = getattr(stream, "_stream", None)
    seekable = getattr(inner, "seekable", None)
    if inner is None or not hasattr(inner, "read") or seekable is None:
        return None
    try:
        return inner if seekable() else None
    except (OSError, ValueError):  # a closed file
        return None


def _kind(stream: object) -> str:
    inner = getattr(stream, "_stream", stream)
    return type(inner).__name__


def _content(request: httpx.Request) -> bytes | None:
    try:
        return request.content
    except httpx.RequestNotRead:
        return None


def _rewound(request: httpx.Request, time_left: float | None) -> httpx.Request:
    """
    *request* ready to be sent again: a file body back at its start, and
    every timeout at most *time_left* (httpx reads them from the request's
    ``timeout`` extension); the client's own timeouts are kept aside, so
    each re-send cuts them afresh.
    """
    file = _file(request.stream)
    if file is not None:
        file.seek(0)
    if time_left is None:
        return request
    own = request.extensions.get(_OWN_TIMEOUT)
    if own is None:
        own = request.extensions.get("timeout") or {}
    timeout = {
        key: time_left if own.get(key) is None else min(own[key], time_left)
        for key in ("connect", "read", "write", "pool")
    }
    request.extensions = {
        **request.extensions,
        _OWN_TIMEOUT: own,
        "timeout": timeout,
    }
    return request


class _Exchange(_Translate):
    """
    httpx's blocking transports, translated.
    """

    def prepare(
        self, request: httpx.Request, *, time_left: float | None
    ) -> httpx.Request:
        return _rewound(request, time_left)

    def chunks(self, response: httpx.Response) -> Iterator[bytes]:
        # The raw (still encoded) body: the caller's reads decode it.
        return iter(response.stream)  # type: ignore[arg-type]

    def restore(
        self,
        response: httpx.Response,
        head: list[bytes],
        rest: Iterator[bytes] | None,
    ) -> bytes | None:
        original = response.stream
        if rest is not None:
            response.stream = _Replay(head, rest, original)
            return None
        original.close()  # type: ignore[union-attr]
        body = b"".join(head)
        response.stream = httpx.ByteStream(body)
        if "content-encoding" in response.headers:
            return response.read()  # httpx decodes it, as for the caller
        # Not encoded: the bytes are the content.  Set as read() would set
        # it (httpx keeps it in _content), without decoding it again.
        response._content = body  # noqa: SLF001
        return body

    def close(self, response: httpx.Response) -> None:
        response.close()


class _AsyncExchange(_Translate):
    """
    httpx's asyncio transports, translated.
    """

    async def prepare(
        self, request: httpx.Request, *, time_left: float | None
    ) -> httpx.Request:
        return _rewound(request, time_left)

    def chunks(self, response: httpx.Response) -> AsyncIterator[bytes]:
        return response.stream.__aiter__()  # type: ignore[union-attr]

    async def restore(
        self,
        response: httpx.Response,
        head: list[bytes],
        rest: AsyncIterator[bytes] | None,
    ) -> bytes | None:
        original = response.stream
        if rest is not None:
            response.stream = _AsyncReplay(head, rest, original)
            return None
        await original.aclose()  # type: ignore[union-attr]
        body = b"".join(head)
        response.stream = httpx.ByteStream(body)
        if "content-encoding" in response.headers:
            return await response.aread()
        response._content = body  # noqa: SLF001 - as aread() sets it
        return body

    async def close(self, response: httpx.Response) -> None:
        await response.aclose()


class _Replay(httpx.SyncByteStream):
    """
    A body stream that gives back the chunks already read to decide, then
    the rest of the original stream.
    """

    def __init__(
        self, head: list[bytes], rest: Iterator[bytes], original: Any
    ) -> None:
        self._head, self._rest, self._original = head, rest, original

    def __iter__(self) -> Iterator[bytes]:
        yield from self._head
        yield from self._rest

    def close(self) -> None:
        self._original.close()


class _AsyncReplay(httpx.AsyncByteStream):
    """
    The asyncio twin of :class:`_Replay`.
    """

    def __init__(
        self, head: list[bytes], rest: AsyncIterator[bytes], original: Any
    ) -> None:
        self._head, self._rest, self._original = head, rest, original

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._head:
            yield chunk
        async for chunk in self._rest:
            yield chunk

    async def aclose(self) -> None:
        await self._original.aclose()


class PolicyTransport(httpx.BaseTransport):
    """
    An httpx transport that enforces *policy* around *transport* (default:
    a new :class:`httpx.HTTPTransport`).

    Args:
        policy: The compiled policy, or a :class:`~referee.PolicyWatcher`
            (each call runs under the policy current when it starts).
        transport: The transport that really sends.
        raise_on_abort: When False, an abort returns the last response
            instead of raising; ``response.extensions["referee.outcome"]``
            holds the outcome and the trail.
        sdk: The client belongs to a vendor SDK that retries on its own
            (openai, anthropic, stripe): make the policy the only retry
            layer.  An error response is handed back to the SDK with
            ``x-should-retry: false`` and ``Stripe-Should-Retry: false``
            (the SDK raises its own status error, with the API's body, at
            once; the outcome is attached as for *raise_on_abort*); the
            SDK's own retry of a call referee gave up on is answered with
            that call's error, without sending.  See the SDK guide.
        rng: The source of jitter.
    """

    def __init__(
        self,
        policy: Policy | PolicyWatcher,
        transport: httpx.BaseTransport | None = None,
        *,
        raise_on_abort: bool = True,
        sdk: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self.transport = transport or httpx.HTTPTransport()
        self._send = self.transport.handle_request
        self._runner: Runner[httpx.Request, httpx.Response] = Runner(
            _Exchange(), raise_on_abort=raise_on_abort, sdk=sdk, rng=rng
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        policy = self.policy
        return self._runner.call(
            policy if type(policy) is Policy else policy.current,
            request,
            self._send,
        )

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Self:
        self.transport.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.transport.__exit__(exc_type, exc_value, traceback)


class AsyncPolicyTransport(httpx.AsyncBaseTransport):
    """
    The asyncio twin of :class:`PolicyTransport`, wrapping an
    :class:`httpx.AsyncBaseTransport` (default: a new
    :class:`httpx.AsyncHTTPTransport`).
    """

    def __init__(
        self,
        policy: Policy | PolicyWatcher,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        raise_on_abort: bool = True,
        sdk: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self.transport = transport or httpx.AsyncHTTPTransport()
        self._send = self.transport.handle_async_request
        self._runner: AsyncRunner[httpx.Request, httpx.Response] = AsyncRunner(
            _AsyncExchange(),
            raise_on_abort=raise_on_abort,
            sdk=sdk,
            rng=rng,
        )

    async def handle_async_request(
        self, request: httpx.Request
    ) -> httpx.Response:
        policy = self.policy
        return await self._runner.call(
            policy if type(policy) is Policy else policy.current,
            request,
            self._send,
        )

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> Self:
        await self.transport.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.transport.__aexit__(exc_type, exc_value, traceback)
