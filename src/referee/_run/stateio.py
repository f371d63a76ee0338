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

from typing import TYPE_CHECKING, Any

import structlog

from referee._core.engine import scope_parts
from referee._core.ops import (
    Acquire,
    CheckBreakers,
    CheckPause,
    OpenBreaker,
    RaiseAlert,
    RecordOutcome,
    Refund,
    SetPause,
    TakeRetryToken,
)

from . import hooks


if TYPE_CHECKING:
    from referee._core.backend import BreakerState
    from referee._core.ops import StateOp

    from .runtime import Runtime


__all__ = ["aanswer", "answer"]

_log = structlog.get_logger("referee")


def answer(op: StateOp, runtime: Runtime) -> Any:
    """
    Carry *op* out with the backend's blocking methods.
    """
    state = runtime.state
    try:
        match op:
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
