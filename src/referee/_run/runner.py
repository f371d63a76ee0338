"""
The runners: they answer what the flow asks — send, read a body, wait,
sleep, carry out a state operation — and own the clock, the sleeping and
the logging.  Every client goes through one of the two.

::

    runner = Runner(exchange, raise_on_abort=True)
    response = runner.call(policy, request, send)

``Runner.call`` sends the first request itself: a response whose
status no rule names (and that nothing in the state must hear of) is
returned untouched, with no snapshot and no header look-up — the fast
path.  Everything else runs :func:`~referee._core.flow.call_flow` to its
end.  :class:`AsyncRunner` is the same with awaits: it awaits the state
backend's async methods, bounds reads and re-sends with
:func:`asyncio.timeout`, and never blocks the event loop.

What a call ends with:

- the policy accepts: the response is returned, or the transport failure
  is re-raised as the client raised it;
- the policy aborts: its error is raised (chained to the transport
  failure, if that was the last outcome; never to anything of referee's
  own), or, when the caller asked for responses, the last response is
  returned with the outcome attached.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import random
import time
from typing import TYPE_CHECKING, Any, Final, Generic, NamedTuple, TypeVar

from referee._core.bodies import event_ended, is_event_stream
from referee._core.flow import (
    CanResend,
    Finished,
    ReadBody,
    Reply,
    Send,
    Sleep,
    Store,
    Wait,
    call_flow,
    first_read,
    needs_admission,
    unmatched,
    with_read,
)
from referee._core.idempotency import mint
from referee._core.sdk import KEY_HEADER, STOP, hands_back, is_outer_retry

from . import clock
from .call import RNG, Call, close_failed, outer_retry_refused
from .deadlines import Deadlines
from .stateio import aanswer, answer


if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Generator

    from referee._core.compile import Policy
    from referee._core.flow import Action

    from .exchange import AsyncExchange, Exchange


__all__ = ["AsyncRunner", "Runner", "next_step"]

Req = TypeVar("Req")
Resp = TypeVar("Resp")


def next_step(
    flow: Generator[Action, Reply, Finished], reply: Reply | None
) -> Action | Finished:
    """
    The flow's next action, or how the call finished.  The flow's
    ``StopIteration`` ends here, so nothing raised later carries it in its
    context.
    """
    try:
        return next(flow) if reply is None else flow.send(reply)
    except StopIteration as stop:
        finished: Finished = stop.value
        return finished


def _gated(policy: Policy, method: str) -> bool:
    """
    Whether a call of *method* under *policy* must run the flow from its
    start (no fast path): something must admit its send, or hear of its
    success.
    """
    return policy.settles or needs_admission(policy, method)


#: Where minted idempotency keys come from: the OS's entropy, not the
#: jitter rng, which a caller may seed (``rng=random.Random(0)``) -- two
#: processes seeded alike would send the same keys, and a server would
#: answer one's charge with the other's.
KEYS: Final = random.SystemRandom()

#: No answer ready for the flow's first send.
NOTHING: Any = object()


class _GaveUp(NamedTuple):
    """
    A call that ended with an exception in SDK mode: what an SDK's retry
    of it is answered with.
    """

    method: str
    url: str
    key: str | None
    error: BaseException


#: The last call this thread (or asyncio task) gave up on in SDK mode.  An
#: SDK retries in the thread or task that made the call, so its retry
#: finds it here; any other call clears it.
_GAVE_UP: contextvars.ContextVar[_GaveUp | None] = contextvars.ContextVar(
    "referee_gave_up", default=None
)


class _Twin(Generic[Req, Resp]):
    """
    What the two runners share: their settings, how a call starts once the
    fast path is passed, and how it ends.
    """

    raise_on_abort: bool
    sdk: bool
    rng: random.Random

    exchange: Any

    def _outer_retry(
        self, policy: Policy, request: Req
    ) -> BaseException | None:
        """
        In SDK mode, the error to answer *request* with when it is the
        SDK's own retry of the call this thread or task last gave up on
        (nothing is sent); None otherwise, and the memory is cleared.
        """
        gave_up = _GAVE_UP.get()
        if gave_up is None:
            return None
        _GAVE_UP.set(None)
        method, url = self.exchange.method_url(request)
        if method != gave_up.method or url() != gave_up.url:
            return None
        if not is_outer_retry(
            lambda name: self.exchange.request_header(request, name),
            gave_up.key,
        ):
            return None
        _GAVE_UP.set(gave_up)  # the SDK may retry again
        outer_retry_refused(policy, method, gave_up.url, gave_up.error)
        return gave_up.error

    def _gave_up(self, request: Req, error: BaseException) -> None:
        """
        Remember, in SDK mode, that the call of *request* ended with
        *error*.
        """
        method, url = self.exchange.method_url(request)
        key = self.exchange.request_header(request, KEY_HEADER)
        _GAVE_UP.set(_GaveUp(method, url(), key, error))

    def _handed(self, response: Resp) -> Resp:
        """
        *response*, returned to an SDK: told not to retry it when it is an
        error (the policy has decided).
        """
        status = self.exchange.status(response)
        if status is not None and status >= 400:
            self.exchange.advise(response, STOP)
        return response

    def _keyed(self, policy: Policy, request: Req) -> Req:
        """
        *request* with the idempotency key the policy mints for it, if it
        mints one: once per call, before the first send, so that every
        re-send (retry or poll) carries the same key.
        """
        if policy.idempotency is None:
            return request
        method, _url = self.exchange.method_url(request)
        key = mint(policy.idempotency, method, KEYS)
        if key is None:
            return request
        keyed: Req = self.exchange.with_header(request, *key)
        return keyed

    def _start(
        self,
        policy: Policy,
        request: Req,
        started: float,
        where: tuple[str, Callable[[], str]] | None = None,
    ) -> Call[Req, Resp]:
        """
        The call's bookkeeping; *started* is the :func:`clock.wall`
        reading taken before its first send, *where* the request's method
        and URL when the caller has asked the exchange for them already.
        """
        method, url = (
            self.exchange.method_url(request) if where is None else where
        )
        return Call(
            policy,
            self.exchange,
            request,
            method,
            url,
            clock.started_at(started),
        )

    def _flow(
        self, call: Call[Req, Resp]
    ) -> Generator[Action, Reply, Finished]:
        return call_flow(
            call.policy,
            method=call.method,
            url=call.url,
            started=call.started,
            rng=self.rng,
        )

    def _ending(
        self, call: Call[Req, Resp], finished: Finished
    ) -> tuple[BaseException | None, bool]:
        """
        How *call* ends: the exception to raise (None: return the
        response), and whether to close the response first (an error
        carries it closed, so its connection is back in the pool; what was
        read of its body stays readable).
        """
        error = call.finish(finished, clock.now())
        response = call.response
        if error is None:
            if not self.raise_on_abort:
                call.outcome(finished, None)
            return call.exc, False
        snap = finished.snap
        if (
            self.sdk
            and response is not None
            and snap is not None
            and hands_back(snap.status, is_event_stream(snap.headers))
        ):
            call.outcome(finished, error)
            self.exchange.advise(response, STOP)
            return None, False
        if self.raise_on_abort or response is None:
            if call.exc is not None:
                # As `raise error from call.exc`, raised outside any except
                # block: nothing of referee's own in the chain.
                error.__cause__ = call.exc
                error.__suppress_context__ = True
            return error, response is not None
        call.outcome(finished, error)
        return None, False


class Runner(_Twin[Req, Resp]):
    """
    Runs calls of a blocking client through the flow.

    Args:
        exchange: The client, translated.
        raise_on_abort: When False, an abort returns the last response
            (with the outcome attached) instead of raising.
        sdk: The client belongs to an SDK that retries on its own: make
            the policy its only retry layer (:mod:`referee._core.sdk`).
        rng: The source of jitter.
        sleep: How to sleep (``time.sleep``).
    """

    exchange: Exchange[Req, Resp]

    def __init__(
        self,
        exchange: Exchange[Req, Resp],
        *,
        raise_on_abort: bool = True,
        sdk: bool = False,
        rng: random.Random | None = None,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        self.exchange = exchange
        self.raise_on_abort = raise_on_abort
        self.sdk = sdk
        self.rng = rng or RNG
        self.sleep = sleep
        #: ``call(policy, request, send)``: send *request* with *send* as
        #: *policy* says, once, or again and again until the policy accepts
        #: or aborts.  Bound here to what the mode needs, so that a call
        #: goes through no wrapper it has no use for.
        self.call: Callable[[Policy, Req, Callable[[Req], Resp]], Resp] = (
            self._sdk_call if sdk else self._call
        )

    def _sdk_call(
        self,
        policy: Policy,
        request: Req,
        send: Callable[[Req], Resp],
    ) -> Resp:
        """
        :meth:`_call` in SDK mode: an SDK's own retry of a call given up
        on is refused, and an error response is handed back with advice.
        """
        refused = self._outer_retry(policy, request)
        if refused is not None:
            raise refused
        try:
            return self._handed(self._call(policy, request, send))
        except Exception as exc:
            self._gave_up(request, exc)
            raise

    def _call(
        self,
        policy: Policy,
        request: Req,
        send: Callable[[Req], Resp],
    ) -> Resp:
        exchange = self.exchange
        if policy.idempotency is not None:
            request = self._keyed(policy, request)
        # The call's deadline counts from here, before the first send:
        # however long that send waits (for a pooled connection, say) is
        # the call's time.
        started = clock.wall()
        # The request's method and URL, once, where something may need them.
        where = None if policy.quiet else exchange.method_url(request)
        if where is not None and _gated(policy, where[0]):
            return self._run(
                self._start(policy, request, started, where), send
            )
        try:
            first = send(request)
        except Exception as exc:  # noqa: BLE001 - the flow sorts it
            call = self._start(policy, request, started, where)
            return self._run(call, send, call.observed(request, None, exc))
        status = exchange.status(first)
        if status is not None and not policy.index.get(
            status, policy.fallback
        ):
            return first
        if where is None:
            where = exchange.method_url(request)
        call = Call(
            policy,
            exchange,
            request,
            where[0],
            where[1],
            clock.started_at(started),
        )
        snap = call.observed(request, first, None)
        read = first_read(policy, snap, call.started)
        if read is not None:
            # A body all there already is taken without a read's frame.
            got = None if read.event else exchange.arrived(first, read.limit)
            if got is None:
                got = self._read(call, read, ask=read.event)
            if got is not None and not isinstance(got, bytes):
                return self._run(call, send, got)  # the read ended badly
            snap = (
                with_read(snap, got, read)
                if read.event
                else snap.with_body(got)
            )
        if unmatched(policy, snap):
            return first
        return self._run(call, send, snap)

    def _run(
        self,
        call: Call[Req, Resp],
        send: Callable[[Req], Resp],
        first: Any = NOTHING,
    ) -> Resp:
        """
        Run the flow to its end; *first* is the answer to its first send
        when the runner made it already.
        """
        flow = self._flow(call)
        pending = [] if first is NOTHING else [first]
        step = next_step(flow, None)
        while not isinstance(step, Finished):
            value = self._answer(call, step, send, pending)
            step = next_step(flow, Reply(value, clock.now()))
        return self._end(call, step)

    def _answer(
        self,
        call: Call[Req, Resp],
        action: Action,
        send: Callable[[Req], Resp],
        pending: list[Any],
    ) -> Any:
        match action:
            case Send():
                call.attempt = action.attempt
                if pending:
                    return pending.pop()  # the runner sent it already
                req = call.target(action.request)
                req = self.exchange.prepare(req, time_left=action.timeout)
                try:
                    got = send(req)
                except Exception as exc:  # noqa: BLE001 - the flow sorts it
                    return call.observed(req, None, exc)
                return call.observed(req, got, None)
            case ReadBody():
                return self._read(call, action)
            case CanResend():
                return self.exchange.replayable(call.target(action.request))
            case Store():
                return answer(action.op, call.policy.runtime)
            case Wait():
                self._pause(action.seconds)
            case Sleep():
                call.log(action.decision, call.snap, clock.now())
                self._release(call)
                self._pause(action.seconds)
        return None

    def _read(
        self, call: Call[Req, Resp], action: ReadBody, *, ask: bool = True
    ) -> Any:
        """
        Read the body *action* asks for; *ask*: first ask the exchange for
        a body all there already (False: the runner just did).
        """
        response = call.response
        assert response is not None  # noqa: S101 - the flow reads responses only
        whole = self.exchange.arrived(response, action.limit) if ask else None
        if whole is not None and not action.event:
            return whole
        head: list[bytes] = []
        size = 0
        chunks = self.exchange.chunks(response)
        try:
            if clock.now() < action.until:
                for chunk in chunks:
                    head.append(chunk)
                    size += len(chunk)
                    if size > action.limit or (
                        action.event and event_ended(b"".join(head))
                    ):
                        self.exchange.restore(response, head, chunks)
                        return b"".join(head) if action.event else None
                    if clock.now() >= action.until:
                        break
                else:
                    return self.exchange.restore(response, head, None)
        except Exception as exc:  # noqa: BLE001 - sorted by the exchange
            self._close(response)
            return None if action.optional else call.read_failed(exc)
        if action.optional:
            # The body did not come in time for the error: the caller may
            # still read it from the response.
            self.exchange.restore(response, head, chunks)
            return None
        self._close(response)
        return call.timed_out()

    def _end(self, call: Call[Req, Resp], finished: Finished) -> Resp:
        error, close = self._ending(call, finished)
        if close:
            self._release(call)
        if error is not None:
            raise error
        return call.response  # type: ignore[return-value]

    def _release(self, call: Call[Req, Resp]) -> None:
        if call.response is not None:
            self._close(call.response)
            call.response = None

    def _close(self, response: Resp) -> None:
        try:
            self.exchange.close(response)
        except Exception as exc:  # noqa: BLE001 - closing is best effort
            close_failed(exc)

    def _pause(self, seconds: float) -> None:
        if not clock.skip(seconds) and seconds > 0:
            self.sleep(seconds)


class AsyncRunner(_Twin[Req, Resp]):
    """
    The asyncio twin of :class:`Runner`.

    Args:
        exchange: The client, translated.
        raise_on_abort: As for :class:`Runner`.
        sdk: As for :class:`Runner`.
        rng: The source of jitter.
        sleep: How to sleep (``asyncio.sleep``).
    """

    exchange: AsyncExchange[Req, Resp]

    def __init__(
        self,
        exchange: AsyncExchange[Req, Resp],
        *,
        raise_on_abort: bool = True,
        sdk: bool = False,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.exchange = exchange
        self.raise_on_abort = raise_on_abort
        self.sdk = sdk
        self.rng = rng or RNG
        self.sleep = sleep
        #: The deadlines of this runner's sends in flight, on the loop it
        #: last ran on.
        self._deadlines: Deadlines | None = None
        #: As ``Runner.call``, with awaited sends, reads and sleeps.
        self.call: Callable[
            [Policy, Req, Callable[[Req], Awaitable[Resp]]],
            Coroutine[Any, Any, Resp],
        ] = self._sdk_call if sdk else self._call

    async def _sdk_call(
        self,
        policy: Policy,
        request: Req,
        send: Callable[[Req], Awaitable[Resp]],
    ) -> Resp:
        """
        As :meth:`Runner._sdk_call`.
        """
        refused = self._outer_retry(policy, request)
        if refused is not None:
            raise refused
        try:
            return self._handed(await self._call(policy, request, send))
        except Exception as exc:
            self._gave_up(request, exc)
            raise

    async def _call(
        self,
        policy: Policy,
        request: Req,
        send: Callable[[Req], Awaitable[Resp]],
    ) -> Resp:
        exchange = self.exchange
        if policy.idempotency is not None:
            request = self._keyed(policy, request)
        started = clock.wall()
        where = None if policy.quiet else exchange.method_url(request)
        if where is not None and _gated(policy, where[0]):
            return await self._run(
                self._start(policy, request, started, where), send
            )
        # Even the first send answers to the deadline: a client may hold a
        # request for seconds before it reaches the wire (httpcore's pool
        # under load waits with no timeout of its own).
        deadline = policy.deadline
        got: Resp | Exception | None
        if deadline == math.inf:
            got = await self._send(request, send, None)
        else:
            # _send, inline: this runs on every call.
            loop = asyncio.get_running_loop()
            task = asyncio.current_task(loop)
            assert task is not None  # noqa: S101 - runs in a task
            deadlines = self._deadlines
            if deadlines is None or deadlines.loop is not loop:
                deadlines = self._deadlines = Deadlines(loop)
            key, note = deadlines.enter(task, started + deadline)
            try:
                got = await send(request)
            except asyncio.CancelledError:
                if not note[2] or task.uncancel():
                    raise
                got = None
            except Exception as exc:  # noqa: BLE001 - the flow sorts it
                got = exc
            finally:
                if not note[2]:
                    del deadlines.sends[key]
        if got is None or isinstance(got, Exception):
            call = self._start(policy, request, started, where)
            if got is None:
                call.sent = request
                return await self._run(call, send, call.timed_out())
            return await self._run(
                call, send, call.observed(request, None, got)
            )
        first = got
        status = exchange.status(first)
        if status is not None and not policy.index.get(
            status, policy.fallback
        ):
            return first
        if where is None:
            where = exchange.method_url(request)
        call = Call(
            policy,
            exchange,
            request,
            where[0],
            where[1],
            clock.started_at(started),
        )
        snap = call.observed(request, first, None)
        read = first_read(policy, snap, call.started)
        if read is not None:
            # A body all there already is taken without a read's frame.
            body: Any = (
                None if read.event else exchange.arrived(first, read.limit)
            )
            if body is None:
                body = await self._read(call, read, ask=read.event)
            if body is not None and not isinstance(body, bytes):
                return await self._run(call, send, body)  # it ended badly
            snap = (
                with_read(snap, body, read)
                if read.event
                else snap.with_body(body)
            )
        if unmatched(policy, snap):
            return first
        return await self._run(call, send, snap)

    async def _run(
        self,
        call: Call[Req, Resp],
        send: Callable[[Req], Awaitable[Resp]],
        first: Any = NOTHING,
    ) -> Resp:
        """
        As :meth:`Runner._run`.
        """
        flow = self._flow(call)
        pending = [] if first is NOTHING else [first]
        step = next_step(flow, None)
        while not isinstance(step, Finished):
            value = await self._answer(call, step, send, pending)
            step = next_step(flow, Reply(value, clock.now()))
        return await self._end(call, step)

    async def _answer(
        self,
        call: Call[Req, Resp],
        action: Action,
        send: Callable[[Req], Awaitable[Resp]],
        pending: list[Any],
    ) -> Any:
        match action:
            case Send():
                call.attempt = action.attempt
                if pending:
                    return pending.pop()  # the runner sent it already
                req = call.target(action.request)
                req = await self.exchange.prepare(
                    req, time_left=action.timeout
                )
                left = action.timeout
                if left is None:  # the first send: the call's whole time
                    left = call.started + call.policy.deadline - clock.now()
                got = await self._send(
                    req,
                    send,
                    None if left == math.inf else clock.wall() + left,
                )
                if got is None:
                    call.sent = req
                    return call.timed_out()
                if isinstance(got, Exception):
                    return call.observed(req, None, got)
                return call.observed(req, got, None)
            case ReadBody():
                return await self._read(call, action)
            case CanResend():
                return self.exchange.replayable(call.target(action.request))
            case Store():
                return await aanswer(action.op, call.policy.runtime)
            case Wait():
                await self._pause(action.seconds)
            case Sleep():
                call.log(action.decision, call.snap, clock.now())
                await self._release(call)
                await self._pause(action.seconds)
        return None

    async def _send(
        self,
        req: Req,
        send: Callable[[Req], Awaitable[Resp]],
        end: float | None,
    ) -> Resp | Exception | None:
        """
        Send before *end* (a :func:`clock.wall` reading; None: no bound):
        the response, what the send raised, or None when the time ran out.

        The bound is a note in the loop's :class:`Deadlines`, whose one
        timer cancels this task if the send outlives it; the cancellation
        is turned back into None if it was the timer's.  The timer can
        only fire at an await inside *send*, so once *send* has returned
        the note is taken back in time.
        """
        if end is None:
            try:
                return await send(req)
            except Exception as exc:  # noqa: BLE001 - the flow sorts it
                return exc
        deadlines, task, key, note = self._enter(end)
        try:
            return await send(req)
        except asyncio.CancelledError:
            if note[2] and task.uncancel() == 0:
                return None
            raise
        except Exception as exc:  # noqa: BLE001 - the flow sorts it
            return exc
        finally:
            if not note[2]:
                del deadlines.sends[key]

    def _enter(
        self, end: float
    ) -> tuple[Deadlines, asyncio.Task[Any], int, list[Any]]:
        """
        Bound what this task awaits next by *end* (a :func:`clock.wall`
        reading): the loop's deadlines, the task, the note's key and the
        note (its third item is True once the timer has cancelled the
        task for it).
        """
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None  # noqa: S101 - runs in a task
        deadlines = self._deadlines
        if deadlines is None or deadlines.loop is not loop:
            deadlines = self._deadlines = Deadlines(loop)
        key, note = deadlines.enter(task, end)
        return deadlines, task, key, note

    async def _read(
        self, call: Call[Req, Resp], action: ReadBody, *, ask: bool = True
    ) -> Any:
        """
        Read the body *action* asks for; *ask*: first ask the exchange for
        a body all there already (False: the runner just did).
        """
        response = call.response
        assert response is not None  # noqa: S101 - the flow reads responses only
        whole = self.exchange.arrived(response, action.limit) if ask else None
        if whole is not None and not action.event:
            return whole  # all there already: no wait, no timeout to arm
        head: list[bytes] = []
        size = 0
        chunks = self.exchange.chunks(response)
        left = action.until - clock.now()
        if left > 0:
            deadlines, task, key, note = self._enter(clock.wall() + left)
            try:
                try:
                    async for chunk in chunks:
                        head.append(chunk)
                        size += len(chunk)
                        if size > action.limit or (
                            action.event and event_ended(b"".join(head))
                        ):
                            await self.exchange.restore(response, head, chunks)
                            return b"".join(head) if action.event else None
                    return await self.exchange.restore(response, head, None)
                finally:
                    if not note[2]:
                        del deadlines.sends[key]
            except asyncio.CancelledError:
                if not note[2] or task.uncancel():
                    raise
            except Exception as exc:  # noqa: BLE001 - sorted by the exchange
                await self._close(response)
                return None if action.optional else call.read_failed(exc)
        await self._close(response)
        return None if action.optional else call.timed_out()

    async def _end(self, call: Call[Req, Resp], finished: Finished) -> Resp:
        error, close = self._ending(call, finished)
        if close:
            await self._release(call)
        if error is not None:
            raise error
        return call.response  # type: ignore[return-value]

    async def _release(self, call: Call[Req, Resp]) -> None:
        if call.response is not None:
            await self._close(call.response)
            call.response = None

    async def _close(self, response: Resp) -> None:
        try:
            await self.exchange.close(response)
        except Exception as exc:  # noqa: BLE001 - closing is best effort
            close_failed(exc)

    async def _pause(self, seconds: float) -> None:
        if not clock.skip(seconds) and seconds > 0:
            await self.sleep(seconds)
