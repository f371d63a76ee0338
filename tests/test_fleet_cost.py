"""
The Redis round trips one successful send makes through
:class:`referee.redis.RedisState`, counted on the client (not timed):
each state feature a policy turns on costs its own script call, and a
policy without them never talks to Redis.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from tests.redis_server import RedisServer

import referee
from referee.httpx import PolicyTransport
from referee.redis import RedisState


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


def _trips(server: RedisServer, text: str, method: str) -> Counter[str]:
    """
    The commands of one successful *method* call under *text*, by script
    name; a first call loads the scripts and is not counted.
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

    transport = PolicyTransport(
        referee.load_policy_text(text, state=state),
        httpx.MockTransport(lambda request: httpx.Response(200)),
    )
    try:
        with httpx.Client(transport=transport) as http:
            http.request(method, "https://api.example.com/v1/things")
            client.execute_command = counting
            response = http.request(
                method, "https://api.example.com/v1/things"
            )
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
        {"check_breakers": 1, "record_outcome": 1},
        id="ratio-breaker",
    ),
    pytest.param(
        _policy(rules=RULES),
        "POST",
        {"check_breakers": 1},
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
        _policy(RATE_POST), "POST", {"acquire": 1}, id="rate-limit-on-post"
    ),
    pytest.param(_policy(RATE_POST), "GET", {}, id="rate-limit-not-on-get"),
    pytest.param(_policy(BUDGET), "GET", {"refund": 1}, id="budget"),
    pytest.param(
        _policy(RATIO + BUDGET + RATE_ALL, RULES),
        "POST",
        {"check_breakers": 1, "acquire": 1, "record_outcome": 1, "refund": 1},
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
            server, _policy(RATIO + BUDGET + RATE_ALL, RULES), "POST"
        )
        assert set() == set(seen) - {
            "check_breakers",
            "acquire",
            "record_outcome",
            "refund",
        }
        assert 4 == seen.total()
