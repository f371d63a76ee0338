"""
The async runner's deadlines (``referee._run.deadlines``): one timer per
loop cancels the tasks whose notes are due, never a task whose note was
taken back, and is armed again for a sooner deadline noted later.
"""

from __future__ import annotations

import asyncio
import time

from referee._run.deadlines import Deadlines


async def _held(deadlines: Deadlines, end: float, hold: float) -> str:
    """Await *hold* seconds under a note due at *end*: how it ended."""
    task = asyncio.current_task()
    assert task is not None
    key, note = deadlines.enter(task, end)
    try:
        await asyncio.sleep(hold)
    except asyncio.CancelledError:
        if note[2] and task.uncancel() == 0:
            return "cut"
        raise
    finally:
        if not note[2]:
            del deadlines.sends[key]
    return "done"


class TestDeadlines:
    def test_a_due_note_cancels_its_task_and_no_other(self):
        async def scenario() -> list[str]:
            deadlines = Deadlines(asyncio.get_running_loop())
            now = time.time()
            results = await asyncio.gather(
                _held(deadlines, now + 0.05, 5.0),
                _held(deadlines, now + 10.0, 0.2),
            )
            assert deadlines.sends == {}
            return list(results)

        assert ["cut", "done"] == asyncio.run(scenario())

    def test_a_sooner_deadline_noted_later_is_kept(self):
        async def scenario() -> list[str]:
            deadlines = Deadlines(asyncio.get_running_loop())
            now = time.time()
            late = asyncio.ensure_future(_held(deadlines, now + 30.0, 0.5))
            await asyncio.sleep(0)  # the late note arms the timer first
            soon = await _held(deadlines, now + 0.05, 5.0)
            return [soon, await late]

        assert ["cut", "done"] == asyncio.run(scenario())

    def test_a_note_taken_back_is_never_cut(self):
        async def scenario() -> tuple[str, str]:
            deadlines = Deadlines(asyncio.get_running_loop())
            first = await _held(deadlines, time.time() + 0.1, 0.0)
            # The timer, armed for the first note, fires with nothing due
            # and is armed again for the second.
            second = await _held(deadlines, time.time() + 0.3, 0.15)
            return first, second

        assert ("done", "done") == asyncio.run(scenario())

    def test_a_cancellation_that_is_not_the_timers_propagates(self):
        async def scenario() -> bool:
            deadlines = Deadlines(asyncio.get_running_loop())
            task = asyncio.ensure_future(
                _held(deadlines, time.time() + 10.0, 5.0)
            )
            await asyncio.sleep(0.01)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                return deadlines.sends == {}
            return False

        assert asyncio.run(scenario())
