"""
``rate_limit: {seed: ratelimit-policy}``: a response's ``RateLimit-Policy``
field (draft-ietf-httpapi-ratelimit-headers) tightens the client-side pace
of its bucket to the strictest quota it declares, for that quota's window;
the policy's own ``requests``/``per`` stays the ceiling.  The parser is
total (a malformed field is ignored); the seed lives in the state backend,
so on RedisState a fleet shares it, set within the settlement.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.redis_server import RedisServer
from tests.server import Reply, ScriptedServer
from tests.test_flow import drive, outcome

import referee
from referee._core.backend import RateLimitSettings, SeedState
from referee._core.flow import Store
from referee._core.hints import parse_quota_policy
from referee._core.ops import SeedLimit
from referee._run.memory import PACING_MARGIN, MemoryState
from referee._run.stateio import adrain, drain
from referee._tools.table import render_table
from referee.httpx import AsyncPolicyTransport, PolicyTransport
from referee.redis import RedisState
from referee.testing import SleepRecorder, no_sleep


if TYPE_CHECKING:
    from collections.abc import Iterator

    from referee._core.backend import StateBackend
    from referee._core.snapshot import Snapshot


# --- Parsing ----------------------------------------------------------------


class TestParse:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ('"burst";q=100;w=60,"daily";q=1000;w=86400', (1000, 86400)),
            ('"a";q=10;w=1, "b";q=5;w=60', (5, 60)),
            ("fast;q=3;w=1 ,\tslow;q=1;w=1", (1, 1)),
            ('p;q=2;w=10;qu="requests";pk=:YWJj:', (2, 10)),
            # Items that name no rate of requests are skipped.
            ('"a";q=10, "b";q=4;w=2', (4, 2)),
            ('"a";q=0;w=1, "b";q=4;w=2', (4, 2)),
            ('"a";q=1;w=100;qu="content-bytes", "b";q=4;w=2', (4, 2)),
        ],
    )
    def test_strictest_item(self, value: str, expected: tuple[int, int]):
        """The item with the lowest q/w among those that count requests."""
        assert expected == parse_quota_policy(value)

    @pytest.mark.parametrize(
        "value",
        [
            "",
            "garbage garbage",
            '"a";w=60',  # no quota: malformed
            '"a";q=-1;w=60',
            '"a";q=1.5;w=60',
            '"a";q=10;w=-1',
            '"a";q=10;w=ten',
            '"a";q=10;w=60,',  # a trailing comma
            '"a";q=10;w=60,,"b";q=1;w=1',
            '"a";q=10;w=60 "b"',
            '"a";Q=10;w=60',  # keys are lower case
            '"unterminated;q=10;w=60',
            '"a";q=1;w=1, ' * 100,  # too long
        ],
    )
    def test_malformed_field_is_ignored(self, value: str):
        """A malformed field is ignored whole: even its good items."""
        assert parse_quota_policy(value) is None

    @pytest.mark.parametrize(
        "value",
        [
            '"a";q=10',  # no window
            '"a";q=0;w=60',  # no quota left: the RateLimit field's business
            '"a";q=10;w=0',
            '"a";q=10;w=60;qu="content-bytes"',
        ],
    )
    def test_no_rate_of_requests(self, value: str):
        """Well-formed, but nothing to pace requests by."""
        assert parse_quota_policy(value) is None

    @given(st.text(max_size=600))
    def test_total_on_any_text(self, value: str):
        """Never raises; whatever it answers is a positive quota and window."""
        got = parse_quota_policy(value)
        assert got is None or (got[0] >= 1 and got[1] >= 1)

    @given(
        st.lists(
            st.tuples(
                st.integers(1, 10**6),
                st.integers(1, 10**6),
                st.sampled_from(["", ';qu="requests"', ";pk=:Zm9v:"]),
            ),
            min_size=1,
            max_size=8,
        )
    )
    def test_well_formed_lists(self, items: list[tuple[int, int, str]]):
        """Any list of good items: the one of the lowest rate wins."""
        value = ", ".join(
            f'"p{i}";q={q};w={w}{extra}'
            for i, (q, w, extra) in enumerate(items)
        )
        got = parse_quota_policy(value)
        assert got is not None
        assert min(q / w for q, w, _ in items) == pytest.approx(
            got[0] / got[1]
        )


# --- The flow ---------------------------------------------------------------


def _seeds(text: str, *sends: Snapshot) -> list[SeedLimit]:
    policy = referee.load_policy_text(text)
    actions, _ = drive(policy, *sends)
    return [
        a.op
        for a in actions
        if isinstance(a, Store) and isinstance(a.op, SeedLimit)
    ]


FIELD = {"RateLimit-Policy": '"burst";q=100;w=60, "daily";q=1000;w=86400'}


class TestFlow:
    def test_the_settlement_carries_the_strictest_item(self):
        """1000 a day is stricter than 100 a minute; it lives two days."""
        snap = outcome(200, headers=FIELD)
        assert [
            SeedLimit("flow-seed", "*", SeedState(1000, 86400.0, 2 * 86400.0))
        ] == _seeds(_policy("flow-seed"), snap)

    def test_by_path_seeds_the_path_bucket(self):
        """With by_path, the request's path is the bucket seeded."""
        text = _policy("flow-path", ", by_path: true, seed: ratelimit-policy")
        snap = outcome(200, headers=FIELD)
        assert ["/jobs"] == [s.bucket for s in _seeds(text, snap)]

    def test_every_response_seeds_even_a_retried_one(self):
        """A 503 with the field seeds too, and so does the 200 after it."""
        text = (
            _policy("flow-retry").replace("rules: []\n", "rules:\n")
            + "  - {id: down, when: {status: 503}, do: retry}\n"
        )
        sends = (outcome(503, headers=FIELD), outcome(200, headers=FIELD))
        assert 2 == len(_seeds(text, *sends))

    def test_an_unpaced_method_seeds_nothing(self):
        """A response to a method the limit does not count seeds nothing."""
        text = _policy(
            "flow-post", ", methods: [POST], seed: ratelimit-policy"
        )
        assert [] == _seeds(text, outcome(200, headers=FIELD))

    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"RateLimit-Policy": "garbage;"},
            {"RateLimit-Policy": '"p";q=5'},
        ],
        ids=["absent", "malformed", "no-window"],
    )
    def test_no_rate_no_seed(self, headers: dict[str, str]):
        """Nothing usable in the field: no seed, and no settlement at all."""
        policy = referee.load_policy_text(_policy("flow-none"))
        actions, _ = drive(policy, outcome(200, headers=headers))
        assert not any(
            isinstance(a, Store) and isinstance(a.op, SeedLimit)
            for a in actions
        )


