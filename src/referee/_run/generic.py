"""
referee around any transport: a send function and a way to snapshot what
it returns or raises.

The adapters for httpx, requests and aiohttp are this plus translation.
For anything else — urllib3, a vendor SDK whose methods raise exceptions
carrying a status code, a gRPC-over-HTTP client — :func:`run` (or
:func:`arun`, or the :func:`guard` decorator) runs the same flow and the
same drivers:

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

from .drivers import run_async, run_sync


if TYPE_CHECKING:
    import random
    from collections.abc import Awaitable, Callable

    from referee._core.compile import Policy
    from referee._core.decisions import PollRequest
    from referee._core.snapshot import Snapshot


__all__ = ["arun", "guard", "run"]

T = TypeVar("T")
P = ParamSpec("P")


class _Exchange:
    """
    An exchange whose "request" is the PollRequest to send (None: the
    original call), and whose outcomes the caller's function snapshots.
    """

    def __init__(
        self,
        snapshot: Callable[[Any], Snapshot | None],
        close: Callable[[Any], Any] | None,
    ) -> None:
        self._snapshot = snapshot
        self._close = close

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

    def error_snapshot(
        self, request: PollRequest | None, exc: BaseException
    ) -> Snapshot | None:
        return self._snapshot(exc)

    def failure(self, exc: BaseException) -> str | None:  # pragma: no cover
        return None  # error_snapshot decides

    def method_url(self, request: PollRequest | None) -> tuple[str, str]:
        return (
            ("GET", "") if request is None else (request.method, request.url)
        )

    def poll_request(
        self, request: PollRequest | None, poll: PollRequest
    ) -> PollRequest | None:
        return poll

    def replayable(self, request: PollRequest | None) -> str | None:
        return None

    def close(self, response: Any) -> None:
        if self._close is not None:
            self._close(response)

    async def aclose(self, response: Any) -> None:
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
    result: T = run_sync(
        policy,
        None,
        _sender(send),
        _Exchange(snapshot, close),
        raise_on_abort=raise_on_abort,
        rng=rng,
    )
    return result


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

    return await run_async(
        policy,
        None,
        call,
        _Exchange(snapshot, close),
        raise_on_abort=raise_on_abort,
        rng=rng,
    )


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
