"""
The Redis round trips one send makes through
:class:`referee.redis.RedisState`, counted on the client (not timed): at
most one script call before it (admit: breakers, pauses, a rate-limit
slot) and one after (settle: the outcome counted, the budget refunded or
spent, a breaker or pause set), whatever the policy turns on; and none
for a call no state feature concerns.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from tests.redis_server import RedisServer

import referee
from referee._run.stateio import adrain, drain
from referee.httpx import PolicyTransport
from referee.redis import RedisState
from referee.testing import no_sleep


if TYPE_CHECKING:
    from collections.abc import Iterator


RULES = """\
rules:
  - id: out-of-credits
    when: {status: 402}
    do: abort
    breaker: {name: credits, open_for: 10m, methods: [POST]}
  - id: unavailable
    when: {status: 503}
    do: retry
"""

PLAIN = """\
rules:
  - id: unavailable
    when: {status: 503}
    do: retry
"""

PAUSES = """\
rules:
  - id: spent
    when: {status: 200, headers: {x-ratelimit-remaining: "0"}}
    do: accept
    pause: {until: "x-ratelimit-reset:delta", max: 1h}
  - id: unavailable
    when: {status: 503}
    do: retry
"""

# A rule breaker, a pause and a retry: every rule-made state feature.
EVERY_RULE = (
    PAUSES
    + """\
  - id: out-of-credits
    when: {status: 402}
    do: abort
    breaker: {name: credits, open_for: 10m, methods: [POST]}
