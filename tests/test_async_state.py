"""
The async path awaits the state backend and never blocks the event loop
(DESIGN.md §3: "the async runner awaits the state backend's async methods
and never blocks the event loop").

A policy that asks its state before and after every send (the breakers
and a rate-limit slot before; the failure-ratio breaker and the retry
budget after) makes 20 concurrent POSTs through httpx and aiohttp, while a
stall monitor on the same loop measures how late its 5 ms sleeps wake up:

- with a real ``redis-server`` behind a loopback proxy that adds 50 ms
  each way (``tests/latency_proxy.py``), and
- with a fake backend, a MemoryState whose ``a``-twins take 50 ms
  (awaited) and whose synchronous methods take 50 ms (blocking, as a
  remote backend's would) and report being called on a running loop.

The loop may never stall more than 50 ms, and the calls must overlap (a
run that misses by what a busy machine can cause is tried once more).
The last class proves the monitor is not vacuous.

pytest-asyncio is not used: each test runs its coroutine with
``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Self

import aiohttp
import attrs
import httpx
import pytest
from tests.latency_proxy import LatencyProxy
from tests.redis_server import RedisServer

import referee
from referee.aiohttp import PolicyMiddleware
from referee.httpx import AsyncPolicyTransport
from referee.redis import RedisState


if TYPE_CHECKING:
    from collections.abc import (
        AsyncIterator,
        Awaitable,
        Callable,
        Coroutine,
        Iterator,
    )

    from referee._core.backend import (
        BreakerSettings,
        BreakerState,
        BudgetSettings,
        RateLimitSettings,
    )


#: The latency the proxy adds each way, and that each of the fake
#: backend's operations takes.
DELAY = 0.05
#: One Redis round trip through the proxy.
ROUND_TRIP = 2 * DELAY
#: The concurrent calls measured.
CALLS = 20
#: The state operations of one call that ends in a plain 200:
#: check_breakers and acquire before the send, record_outcome and refund
#: after it (DESIGN.md §3, "State across calls" in the policy language).
OPS_PER_CALL = 4
#: The worst the event loop may stall.
MAX_STALL = 0.05
#: How often the stall monitor wakes up.
TICK = 0.005
#: How many calls must be in flight at once, on average: the wall time
#: must be under the serial time divided by this.
OVERLAP = 5
#: A stall at least this long is a blocked loop, never a busy machine: a
#: run that stalled less but missed a bound is tried once more.
BLOCKED = 0.5

PATH = "/v1/search"

POLICY = """
policy: {name}
defaults:
  rate_limit: {{requests: 1000000, per: 1s}}
  breaker: {{failure_ratio: 0.5, window: 30s, min_calls: 20, open_for: 30s}}
  budget: {{tokens: 10, refill: 0.1}}
rules:
  - id: out-of-credits
    when: {{status: 402}}
    do: abort
    error: InsufficientCredits
    breaker: {{name: credits, open_for: 10m}}