# --- The state backends -----------------------------------------------------


SEEDED = RateLimitSettings(100, 1.0, None, False, seed=True)
UNSEEDED = RateLimitSettings(100, 1.0, None, False)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer.start_or_skip() as srv:
        yield srv


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[StateBackend]:
    if request.param == "memory":
        yield MemoryState()
        return
    srv: RedisServer = request.getfixturevalue("redis_server")
    st_ = RedisState.from_url(srv.url)
    st_._client.flushall()
    yield st_
    st_.close()


def _pace(
    state: StateBackend, settings: RateLimitSettings, now: float
) -> float:
    """The wait a second send is told of, right after a first one."""
    assert 0.0 == state.acquire("p", "*", now, settings)
    return state.acquire("p", "*", now, settings)


class TestBackends:
    def test_a_seed_slows_the_pace(self, backend: StateBackend):
        """2 per 10 s declared: the next send waits 5 s (and the margin)."""
        backend.seed_limit("p", "*", SeedState(2, 10.0, 1000.0))  # type: ignore[attr-defined]
        assert 5 * (1 + PACING_MARGIN) == pytest.approx(
            _pace(backend, SEEDED, 0.0)
        )

    def test_the_static_limit_is_the_ceiling(self, backend: StateBackend):
        """A seed looser than requests/per changes nothing."""
        backend.seed_limit("p", "*", SeedState(1000, 1.0, 1000.0))  # type: ignore[attr-defined]
        assert 0.01 * (1 + PACING_MARGIN) == pytest.approx(
            _pace(backend, SEEDED, 0.0)
        )

    def test_an_ended_seed_holds_nothing(self, backend: StateBackend):
        """Past its until, the static pace is back."""
        backend.seed_limit("p", "*", SeedState(2, 10.0, 50.0))  # type: ignore[attr-defined]
        assert 0.01 * (1 + PACING_MARGIN) == pytest.approx(
            _pace(backend, SEEDED, 60.0)
        )

    def test_a_later_seed_replaces_the_earlier(self, backend: StateBackend):
        """The server's latest word stands, even when it loosens."""
        backend.seed_limit("p", "*", SeedState(1, 10.0, 1000.0))  # type: ignore[attr-defined]
        backend.seed_limit("p", "*", SeedState(1, 2.0, 1000.0))  # type: ignore[attr-defined]
        assert 2 * (1 + PACING_MARGIN) == pytest.approx(
            _pace(backend, SEEDED, 0.0)
        )

    def test_an_unseeded_limit_ignores_seeds(self, backend: StateBackend):
        """Without seed: on the rate limit, a stored seed is not read."""
        backend.seed_limit("p", "*", SeedState(1, 10.0, 1000.0))  # type: ignore[attr-defined]
        assert 0.01 * (1 + PACING_MARGIN) == pytest.approx(
            _pace(backend, UNSEEDED, 0.0)
        )

    def test_seeds_are_per_bucket(self, backend: StateBackend):
        """A seed of one path's bucket leaves another's pace alone."""
        backend.seed_limit("p", "/a", SeedState(1, 10.0, 1000.0))  # type: ignore[attr-defined]
        assert 0.01 * (1 + PACING_MARGIN) == pytest.approx(
            _pace(backend, SEEDED, 0.0)
        )


