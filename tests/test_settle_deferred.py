"""
A success's settlement goes off the call's path on a backend that settles
in one operation (``settle``/``asettle``, as RedisState): the call returns
after its admission, and the settlement follows on the settling thread (or
a task of the loop).  What a later call must see at once — a failure
counted, a breaker or pause set, a retry's token — is settled before the
call returns.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

import httpx
import pytest

import referee
from referee._core.backend import Settlement
from referee._run import stateio
from referee.httpx import AsyncPolicyTransport, PolicyTransport
from referee.testing import no_sleep


if TYPE_CHECKING:
    from referee._core.ops import Settle


POLICY = """\
policy: deferred
defaults:
  breaker: {failure_ratio: 0.5, window: 30s, min_calls: 100}
  budget: {tokens: 10, refill: 0.1}
rules:
  - id: unavailable
    when: {status: 503}
    do: retry
  - id: credits
    when: {status: 402}
    do: abort
    breaker: {name: credits, open_for: 10m}
"""


class Settling(referee.MemoryState):
    """
    A MemoryState that settles in one operation, as RedisState does, and
    can be held: each settlement waits for *go* and is recorded.
    """

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()
        self.go.set()
        self.settled: list[tuple[str, bool]] = []  # (thread, failed)

    def settle(self, op: Settle) -> Settlement:
        self.go.wait(5)
        failed = op.record is not None and op.record.failed
        self.settled.append((threading.current_thread().name, failed))
        return Settlement()

    async def asettle(self, op: Settle) -> Settlement:
        failed = op.record is not None and op.record.failed
        task = asyncio.current_task()
        self.settled.append((task.get_name() if task else "", failed))
        return Settlement()


def client(state: Settling, *statuses: int) -> httpx.Client:
    answers = iter(statuses)
    policy = referee.load_policy_text(POLICY, state=state)
    return httpx.Client(
        transport=PolicyTransport(
            policy,
            httpx.MockTransport(lambda request: httpx.Response(next(answers))),
        )
    )


class TestSync:
    def test_a_success_returns_before_its_settlement(self):
        """
        The settlement of a 200 waits (held); the call returns anyway, and
        the settlement is done on the settling thread once let go.
        """
        state = Settling()
        state.go.clear()
        with client(state, 200) as http:
            response = http.get("https://api.example.com/x")
        assert 200 == response.status_code
        assert [] == state.settled

        state.go.set()
        stateio.drain()

        assert [("referee-settle_0", False)] == state.settled

    def test_flush_state_waits_for_the_settling_thread(self):
        """
        referee.flush_state() says False while a settlement is held past
        its timeout, True once it is written.
        """
        state = Settling()
        state.go.clear()
        with client(state, 200) as http:
            http.get("https://api.example.com/x")

        assert referee.flush_state(timeout=0.05) is False
        state.go.set()
        assert referee.flush_state(timeout=5) is True
        assert 1 == len(state.settled)

    def test_a_failure_is_settled_before_the_call_goes_on(self):
        """
        A retried 503 is counted as a failure (and its token spent) before
        the retry: in the caller's thread; the final 200 is deferred.
        """
        state = Settling()
        with no_sleep(), client(state, 503, 200) as http:
            http.get("https://api.example.com/x")
        stateio.drain()

        here = threading.current_thread().name
        assert [(here, True), ("referee-settle_0", False)] == state.settled

    def test_a_breaker_is_set_before_the_call_returns(self):
        state = Settling()
        with (
            client(state, 402) as http,
            pytest.raises(referee.InsufficientCredits),
        ):
            http.get("https://api.example.com/x")

        assert [(threading.current_thread().name, False)] == state.settled

    def test_too_many_waiting_settle_in_the_call(self, monkeypatch):
        """
        With more settlements waiting than the worker keeps up with, a
        call settles its own (the calls wait for the backend).
        """
        monkeypatch.setattr(stateio, "_MOST_PENDING", 0)
        state = Settling()
        with client(state, 200) as http:
            http.get("https://api.example.com/x")

        assert [(threading.current_thread().name, False)] == state.settled


class TestAsync:
    def test_a_success_is_settled_in_a_task(self):
        state = Settling()
        policy = referee.load_policy_text(POLICY, state=state)

        async def main() -> str:
            transport = AsyncPolicyTransport(
                policy, httpx.MockTransport(lambda r: httpx.Response(200))
            )
            async with httpx.AsyncClient(transport=transport) as http:
                await http.get("https://api.example.com/x")
                await stateio.adrain()
            task = asyncio.current_task()
            assert task is not None
            return task.get_name()

        caller = asyncio.run(main())

        [(settler, failed)] = state.settled
        assert not failed
        assert settler not in ("", caller)  # a task of its own


@pytest.fixture(autouse=True)
def _drained():
    yield
    stateio.drain()
