"""
The runners' clock and sleeping, and the recorder that
:func:`referee.testing.no_sleep` installs.

Rule 1: nothing else in referee reads the clock or sleeps: the core is
given ``now``, the adapters are given nothing.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from collections.abc import Iterator


__all__ = ["SleepRecorder", "active_recorder", "now", "recording", "skip"]


class SleepRecorder:
    """
    Under :func:`referee.testing.no_sleep`, the delays the runners were
    asked to sleep, in order; nothing really sleeps, and the runners' clock
    moves on by every delay skipped in the block (*offset*), so deadlines
    and rate limits still hold across the calls of a test.
    """

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.offset = 0.0
        self._lock = threading.Lock()

    def record(self, seconds: float) -> None:
        """
        Count *seconds* as slept.
        """
        with self._lock:
            self.delays.append(seconds)
            self.offset += seconds


#: The recorders installed, innermost last.  Replaced, never mutated, so a
#: runner reading it needs no lock.
_RECORDERS: tuple[SleepRecorder, ...] = ()
_LOCK = threading.Lock()


@contextmanager
def recording() -> Iterator[SleepRecorder]:
    """
    Install a new recorder for the block: the runners record their sleeps
    in it instead of sleeping.  Blocks nest; the innermost records.
    """
    global _RECORDERS  # noqa: PLW0603 - the registry is this module's
    recorder = SleepRecorder()
    with _LOCK:
        _RECORDERS = (*_RECORDERS, recorder)
    try:
        yield recorder
    finally:
        with _LOCK:
            _RECORDERS = tuple(r for r in _RECORDERS if r is not recorder)


def active_recorder() -> SleepRecorder | None:
    """
    The innermost recorder installed, or None: the runners really sleep.
    """
    return _RECORDERS[-1] if _RECORDERS else None


def now() -> float:
    """
    The runners' clock: Unix time, plus the sleeps skipped under no_sleep.
    """
    recorders = _RECORDERS
    return time.time() + (recorders[-1].offset if recorders else 0.0)


#: The wall clock alone, for a runner to note a call's start at the cost
#: of one C call: ``started_at(wall())`` later gives the runners' clock.
wall = time.time


def started_at(noted: float) -> float:
    """
    The runners' clock at the moment *noted* (a :func:`wall` reading) was
    taken: nothing is skipped between the two, since skipping happens only
    where a runner would sleep.
    """
    recorders = _RECORDERS
    return noted + (recorders[-1].offset if recorders else 0.0)


def skip(seconds: float) -> bool:
    """
    Under no_sleep, record *seconds* and return True (do not sleep);
    otherwise False.
    """
    recorders = _RECORDERS
    if not recorders:
        return False
    recorders[-1].record(seconds)
    return True
