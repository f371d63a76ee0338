"""
referee for httpx: transports that wrap any other transport.

::

    policy = referee.load_policy("enrow")
    client = httpx.Client(transport=PolicyTransport(policy))
    client = httpx.AsyncClient(
        transport=AsyncPolicyTransport(policy, transport=inner)
    )

The transport only translates: httpx requests and responses to snapshots,
httpx's exceptions to the portable failure words; the driver does the rest.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final, Self

import httpx

from ._core.compile import Gated
from ._core.engine import NO_MATCH, decide
from ._core.snapshot import Snapshot
from ._core.state import FIRST_ATTEMPT
from ._files.watch import PolicyWatcher
from ._run.drivers import (
    CallOutcome,
    admit_async,
    admit_sync,
    run_async,
    run_sync,
    settle_plain,
)


if TYPE_CHECKING:
    import random
    from collections.abc import AsyncIterator, Callable, Iterator
    from types import TracebackType

    from ._core.compile import Policy
    from ._core.decisions import PollRequest


__all__ = ["OUTCOME_EXTENSION", "AsyncPolicyTransport", "PolicyTransport"]

#: Where a response returned instead of an exception carries its
#: :class:`~referee._run.drivers.CallOutcome`: ``response.extensions[...]``.
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


class _Exchange:
    """
    What the driver needs to know about httpx.
    """

    #: The most body bytes read to decide: the body_limit of the policy of
    #: the call in progress (the transport sets it before each snapshot;
    #: calls on one transport share a policy but for a reload's instant).
    limit: int = 1024 * 1024

    def snapshot(
        self, request: httpx.Request, response: httpx.Response
    ) -> Snapshot:
        # The body is read only if a rule looks into it; httpx keeps what it
        # read, so the caller can still read it afterwards.  A body already
        # read is handed over as is (httpx keeps it in _content; reading
        # the public .content of an unread response raises instead).
        return Snapshot(
            response.status_code,
            None,
            request.method,
            None,
            response.headers,
            request.headers,
            getattr(response, "_content", None),
            _bounded_loader(response, self.limit),
            response.status_code,
            request.url.__str__,
        )

    def failure(self, exc: BaseException) -> str | None:
        # A server that hangs up before answering is a broken read, in
        # every adapter; httpx calls it a protocol error.
        if isinstance(exc, httpx.RemoteProtocolError) and str(exc).startswith(
            "Server disconnected"
        ):
            return "read"
        for cls, word in _FAILURES:
            if isinstance(exc, cls):
                return word
        return None

    def method_url(self, request: httpx.Request) -> tuple[str, str]:
        return request.method, str(request.url)

    def poll_request(
        self, request: httpx.Request, poll: PollRequest
    ) -> httpx.Request:
        headers = httpx.Headers(request.headers)
        for name in ("content-length", "content-type", "transfer-encoding"):
            headers.pop(name, None)
        same = poll.method == request.method
        return httpx.Request(
            poll.method,
            poll.url,
            headers=request.headers if same else headers,
            content=_content(request) if same else None,
            extensions=request.extensions,
        )

    def replayable(self, request: httpx.Request) -> str | None:
        # Only bytes, or a body read before the first send, can be sent
        # again: reading a sent iterator gives b"" (not an error), and a
        # retry would go out with an empty body.
        if isinstance(request.stream, httpx.ByteStream):
            return None
        if _content(request) is not None:
            return None
        return (
            "its body was a stream that has been consumed; pass the body "
            "as bytes (content=...) to let referee re-send it"
        )

    def close(self, response: httpx.Response) -> None:
        response.close()

    def bound(self, request: httpx.Request, seconds: float) -> httpx.Request:
        """
        *request* with every timeout at most *seconds* (httpx reads them
        from the request's ``timeout`` extension, per request); the
        client's own timeouts are kept aside, so each retry shrinks them
        afresh.
        """
        own = request.extensions.get(_OWN_TIMEOUT)
        if own is None:
            own = request.extensions.get("timeout") or {}
        timeout = {
            key: seconds if own.get(key) is None else min(own[key], seconds)
            for key in ("connect", "read", "write", "pool")
        }
        request.extensions = {
            **request.extensions,
            _OWN_TIMEOUT: own,
            "timeout": timeout,
        }
        return request


class _AsyncExchange(_Exchange):
    def snapshot(
        self, request: httpx.Request, response: httpx.Response
    ) -> Snapshot:
        # The engine is synchronous: the async transport reads the body
        # before deciding when a rule may look into it, and the loader
        # hands over what was read.
        snap = super().snapshot(request, response)
        snap.load_body = _read_loaded(response)
        return snap

    async def aclose(self, response: httpx.Response) -> None:
        await response.aclose()


def _content(request: httpx.Request) -> bytes | None:
    try:
        return request.content
    except httpx.RequestNotRead:
        return None


def _attach(response: httpx.Response, outcome: CallOutcome) -> None:
    response.extensions = {**response.extensions, OUTCOME_EXTENSION: outcome}


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
        rng: The source of jitter.
    """

    def __init__(
        self,
        policy: Policy | PolicyWatcher,
        transport: httpx.BaseTransport | None = None,
        *,
        raise_on_abort: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self.transport = transport or httpx.HTTPTransport()
        self.raise_on_abort = raise_on_abort
        self.rng = rng
        self._exchange = _Exchange()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        policy = self.policy
        if type(policy) is PolicyWatcher:
            policy = policy.current
        if policy.breakers or policy.rate_limit is not None:
            admit_sync(policy, request.method, request.url.__str__)
        try:
            first = self.transport.handle_request(request)
        except Exception as exc:
            if self._exchange.failure(exc) is None:
                raise
            return self._run(policy, request, exc)
        # The success path: a status (and method) no rule can match is
        # returned without a snapshot, a decision or a header look-up; one
        # that rules could match but do not (a 200 that is not `ongoing`)
        # after one decision, without the driver.
        found = policy.index.get(first.status_code, policy.fallback)
        if not found or (
            # Every candidate needs bytes the (already read) body lacks:
            # the engine's own first check, without building a snapshot.
            type(found) is Gated
            and (body := getattr(first, "_content", None)) is not None
            and found.skip(body)
        ):
            if policy.settles:
                settle_plain(policy, request.url.__str__, time.time())
            return first
        # The limit of this call's policy (a reload may change it).
        self._exchange.limit = policy.body_limit
        snap = self._exchange.snapshot(request, first)
        if decide(policy, snap, FIRST_ATTEMPT, now=0.0) is NO_MATCH:
            if policy.settles:
                settle_plain(policy, request.url.__str__, time.time())
            return first
        return self._run(policy, request, first)

    def _run(
        self,
        policy: Policy,
        request: httpx.Request,
        first: httpx.Response | BaseException,
    ) -> httpx.Response:
        self._exchange.limit = policy.body_limit
        pending = [first]

        def send(req: httpx.Request) -> httpx.Response:
            if pending:
                got = pending.pop()
                if isinstance(got, BaseException):
                    raise got
                return got
            return self.transport.handle_request(req)

        return run_sync(
            policy,
            request,
            send,
            self._exchange,
            raise_on_abort=self.raise_on_abort,
            rng=self.rng,
            on_finish=None if self.raise_on_abort else _attach,
            first_sent=True,
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
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self.transport = transport or httpx.AsyncHTTPTransport()
        self.raise_on_abort = raise_on_abort
        self.rng = rng
        self._exchange = _AsyncExchange()

    async def handle_async_request(
        self, request: httpx.Request
    ) -> httpx.Response:
        policy = self.policy
        if type(policy) is PolicyWatcher:
            policy = policy.current
        if policy.breakers or policy.rate_limit is not None:
            await admit_async(policy, request.method, request.url.__str__)
        try:
            first = await self.transport.handle_async_request(request)
        except Exception as exc:
            if self._exchange.failure(exc) is None:
                raise
            return await self._run(policy, request, exc)
        if not policy.index.get(first.status_code, policy.fallback):
            if policy.settles:
                settle_plain(policy, request.url.__str__, time.time())
            return first
        try:
            await _read_if_needed(policy, request, first)
        except Exception as exc:
            if self._exchange.failure(exc) is None:
                raise
            await first.aclose()
            return await self._run(policy, request, exc)
        snap = self._exchange.snapshot(request, first)
        if decide(policy, snap, FIRST_ATTEMPT, now=0.0) is NO_MATCH:
            if policy.settles:
                settle_plain(policy, request.url.__str__, time.time())
            return first
        return await self._run(policy, request, first)

    async def _run(
        self,
        policy: Policy,
        request: httpx.Request,
        first: httpx.Response | BaseException,
    ) -> httpx.Response:
        pending = [first]

        async def send(req: httpx.Request) -> httpx.Response:
            if pending:
                got = pending.pop()
                if isinstance(got, BaseException):
                    raise got
                response = got
            else:
                response = await self.transport.handle_async_request(req)
            await _read_if_needed(policy, req, response)
            return response

        return await run_async(
            policy,
            request,
            send,
            self._exchange,
            raise_on_abort=self.raise_on_abort,
            rng=self.rng,
            on_finish=None if self.raise_on_abort else _attach,
            first_sent=True,
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


async def _read_if_needed(
    policy: Policy, request: httpx.Request, response: httpx.Response
) -> None:
    """
    Read the body now (the engine cannot await) when a candidate rule looks
    into it, and it is not declared longer than the policy parses.
    """
    rules = policy.candidates(response.status_code, request.method)
    if not any(r.needs_body for r in rules):
        return
    declared = response.headers.get("content-length")
    too_long = (
        declared is not None
        and declared.isdigit()
        and int(declared) > policy.body_limit
    )
    if too_long:
        return
    if getattr(response, "_content", None) is not None:
        return
    stream = response.stream
    if not isinstance(stream, httpx.AsyncByteStream):
        await response.aread()
        return
    # No Content-Length (chunked): read at most body_limit + 1 chunk; a
    # longer body is left for the caller, replayed from what was read.
    chunks: list[bytes] = []
    size = 0
    rest = stream.__aiter__()
    async for chunk in rest:
        chunks.append(chunk)
        size += len(chunk)
        if size > policy.body_limit:
            response.stream = _AsyncReplay(chunks, rest, stream)
            return
    await stream.aclose()
    response.stream = httpx.ByteStream(b"".join(chunks))
    await response.aread()


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


def _bounded_loader(
    response: httpx.Response, limit: int
) -> Callable[[], bytes | None]:
    """
    Read the body to decide, but no more than *limit* (+ one chunk) of a
    body of unknown length: a longer one is left for the caller (replayed
    from what was read) and matches no body rule.
    """

    def load() -> bytes | None:
        content: bytes | None = getattr(response, "_content", None)
        if content is not None:
            return content
        stream = response.stream
        if not isinstance(stream, httpx.SyncByteStream):
            return response.read()
        chunks: list[bytes] = []
        size = 0
        rest = iter(stream)
        for chunk in rest:
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                response.stream = _Replay(chunks, rest, stream)
                return None
        stream.close()
        response.stream = httpx.ByteStream(b"".join(chunks))
        return response.read()

    return load


def _read_loaded(response: httpx.Response) -> Any:
    def load() -> bytes | None:
        try:
            return response.content
        except httpx.ResponseNotRead:
            return None

    return load
