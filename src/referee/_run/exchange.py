"""
What an adapter tells a runner about its HTTP client: the one complete
protocol every client is translated through.

An exchange only translates — native requests, responses and exceptions
to snapshots and back; how to send a request again, read a body in chunks
and hand what was read back to the caller.  It decides nothing, reads no
clock and never sleeps: the flow decides, the runner does the rest.

Two twins: :class:`Exchange` for blocking clients (httpx, requests), and
:class:`AsyncExchange` for asyncio ones (httpx, aiohttp), whose I/O
methods are coroutines.  The methods that need no I/O are the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar


if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from referee._core.decisions import PollRequest
    from referee._core.snapshot import Snapshot
    from referee._core.state import CallOutcome


__all__ = ["AsyncExchange", "Exchange"]

Req = TypeVar("Req")
Resp_contra = TypeVar("Resp_contra", contravariant=True)


class _Translate(Protocol[Req, Resp_contra]):
    """
    The methods both twins share: translation only, no I/O.
    """

    def method_url(self, request: Req) -> tuple[str, Callable[[], str]]:
        """
        The request's method (upper case), and a function giving its URL
        (computed only if a rule, a rate limit or the log needs it).
        """

    def status(self, response: Resp_contra) -> int | None:
        """
        The response's status code: all the fast path looks at (None: not
        known without a snapshot, so the flow decides every outcome).
        """

    def snapshot(self, request: Req, response: Resp_contra) -> Snapshot:
        """
        A snapshot of *response* (the answer to *request*): status,
        headers, and the body only if the client has it already in
        memory; a streaming body is left unread (the flow asks for it).
        """

    def exception_snapshot(
        self, request: Req, exc: Exception
    ) -> Snapshot | None:
        """
        A snapshot of what sending *request* (or reading its response)
        raised: a transport failure in its portable word, or a response
        an SDK raised as an exception; None when *exc* is neither (it
        propagates untouched).
        """

    def poll_request(self, request: Req, poll: PollRequest) -> Req:
        """
        *request* turned into the poll request: same headers, the poll's
        method and URL (the flow has checked it is on the same origin).  A
        poll with another method sends no body.
        """

    def with_header(self, request: Req, name: str, value: str) -> Req:
        """
        *request* carrying the header *name* with *value*, unless it
        carries a header of that name already (the caller's own is kept).
        May change *request* in place.  The flow decided the header and
        its value; the runner applies it once, before the first send, so
        every re-send carries it and snapshots show it.
        """

    def replayable(self, request: Req) -> str | None:
        """
        None when *request* can be sent again (bytes are sent as they
        are, seekable files are rewound); otherwise why not, in words
        ("its body was a generator, consumed by the first send").
        """

    def arrived(self, response: Resp_contra, limit: int) -> bytes | None:
        """
        The whole body, when the client has all of it in memory already,
        it is no longer than *limit*, and the client can show it without
        consuming it (the caller still reads it as usual, also from an
        error's response); None otherwise (the runner then reads it in
        chunks).
        """

    def attach(self, response: Resp_contra, outcome: CallOutcome) -> None:
        """
        Attach *outcome* to the response a call returns when the caller
        asked for responses instead of exceptions (``raise_on_abort=False``,
        or an error response handed back to an SDK): an abort's, and an
        accept's after the flow ran.
        """

    def request_header(self, request: Req, name: str) -> str | None:
        """
        The value of the request's header *name* (lower case), or None.
        """

    def advise(
        self, response: Resp_contra, headers: tuple[tuple[str, str], ...]
    ) -> None:
        """
        Set *headers* on *response*, for the SDK the response goes back
        to (``x-should-retry: false``).  A client whose response headers
        cannot change, and that no SDK reads such headers from, may do
        nothing.
        """


class Exchange(_Translate[Req, Resp_contra], Protocol[Req, Resp_contra]):
    """
    A blocking client, translated.
    """

    def prepare(self, request: Req, *, time_left: float | None) -> Req:
        """
        *request*, ready to be sent again: its body rewound, and its
        timeouts cut to *time_left* seconds (the time the call has left)
        when that is not None.
        """

    def chunks(self, response: Resp_contra) -> Iterator[bytes]:
        """
        The response's body as it arrives, chunk by chunk.  The runner
        may stop early; it then hands the iterator back to
        :meth:`restore`.
        """

    def restore(
        self,
        response: Resp_contra,
        head: list[bytes],
        rest: Iterator[bytes] | None,
    ) -> bytes | None:
        """
        Give the caller the body back intact: *head*, the chunks read,
        then *rest* (None: the body ended).  Returns the whole body as the
        caller will read it (decoded) when it ended, else None.
        """

    def close(self, response: Resp_contra) -> None:
        """
        Release a response (an abandoned one, or one whose read failed).
        """


class AsyncExchange(_Translate[Req, Resp_contra], Protocol[Req, Resp_contra]):
    """
    An asyncio client, translated.
    """

    async def prepare(self, request: Req, *, time_left: float | None) -> Req:
        """
        As :meth:`Exchange.prepare`.
        """

    def chunks(self, response: Resp_contra) -> AsyncIterator[bytes]:
        """
        As :meth:`Exchange.chunks`.
        """

    async def restore(
        self,
        response: Resp_contra,
        head: list[bytes],
        rest: AsyncIterator[bytes] | None,
    ) -> bytes | None:
        """
        As :meth:`Exchange.restore`.
        """

    async def close(self, response: Resp_contra) -> None:
        """
        As :meth:`Exchange.close`.
        """
