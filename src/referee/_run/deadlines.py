"""
The deadlines of the sends in flight on one event loop, kept by one timer.

The asynchronous runner bounds every send by what is left of the call's
deadline: a send that outlives it is cancelled.  One ``loop.call_at``
timer per send (what :func:`asyncio.timeout` arms) costs about a dozen
Python calls to arm and cancel, on every call; here a send only notes its
deadline in a dict, and one timer per loop, armed for the soonest deadline
noted, cancels the sends whose deadlines have passed when it fires.  A send
that ends first takes its note back: the timer then finds nothing due,
and is armed again for the soonest deadline still noted, if any.  With
calls under one policy, each later deadline is no sooner than the one the
timer is armed for, so it is armed about once per deadline's length, not
once per send.

::

    deadlines = Deadlines(loop)
    key, note = deadlines.enter(task, end)   # end: a time.time() reading
    try:
        ...                                   # the send
    finally:
        if not note[2]:
            del deadlines.sends[key]

Deadlines are wall-clock times (:func:`time.time`), the runners' clock,
so a send's bound is the call's own deadline with nothing read again.  A
:class:`Deadlines` is only ever touched from its loop's thread.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    import asyncio


__all__ = ["Deadlines"]


class Deadlines:
    """
    The sends in flight on *loop* that a deadline bounds.

    Attributes:
        loop: The event loop.
        sends: The notes of the sends in flight, by key: ``[end, task,
            expired]``, *expired* set (and the note removed) when the timer
            cancelled the task.
    """

    __slots__ = ("_at", "_next", "_timer", "loop", "sends")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sends: dict[int, list[Any]] = {}
        self._next = 0
        self._timer: asyncio.TimerHandle | None = None
        self._at = math.inf

    def enter(
        self, task: asyncio.Task[Any], end: float
    ) -> tuple[int, list[Any]]:
        """
        Note that *task* must be cancelled at *end* (a :func:`time.time`
        reading) unless its note is taken back first: the note's key and
        the note.
        """
        self._next = key = self._next + 1
        note = [end, task, False]
        self.sends[key] = note
        if end < self._at:
            self._arm(end)
        return key, note

    def _arm(self, end: float) -> None:
        """
        Fire at *end* (or a millisecond from now, if that is sooner).
        """
        if self._timer is not None:
            self._timer.cancel()
        self._at = end
        loop = self.loop
        self._timer = loop.call_at(
            loop.time() + max(end - time.time(), 0.001), self._fire
        )

    def _fire(self) -> None:
        """
        Cancel the sends whose deadlines have passed; arm the timer for
        the soonest one left.
        """
        self._timer = None
        self._at = math.inf
        now = time.time()
        soonest = math.inf
        sends = self.sends
        for key, note in list(sends.items()):
            end = note[0]
            if end <= now:
                del sends[key]
                note[2] = True
                note[1].cancel()
            elif end < soonest:
                soonest = end
        if soonest != math.inf:
            self._arm(soonest)
