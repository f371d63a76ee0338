"""
referee for aiohttp: a client middleware (aiohttp >= 3.12).

::

    policy = referee.load_policy("enrow")
    async with aiohttp.ClientSession(
        middlewares=[PolicyMiddleware(policy)]
    ) as session:
        async with session.get(url) as response:
            ...

The middleware only translates — aiohttp requests and responses to
snapshots, aiohttp's exceptions to the portable failure words, a body read
in chunks back into the response — and hands every call to the asyncio
runner (``referee._run.runner``), which runs the flow.  A retry or a poll
calls the next handler again with the same :class:`aiohttp.ClientRequest`,
so the session's cookies, headers, timeouts, tracing and connection pool
apply to every attempt.  Like every middleware, it runs once per redirect
hop.

- A body is read to decide only when a candidate rule looks into it, up to
  the policy's ``body_limit``, within the time the call has left; never an
  event stream unless a rule opts in.  What was read is given back: the
  caller's ``read()``, ``text()``, ``json()`` and ``content``
  (``iter_chunked()``, ``iter_any()``, ``readline()``...) see the whole
  body, and the rest of a body left unread still arrives as it comes.
- A request is sent again with its body: bytes as they are, a file (or
  ``BytesIO``, or a ``FormData`` of files) rewound to its start by
  aiohttp.  An async generator's body cannot be: the call ends with
  :class:`referee.NotReplayable`.
- A re-send (and its body read) is bounded by what is left of the
  deadline.

The session's ``ClientTimeout(total=...)`` bounds the whole call, retries
and their sleeps included: once it has expired, aiohttp raises a bare
:class:`TimeoutError`, which the middleware lets through untouched
(no attempt could succeed after it).  ``sock_read`` and ``sock_connect``
bound each attempt and are failures the policy decides about.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import attrs
from aiohttp import hdrs, payload
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from yarl import URL

from ._core.compile import Policy
from ._core.snapshot import Snapshot
from ._core.state import CallOutcome
from ._run.runner import AsyncRunner


if TYPE_CHECKING:
    import random
    from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine

    from ._core.decisions import PollRequest
    from ._files.watch import PolicyWatcher


__all__ = ["OUTCOME_ATTRIBUTE", "PolicyMiddleware", "outcome"]

#: The attribute of a response returned instead of an exception that holds
#: its :class:`~referee.CallOutcome`; :func:`outcome` reads it.
OUTCOME_ATTRIBUTE: Final = "referee_outcome"

# aiohttp's exception tree, in portable words; the first match wins, so
# subclasses come before their bases.  A connect timeout never reached the
# server: it is a connect failure, not a timeout.  A server that hangs up
# before answering (ServerDisconnectedError) is a broken read, in every
# adapter.  A reset while the request was being written may have reached
# the server: a read failure, which is not retried for unsafe methods.
_FAILURES: Final[tuple[tuple[type[BaseException], str], ...]] = (
    (aiohttp.ClientConnectorError, "connect"),
    (aiohttp.ConnectionTimeoutError, "connect"),
    (aiohttp.ServerTimeoutError, "timeout"),
    (aiohttp.ServerDisconnectedError, "read"),
    (aiohttp.ClientPayloadError, "read"),
    (aiohttp.ClientOSError, "read"),
    (aiohttp.ClientConnectionResetError, "read"),
    (ConnectionError, "read"),
    (HttpProcessingError, "protocol"),
)

_BODY_HEADERS: Final = (
    hdrs.CONTENT_TYPE,
    hdrs.CONTENT_LENGTH,
    hdrs.CONTENT_ENCODING,
    hdrs.TRANSFER_ENCODING,
)

_NOT_REPLAYABLE: Final = (
    "its body was a stream ({kind}) that the first send consumed; pass "
    "the body as bytes, a file or a BytesIO (data=...) to let referee "
    "send it again"
)

# The buffer limit of a body handed back: aiohttp's default read size.
# Nothing here pauses a connection (see _Unplugged), so it only sets the
# reader's chunk sizes.
_REPLAY_LIMIT: Final = 2**16


@attrs.frozen
class _Attempt:
    """
    What one send sends: the caller's request, with the method and URL a
    poll rule may give it (applied by :meth:`_Exchange.prepare`, which may
    need an await).
    """

    request: aiohttp.ClientRequest
    method: str
    url: URL


class _Exchange:
    """
    aiohttp, translated for the asyncio runner.
    """

    def method_url(self, request: _Attempt) -> tuple[str, Callable[[], str]]:
        return request.method, request.url.__str__

    def status(self, response: aiohttp.ClientResponse) -> int:
        return response.status

    def snapshot(
        self, request: _Attempt, response: aiohttp.ClientResponse
    ) -> Snapshot:
        # A body aiohttp has already (read by a handler further in, or by
        # restore()) is handed over; a stream is left for the flow.  The
        # URL is made a string only if a rule or the log reads it.
        body = response._body  # noqa: SLF001 - aiohttp keeps read() here
        return Snapshot(
            response.status,
            None,
            request.method,
            None,
            response.headers,
            request.request.headers,
            body if isinstance(body, bytes) else None,
            None,
            response.status,
            request.url.__str__,
        )

    def failure(self, exc: BaseException) -> str | None:
        """
        The portable word for an aiohttp exception, or None when it is not
        a transport failure.
        """
        # A response whose status line or headers are not HTTP: aiohttp
        # wraps the parser's error in a ClientResponseError.
        if isinstance(exc, aiohttp.ClientResponseError):
            cause = exc.__cause__
            if isinstance(cause, HttpProcessingError) and not isinstance(
                exc, aiohttp.ClientHttpProxyError
            ):
                return "protocol"
            return None
        # Only the session's total timeout raises a bare TimeoutError; it
        # spans the whole call, so no further attempt could succeed.
        if type(exc) is TimeoutError:
            return None
        for cls, word in _FAILURES:
            if isinstance(exc, cls):
                return word
        return None

    def exception_snapshot(
        self, request: _Attempt, exc: Exception
    ) -> Snapshot | None:
        word = self.failure(exc)
        if word is None:
            return None
        return Snapshot.failed(
            word,
            method=request.method,
            url=str(request.url),
            request_headers=request.request.headers,
        )

    def poll_request(self, request: _Attempt, poll: PollRequest) -> _Attempt:
        return _Attempt(request.request, poll.method.upper(), URL(poll.url))

    def with_header(
        self, request: _Attempt, name: str, value: str
    ) -> _Attempt:
        headers = request.request.headers
        if name not in headers:
            headers[name] = value
        return request

    def replayable(self, request: _Attempt) -> str | None:
        req = request.request
        if request.method != req.method:
            return None  # a poll with another method sends no body
        body = req.body
        if not isinstance(body, payload.Payload):
            return None  # no body
        # aiohttp (>= 3.12.1) rewinds the payloads it can at each write and
        # marks the others consumed.  An async iterable is read once, but
        # older releases mark it consumed only once exhausted: too late
        # when a released response cut its write short.  Never re-sent.
        if body.consumed or isinstance(body, payload.AsyncIterablePayload):
            return _NOT_REPLAYABLE.format(kind=type(body).__name__)
        return None

    async def prepare(
        self, request: _Attempt, *, time_left: float | None
    ) -> _Attempt:
        # The previous attempt's body writer must be done (or cancelled,
        # its response released) before the payload is written again;
        # aiohttp seeks a file back to its start as it writes it.  The
        # runner bounds the whole re-send by *time_left*: aiohttp's own
        # timeouts are left as the session set them.
        await request.request.close()
        await _retarget(request)
        return request

    def arrived(
        self, response: aiohttp.ClientResponse, limit: int
    ) -> bytes | None:
        # A small body usually comes in the packet of the headers: aiohttp
        # has it all (EOF seen) before anyone reads.  Looking at the
        # reader's buffer (private, but only read here) costs nothing and
        # leaves the body where the caller's read() expects it.
        content = response.content
        if type(content) is not StreamReader or not content.is_eof():
            return None
        if content.exception() is not None or content._buffer_offset:  # noqa: SLF001
            return None
        if content.total_bytes > limit:
            return None
        body = b"".join(content._buffer)  # noqa: SLF001
        # read(), text() and json() give this (also once the response is
        # released); content.iter_*() still read the buffer.
        response._body = body  # noqa: SLF001
        return body

    def chunks(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        # Decoded bytes (aiohttp decompresses as it parses), as they come.
        return response.content.iter_any()

    async def restore(
        self,
        response: aiohttp.ClientResponse,
        head: list[bytes],
        rest: AsyncIterator[bytes] | None,
    ) -> bytes | None:
        response.content = _Replay(head, rest)
        if rest is not None:
            return None
        body = b"".join(head)
        # read(), text() and json() return what aiohttp has read already.
        response._body = body  # noqa: SLF001 - where read() keeps the body
        return body

    async def close(self, response: aiohttp.ClientResponse) -> None:
        # release() hands a fully read connection back to the pool and
        # closes one whose body was left unread; either way the response
        # is done, and its body writer (if still running) is stopped.
        response.release()
        await response.wait_for_close()

    def attach(
        self, response: aiohttp.ClientResponse, outcome: CallOutcome
    ) -> None:
        # ClientResponse has no __slots__ and no extensions mapping: the
        # outcome rides on an attribute of its own.
        setattr(response, OUTCOME_ATTRIBUTE, outcome)

    def request_header(self, request: _Attempt, name: str) -> str | None:
        return request.request.headers.get(name)

    def advise(
        self,
        response: aiohttp.ClientResponse,
        headers: tuple[tuple[str, str], ...],
    ) -> None:
        # aiohttp's response headers are read-only, and the aiohttp-based
        # SDKs (slack_sdk) read no such advice: the outcome is attached.
        return


class _Unplugged(BaseProtocol):
    """
    The protocol of a reader no connection feeds: there is no transport to
    pause or resume (the connection's own reader keeps its flow control).
    """

    __slots__ = ()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self, *args: Any, **kwargs: Any) -> None:
        pass


class _Replay(StreamReader):
    """
    A response's ``content`` after the runner has read part or all of it:
    the chunks read (*head*), then, when the body did not end (*rest* is
    not None), the rest of the original stream, pulled chunk by chunk as
    the caller reads, so an event stream keeps flowing in real time.

    Why a StreamReader of its own, rather than putting *head* back in
    front of the original reader: the only way to do that is
    ``unread_data()``, which warns DeprecationWarning (aiohttp #3260), or
    writing the reader's private buffer fields, which change between
    releases.  Why a subclass, rather than a wrapper: callers (and
    aiohttp's own ``read()`` and ``release()``) expect a StreamReader.
    Every read of a StreamReader — ``read()``, ``readany()``,
    ``readchunk()``, ``readline()``/``readuntil()``, ``readexactly()`` and
    the ``iter_*`` built on them — calls ``_wait()`` when its buffer is
    empty before EOF: that one method, overridden, pulls the next chunk
    from *rest* (a read of the original reader, with its read timeout and
    its errors) instead of waiting for a connection to feed it.  The
    original reader keeps the connection's flow control: it is read only
    as fast as the caller reads.
    """

    __slots__ = ("_rest",)

    def __init__(
        self, head: list[bytes], rest: AsyncIterator[bytes] | None
    ) -> None:
        loop = asyncio.get_running_loop()
        super().__init__(_Unplugged(loop), _REPLAY_LIMIT, loop=loop)
        self._rest = rest
        for chunk in head:
            self.feed_data(chunk)
        if rest is None:
            self.feed_eof()

    async def _wait(self, func_name: str) -> None:
        if self._rest is None:  # pragma: no cover - at EOF from the start
            return
        try:
            chunk = await anext(self._rest)
        except StopAsyncIteration:
            self.feed_eof()
        else:
            self.feed_data(chunk)


async def _retarget(attempt: _Attempt) -> None:
    """
    Give the request the poll's method and URL.  A poll with another
    method drops the body and the headers that describe it.
    """
    req = attempt.request
    if attempt.method != req.method:
        req.method = attempt.method
        req.chunked = None
        req.compress = None
        await req.update_body(None)
        for name in _BODY_HEADERS:
            req.headers.popall(name, None)
    if attempt.url != req.url:
        req.url = attempt.url
        req.original_url = attempt.url


def outcome(response: aiohttp.ClientResponse) -> CallOutcome | None:
    """
    The outcome attached to *response* by a middleware created with
    ``raise_on_abort=False``, or None (no rule was involved).
    """
    found = getattr(response, OUTCOME_ATTRIBUTE, None)
    return found if isinstance(found, CallOutcome) else None


class PolicyMiddleware:
    """
    An aiohttp client middleware that enforces *policy* on every request
    of the session (or of the request) it is given to.

    Args:
        policy: The compiled policy, or a :class:`~referee.PolicyWatcher`
            (each call runs under the policy current when it starts).
        raise_on_abort: When False, an abort returns the last response
            instead of raising; ``response.referee_outcome`` (or
            :func:`outcome`) holds the outcome and the trail.
        sdk: The client belongs to a vendor SDK that retries on its own
            (openai, anthropic, stripe): the policy is then the only
            retry layer (the docs' *Vendor SDKs* page).
        rng: The source of jitter.
    """

    def __init__(
        self,
        policy: Policy | PolicyWatcher,
        *,
        raise_on_abort: bool = True,
        sdk: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self._runner: AsyncRunner[_Attempt, aiohttp.ClientResponse] = (
            AsyncRunner(
                _Exchange(), raise_on_abort=raise_on_abort, sdk=sdk, rng=rng
            )
        )

    # Plain functions that return coroutines, here and in send(): no
    # frame of their own for every resumption of the call.
    def __call__(
        self,
        request: aiohttp.ClientRequest,
        handler: aiohttp.ClientHandlerType,
    ) -> Coroutine[Any, Any, aiohttp.ClientResponse]:
        def send(attempt: _Attempt) -> Awaitable[aiohttp.ClientResponse]:
            return handler(attempt.request)

        policy = self.policy
        return self._runner.call(
            policy if type(policy) is Policy else policy.current,
            _Attempt(request, request.method, request.url),
            send,
        )
