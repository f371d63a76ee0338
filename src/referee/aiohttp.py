"""
referee for aiohttp: a client middleware (aiohttp >= 3.12).

::

    policy = referee.load_policy("enrow")
    async with aiohttp.ClientSession(
        middlewares=[PolicyMiddleware(policy)]
    ) as session:
        async with session.get(url) as response:
            ...

The middleware only translates: aiohttp requests and responses to
snapshots, aiohttp's exceptions to the portable failure words; the driver
does the rest.  A retry or a poll calls the next handler again with the
same :class:`aiohttp.ClientRequest`, so the session's cookies, headers,
timeouts, tracing and connection pool apply to every attempt.  Like every
middleware, it runs once per redirect hop.

The session's ``ClientTimeout(total=...)`` bounds the whole call, retries
and their sleeps included: once it has expired, aiohttp raises a bare
:class:`TimeoutError`, which the middleware lets through untouched
(no attempt could succeed after it).  ``sock_read`` and ``sock_connect``
bound each attempt and are failures the policy decides about.
"""

from __future__ import annotations

import time
import weakref
from typing import TYPE_CHECKING, Final

import aiohttp
import attrs
from aiohttp import hdrs, payload
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from ._core.engine import NO_MATCH, decide
from ._core.snapshot import Snapshot
from ._core.state import FIRST_ATTEMPT
from ._files.watch import PolicyWatcher
from ._run.drivers import CallOutcome, admit_async, run_async, settle_plain


if TYPE_CHECKING:
    import random

    from ._core.compile import Policy
    from ._core.decisions import PollRequest


__all__ = ["OUTCOME_ATTRIBUTE", "PolicyMiddleware", "outcome"]

#: The attribute of a response returned instead of an exception that holds
#: its :class:`~referee._run.drivers.CallOutcome`; :func:`outcome` reads it.
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


@attrs.frozen
class _Attempt:
    """
    What one send sends: the caller's request, with the method and URL a
    poll rule may give it (applied by the send, which may need an await).
    """

    request: aiohttp.ClientRequest
    method: str
    url: URL


class _Exchange:
    """
    What the driver needs to know about aiohttp.
    """

    def __init__(self) -> None:
        # The bodies read before deciding, by response: the engine is
        # synchronous, aiohttp's reads are not, and aiohttp has no public
        # way to get the bytes back without an await.
        self.bodies: weakref.WeakKeyDictionary[
            aiohttp.ClientResponse, bytes
        ] = weakref.WeakKeyDictionary()

    def snapshot(
        self, request: _Attempt, response: aiohttp.ClientResponse
    ) -> Snapshot:
        # The URL is made a string only if a rule or the log reads it.
        return Snapshot(
            response.status,
            None,
            request.method,
            None,
            response.headers,
            request.request.headers,
            self.bodies.get(response),
            None,
            response.status,
            request.url.__str__,
        )

    def failure(self, exc: BaseException) -> str | None:
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

    def method_url(self, request: _Attempt) -> tuple[str, str]:
        return request.method, str(request.url)

    def poll_request(self, request: _Attempt, poll: PollRequest) -> _Attempt:
        return _Attempt(request.request, poll.method.upper(), URL(poll.url))

    def replayable(self, request: _Attempt) -> str | None:
        req = request.request
        if request.method != req.method:
            return None  # a poll with another method sends no body
        body = req.body
        # aiohttp >= 3.12.1 rewinds payloads it can and marks the others
        # consumed; before it, only bytes could be sent twice.
        consumed = getattr(body, "consumed", None)
        if consumed is None:
            consumed = not isinstance(body, bytes | payload.BytesPayload)
        if consumed:
            return (
                "its body was a stream that has been consumed; pass the "
                "body as bytes (data=b'...') to let referee re-send it"
            )
        return None

    def close(self, response: aiohttp.ClientResponse) -> None:
        response.release()

    async def aclose(self, response: aiohttp.ClientResponse) -> None:
        # release() hands a fully read connection back to the pool and
        # closes one whose body was left unread; either way the response
        # is done, and its body writer (if still running) is stopped.
        response.release()
        await response.wait_for_close()


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


def _attach(response: aiohttp.ClientResponse, result: CallOutcome) -> None:
    # ClientResponse has no __slots__ and no extensions mapping: the
    # outcome rides on an attribute of its own.
    setattr(response, OUTCOME_ATTRIBUTE, result)


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
        rng: The source of jitter.
    """

    def __init__(
        self,
        policy: Policy | PolicyWatcher,
        *,
        raise_on_abort: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self.raise_on_abort = raise_on_abort
        self.rng = rng
        self._exchange = _Exchange()

    async def __call__(
        self,
        request: aiohttp.ClientRequest,
        handler: aiohttp.ClientHandlerType,
    ) -> aiohttp.ClientResponse:
        policy, exchange = self.policy, self._exchange
        if type(policy) is PolicyWatcher:
            policy = policy.current
        attempt = _Attempt(request, request.method, request.url)
        if policy.breakers or policy.rate_limit is not None:
            await admit_async(policy, request.method, request.url.__str__)
        try:
            first = await handler(request)
            # The success path: a status (and method) no rule can match is
            # returned without a body read, a snapshot or a decision.
            if not policy.candidates(first.status, request.method):
                if policy.settles:
                    settle_plain(policy, request.url.__str__, time.time())
                return first
            # Rules may look into the body: read it (aiohttp keeps it for
            # the caller); one that no rule matches after all (a 200 that
            # is not `ongoing`) is returned after one decision, without
            # the driver.
            exchange.bodies[first] = await first.read()
        except Exception as exc:
            if exchange.failure(exc) is None:
                raise
            return await self._run(policy, attempt, handler, exc)
        snap = exchange.snapshot(attempt, first)
        if decide(policy, snap, FIRST_ATTEMPT, now=0.0) is NO_MATCH:
            if policy.settles:
                settle_plain(policy, request.url.__str__, time.time())
            return first
        return await self._run(policy, attempt, handler, first)

    async def _run(
        self,
        policy: Policy,
        attempt: _Attempt,
        handler: aiohttp.ClientHandlerType,
        first: aiohttp.ClientResponse | BaseException,
    ) -> aiohttp.ClientResponse:
        pending = [first]
        bodies = self._exchange.bodies

        async def send(nxt: _Attempt) -> aiohttp.ClientResponse:
            if pending:  # the first outcome, already seen (and read)
                got = pending.pop()
                if isinstance(got, BaseException):
                    raise got
                return got
            # The previous attempt's body writer must be done before the
            # payload is written again.
            await nxt.request.close()
            await _retarget(nxt)
            response = await handler(nxt.request)
            if policy.candidates(response.status, nxt.method):
                # A rule may look into the body: read it now, so that the
                # synchronous engine can have it; aiohttp keeps it for the
                # caller's read()/json().  A read that breaks is a
                # transport failure like any other.
                bodies[response] = await response.read()
            return response

        return await run_async(
            policy,
            attempt,
            send,
            self._exchange,
            raise_on_abort=self.raise_on_abort,
            rng=self.rng,
            on_finish=None if self.raise_on_abort else _attach,
            first_sent=True,
        )