"""


def load(state: Any) -> referee.Policy:
    """
    The policy above on *state*, under a name of its own.
    """
    name = f"async-state-{uuid.uuid4().hex[:8]}"
    return referee.load_policy_text(POLICY.format(name=name), state=state)


# --- The stall monitor --------------------------------------------------------


class StallMonitor:
    """
    A task on the running loop that sleeps `TICK` again and again and keeps
    the worst lateness of its wake-ups: how long the loop was kept from
    running it.  Use it as an async context manager.
    """

    def __init__(self) -> None:
        self.worst = 0.0
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._watch())
        await asyncio.sleep(0)  # let it start
        return self

    async def __aexit__(self, *args: object) -> None:
        # A stall at the very end is seen only when the monitor wakes up
        # once more.
        await asyncio.sleep(2 * TICK)
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(TICK)
            self.worst = max(self.worst, loop.time() - start - TICK)
            self.ticks += 1


# --- Clients, and the measured run --------------------------------------------


@contextlib.asynccontextmanager
async def client(
    kind: str, policy: referee.Policy
) -> AsyncIterator[Callable[[str], Awaitable[int]]]:
    """
    A function that POSTs to a URL through *kind*'s async client under
    *policy* and returns the status.
    """
    if kind == "httpx":
        transport = AsyncPolicyTransport(policy)
        # trust_env=False: no proxy from the environment in between.
        async with httpx.AsyncClient(
            transport=transport, trust_env=False
        ) as c:

            async def post_httpx(url: str) -> int:
                return (await c.post(url, content=b"{}")).status_code

            yield post_httpx
    else:
        middleware = PolicyMiddleware(policy)
        async with aiohttp.ClientSession(middlewares=[middleware]) as s:

            async def post_aiohttp(url: str) -> int:
                async with s.post(url, data=b"{}") as r:
                    await r.read()
                    return r.status

            yield post_aiohttp


@attrs.frozen
class Run:
    """
    What one measured run saw: the statuses, its wall time, the worst
    stall of the loop and how many times the monitor woke up.
    """

    statuses: list[int]
    wall: float
    stall: float
    ticks: int

    def __str__(self) -> str:
        return (
            f"{CALLS} concurrent calls took {self.wall:.3f}s; the event "
            f"loop stalled up to {self.stall * 1000:.0f} ms"
        )


async def measure(
    kind: str,
    policy: referee.Policy,
    url: str,
    warm_up: Callable[[], Awaitable[object]],
) -> Run:
    """
    One call to warm up (imports, connections, Redis scripts), then
    *warm_up*, then `CALLS` concurrent POSTs under the stall monitor.
    """
    async with client(kind, policy) as post:
        await post(url)
        await warm_up()
        # A full collection of the garbage earlier tests left took 70 ms
        # here: the loop's stall, but not one this test is about.
        gc.collect()
        async with StallMonitor() as monitor:
            start = time.perf_counter()
            statuses = await asyncio.gather(*(post(url) for _ in range(CALLS)))
            wall = time.perf_counter() - start
    return Run(list(statuses), wall, monitor.worst, monitor.ticks)


async def nothing() -> None:
    pass


def run(
    main: Callable[[], Coroutine[Any, Any, Run]], serial: float
) -> tuple[Run, int]:
    """
    The run of *main*, and how many runs it took: one that stalled the
    loop or took `OVERLAP` times less than *serial* by a margin that a
    busy machine can explain (its stall under `BLOCKED`) is run once more.
    A loop that blocks fails both runs; today's blocking drivers stall it
    for seconds and are not run twice.
    """
    result = asyncio.run(main())
    if result.stall >= BLOCKED or (
        result.stall < MAX_STALL and result.wall < serial / OVERLAP
    ):
        return result, 1
    return asyncio.run(main()), 2


CLIENTS = pytest.mark.parametrize("kind", ["httpx", "aiohttp"])


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no delayed-ACK waits on keep-alive
    server: _Api

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
        with self.server.lock:
            self.server.posts += 1


class _Api(ThreadingHTTPServer):
    """
    A loopback API that answers every POST at once with a 200, counting
    them.
    """

    daemon_threads = True
    # All the calls connect at once: socketserver's default backlog of 5
    # drops SYNs, and each retransmission costs a second.
    request_queue_size = 128

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Ok)
        self.lock = threading.Lock()
        self.posts = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture
def api() -> Iterator[_Api]:
    srv = _Api()
    thread = threading.Thread(
        target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


# --- Redis behind a slow network ----------------------------------------------


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer.start_or_skip() as srv:
        yield srv


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[LatencyProxy]:
    """
    The Redis server, `DELAY` further away each way.
    """
    with LatencyProxy(("127.0.0.1", redis_server.port), DELAY) as p:
        yield p


class TestRedisBehindLatency:
    @CLIENTS
    def test_concurrent_calls_never_block_the_loop(self, kind, proxy, api):
        """
        20 concurrent POSTs through an async client, on a RedisState 100 ms
        of round trip away, never stall the event loop more than 50 ms,
        and overlap.

        Each call makes `OPS_PER_CALL` (4) state operations, one EVALSHA
        round trip of 100 ms each: serially the 20 calls take at least
        20 x 4 x 100 ms = 8 s; overlapped, about 4 x 100 ms = 0.4 s (the
        warm-up loads the scripts and opens 20 asyncio connections for
        this loop, so no handshake or NOSCRIPT adds round trips).  The
        wall time must be under a fifth of the serial time (1.6 s): on
        average at least 5 calls in flight at once.
        """
        state = RedisState.from_url(
            proxy.url, prefix=f"referee-async-{uuid.uuid4().hex[:8]}"
        )
        policy = load(state)

        async def open_connections() -> None:
            # One connection per concurrent call, in this loop's client.
            await asyncio.gather(
                *(
                    state.acheck_breakers(policy.name, time.time())
                    for _ in range(CALLS)
                )
            )

        async def main() -> Run:
            try:
                return await measure(
                    kind, policy, api.url(PATH), open_connections
                )
            finally:
                await state.aclose()

        serial = CALLS * OPS_PER_CALL * ROUND_TRIP
        try:
            result, runs = run(main, serial)
        finally:
            state.close()

        assert [200] * CALLS == result.statuses
        assert (CALLS + 1) * runs == api.posts
        assert result.ticks > 0
        assert result.stall < MAX_STALL, str(result)
        assert result.wall < serial / OVERLAP, str(result)


# --- A fake slow backend ------------------------------------------------------


class SlowState(referee.MemoryState):
    """
    A MemoryState as far away as a remote backend: each ``a``-twin awaits
    `DELAY` before doing its work, and each synchronous method blocks for
    `DELAY` (as a synchronous Redis call would) and records its name in
    *on_loop* when it is called while an event loop runs in its thread:
    the async path must never do that.  *awaited* counts the twins
    called.
    """

    def __init__(self) -> None:
        super().__init__()
        self.awaited: collections.Counter[str] = collections.Counter()
        self.on_loop: list[str] = []
        self._count_lock = threading.Lock()

    def _block(self, name: str) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # a thread without a running loop may block
        else:
            with self._count_lock:
                self.on_loop.append(name)
        time.sleep(DELAY)

    async def _wait(self, name: str) -> None:
        with self._count_lock:
            self.awaited[name] += 1
        await asyncio.sleep(DELAY)

    # The synchronous methods: block, and tell on a running loop.  The
    # twins below call MemoryState's (super()), never these.

    def open_breaker(
        self, policy: str, name: str, until: float, rule_id: str | None
    ) -> None:
        self._block("open_breaker")
        super().open_breaker(policy, name, until, rule_id)

    def check_breakers(
        self, policy: str, now: float, skip: frozenset[str] = frozenset()
    ) -> BreakerState | None:
        self._block("check_breakers")
        return super().check_breakers(policy, now, skip)

    def record_outcome(
        self,
        policy: str,
        failed: bool,
        now: float,
        settings: BreakerSettings,
    ) -> BreakerState | None:
        self._block("record_outcome")
        return super().record_outcome(policy, failed, now, settings)

    def take_retry_token(
        self, policy: str, host: str, settings: BudgetSettings
    ) -> bool:
        self._block("take_retry_token")
        return super().take_retry_token(policy, host, settings)

    def refund(self, policy: str, host: str, settings: BudgetSettings) -> None:
        self._block("refund")
        super().refund(policy, host, settings)

    def acquire(
        self,
        policy: str,
        bucket: str,
        now: float,
        settings: RateLimitSettings,
    ) -> float:
        self._block("acquire")
        return super().acquire(policy, bucket, now, settings)

    def alert_gate(
        self, key: str, window: float | None, now: float
    ) -> tuple[bool, int]:
        self._block("alert_gate")
        return super().alert_gate(key, window, now)

    # The asynchronous twins, named as RedisState's.

    async def aopen_breaker(
        self, policy: str, name: str, until: float, rule_id: str | None
    ) -> None:
        await self._wait("aopen_breaker")
        super().open_breaker(policy, name, until, rule_id)

    async def acheck_breakers(
        self, policy: str, now: float, skip: frozenset[str] = frozenset()
    ) -> BreakerState | None:
        await self._wait("acheck_breakers")
        return super().check_breakers(policy, now, skip)

    async def arecord_outcome(
        self,
        policy: str,
        failed: bool,
        now: float,
        settings: BreakerSettings,
    ) -> BreakerState | None:
        await self._wait("arecord_outcome")
        return super().record_outcome(policy, failed, now, settings)

    async def atake_retry_token(
        self, policy: str, host: str, settings: BudgetSettings
    ) -> bool:
        await self._wait("atake_retry_token")
        return super().take_retry_token(policy, host, settings)

    async def arefund(
        self, policy: str, host: str, settings: BudgetSettings
    ) -> None:
        await self._wait("arefund")
        super().refund(policy, host, settings)

    async def aacquire(
        self,
        policy: str,
        bucket: str,
        now: float,
        settings: RateLimitSettings,
    ) -> float:
        await self._wait("aacquire")
        return super().acquire(policy, bucket, now, settings)

    async def aalert_gate(
        self, key: str, window: float | None, now: float
    ) -> tuple[bool, int]:
        await self._wait("aalert_gate")
        return super().alert_gate(key, window, now)


class TestSlowBackend:
    @CLIENTS
    def test_concurrent_calls_await_the_twins(self, kind, api):
        """
        20 concurrent POSTs on a backend whose every operation takes 50 ms
        never stall the event loop more than 50 ms, overlap, and use only
        the ``a``-twins: no synchronous method runs on the loop.

        Serially the 20 calls' 4 operations take 20 x 4 x 50 ms = 4 s;
        overlapped, about 4 x 50 ms = 0.2 s.  The wall time must be under
        a fifth of the serial time (0.8 s).  Every call checks the
        breakers and takes a rate-limit slot before it is sent, so those
        two twins are awaited once per call at least.
        """
        state = SlowState()
        policy = load(state)
        serial = CALLS * OPS_PER_CALL * DELAY

        result, runs = run(
            lambda: measure(kind, policy, api.url(PATH), nothing), serial
        )

        assert [200] * CALLS == result.statuses
        assert (CALLS + 1) * runs == api.posts
        assert result.ticks > 0
        assert result.stall < MAX_STALL, str(result)
        assert result.wall < serial / OVERLAP, str(result)
        assert [] == state.on_loop
        assert state.awaited["acheck_breakers"] >= CALLS + 1
        assert state.awaited["aacquire"] >= CALLS + 1
        assert sum(state.awaited.values()) > 0


# --- The monitor itself -------------------------------------------------------


class TestStallMonitor:
    def test_sees_a_blocking_call(self):
        """
        A coroutine that calls time.sleep(0.2) on the loop is seen as a
        stall of about 200 ms: the monitor is not vacuous.
        """

        async def main() -> StallMonitor:
            async with StallMonitor() as monitor:
                await asyncio.sleep(0.02)
                time.sleep(0.2)  # noqa: ASYNC251 - the point of the test
                await asyncio.sleep(0.02)
            return monitor

        monitor = asyncio.run(main())

        assert monitor.worst > MAX_STALL
        assert monitor.worst >= 0.15

    def test_quiet_loop_is_not_a_stall(self):
        """
        A loop that only awaits is not seen as stalled: the bound of 50 ms
        leaves room for ordinary scheduling.
        """

        async def main() -> StallMonitor:
            async with StallMonitor() as monitor:
                await asyncio.sleep(0.2)
            return monitor

        monitor = asyncio.run(main())

        assert monitor.ticks > 10
        assert monitor.worst < MAX_STALL
