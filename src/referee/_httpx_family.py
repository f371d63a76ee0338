"""
The httpx family — httpx and its fork httpx2 — translated once.

httpx2 (Pydantic's fork, which the openai 3.x and anthropic 2.x SDKs use)
has httpx's transport API and models, under classes and exceptions of its
own.  Everything :mod:`referee.httpx` and :mod:`referee.httpx2` do is
written here once, against a :class:`Library`: the classes of one of the
two modules, read from it when that public module is imported.  This
module imports neither library, so that a user may have only one of them.

Requests and responses are typed ``Any`` here (they are one library's or
the other's); the public transports give them their library's types.
"""

from __future__ import annotations

import operator
import os
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, Self, TypeVar

from ._core.compile import Policy
from ._core.snapshot import Snapshot
from ._run.runner import AsyncRunner, Runner


if TYPE_CHECKING:
    import random
    from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
    from types import ModuleType, TracebackType

    from ._core.decisions import PollRequest
    from ._core.state import CallOutcome
    from ._files.watch import PolicyWatcher


__all__ = [
    "OUTCOME_EXTENSION",
    "AsyncTransport",
    "Library",
    "Transport",
]

#: Where a response returned instead of an exception carries its
#: :class:`~referee.CallOutcome`: ``response.extensions[...]``.
OUTCOME_EXTENSION: Final = "referee.outcome"
_OWN_TIMEOUT: Final = "referee.own_timeout"

_NOT_REPLAYABLE: Final = (
    "its body was a stream ({kind}) that the first send consumed; pass "
    "the body as bytes, a file or a BytesIO (content=...) to let referee "
    "send it again"
)

# A request or a response of either library.
_Request = Any
_Response = Any


class Library:
    """
    One library of the httpx family, as the translation needs it: its
    exception tree in portable words, its stream and model classes, its
    default transports.
    """

    __slots__ = (
        "async_http_transport",
        "async_replay",
        "byte_stream",
        "failures",
        "headers",
        "http_transport",
        "name",
        "remote_protocol_error",
        "replay",
        "request",
        "request_not_read",
    )

    def __init__(self, module: ModuleType) -> None:
        m: Any = module
        self.name: str = module.__name__
        # The exception tree, in portable words.  A connect timeout never
        # reached the server: it is a connect failure, not a timeout.
        self.failures: tuple[tuple[type[BaseException], str], ...] = (
            (m.ConnectError, "connect"),
            (m.ConnectTimeout, "connect"),
            (m.PoolTimeout, "connect"),
            (m.TimeoutException, "timeout"),
            (m.RemoteProtocolError, "protocol"),
            (m.LocalProtocolError, "protocol"),
            (m.ReadError, "read"),
            (m.WriteError, "read"),
            (m.CloseError, "read"),
            (m.NetworkError, "read"),
        )
        self.remote_protocol_error: type[Exception] = m.RemoteProtocolError
        self.request_not_read: type[Exception] = m.RequestNotRead
        self.byte_stream: type[Any] = m.ByteStream
        self.headers: Callable[[Any], Any] = m.Headers
        self.request: Callable[..., Any] = m.Request
        self.http_transport: Callable[[], Any] = m.HTTPTransport
        self.async_http_transport: Callable[[], Any] = m.AsyncHTTPTransport
        # The library's responses take only its own stream classes.
        self.replay: Callable[..., _Replay] = type(
            "_Replay", (_Replay, m.SyncByteStream), {}
        )
        self.async_replay: Callable[..., _AsyncReplay] = type(
            "_AsyncReplay", (_AsyncReplay, m.AsyncByteStream), {}
        )

    def __repr__(self) -> str:
        return f"<referee library {self.name}>"

    def failure_word(self, exc: BaseException) -> str | None:
        """
        The portable word for one of the library's exceptions, or None
        when it is not a transport failure.
        """
        # A server that hangs up before answering is a broken read, in
        # every adapter; httpx calls it a protocol error.
        if isinstance(exc, self.remote_protocol_error) and str(exc).startswith(
            "Server disconnected"
        ):
            return "read"
        for cls, word in self.failures:
            if isinstance(exc, cls):
                return word
        return None


