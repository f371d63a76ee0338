"""
referee around any transport: a send function and a way to snapshot what
it returns or raises.

The adapters for httpx, requests and aiohttp are this plus translation.
For anything else — urllib3, a vendor SDK whose methods raise exceptions
carrying a status code, a gRPC-over-HTTP client — :func:`run` (or
:func:`arun`, or the :func:`guard` decorator) runs the same flow and the
same runners:

::

    def snapshot(outcome):
        if isinstance(outcome, VendorError):        # the SDK's error
            return referee.Snapshot.response(outcome.status, body=outcome.body)
        if isinstance(outcome, BaseException):      # not ours: propagate
            return None
        return referee.Snapshot.response(200)       # a result

    result = referee.run(policy, lambda: sdk.find_email(...), snapshot)
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from .runner import AsyncRunner, Runner


if TYPE_CHECKING:
    import random
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from referee._core.compile import Policy
    from referee._core.decisions import PollRequest
    from referee._core.snapshot import Snapshot
    from referee._core.state import CallOutcome


__all__ = ["arun", "guard", "run"]

T = TypeVar("T")
P = ParamSpec("P")


class _Exchange:
    """
    An exchange whose "request" is the PollRequest to send (None: the
    original call), and whose outcomes the caller's function snapshots.
    The caller's snapshots carry their bodies (or a loader): there is no
    stream to read, and nothing to rewind.
    """

    def __init__(
        self,
        snapshot: Callable[[Any], Snapshot | None],
        close: Callable[[Any], Any] | None,
    ) -> None:
        self._snapshot = snapshot
        self._close = close

    def method_url(
        self, request: PollRequest | None
    ) -> tuple[str, Callable[[], str]]:
        if request is None:
            return "GET", str
        return request.method, lambda: request.url

    def status(self, response: Any) -> int | None:
        # Unknown: the caller's function says what a result's status is,
        # so every result goes to the flow.
        return None

    def snapshot(self, request: PollRequest | None, response: Any) -> Snapshot:
        snap = self._snapshot(response)
        if snap is None:
            msg = (
                "the snapshot function returned None for a result; it must "
                "return a referee.Snapshot for every result (None is only "
                "for exceptions the policy should not see)"
            )
            raise TypeError(msg)
        return snap

    def exception_snapshot(
        self, request: PollRequest | None, exc: Exception
    ) -> Snapshot | None:
        return self._snapshot(exc)

    def poll_request(
        self, request: PollRequest | None, poll: PollRequest
    ) -> PollRequest | None:
        return poll

    def with_header(
        self, request: PollRequest | None, name: str, value: str
    ) -> PollRequest | None:
        # The caller sends and builds the snapshots: the request headers
        # they carry are the caller's to set.
        return request

    def replayable(self, request: PollRequest | None) -> str | None:
        return None

    def arrived(self, response: Any, limit: int) -> bytes | None:
        # The caller's snapshots carry their bodies.
        return None

    def attach(self, response: Any, outcome: CallOutcome) -> None:
        return

    def request_header(
        self, request: PollRequest | None, name: str
    ) -> str | None:
        # The caller's requests are theirs: run/guard have no SDK mode.
        return None

    def advise(
        self, response: Any, headers: tuple[tuple[str, str], ...]
    ) -> None:
        return

    def prepare(
        self, request: PollRequest | None, *, time_left: float | None
    ) -> PollRequest | None:
        return request

    def chunks(self, response: Any) -> Iterator[bytes]:
        return iter(())

    def restore(
        self, response: Any, head: list[bytes], rest: Iterator[bytes] | None
    ) -> bytes | None:
        return None

    def close(self, response: Any) -> None:
        if self._close is not None:
            self._close(response)


class _AsyncExchange(_Exchange):
    """
    The asyncio twin: *close* may return an awaitable.
    """

    async def prepare(  # type: ignore[override]
        self, request: PollRequest | None, *, time_left: float | None
    ) -> PollRequest | None:
        return request

    async def chunks(self, response: Any) -> AsyncIterator[bytes]:  # type: ignore[override]
        return
        yield  # pragma: no cover - an empty async iterator

    async def restore(  # type: ignore[override]
        self,
        response: Any,
        head: list[bytes],
        rest: AsyncIterator[bytes] | None,
    ) -> bytes | None:
        return None

    async def close(self, response: Any) -> None:  # type: ignore[override]
        if self._close is not None:
            result = self._close(response)
            if hasattr(result, "__await__"):
                await result


def _sender(send: Callable[..., T]) -> Callable[[PollRequest | None], T]:
    def call(request: PollRequest | None) -> T:
        # The original call and its retries take no argument; a poll that
        # built its own request passes it.
        return send() if request is None else send(request)

    return call


def run(
    policy: Policy,
    send: Callable[..., T],
    snapshot: Callable[[Any], Snapshot | None],
    *,
    close: Callable[[T], Any] | None = None,
    raise_on_abort: bool = True,
    rng: random.Random | None = None,
) -> T:
    """
    Call *send* under *policy* until the policy accepts or aborts.

    Args:
        policy: The compiled policy.
        send: Makes one attempt: called with no argument, or with the
            :class:`~referee.PollRequest` a poll rule built.  It returns a
            result or raises.
        snapshot: Turns a result, or an exception *send* raised, into a
            :class:`~referee.Snapshot`; returns None for an exception the
            policy should not see (it propagates untouched).
        close: Releases the result of an abandoned attempt.
        raise_on_abort: When False, an abort returns the last result
            instead of raising (when there is one).
        rng: The source of jitter.

    Returns:
        The result the policy accepted.

    Raises:
        Aborted: The policy aborted (chained to the last exception, if the
            last attempt raised one); an accepted exception is re-raised
            as it is.
    """
    runner: Runner[PollRequest | None, T] = Runner(
        _Exchange(snapshot, close), raise_on_abort=raise_on_abort, rng=rng
    )
    return runner.call(policy.current, None, _sender(send))


async def arun(
    policy: Policy,
    send: Callable[..., Awaitable[T]],
    snapshot: Callable[[Any], Snapshot | None],
    *,
    close: Callable[[T], Any] | None = None,
    raise_on_abort: bool = True,
    rng: random.Random | None = None,
) -> T:
    """
    The asyncio twin of :func:`run`: *send* returns an awaitable, and
    *close* may too.
    """

    async def call(request: PollRequest | None) -> T:
        return await (send() if request is None else send(request))

    runner: AsyncRunner[PollRequest | None, T] = AsyncRunner(
        _AsyncExchange(snapshot, close),
        raise_on_abort=raise_on_abort,
        rng=rng,
    )
    return await runner.call(policy.current, None, call)


def guard(
    policy: Policy,
    snapshot: Callable[[Any], Snapshot | None],
    *,
    raise_on_abort: bool = True,
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """
    A decorator: every call of the decorated function runs under *policy*,
    as :func:`run` does.  Retries call it again with the same arguments.

    ::

        @referee.guard(policy, snapshot)
        def find_email(name: str, domain: str) -> dict: ...
    """

    def decorate(fn: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return run(
                policy,
                lambda: fn(*args, **kwargs),
                snapshot,
                raise_on_abort=raise_on_abort,
            )

        return wrapper

    return decorate