"""
)

RATIO = "  breaker: {failure_ratio: 0.5, window: 30s, min_calls: 20}\n"
BUDGET = "  budget: {tokens: 10, refill: 0.1}\n"
RATE_POST = "  rate_limit: {requests: 1000000, per: 1s, methods: [POST]}\n"
RATE_ALL = "  rate_limit: {requests: 1000000, per: 1s}\n"

_names = itertools.count()


def _policy(defaults: str = "", rules: str = PLAIN) -> str:
    head = f"policy: cost-{next(_names)}\n"
    if defaults:
        head += "defaults:\n" + defaults
    return head + rules


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer.start_or_skip() as srv:
        yield srv


def _trips(
    server: RedisServer,
    text: str,
    method: str,
    statuses: tuple[int, ...] = (200,),
    headers: dict[str, str] | None = None,
) -> Counter[str]:
    """
    The commands of one *method* call under *text* answered with
    *statuses* in turn, by script name; a first call (answered 200) loads
    the scripts and is not counted.
    """
    state = RedisState.from_url(server.url)
    names = {s.sha: name for name, s in state._scripts.items()}
    client = state._client
    original = client.execute_command
    seen: Counter[str] = Counter()

    def counting(*args: Any, **options: Any) -> Any:
        command = str(args[0]).upper()
        seen[names[args[1]] if command == "EVALSHA" else command] += 1
        return original(*args, **options)

    answers = iter((200, *statuses))
    transport = PolicyTransport(
        referee.load_policy_text(text, state=state),
        httpx.MockTransport(
            lambda request: httpx.Response(next(answers), headers=headers)
        ),
    )
    try:
        with no_sleep(), httpx.Client(transport=transport) as http:
            http.request(method, "https://api.example.com/v1/things")
            drain()
            client.execute_command = counting
            response = http.request(
                method, "https://api.example.com/v1/things"
            )
            drain()  # a success's settlement is on the settling thread
        assert 200 == response.status_code
    finally:
        state.close()
    return seen


CASES = [
    pytest.param(_policy(), "GET", {}, id="no-state-features"),
    pytest.param(_policy(), "POST", {}, id="no-state-features-post"),
    pytest.param(
        _policy(RATIO),
        "GET",
        {"admit": 1, "settle": 1},
        id="ratio-breaker",
    ),
    pytest.param(
        _policy(rules=RULES),
        "POST",
        {"admit": 1},
        id="rule-breaker-in-scope",
    ),
    pytest.param(
        # The only breaker stops POSTs: a GET asks nothing.
        _policy(rules=RULES),
        "GET",
        {},
        id="rule-breaker-out-of-scope",
    ),
    pytest.param(
        _policy(RATE_POST), "POST", {"admit": 1}, id="rate-limit-on-post"
    ),
    pytest.param(_policy(RATE_POST), "GET", {}, id="rate-limit-not-on-get"),
    pytest.param(_policy(BUDGET), "GET", {"settle": 1}, id="budget"),
    pytest.param(_policy(rules=PAUSES), "GET", {"admit": 1}, id="pauses"),
    pytest.param(
        _policy(RATIO + BUDGET + RATE_ALL, EVERY_RULE),
        "POST",
        {"admit": 1, "settle": 1},
        id="everything",
    ),
]


class TestRoundTripsPerSend:
    @pytest.mark.parametrize(("text", "method", "expected"), CASES)
    def test_counts(
        self,
        server: RedisServer,
        text: str,
        method: str,
        expected: dict[str, int],
    ) -> None:
        """Each state feature costs one script call per successful send."""
        assert Counter(expected) == _trips(server, text, method)

    def test_no_plain_commands(self, server: RedisServer) -> None:
        """Every round trip of a send is one script call, nothing else."""
        seen = _trips(
            server,
            _policy(RATIO + BUDGET + RATE_ALL, EVERY_RULE),
            "POST",
        )
        assert {"admit": 1, "settle": 1} == dict(seen)

    def test_a_retry_costs_one_before_and_one_after_each_send(
        self, server: RedisServer
    ) -> None:
        """
        A 503 then a 200, under every feature: each of the two sends is
        admitted in one round trip and settled in one (the retry's token
        spent in the first settlement).
        """
        seen = _trips(
            server,
            _policy(RATIO + BUDGET + RATE_ALL, EVERY_RULE),
            "GET",
            statuses=(503, 200),
        )
        assert {"admit": 2, "settle": 2} == dict(seen)

    def test_a_pause_set_in_the_settlement_holds_the_next_call(
        self, server: RedisServer
    ) -> None:
        """
        A 200 that spent the quota sets the pause within its settlement
        (no round trip of its own); the next call's admission finds it.
        """
        state = RedisState.from_url(server.url)
        policy = referee.load_policy_text(
            _policy("  deadline: 1s\n", PAUSES), state=state
        )
        answers = iter(
            [
                httpx.Response(
                    200,
                    headers={
                        "x-ratelimit-remaining": "0",
                        "x-ratelimit-reset": "60",
                    },
                ),
                httpx.Response(200),
            ]
        )
        transport = PolicyTransport(
            policy, httpx.MockTransport(lambda request: next(answers))
        )
        try:
            with httpx.Client(transport=transport) as http:
                http.get("https://api.example.com/v1/things")
                with pytest.raises(referee.DeadlineExceeded):
                    http.get("https://api.example.com/v1/things")
        finally:
            state.close()

    def test_a_seeded_rate_limit_costs_no_extra_round_trip(
        self, server: RedisServer
    ) -> None:
        """
        A RateLimit-Policy field seeds the pace within the settlement: a
        send costs the admission and one settlement, nothing more; with
        the budget's refund too, still one settlement.
        """
        seed = "  rate_limit: {requests: 1000000, per: 1s, seed: "
        seed += "ratelimit-policy}\n"
        field = {"RateLimit-Policy": '"p";q=1000000;w=1'}
        assert {"admit": 1, "settle": 1} == dict(
            _trips(server, _policy(seed), "GET", headers=field)
        )
        assert {"admit": 1, "settle": 1} == dict(
            _trips(server, _policy(seed + BUDGET), "GET", headers=field)
        )
        # No field, nothing to seed: the admission only.
        assert {"admit": 1} == dict(_trips(server, _policy(seed), "GET"))


class TestAsyncRoundTrips:
    def test_everything_costs_one_before_and_one_after(
        self, server: RedisServer
    ) -> None:
        """
        The async runner awaits the same two scripts, on the asyncio
        client.
        """
        import asyncio

        from referee.httpx import AsyncPolicyTransport

        state = RedisState.from_url(server.url)
        policy = referee.load_policy_text(
            _policy(RATIO + BUDGET + RATE_ALL, EVERY_RULE), state=state
        )
        seen: Counter[str] = Counter()

        async def main() -> None:
            transport = AsyncPolicyTransport(
                policy,
                httpx.MockTransport(lambda request: httpx.Response(200)),
            )
            async with httpx.AsyncClient(transport=transport) as http:
                await http.post("https://api.example.com/v1/things")
                await adrain()
                scripts = state._async_scripts()
                assert scripts is not None
                names = {s.sha: name for name, s in scripts.items()}
                client = scripts["acquire"].registered_client
                original = client.execute_command

                async def counting(*args: Any, **options: Any) -> Any:
                    command = str(args[0]).upper()
                    seen[
                        names[args[1]] if command == "EVALSHA" else command
                    ] += 1
                    return await original(*args, **options)

                client.execute_command = counting  # type: ignore[method-assign]
                await http.post("https://api.example.com/v1/things")
                await adrain()  # a success's settlement is a task
            await state.aclose()

        try:
            asyncio.run(main())
        finally:
            state.close()

        assert {"admit": 1, "settle": 1} == dict(seen)
