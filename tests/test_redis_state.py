"""
referee.redis.RedisState against a real redis-server started on a free
port: every operation has MemoryState's semantics (each test runs on the
memory backend, on Redis, and on Redis through the ``a``-twins), keys are
namespaced and expire, and an unreachable Redis never breaks a call.

The clock is the tests' (``now`` is an argument); nothing here sleeps
except the outage tests, briefly.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
import redis
import structlog
from tests.redis_server import RedisCluster, RedisServer
from tests.server import closed_port

from referee._core.backend import (
    BreakerSettings,
    BreakerState,
    BudgetSettings,
    RateLimitSettings,
)
from referee._run.memory import HELD_FOR, MemoryState
from referee.redis import IDLE_TTL, MIN_TTL, RedisState


if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


T0 = 1_700_000_000.0
RATIO = BreakerSettings(
    failure_ratio=0.5, window=10.0, min_calls=4, open_for=30.0
)
BUDGET = BudgetSettings(tokens=4.0, refill=0.5)
LIMIT = RateLimitSettings(requests=3, per=1.0, methods=None, by_path=False)


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer.start_or_skip() as srv:
        yield srv


@pytest.fixture
def raw(server: RedisServer) -> Iterator[redis.Redis]:
    """
    A plain client on an emptied server.
    """
    client = redis.Redis.from_url(server.url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def redis_state(server: RedisServer, raw: redis.Redis) -> Iterator[RedisState]:
    state = RedisState.from_url(server.url)
    yield state
    state.close()


class AsyncTwins:
    """
    The ``a``-twins of a RedisState, called like the synchronous
    protocol, on one event loop.
    """

    def __init__(self, state: RedisState) -> None:
        self._state = state
        self._loop = asyncio.new_event_loop()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        twin = getattr(self._state, "a" + name)
        return lambda *args: self._loop.run_until_complete(twin(*args))

    def gather(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        """
        Run the twins of *calls* (name, args...) concurrently.
        """

        async def main() -> list[Any]:
            return await asyncio.gather(
                *(getattr(self._state, "a" + c[0])(*c[1:]) for c in calls)
            )

        return self._loop.run_until_complete(main())

    def close(self) -> None:
        self._loop.run_until_complete(self._state.aclose())
        self._loop.close()


@pytest.fixture(params=["memory", "redis", "redis-async"])
def state(request: pytest.FixtureRequest) -> Iterator[Any]:
    """
    The backend under test: MemoryState (the reference), RedisState, and
    RedisState's async twins.
    """
    if request.param == "memory":
        yield MemoryState()
        return
    rs = request.getfixturevalue("redis_state")
    if request.param == "redis":
        yield rs
        return
    twins = AsyncTwins(rs)
    yield twins
    twins.close()


def open_ratio(state: Any, policy: str = "p", now: float = T0) -> None:
    """
    Trip *policy*'s ratio breaker at *now* with four failures.
    """
    for _ in range(3):
        state.record_outcome(policy, True, now, RATIO)
    assert BreakerState(
        "failure-ratio", now + RATIO.open_for, None
    ) == state.record_outcome(policy, True, now, RATIO)


class TestNamedBreakers:
    def test_open_breaker_stops_calls_until_it_closes(self, state):
        """
        An open breaker is returned with its rule until its time is up.
        """
        state.open_breaker("p", "credits", T0 + 600, "out-of-credits")

        assert BreakerState(
            "credits", T0 + 600, "out-of-credits"
        ) == state.check_breakers("p", T0)
        assert state.check_breakers("p", T0 + 599.5) is not None
        assert state.check_breakers("p", T0 + 600) is None

    def test_no_breaker(self, state):
        """
        With nothing open, no breaker stops a call.
        """
        assert state.check_breakers("p", T0) is None

    def test_later_until_is_kept(self, state):
        """
        Opening an open breaker for less time keeps the later until and
        its rule; for longer, takes the new one.
        """
        state.open_breaker("p", "credits", T0 + 100, "first")
        state.open_breaker("p", "credits", T0 + 50, "second")

        assert BreakerState(
            "credits", T0 + 100, "first"
        ) == state.check_breakers("p", T0)

        state.open_breaker("p", "credits", T0 + 200, None)

        assert BreakerState("credits", T0 + 200, None) == state.check_breakers(
            "p", T0
        )

    def test_the_last_to_close_is_reported(self, state):
        """
        Of several open breakers, the one that closes last stops the call.
        """
        state.open_breaker("p", "a", T0 + 10, "ra")
        state.open_breaker("p", "b", T0 + 30, "rb")
        state.open_breaker("p", "c", T0 + 20, "rc")

        assert "b" == state.check_breakers("p", T0).name
        assert "b" == state.check_breakers("p", T0 + 29).name
        assert state.check_breakers("p", T0 + 30) is None

    @pytest.mark.parametrize(
        ("ratio_at", "expected"),
        [(T0 + 100, "failure-ratio"), (T0 - 25, "credits")],
        ids=["ratio-closes-later", "named-closes-later"],
    )
    def test_named_and_ratio_breakers(self, state, ratio_at, expected):
        """
        A named breaker and the ratio breaker compete on their until.
        """
        state.open_breaker("p", "credits", T0 + 60, "out-of-credits")
        open_ratio(state, now=ratio_at)

        assert expected == state.check_breakers("p", T0).name


class TestRatioBreaker:
    def test_opens_at_the_ratio_with_enough_calls(self, state):
        """
        It opens only once min_calls outcomes are in and half of them
        failed; the opening outcome gets the new state.
        """
        assert state.record_outcome("p", True, T0, RATIO) is None
        assert state.record_outcome("p", False, T0, RATIO) is None
        assert state.record_outcome("p", True, T0 + 1, RATIO) is None

        opened = state.record_outcome("p", False, T0 + 2, RATIO)

        assert BreakerState("failure-ratio", T0 + 32, None) == opened
        assert opened == state.check_breakers("p", T0 + 3)

    def test_successes_never_open_it(self, state):
        """
        Without failures it stays closed, whatever the ratio says.
        """
        zero = BreakerSettings(0.0, 10.0, 1, 30.0)
        for i in range(5):
            assert state.record_outcome("p", False, T0 + i, zero) is None

        assert state.check_breakers("p", T0 + 5) is None

    def test_old_outcomes_slide_out_of_the_window(self, state):
        """
        Failures older than the window no longer count.
        """
        for _ in range(3):
            state.record_outcome("p", True, T0, RATIO)

        assert state.record_outcome("p", True, T0 + 11, RATIO) is None
        assert state.check_breakers("p", T0 + 11) is None

    def test_outcomes_while_open_are_ignored(self, state):
        """
        Outcomes of calls already under way when it opened change nothing.
        """
        open_ratio(state)

        assert state.record_outcome("p", False, T0 + 1, RATIO) is None
        assert state.record_outcome("p", True, T0 + 2, RATIO) is None
        assert T0 + 30 == state.check_breakers("p", T0 + 3).until

    def test_exactly_one_probe_when_half_open(self, state):
        """
        Once its time is up one caller gets through; the others fail fast
        until the probe's time is up too.
        """
        open_ratio(state)

        assert state.check_breakers("p", T0 + 30) is None
        assert BreakerState(
            "failure-ratio", T0 + 60, None
        ) == state.check_breakers("p", T0 + 31)

    def test_probe_success_closes_it(self, state):
        """
        A successful probe closes the breaker with an empty window.
        """
        open_ratio(state)
        state.check_breakers("p", T0 + 30)

        assert state.record_outcome("p", False, T0 + 31, RATIO) is None
        assert state.check_breakers("p", T0 + 31) is None
        assert state.record_outcome("p", True, T0 + 32, RATIO) is None

    def test_probe_failure_opens_it_again(self, state):
        """
        A failed probe opens it for open_for more.
        """
        open_ratio(state)
        state.check_breakers("p", T0 + 30)

        assert BreakerState(
            "failure-ratio", T0 + 61, None
        ) == state.record_outcome("p", True, T0 + 31, RATIO)
        assert T0 + 61 == state.check_breakers("p", T0 + 32).until

    def test_a_lost_probe_is_replaced(self, state):
        """
        A probe that never reports is given up after open_for.
        """
        open_ratio(state)
        state.check_breakers("p", T0 + 30)

        assert state.check_breakers("p", T0 + 60) is None
        assert state.check_breakers("p", T0 + 61) is not None

    def test_a_named_breaker_does_not_spend_the_probe(self, state):
        """
        A call stopped by a named breaker is not the probe.
        """
        open_ratio(state)
        state.open_breaker("p", "credits", T0 + 40, "out-of-credits")

        assert "credits" == state.check_breakers("p", T0 + 35).name
        assert state.check_breakers("p", T0 + 40) is None
        assert "failure-ratio" == state.check_breakers("p", T0 + 41).name

    def test_one_probe_among_racing_callers(self, state):
        """
        Of many threads (or tasks) asking at once, exactly one becomes the
        probe.
        """
        open_ratio(state)
        if isinstance(state, AsyncTwins):
            got = state.gather(
                [("check_breakers", "p", T0 + 30) for _ in range(16)]
            )
        else:
            got = []
            barrier = threading.Barrier(16)

            def ask() -> None:
                barrier.wait()
                got.append(state.check_breakers("p", T0 + 30))

            threads = [threading.Thread(target=ask) for _ in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        assert 16 == len(got)
        assert 1 == got.count(None)


class TestRetryBudget:
    def test_retries_stop_at_half_the_bucket(self, state):
        """
        A full bucket of 4 allows two retries; then none.
        """
        assert [True, True, False, False] == [
            state.take_retry_token("p", "h", BUDGET) for _ in range(4)
        ]

    def test_refund_lets_retries_go_again(self, state):
        """
        Successes give back tokens, a fraction at a time.
        """
        for _ in range(3):
            state.take_retry_token("p", "h", BUDGET)

        state.refund("p", "h", BUDGET)

        assert state.take_retry_token("p", "h", BUDGET) is True
        assert state.take_retry_token("p", "h", BUDGET) is False

    def test_refund_is_capped(self, state):
        """
        A bucket never holds more than its tokens.
        """
        state.take_retry_token("p", "h", BUDGET)
        for _ in range(10):
            state.refund("p", "h", BUDGET)

        assert [True, True, False] == [
            state.take_retry_token("p", "h", BUDGET) for _ in range(3)
        ]

    def test_hosts_have_their_own_budget(self, state):
        """
        Spending one host's budget leaves another's full.
        """
        for _ in range(3):
            state.take_retry_token("p", "a.example", BUDGET)

        assert state.take_retry_token("p", "b.example", BUDGET) is True


class TestRateLimit:
    def test_sends_are_paced(self, state):
        """
        Sends go an interval apart (per * 1.05 / requests: 0.35 s); one
        that asks early waits for its slot, and then goes.
        """
        assert [0.0, 0.0, 0.0] == [
            state.acquire("p", "*", T0 + i * 0.35, LIMIT) for i in range(3)
        ]
        assert 0.8 == pytest.approx(state.acquire("p", "*", T0 + 0.25, LIMIT))
        assert 0.0 == state.acquire("p", "*", T0 + 1.05, LIMIT)

    def test_the_wait_is_enough(self, state):
        """
        Asking again after the wait given always succeeds, rounding
        included.
        """
        now = T0 + 0.1
        state.acquire("p", "*", T0, LIMIT)

        wait = state.acquire("p", "*", now, LIMIT)

        assert 0.0 == state.acquire("p", "*", now + wait, LIMIT)

    def test_a_refusal_takes_nothing(self, state):
        """
        Waiting callers do not use up slots.
        """
        state.acquire("p", "*", T0, LIMIT)
        for i in range(7):
            assert state.acquire("p", "*", T0 + i * 0.05, LIMIT) > 0

        assert 0.0 == state.acquire("p", "*", T0 + 0.35, LIMIT)

    def test_a_lagging_clock_waits(self, state):
        """
        A caller whose clock is behind the newest grant waits for the
        slot after it.
        """
        state.acquire("p", "*", T0 + 0.9, LIMIT)

        assert 1.05 == pytest.approx(state.acquire("p", "*", T0 + 0.2, LIMIT))

    def test_buckets_are_separate(self, state):
        """
        Each bucket has its own pace.
        """
        for _ in range(3):
            state.acquire("p", "/a", T0, LIMIT)

        assert 0.0 == state.acquire("p", "/b", T0, LIMIT)

    def test_no_window_is_ever_over_the_limit(self, state):
        """
        Callers that sleep the waits they are given never put more than
        `requests` sends in any window, even with lagging clocks.
        """
        rng = random.Random(4)
        granted: list[float] = []
        now = T0
        for _ in range(300):
            now += rng.choice([0.0, 0.01, 0.05, 0.2])
            t = now - rng.choice([0.0, 0.0, 0.3])
            if state.acquire("p", "*", t, LIMIT) == 0.0:
                granted.append(t)
        granted.sort()

        assert all(
            granted[i + 3] - granted[i] >= 1.05 - 1e-6
            for i in range(len(granted) - 3)
        )
        assert len(granted) > 30


class TestAlertGate:
    def test_without_a_window_every_alert_goes(self, state):
        """
        No dedupe: every alert goes out, none is held.
        """
        assert [(True, 0)] * 3 == [
            state.alert_gate("p:topup", None, T0) for _ in range(3)
        ]

    def test_one_per_window_with_the_count_held(self, state):
        """
        Repeats inside the window are held and counted; the first after
        it goes out with the count.
        """
        got = [
            state.alert_gate("p:topup", 60.0, T0 + t)
            for t in (0, 1, 2, 59, 60, 61)
        ]

        assert [
            (True, 0),
            (False, 1),
            (False, 2),
            (False, 3),
            (True, 3),
            (False, 1),
        ] == got

    def test_keys_are_separate(self, state):
        """
        Each key has its own window.
        """
        state.alert_gate("p:topup", 60.0, T0)

        assert (True, 0) == state.alert_gate("p:auth", 60.0, T0)


class TestParity:
    @pytest.mark.parametrize(
        "seed", [1, 2, 3], ids=["seed1", "seed2", "seed3"]
    )
    def test_redis_answers_as_memory_does(self, redis_state, seed):
        """
        A long random mix of every operation, with lagging clocks, gets
        the same answers from Redis as from MemoryState.
        """
        rng = random.Random(seed)
        memory = MemoryState()
        now = T0
        for i in range(600):
            now += rng.choice([0.0, 0.05, 0.3, 1.0, 4.0])
            t = now - rng.choice([0.0, 0.0, 0.0, 0.4])
            op = rng.randrange(7)
            if op == 0:
                args: tuple[Any, ...] = ("open_breaker", "p", rng.choice("ab"))
                args += (t + rng.choice([1, 5, 40]), rng.choice([None, "r"]))
            elif op == 1:
                args = ("check_breakers", "p", t)
            elif op == 2:
                args = ("record_outcome", "p", rng.random() < 0.6, t, RATIO)
            elif op == 3:
                args = ("take_retry_token", "p", "h", BUDGET)
            elif op == 4:
                args = ("refund", "p", "h", BUDGET)
            elif op == 5:
                args = ("acquire", "p", rng.choice("xy"), t, LIMIT)
            else:
                args = ("alert_gate", rng.choice("kl"), 5.0, t)
            name, *rest = args
            expected = getattr(memory, name)(*rest)

            assert expected == getattr(redis_state, name)(*rest), (i, args)


class TestKeys:
    def test_every_key_expires(self, redis_state, raw):
        """
        Every key the operations write has a time to live, at least the
        floor and long enough for what it holds.
        """
        redis_state.open_breaker("p", "credits", time.time() + 600, "r")
        open_ratio(redis_state)
        redis_state.take_retry_token("p", "h", BUDGET)
        redis_state.acquire("p", "*", T0, LIMIT)
        redis_state.alert_gate("p:topup", 3600.0, T0)
        redis_state.alert_gate("p:topup", 3600.0, T0 + 1)

        ttls = {key: raw.pttl(key) / 1000 for key in raw.keys("*")}

        assert {
            "referee:{p}:breakers",
            "referee:{p}:breaker-rules",
            "referee:{p}:ratio",
            "referee:{p}:budget:h",
            "referee:{p}:pace:*",
            "referee:alert:p:topup",
        } == set(ttls)
        assert all(ttl >= MIN_TTL - 1 for ttl in ttls.values()), ttls
        assert 1199 < ttls["referee:{p}:breakers"] <= 1200
        assert IDLE_TTL - 1 < ttls["referee:{p}:budget:h"] <= IDLE_TTL
        assert ttls["referee:alert:p:topup"] > HELD_FOR + 3590

    def test_policies_do_not_share(self, redis_state):
        """
        Two policies' breakers, budgets and rate limits are their own.
        """
        redis_state.open_breaker("a", "credits", T0 + 60, "r")
        open_ratio(redis_state, "a")
        for _ in range(3):
            redis_state.take_retry_token("a", "h", BUDGET)
            redis_state.acquire("a", "*", T0, LIMIT)

        assert redis_state.check_breakers("b", T0) is None
        assert redis_state.take_retry_token("b", "h", BUDGET) is True
        assert 0.0 == redis_state.acquire("b", "*", T0, LIMIT)
        assert redis_state.check_breakers("a", T0) is not None

    def test_prefixes_do_not_share(self, server, raw):
        """
        States with different prefixes on one server are independent.
        """
        one = RedisState.from_url(server.url, prefix="one")
        two = RedisState.from_url(server.url, prefix="two")
        one.open_breaker("p", "credits", T0 + 60, "r")

        assert two.check_breakers("p", T0) is None
        assert ["one:{p}:breaker-rules", "one:{p}:breakers"] == sorted(
            raw.keys("*")
        )
        one.close()
        two.close()

    def test_instances_share(self, server, redis_state):
        """
        Another client on the same server sees the same state.
        """
        other = RedisState(redis.Redis.from_url(server.url))
        redis_state.open_breaker("p", "credits", T0 + 60, "r")

        assert BreakerState("credits", T0 + 60, "r") == other.check_breakers(
            "p", T0
        )
        other.close()

    def test_decoded_responses(self, server, raw):
        """
        A client that decodes responses works the same.
        """
        state = RedisState(
            redis.Redis.from_url(server.url, decode_responses=True)
        )
        state.open_breaker("p", "credits", T0 + 60, "r")

        assert BreakerState("credits", T0 + 60, "r") == state.check_breakers(
            "p", T0
        )
        assert 0.0 == state.acquire("p", "*", T0, LIMIT)
        assert (True, 0) == state.alert_gate("k", 1.0, T0)
        state.close()


class TestCluster:
    @pytest.mark.parametrize(
        "plan",
        [
            ("_open_breaker", "p", "credits", T0, "r"),
            ("_check_breakers", "p", T0, frozenset()),
            ("_record_outcome", "p", True, T0, RATIO),
            ("_take_retry_token", "p", "api.example.com", BUDGET),
            ("_refund", "p", "api.example.com", BUDGET),
            ("_acquire", "p", "/v1/x", T0, LIMIT),
            ("_alert_gate", "p:topup", 60.0, T0),
        ],
        ids=lambda plan: plan[0],
    )
    def test_every_script_touches_one_slot(self, plan):
        """
        The keys of each operation hash to one cluster slot, so it runs
        on one node of a Redis Cluster.
        """
        state = RedisState.from_url(f"redis://127.0.0.1:{closed_port()}/0")
        name, *args = plan
        op = getattr(state, name)(*args)

        assert 1 == len({redis.cluster.key_slot(k.encode()) for k in op.keys})
        state.close()

    def test_redis_answers_on_a_cluster_as_memory_does(self):
        """
        On a 3-master cluster, policies spread over the nodes get the
        answers MemoryState gives, from the sync methods and the twins.
        """
        rng = random.Random(7)
        memory = MemoryState()
        with RedisCluster.start_or_skip() as cluster:
            state = RedisState.from_url(cluster.url, cluster=True)
            twins = AsyncTwins(state)
            try:
                with structlog.testing.capture_logs() as logs:
                    now = T0
                    for i in range(300):
                        now += rng.choice([0.0, 0.05, 0.3, 1.0])
                        policy = rng.choice(["enrow", "experian", "github"])
                        op = rng.randrange(6)
                        if op == 0:
                            args: tuple[Any, ...] = ("open_breaker", policy)
                            args += ("b", now + 2, "r")
                        elif op == 1:
                            args = ("check_breakers", policy, now)
                        elif op == 2:
                            args = ("record_outcome", policy, True, now, RATIO)
                        elif op == 3:
                            args = ("take_retry_token", policy, "h", BUDGET)
                        elif op == 4:
                            args = ("acquire", policy, "*", now, LIMIT)
                        else:
                            args = ("alert_gate", f"{policy}:k", 5.0, now)
                        name, *rest = args
                        expected = getattr(memory, name)(*rest)
                        on = state if i % 2 else twins

                        assert expected == getattr(on, name)(*rest), (i, args)
                nodes = {
                    state._client.keyslot(f"referee:{{{p}}}:x") // (16384 // 3)
                    for p in ("enrow", "experian", "github")
                }
            finally:
                twins.close()
                state.close()

        assert [] == events(logs, "referee.state_unavailable")
        assert len(nodes) > 1  # the policies live on different nodes

    def test_an_unreachable_cluster_is_an_outage(self):
        """
        A cluster that cannot be reached when the state is made is an
        outage like any other: nothing raises, calls answer locally, the
        log names the node without its password.
        """
        url = f"redis://:hunter2@127.0.0.1:{closed_port()}/0"
        state = RedisState.from_url(url, cluster=True, timeout=0.2)

        with structlog.testing.capture_logs() as logs:
            assert state.take_retry_token("p", "h", BUDGET) is True
            assert 0.0 == state.acquire("p", "*", T0, LIMIT)

        [logged] = events(logs, "referee.state_unavailable")
        assert logged["redis"].startswith("cluster:127.0.0.1:")
        assert "hunter2" not in repr(logged)
        assert "local" in repr(state)
        state.close()


class TestClients:
    def test_async_twins_without_an_async_client(self, server, raw):
        """
        Given only a synchronous client, the twins run it in a thread.
        """
        state = RedisState(redis.Redis.from_url(server.url))
        state.open_breaker("p", "credits", T0 + 60, "r")

        async def main() -> BreakerState | None:
            return await state.acheck_breakers("p", T0)

        assert BreakerState("credits", T0 + 60, "r") == asyncio.run(main())
        state.close()

    def test_async_twins_in_several_event_loops(self, redis_state):
        """
        A state from from_url serves every event loop that uses it.
        """

        async def main(now: float) -> float:
            try:
                return await redis_state.aacquire("p", "*", now, LIMIT)
            finally:
                await redis_state.aclose()

        assert [0.0, 0.0, 0.0] == [
            asyncio.run(main(T0 + i * 0.35)) for i in range(3)
        ]
        assert asyncio.run(main(T0 + 0.7)) > 0

    def test_repr_names_the_server_not_the_password(self, server, raw):
        """
        The repr says where Redis is, never its credentials.
        """
        state = RedisState.from_url(
            f"redis://:hunter2@127.0.0.1:{server.port}/3", prefix="x"
        )

        assert (
            f"<RedisState redis=127.0.0.1:{server.port}/3 prefix='x' shared>"
            == repr(state)
        )
        state.close()


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """
    A server of the test's own, to kill and restart.
    """
    with RedisServer.start_or_skip() as srv:
        yield srv


class FakeMonotonic:
    """
    Stands in for the time module in referee.redis: its monotonic clock
    (which paces outage checks and logs) moves only when told.
    """

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def monotonic(monkeypatch: pytest.MonkeyPatch) -> FakeMonotonic:
    import referee.redis

    fake = FakeMonotonic()
    monkeypatch.setattr(referee.redis, "time", fake)
    return fake


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


class TestOutage:
    def test_calls_go_on_locally_and_the_outage_is_logged_once(
        self, own_server
    ):
        """
        With Redis gone every operation answers from local state, with its
        semantics, and the outage is logged once, not per call.
        """
        state = RedisState.from_url(own_server.url, recheck_after=0.0)
        state.open_breaker("p", "credits", T0 + 60, "r")
        own_server.kill()

        with structlog.testing.capture_logs() as logs:
            assert state.check_breakers("p", T0) is None  # Redis's is gone
            state.open_breaker("p", "auth", T0 + 60, "r")
            for _ in range(50):
                assert "auth" == state.check_breakers("p", T0).name
            assert [0.0, 0.0, 0.0] == [
                state.acquire("p", "*", T0 + i * 0.35, LIMIT) for i in range(3)
            ]
            assert state.acquire("p", "*", T0 + 0.7, LIMIT) > 0
            assert [True, True, False] == [
                state.take_retry_token("p", "h", BUDGET) for _ in range(3)
            ]
            assert [(True, 0), (False, 1)] == [
                state.alert_gate("k", 60.0, T0 + t) for t in (0, 1)
            ]
            open_ratio(state, "q")
            assert asyncio.run(state.acheck_breakers("p", T0)) is not None

        [logged] = events(logs, "referee.state_unavailable")
        assert "warning" == logged["log_level"]
        assert f"127.0.0.1:{own_server.port}/0" == logged["redis"]
        assert "ConnectionError" in logged["error"]
        assert "local" in repr(state)
        state.close()

    def test_shared_state_resumes_when_redis_is_back(self, own_server):
        """
        Two workers lose each other while Redis is down and share again
        once it is back; the recovery is logged once.
        """
        one = RedisState.from_url(own_server.url, recheck_after=0.0)
        two = RedisState.from_url(own_server.url, recheck_after=0.0)
        own_server.kill()

        with structlog.testing.capture_logs() as logs:
            one.open_breaker("p", "credits", T0 + 60, "r")
            assert two.check_breakers("p", T0) is None  # local: not shared

            own_server.restart()
            one.open_breaker("p", "credits", T0 + 60, "r")
            for _ in range(5):
                assert "credits" == two.check_breakers("p", T0).name

        assert 2 == len(events(logs, "referee.state_unavailable"))
        recovered = events(logs, "referee.state_recovered")
        assert 2 == len(recovered)
        assert all(e["local_ops"] >= 1 for e in recovered)
        one.close()
        two.close()

    def test_redis_is_rechecked_after_a_pause(self, own_server, monotonic):
        """
        After a failure Redis is left alone for recheck_after seconds:
        an outage does not cost every call a connection attempt.
        """
        state = RedisState.from_url(own_server.url, recheck_after=5.0)
        own_server.kill()
        with structlog.testing.capture_logs():
            state.open_breaker("p", "credits", T0 + 60, "local")
        own_server.restart()
        peer = RedisState.from_url(own_server.url)
        peer.open_breaker("p", "credits", T0 + 60, "shared")
        monotonic.now += 4.9

        assert "local" == state.check_breakers("p", T0).rule_id

        monotonic.now += 0.1

        assert "shared" == state.check_breakers("p", T0).rule_id
        state.close()
        peer.close()

    def test_outage_is_logged_again_after_the_interval(
        self, own_server, monotonic
    ):
        """
        A long outage is logged at most once per log_every.
        """
        state = RedisState.from_url(
            own_server.url, recheck_after=0.0, log_every=30.0
        )
        own_server.kill()

        with structlog.testing.capture_logs() as logs:
            for _ in range(20):
                state.check_breakers("p", T0)
                monotonic.now += 1.0
            monotonic.now += 10.0
            for _ in range(20):
                state.check_breakers("p", T0)

        assert 2 == len(events(logs, "referee.state_unavailable"))
        state.close()

    def test_async_twins_fall_back_too(self, own_server):
        """
        The twins answer locally while Redis is down, and share the
        outage's single log line with the synchronous methods.
        """
        state = RedisState.from_url(own_server.url, recheck_after=0.0)
        own_server.kill()

        async def main() -> list[float]:
            try:
                return [
                    await state.aacquire("p", "*", T0 + t, LIMIT)
                    for t in (0.0, 0.35, 0.7, 0.7)
                ]
            finally:
                await state.aclose()

        with structlog.testing.capture_logs() as logs:
            state.check_breakers("p", T0)
            waits = asyncio.run(main())

        assert [0.0, 0.0, 0.0] == waits[:3]
        assert waits[3] > 0
        assert 1 == len(events(logs, "referee.state_unavailable"))
        state.close()

    def test_credentials_are_not_logged(self):
        """
        A refused password is an outage like any other, logged without
        the password.
        """
        with RedisServer.start_or_skip("--requirepass", "s3cret") as srv:
            state = RedisState.from_url(
                f"redis://:hunter2@127.0.0.1:{srv.port}/0"
            )

            with structlog.testing.capture_logs() as logs:
                assert state.take_retry_token("p", "h", BUDGET) is True

            [logged] = events(logs, "referee.state_unavailable")
            assert "AuthenticationError" in logged["error"]
            assert "hunter2" not in repr(logged)
            assert "hunter2" not in repr(state)
            state.close()

    def test_injected_fallback(self, own_server):
        """
        The fallback given is the one used during an outage.
        """
        fallback = MemoryState()
        fallback.open_breaker("p", "credits", T0 + 60, "from-fallback")
        state = RedisState.from_url(own_server.url, fallback=fallback)
        own_server.kill()

        with structlog.testing.capture_logs():
            assert "from-fallback" == state.check_breakers("p", T0).rule_id
        state.close()