def test_redis_seed_key_expires(redis_server: RedisServer) -> None:
    """The seed's key goes a minute (MIN_TTL) after its until, at most."""
    state = RedisState.from_url(redis_server.url)
    try:
        state._client.flushall()
        state.seed_limit("p", "*", SeedState(1, 10.0, 0.0))
        keys = state._client.keys("*seed*")
        assert 1 == len(keys)
        ttl = state._client.pttl(keys[0])
        assert 0 < ttl <= 60_000
    finally:
        state.close()


# --- Through a client, over loopback ----------------------------------------


def _policy(name: str, extra: str = ", seed: ratelimit-policy") -> str:
    return f"""
policy: {name}
defaults:
  rate_limit: {{requests: 10, per: 1s{extra}}}
rules: []
"""


@pytest.fixture
def http() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


@pytest.fixture
def slept() -> Iterator[SleepRecorder]:
    with no_sleep() as recorder:
        yield recorder


def _gets(policy: referee.Policy, url: str, n: int) -> list[int]:
    transport = PolicyTransport(policy, httpx.HTTPTransport())
    with httpx.Client(transport=transport) as client:
        return [client.get(url).status_code for _ in range(n)]


def _long_waits(slept: SleepRecorder) -> list[float]:
    return [d for d in slept.delays if d > 0.5]


