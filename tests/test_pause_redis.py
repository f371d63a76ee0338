"""
A pause the server asked for, fleet-wide on a real redis-server: the
operations' semantics (as MemoryState's), the key that expires on its own
after the pause, one round trip per check, and a pause one process sets
holding another process's call before it sends (sync and async).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import redis
from tests.redis_server import RedisServer

import referee
from referee import RateLimited
from referee._core.backend import PauseState
from referee.httpx import AsyncPolicyTransport, PolicyTransport
from referee.redis import MIN_TTL, RedisState
from referee.testing import no_sleep

from .server import Reply, ScriptedServer


if TYPE_CHECKING:
    from collections.abc import Iterator


# A 200 that spent the quota pauses the whole policy until the reset.
POLICY = """
policy: fleet-pause
rules:
  - id: quota-spent
    when: {{status: 200, headers: {{x-ratelimit-remaining: "0"}}}}
    do: accept
    pause: {{until: "x-ratelimit-reset:epoch", then: {then}, max: 1h}}
"""


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer.start_or_skip() as srv:
        yield srv


@pytest.fixture
def raw(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def state(server: RedisServer, raw: redis.Redis) -> Iterator[RedisState]:
    st = RedisState.from_url(server.url)
    yield st
    st.close()


@pytest.fixture
def http() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


class TestOperations:
    def test_set_then_check(self, state):
        """
        The later pause of a scope stands; the one that ends last among
        the scopes answers; an ended pause holds nothing.
        """
        state.set_pause("p", PauseState("*", 50.0, "a", "wait"))
        state.set_pause("p", PauseState("*", 40.0, "b", "fail"))
        state.set_pause("p", PauseState("h.example", 60.0, "c", "fail"))

        assert PauseState("*", 50.0, "a", "wait") == state.check_pause(
            "p", ("*",), 10.0
        )
        assert PauseState("h.example", 60.0, "c", "fail") == (
            state.check_pause("p", ("*", "h.example"), 10.0)
        )
        assert state.check_pause("p", ("*",), 50.0) is None
        assert state.check_pause("q", ("*",), 10.0) is None

    def test_the_key_expires_a_minute_after_the_pause(self, state, raw):
        """
        One hash per scope, namespaced by policy, expiring a minute after
        the pause ends: an ended pause leaves nothing.
        """
        until = time.time() + 30
        state.set_pause("p", PauseState("*", until, "a", "wait"))

        (key,) = raw.keys("*")
        assert "referee:{p}:pause:*" == key
        expires = raw.pexpiretime(key) / 1000
        assert until + MIN_TTL == pytest.approx(expires, abs=0.5)
        assert {"until", "rule", "then"} == set(raw.hgetall(key))

    def test_one_round_trip_per_check(self, state, server):
        """
        A check is one script call, whatever the scopes.
        """
        monitor = redis.Redis.from_url(server.url)
        before = monitor.info("commandstats").get("cmdstat_evalsha", {})
        state.check_pause("p", ("*", "h.example"), 10.0)
        after = monitor.info("commandstats").get("cmdstat_evalsha", {})
        monitor.close()

        assert 1 == after.get("calls", 0) - before.get("calls", 0)

    def test_the_async_twins(self, server, raw):
        """
        ``aset_pause`` and ``acheck_pause`` answer as the blocking ones.
        """

        async def main() -> PauseState | None:
            st = RedisState.from_url(server.url)
            try:
                await st.aset_pause("p", PauseState("*", 50.0, "a", "fail"))
                return await st.acheck_pause("p", ("*",), 10.0)
            finally:
                await st.aclose()
                st.close()

        assert PauseState("*", 50.0, "a", "fail") == asyncio.run(main())


#: A worker process: loads the policy on the Redis at argv[1] and makes
#: one GET of argv[2].
WORKER = textwrap.dedent(
    """
    import sys
    import httpx
    import referee
    from referee.httpx import PolicyTransport
    from referee.redis import RedisState

    policy = referee.load_policy_text(
        sys.argv[3], state=RedisState.from_url(sys.argv[1])
    )
    with httpx.Client(transport=PolicyTransport(policy)) as client:
        print(client.get(sys.argv[2]).status_code)
    """
)


def run_worker(redis_url: str, url: str, policy: str) -> str:
    # The worker imports the referee under test, wherever it came from.
    here = str(Path(referee.__file__).resolve().parent.parent)
    path = os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", WORKER, redis_url, url, policy],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


class TestFleet:
    def test_another_process_pause_fails_this_call_fast(
        self, server, raw, state, http
    ):
        """
        A worker process's 200 spends the quota; this process's call
        (``then: fail``) raises RateLimited without sending.
        """
        text = POLICY.format(then="fail")
        reset = int(time.time()) + 30
        http.script(
            "/r",
            [
                Reply(
                    200,
                    headers={
                        "x-ratelimit-remaining": "0",
                        "x-ratelimit-reset": str(reset),
                    },
                ),
                Reply(200),
            ],
        )
        assert "200" == run_worker(server.url, http.url("/r"), text)

        policy = referee.load_policy_text(text, state=state)
        with (
            httpx.Client(transport=PolicyTransport(policy)) as client,
            pytest.raises(RateLimited) as ei,
        ):
            client.get(http.url("/r"))

        assert float(reset) == ei.value.resume_at
        assert 1 == http.count("/r")

    def test_another_runner_pause_holds_this_call(self, server, raw, http):
        """
        Two runners on two RedisStates (``then: wait``): the async one's
        call waits for the pause the sync one's 200 set, then sends.
        """
        text = POLICY.format(then="wait")
        http.script(
            "/r",
            [
                Reply(
                    200,
                    headers={
                        "x-ratelimit-remaining": "0",
                        "x-ratelimit-reset": str(int(time.time()) + 30),
                    },
                ),
                Reply(200),
            ],
        )
        setter = RedisState.from_url(server.url)
        policy = referee.load_policy_text(text, state=setter)
        with httpx.Client(transport=PolicyTransport(policy)) as client:
            client.get(http.url("/r"))
        setter.close()

        async def main() -> int:
            waiter = RedisState.from_url(server.url)
            other = referee.load_policy_text(text, state=waiter)
            try:
                async with httpx.AsyncClient(
                    transport=AsyncPolicyTransport(other)
                ) as client:
                    return (await client.get(http.url("/r"))).status_code
            finally:
                await waiter.aclose()
                waiter.close()

        with no_sleep() as slept:
            assert 200 == asyncio.run(main())

        (waited,) = slept.delays
        assert 28.0 < waited <= 30.0
        assert 2 == http.count("/r")
