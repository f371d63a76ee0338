"""
The runners' answers to the flow's state operations: one blocking, one
awaited, each a ``match`` over :data:`~referee._core.ops.StateOp`.

The async answer awaits the backend's async twin of each method (``a``
and the name: ``acheck_breakers``...), so a backend on the network never
blocks the event loop.  Either way, a backend that fails is logged and
the operation's fallback is the answer: state trouble never fails a call.
Breakers seen open or opened are logged and told to the hooks here.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import structlog

from referee._core.backend import Admission, Settlement
from referee._core.engine import scope_parts
from referee._core.ops import (
    Acquire,
    Admit,
    CheckBreakers,
    CheckPause,
    OpenBreaker,
    RaiseAlert,
    RecordOutcome,
    Refund,
    SeedLimit,
    SetPause,
    Settle,
    TakeRetryToken,
    admit_parts,
    by_parts,
    settle_parts,
)

from . import hooks


if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from referee._core.backend import BreakerState
    from referee._core.ops import StateOp

    from .runtime import Runtime


__all__ = ["aanswer", "adrain", "answer", "drain", "flush_state"]

_log = structlog.get_logger("referee")


def answer(op: StateOp, runtime: Runtime) -> Any:
    """
    Carry *op* out with the backend's blocking methods.
    """
    state = runtime.state
    try:
        match op:
            case Admit():
                native = getattr(state, "admit", None)
                if native is None:
                    return _by_parts(op, runtime)
                return _admitted(op, native(op))
            case Settle():
                native = getattr(state, "settle", None)
                if native is None:
                    return _by_parts(op, runtime)
                if _deferrable(op) and _defer(op, runtime, native):
                    return Settlement()
                return _settled(op, runtime, native(op))
            case CheckBreakers():
                found = (
                    state.check_breakers(op.policy, op.now, op.skip)
                    if op.skip
                    else state.check_breakers(op.policy, op.now)
                )
                return _seen(op.policy, found)
            case Acquire():
                return state.acquire(op.policy, op.bucket, op.now, op.settings)
            case TakeRetryToken():
                return state.take_retry_token(op.policy, op.host, op.settings)
            case Refund():
                return state.refund(op.policy, op.host, op.settings)
            case OpenBreaker():
                state.open_breaker(op.policy, op.name, op.until, op.rule_id)
                return _opened(op)
            case RecordOutcome():
                got = state.record_outcome(
                    op.policy, op.failed, op.now, op.settings
                )
                return _ratio_opened(op, got)
            case CheckPause():
                return state.check_pause(op.policy, op.scopes, op.now)
            case SetPause():
                state.set_pause(op.policy, op.pause)
                return _pause_set(op)
            case SeedLimit():
                # Optional: a backend that keeps no seeds ignores them.
                seed = getattr(state, "seed_limit", None)
                if seed is not None:
                    seed(op.policy, op.bucket, op.seed)
                return None
            case RaiseAlert():
                return _raise(op, runtime, None)
    except Exception as exc:  # noqa: BLE001 - state trouble never fails a call
        return _failed(op, exc)


async def aanswer(op: StateOp, runtime: Runtime) -> Any:
    """
    Carry *op* out with the backend's async methods.
    """
    state = runtime.state
    try:
        match op:
            case Admit():
                native = getattr(state, "aadmit", None)
                if native is None:
                    return await _aby_parts(op, runtime)
                return _admitted(op, await native(op))
            case Settle():
                native = getattr(state, "asettle", None)
                if native is None:
                    return await _aby_parts(op, runtime)
                if _deferrable(op):
                    _adefer(op, runtime, native)
                    return Settlement()
                return _settled(op, runtime, await native(op))
            case CheckBreakers():
                found = (
                    await state.acheck_breakers(op.policy, op.now, op.skip)
                    if op.skip
                    else await state.acheck_breakers(op.policy, op.now)
                )
                return _seen(op.policy, found)
            case Acquire():
                return await state.aacquire(
                    op.policy, op.bucket, op.now, op.settings
                )
            case TakeRetryToken():
                return await state.atake_retry_token(
                    op.policy, op.host, op.settings
                )
            case Refund():
                return await state.arefund(op.policy, op.host, op.settings)
            case OpenBreaker():
                await state.aopen_breaker(
                    op.policy, op.name, op.until, op.rule_id
                )
                return _opened(op)
            case RecordOutcome():
                got = await state.arecord_outcome(
                    op.policy, op.failed, op.now, op.settings
                )
                return _ratio_opened(op, got)
            case CheckPause():
                return await state.acheck_pause(op.policy, op.scopes, op.now)
            case SetPause():
                await state.aset_pause(op.policy, op.pause)
                return _pause_set(op)
            case SeedLimit():
                aseed = getattr(state, "aseed_limit", None)
                if aseed is not None:
                    await aseed(op.policy, op.bucket, op.seed)
                return None
            case RaiseAlert():
                # The de-duplication gate is a backend call: awaited here,
                # so the dispatcher only has to queue the alert.
                notice = op.notice
                try:
                    gate = await state.aalert_gate(
                        notice.key, notice.dedupe, op.now
                    )
                except Exception as exc:  # noqa: BLE001 - send it, as sync does
                    runtime.alerts.gate_failed(op.policy, notice.key, exc)
                    gate = (True, 0)
                return _raise(op, runtime, gate)
    except Exception as exc:  # noqa: BLE001 - state trouble never fails a call
        return _failed(op, exc)


# --- One admission, one settlement ------------------------------------------
#
# A backend that has them (RedisState: one script each) answers Admit and
# Settle in one round trip; for any other (MemoryState, or a backend
# written before them) they are carried out part by part here, in the same
# order and with the same answers.


def _by_parts(op: Admit | Settle, runtime: Runtime) -> Any:
    parts = admit_parts(op) if isinstance(op, Admit) else settle_parts(op)
    return by_parts(parts, lambda part: answer(part, runtime))


async def _aby_parts(op: Admit | Settle, runtime: Runtime) -> Any:
    """
    :func:`_by_parts` with each part awaited.
    """
    parts = admit_parts(op) if isinstance(op, Admit) else settle_parts(op)
    try:
        part = next(parts)
        while True:
            part = parts.send(await aanswer(part, runtime))
    except StopIteration as stop:
        return stop.value


# --- A success's settlement, off the call's path ----------------------------
#
# What a success leaves in a shared backend (the outcome counted for the
# ratio breaker, the budget refunded) changes nothing the call is waiting
# for, and nothing a later call must see at once: its settlement goes to a
# worker (a thread; a task on the running loop) and the call returns after
# one round trip, the admission.  Whatever a later call must see — a
# breaker or a pause set, a failure counted, a retry's token — is settled
# before the call goes on.


def _deferrable(op: Settle) -> bool:
    return (
        op.pause is None
        and op.open is None
        and op.token is None
        and op.alert is None
        and (op.record is None or not op.record.failed)
    )


#: Settlements waiting for the worker; past this many a call settles its
#: own (the backend is slower than the calls: they wait for it).
_MOST_PENDING = 1000

_settler: ThreadPoolExecutor | None = None
_pending = 0
_settler_lock = threading.Lock()
_tasks: set[asyncio.Task[None]] = set()


def _defer(
    op: Settle, runtime: Runtime, native: Callable[[Settle], Settlement]
) -> bool:
    """
    Hand *op* to the settling thread: False when too many are waiting.
    """
    global _settler, _pending  # noqa: PLW0603 - the one worker of the process
    with _settler_lock:
        if _pending >= _MOST_PENDING:
            return False
        _pending += 1
        if _settler is None:
            _settler = ThreadPoolExecutor(1, "referee-settle")
        settler = _settler

    def settle() -> None:
        global _pending  # noqa: PLW0603
        try:
            _settled(op, runtime, native(op))
        except Exception as exc:  # noqa: BLE001 - state trouble fails nothing
            _failed(op, exc)
        finally:
            with _settler_lock:
                _pending -= 1

    settler.submit(settle)
    return True


def _adefer(
    op: Settle,
    runtime: Runtime,
    native: Callable[[Settle], Awaitable[Settlement]],
) -> None:
    """
    Settle *op* in a task of its own on the running loop.
    """

    async def settle() -> None:
        try:
            _settled(op, runtime, await native(op))
        except Exception as exc:  # noqa: BLE001 - state trouble fails nothing
            _failed(op, exc)

    task = asyncio.get_running_loop().create_task(settle())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def flush_state(timeout: float | None = None) -> bool:
    """
    Wait until every settlement of a successful call handed to the
    settling thread so far is written to its state backend (a shutdown
    hook's last step, or a test's): True when they are, False when
    *timeout* seconds passed first.  Settlements go off the call's path
    only on a backend that settles in one operation (``RedisState``).
    """
    with _settler_lock:
        settler = _settler
    if settler is None:
        return True
    try:
        settler.submit(lambda: None).result(timeout)
    except TimeoutError:
        return False
    return True


def drain() -> None:
    """
    :func:`flush_state` with no bound (referee's own tests).
    """
    flush_state()


async def adrain() -> None:
    """
    Wait until every settlement task of the running loop is done.
    """
    loop = asyncio.get_running_loop()
    mine = [t for t in _tasks if t.get_loop() is loop]
    if mine:
        await asyncio.gather(*mine, return_exceptions=True)


def _after_fork() -> None:
    # A forked child has no settling thread: it starts its own.
    global _settler, _pending
    _settler, _pending = None, 0
    _tasks.clear()


os.register_at_fork(after_in_child=_after_fork)


def _admitted(op: Admit, got: Admission) -> Admission:
    """
    What a backend's own admission found, logged and told to the hooks as
    the parts' answers are.
    """
    if got.breaker is not None:
        _seen(op.policy, got.breaker)
    return got


def _settled(op: Settle, runtime: Runtime, got: Settlement) -> Settlement:
    """
    What a backend's own settlement did, logged and told as the parts'
    answers are; the alert goes to the dispatcher with the gate the
    backend passed.
    """
    if op.pause is not None:
        _pause_set(op.pause)
    if op.open is not None:
        _opened(op.open)
    if op.record is not None:
        _ratio_opened(op.record, got.ratio)
    if op.alert is not None:
        _raise(op.alert, runtime, got.gate)
    return got


def _raise(
    op: RaiseAlert, runtime: Runtime, gate: tuple[bool, int] | None
) -> None:
    runtime.alerts.submit(
        op.notice,
        policy=op.policy,
        rule=op.rule,
        status=op.status,
        failure=op.failure,
        now=op.now,
        gate=gate,
    )


def _failed(op: StateOp, exc: Exception) -> Any:
    _log.warning(
        "referee.state_failed",
        operation=type(op).__name__,
        error=repr(exc),
    )
    return op.fallback


def _seen(policy: str, found: BreakerState | None) -> BreakerState | None:
    if found is not None and hooks.hooks():
        hooks.emit(
            hooks.BreakerEvent(
                policy, found.name, found.rule_id, found.until, False
            )
        )
    return found


def _pause_set(op: SetPause) -> None:
    pause = op.pause
    _log.info(
        "referee.pause_set",
        policy=op.policy,
        scope=scope_parts(pause.scope)[0],
        methods=scope_parts(pause.scope)[1],
        until=pause.until,
        rule=pause.rule_id,
        then=pause.then,
    )


def _opened(op: OpenBreaker) -> None:
    _log.warning(
        "referee.breaker_opened",
        policy=op.policy,
        breaker=op.name,
        rule=op.rule_id,
        open_for=op.open_for,
    )
    if hooks.hooks():
        hooks.emit(
            hooks.BreakerEvent(op.policy, op.name, op.rule_id, op.until, True)
        )


def _ratio_opened(
    op: RecordOutcome, found: BreakerState | None
) -> BreakerState | None:
    if found is not None:
        _log.warning(
            "referee.breaker_opened",
            policy=op.policy,
            breaker=found.name,
            rule=None,
            open_for=op.settings.open_for,
        )
        if hooks.hooks():
            hooks.emit(
                hooks.BreakerEvent(
                    op.policy, found.name, None, found.until, True
                )
            )
    return found