class _Translate:
    """
    What both runners need to know about an httpx-family library, I/O
    aside.
    """

    def __init__(self, library: Library) -> None:
        self.library = library

    def method_url(self, request: _Request) -> tuple[str, Callable[[], str]]:
        return request.method, request.url.__str__

    #: The response's status code (a C-level getter: this is on the path
    #: of every call).
    status: Callable[[_Response], int] = staticmethod(
        operator.attrgetter("status_code")
    )

    def snapshot(self, request: _Request, response: _Response) -> Snapshot:
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
        self, request: _Request, exc: Exception
    ) -> Snapshot | None:
        word = self.library.failure_word(exc)
        if word is None:
            return None
        return Snapshot.failed(
            word,
            method=request.method,
            url=str(request.url),
            request_headers=request.headers,
        )

    def poll_request(self, request: _Request, poll: PollRequest) -> _Request:
        same = poll.method == request.method
        headers = request.headers
        if not same:
            headers = self.library.headers(request.headers)
            for name in (
                "content-length",
                "content-type",
                "transfer-encoding",
            ):
                headers.pop(name, None)
        return self.library.request(
            poll.method,
            poll.url,
            headers=headers,
            stream=request.stream if same else None,
            extensions=request.extensions,
        )

    def with_header(
        self, request: _Request, name: str, value: str
    ) -> _Request:
        if name not in request.headers:
            request.headers[name] = value
        return request

    def replayable(self, request: _Request) -> str | None:
        stream = request.stream
        if isinstance(stream, self.library.byte_stream) or _rewinds_itself(
            stream
        ):
            return None
        if _file(stream) is not None or self._content(request) is not None:
            return None
        return _NOT_REPLAYABLE.format(kind=_kind(stream))

    def _content(self, request: _Request) -> bytes | None:
        try:
            content: bytes = request.content
        except self.library.request_not_read:
            return None
        return content

    def arrived(self, response: _Response, limit: int) -> bytes | None:
        # A body httpx holds already is in the snapshot; a stream is read.
        return None

    def attach(self, response: _Response, outcome: CallOutcome) -> None:
        response.extensions = {
            **response.extensions,
            OUTCOME_EXTENSION: outcome,
        }

    def request_header(self, request: _Request, name: str) -> str | None:
        value: str | None = request.headers.get(name)
        return value

    def advise(
        self, response: _Response, headers: tuple[tuple[str, str], ...]
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


def _start(file: Any, headers: Any) -> int:
    """
    Where a file body starts: where the file stood when the request was
    built.  httpx2 sends a file from there (its Content-Length is what
    remains), httpx from its start (its Content-Length is the file's
    size); either way, the end less the declared length.
    """
    try:
        length = int(headers.get("content-length", ""))
    except ValueError:  # no length declared: sent chunked, from the start
        return 0
    end: int = file.seek(0, os.SEEK_END)
    return max(end - length, 0)


def _rewound(request: _Request, time_left: float | None) -> _Request:
    """
    *request* ready to be sent again: a file body back at its start, and
    every timeout at most *time_left* (httpx reads them from the request's
    ``timeout`` extension); the client's own timeouts are kept aside, so
    each re-send cuts them afresh.
    """
    file = _file(request.stream)
    if file is not None:
        file.seek(_start(file, request.headers))
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
    The library's blocking transports, translated.
    """

    def prepare(
        self, request: _Request, *, time_left: float | None
    ) -> _Request:
        return _rewound(request, time_left)

    def chunks(self, response: _Response) -> Iterator[bytes]:
        # The raw (still encoded) body: the caller's reads decode it.
        return iter(response.stream)

    def restore(
        self,
        response: _Response,
        head: list[bytes],
        rest: Iterator[bytes] | None,
    ) -> bytes | None:
        original = response.stream
        if rest is not None:
            response.stream = self.library.replay(head, rest, original)
            return None
        original.close()
        body = b"".join(head)
        response.stream = self.library.byte_stream(body)
        if "content-encoding" in response.headers:
            decoded: bytes = response.read()  # as for the caller
            return decoded
        # Not encoded: the bytes are the content.  Set as read() would set
        # it (httpx keeps it in _content), without decoding it again.
        response._content = body  # noqa: SLF001
        return body

    def close(self, response: _Response) -> None:
        response.close()


class _AsyncExchange(_Translate):
    """
    The library's asyncio transports, translated.
    """

    async def prepare(
        self, request: _Request, *, time_left: float | None
    ) -> _Request:
        return _rewound(request, time_left)

    def chunks(self, response: _Response) -> AsyncIterator[bytes]:
        chunks: AsyncIterator[bytes] = response.stream.__aiter__()
        return chunks

    async def restore(
        self,
        response: _Response,
        head: list[bytes],
        rest: AsyncIterator[bytes] | None,
    ) -> bytes | None:
        original = response.stream
        if rest is not None:
            response.stream = self.library.async_replay(head, rest, original)
            return None
        await original.aclose()
        body = b"".join(head)
        response.stream = self.library.byte_stream(body)
        if "content-encoding" in response.headers:
            decoded: bytes = await response.aread()
            return decoded
        response._content = body  # noqa: SLF001 - as aread() sets it
        return body

    async def close(self, response: _Response) -> None:
        await response.aclose()


class _Replay:
    """
    A body stream that gives back the chunks already read to decide, then
    the rest of the original stream.  (Each library has its subclass,
    also of its ``SyncByteStream``: :attr:`Library.replay`.)
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


class _AsyncReplay:
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


# --- The transports, each public module's with its library's types ----------

Inner = TypeVar("Inner")
Req = TypeVar("Req")
Resp = TypeVar("Resp")


class Transport(Generic[Inner, Req, Resp]):
    """
    The body of a blocking policy transport; a public module's
    ``PolicyTransport`` adds its library (``library``) and its
    ``BaseTransport``.
    """

    library: ClassVar[Library]
    transport: Inner

    def __init__(
        self,
        policy: Policy | PolicyWatcher,
        transport: Inner | None = None,
        *,
        raise_on_abort: bool = True,
        sdk: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        inner: Any = transport or self.library.http_transport()
        self.transport = inner
        self._send: Callable[[Req], Resp] = inner.handle_request
        self._runner: Runner[Req, Resp] = Runner(
            _Exchange(self.library),
            raise_on_abort=raise_on_abort,
            sdk=sdk,
            rng=rng,
        )

    def handle_request(self, request: Req) -> Resp:
        policy = self.policy
        return self._runner.call(
            policy if type(policy) is Policy else policy.current,
            request,
            self._send,
        )

    def close(self) -> None:
        inner: Any = self.transport
        inner.close()

    def __enter__(self) -> Self:
        inner: Any = self.transport
        inner.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        inner: Any = self.transport
        inner.__exit__(exc_type, exc_value, traceback)


class AsyncTransport(Generic[Inner, Req, Resp]):
    """
    The asyncio twin of :class:`Transport`.
    """

    library: ClassVar[Library]
    transport: Inner

    def __init__(
        self,
        policy: Policy | PolicyWatcher,
        transport: Inner | None = None,
        *,
        raise_on_abort: bool = True,
        sdk: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        inner: Any = transport or self.library.async_http_transport()
        self.transport = inner
        self._send: Callable[[Req], Any] = inner.handle_async_request
        self._runner: AsyncRunner[Req, Resp] = AsyncRunner(
            _AsyncExchange(self.library),
            raise_on_abort=raise_on_abort,
            sdk=sdk,
            rng=rng,
        )

    # A plain function that returns the runner's coroutine: one frame
    # fewer for every resumption of the call.
    def handle_async_request(self, request: Req) -> Coroutine[Any, Any, Resp]:
        policy = self.policy
        return self._runner.call(
            policy if type(policy) is Policy else policy.current,
            request,
            self._send,
        )

    async def aclose(self) -> None:
        inner: Any = self.transport
        await inner.aclose()

    async def __aenter__(self) -> Self:
        inner: Any = self.transport
        await inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        inner: Any = self.transport
        await inner.__aexit__(exc_type, exc_value, traceback)