class TestThroughAClient:
    def test_the_declared_policy_paces_later_sends(
        self, http: ScriptedServer, slept: SleepRecorder
    ):
        """
        10 per second static; the server declares 1 per 2 s: the send
        after the first response takes the seeded slot, and each later
        one waits about 2.1 s for its own.
        """
        http.script(
            "/a", [Reply(200, headers={"RateLimit-Policy": '"p";q=1;w=2'})]
        )
        pol = referee.load_policy_text(_policy("seed-memory"))

        assert [200] * 4 == _gets(pol, http.url("/a"), 4)
        waits = _long_waits(slept)
        assert 2 == len(waits), slept.delays
        for wait in waits:
            assert 1.9 < wait <= 2 * (1 + PACING_MARGIN) + 1e-6

    @pytest.mark.parametrize(
        "value",
        ['"p";q=1', '"p";q=1;w=2,', 'p;q=1;w=2;qu="content-bytes"'],
        ids=["no-window", "malformed", "other-unit"],
    )
    def test_a_field_without_a_rate_changes_nothing(
        self, http: ScriptedServer, slept: SleepRecorder, value: str
    ):
        """Malformed or rate-less fields leave the static pace (0.105 s)."""
        http.script("/a", [Reply(200, headers={"RateLimit-Policy": value})])
        pol = referee.load_policy_text(_policy("seed-ignored"))

        assert [200] * 4 == _gets(pol, http.url("/a"), 4)
        assert [] == _long_waits(slept)

    def test_without_seed_the_field_is_not_read(
        self, http: ScriptedServer, slept: SleepRecorder
    ):
        """The feature is opt-in."""
        http.script(
            "/a", [Reply(200, headers={"RateLimit-Policy": '"p";q=1;w=2'})]
        )
        pol = referee.load_policy_text(_policy("seed-off", extra=""))

        assert [200] * 4 == _gets(pol, http.url("/a"), 4)
        assert [] == _long_waits(slept)

    def test_the_fleet_shares_the_seed(
        self,
        http: ScriptedServer,
        slept: SleepRecorder,
        redis_server: RedisServer,
    ):
        """
        Two RedisStates (two processes' worth): the one that heard the
        field seeds the pace; the other's sends wait for it.
        """
        http.script(
            "/a", [Reply(200, headers={"RateLimit-Policy": '"p";q=1;w=3'})]
        )
        first = RedisState.from_url(redis_server.url)
        second = RedisState.from_url(redis_server.url)
        try:
            first._client.flushall()
            text = _policy("seed-fleet")
            heard = referee.load_policy_text(text, state=first)
            other = referee.load_policy_text(text, state=second)
            assert [200] == _gets(heard, http.url("/a"), 1)
            drain()  # the success's settlement is on the settling thread
            http.script("/b", [Reply(200)])  # no field: nothing re-seeds
            assert [200] * 3 == _gets(other, http.url("/b"), 3)
        finally:
            first.close()
            second.close()
        waits = _long_waits(slept)
        assert 2 == len(waits), slept.delays
        assert all(2.8 < w <= 3 * (1 + PACING_MARGIN) + 1e-6 for w in waits)
        assert math.isfinite(sum(waits))


class TestAsync:
    @pytest.mark.parametrize("kind", ["memory", "redis"])
    def test_the_async_runner_seeds_and_paces(
        self,
        http: ScriptedServer,
        slept: SleepRecorder,
        request: pytest.FixtureRequest,
        kind: str,
    ):
        """
        The async runner settles the seed through the backend's async
        twins (MemoryState's, RedisState's settle script), and paces by it.
        """
        http.script(
            "/a", [Reply(200, headers={"RateLimit-Policy": '"p";q=1;w=2'})]
        )
        state: MemoryState | RedisState
        if kind == "memory":
            state = MemoryState()
        else:
            srv: RedisServer = request.getfixturevalue("redis_server")
            state = RedisState.from_url(srv.url)
            state._client.flushall()
        pol = referee.load_policy_text(
            _policy(f"seed-async-{kind}"), state=state
        )

        async def main() -> list[int]:
            transport = AsyncPolicyTransport(pol, httpx.AsyncHTTPTransport())
            async with httpx.AsyncClient(transport=transport) as client:
                out = []
                for _ in range(4):
                    out.append((await client.get(http.url("/a"))).status_code)
                    await adrain()  # a success's settlement is a task
            if isinstance(state, RedisState):
                await state.aclose()  # this loop's client
            return out

        try:
            assert [200] * 4 == asyncio.run(main())
        finally:
            if isinstance(state, RedisState):
                state.close()
        waits = _long_waits(slept)
        assert 2 == len(waits), slept.delays
        assert all(1.9 < w <= 2 * (1 + PACING_MARGIN) + 1e-6 for w in waits)


def test_the_table_names_the_seed() -> None:
    """`referee table` tells a seeded rate limit from a static one."""
    seeded = render_table(referee.load_policy_text(_policy("t-seed")), "md")
    static = render_table(referee.load_policy_text(_policy("t-off", "")), "md")

    assert "- rate\\_limit: 10 per 1s, seeded by RateLimit-Policy\n" in seeded
    assert "- rate\\_limit: 10 per 1s\n" in static
