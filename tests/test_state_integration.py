"""
State across calls, end to end: rule breakers, the failure-ratio breaker,
retry budgets, client-side rate limits and alerts, through the real
adapters (httpx sync and async, requests, aiohttp) against the scripted
loopback server of tests.server.

Each policy here is loaded fresh, with its own MemoryState unless a test
shares one.  Where a call would wait, ``referee.testing.no_sleep()``
records the delay instead; the few tests that need time to pass *between*
calls (a breaker's half-open probe, an alert's de-dup window) use windows
of a fraction of a second and really sleep, since no_sleep's clock is per
call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx
import pytest
import requests
import structlog
from tests.server import Reply, ScriptedServer

import referee
import referee.cli
from referee import (
    CircuitOpen,
    DeadlineExceeded,
    InsufficientCredits,
    RetriesExhausted,
    ServerError,
)
from referee._core.backend import RateLimitSettings
from referee.aiohttp import PolicyMiddleware
from referee.httpx import AsyncPolicyTransport, PolicyTransport
from referee.requests import PolicyAdapter
from referee.testing import no_sleep


if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


#: One SSL context for every inner httpx transport (building one costs
#: about 50 ms; these tests speak plain HTTP anyway).
SSL = ssl.create_default_context()

#: The adapters every breaker and rate-limit test runs through.
ADAPTERS = ["httpx", "httpx-async", "requests", "aiohttp"]


# --- Harness ----------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


@pytest.fixture
def slept() -> Iterator[referee.testing.SleepRecorder]:
    with no_sleep() as recorder:
        yield recorder


def load(text: str, **kwargs: Any) -> referee.Policy:
    """
    A policy from *text*, with a runtime (its own MemoryState unless
    *state* is given).
    """
    return referee.load_policy_text(text, **kwargs)


@contextlib.contextmanager
def caller(
    kind: str, pol: referee.Policy
) -> Iterator[Callable[[str, str], int]]:
    """
    A function making one call through adapter *kind*: (method, url) ->
    the final status; what the policy raises propagates.
    """
    if kind == "httpx":
        inner = httpx.HTTPTransport(verify=SSL)
        with httpx.Client(transport=PolicyTransport(pol, inner)) as client:
            yield lambda method, url: client.request(method, url).status_code
    elif kind == "httpx-async":

        async def one_httpx(method: str, url: str) -> int:
            inner = httpx.AsyncHTTPTransport(verify=SSL)
            transport = AsyncPolicyTransport(pol, inner)
            async with httpx.AsyncClient(transport=transport) as client:
                return (await client.request(method, url)).status_code

        yield lambda method, url: asyncio.run(one_httpx(method, url))
    elif kind == "requests":
        with requests.Session() as session:
            session.mount("http://", PolicyAdapter(pol))
            yield (
                lambda method, url: (
                    session.request(method, url, timeout=10).status_code
                )
            )
    elif kind == "aiohttp":

        async def one_aiohttp(method: str, url: str) -> int:
            async with (
                aiohttp.ClientSession(
                    middlewares=[PolicyMiddleware(pol)],
                    timeout=aiohttp.ClientTimeout(total=10),
                ) as session,
                session.request(method, url) as response,
            ):
                await response.read()
                return response.status

        yield lambda method, url: asyncio.run(one_aiohttp(method, url))
    else:  # pragma: no cover - a typo in a test
        raise AssertionError(kind)


@contextlib.contextmanager
def sync_client(pol: referee.Policy) -> Iterator[httpx.Client]:
    """
    An httpx.Client with the policy transport around the real one.
    """
    inner = httpx.HTTPTransport(verify=SSL)
    with httpx.Client(transport=PolicyTransport(pol, inner)) as client:
        yield client


@contextlib.contextmanager
def closing_alerts(pol: referee.Policy) -> Iterator[referee.Policy]:
    """
    *pol*, whose alert dispatcher is closed afterwards (its sink threads
    stop).
    """
    try:
        yield pol
    finally:
        pol.runtime.alerts.close(2)


def _gmt(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t))


# --- Rule breakers ----------------------------------------------------------

CREDITS = """
policy: credits-test
rules:
  - id: out-of-credits
    when: {status: 402}
    do: abort
    error: InsufficientCredits
    breaker: {name: credits, open_for: 10m}
"""

CREDITS_POST = """
policy: credits-test
rules:
  - id: out-of-credits
    when: {status: 402}
    do: abort
    error: InsufficientCredits
    breaker: {name: credits, open_for: 10m, methods: [POST]}
"""


class TestRuleBreaker:
    @pytest.mark.parametrize("kind", ADAPTERS, ids=ADAPTERS)
    def test_open_breaker_fails_fast_without_sending(
        self, server: ScriptedServer, kind: str
    ) -> None:
        """
        After a 402 opens the credits breaker, the next call raises
        CircuitOpen and the server sees no request.
        """
        server.script("/find", [Reply(402, body={"reason": "no credits"})])
        pol = load(CREDITS)

        with caller(kind, pol) as call:
            with pytest.raises(InsufficientCredits):
                call("POST", server.url("/find"))
            with pytest.raises(CircuitOpen) as exc_info:
                call("POST", server.url("/find"))

        assert 1 == server.count("/find")
        assert "out-of-credits" == exc_info.value.rule_id
        assert exc_info.value.response is None

    def test_message_names_breaker_rule_and_closing_time(
        self, server: ScriptedServer
    ) -> None:
        """
        CircuitOpen's message names the breaker, the rule that opened it
        and when it closes (UTC), and says nothing was sent.
        """
        server.script("/find", [Reply(402)])
        pol = load(CREDITS)

        with sync_client(pol) as client:
            before = time.time()
            with pytest.raises(InsufficientCredits):
                client.post(server.url("/find"))
            after = time.time()
            with pytest.raises(CircuitOpen) as exc_info:
                client.post(server.url("/find"))

        message = str(exc_info.value)
        found = re.search(
            r"breaker 'credits' is open until (\d\d:\d\d:\d\d) UTC "
            r"\((10m|9m59s) more; opened by rule 'out-of-credits'\); "
            r"nothing was sent",
            message,
        )
        assert found is not None, message
        assert found.group(1) in {_gmt(before + 600), _gmt(after + 600)}

    def test_breaker_events_are_logged(self, server: ScriptedServer) -> None:
        """
        Opening the breaker logs referee.breaker_opened; a call it stops
        logs a referee.decision abort naming the breaker.
        """
        server.script("/find", [Reply(402)])
        pol = load(CREDITS)

        with (
            sync_client(pol) as client,
            structlog.testing.capture_logs() as logs,
        ):
            with pytest.raises(InsufficientCredits):
                client.post(server.url("/find"))
            with pytest.raises(CircuitOpen):
                client.post(server.url("/find"))

        opened = [e for e in logs if e["event"] == "referee.breaker_opened"]
        stopped = [
            e
            for e in logs
            if e.get("breaker") and e["event"] == "referee.decision"
        ]
        assert [("credits", "out-of-credits", 600.0)] == [
            (e["breaker"], e["rule"], e["open_for"]) for e in opened
        ]
        assert [("abort", "out-of-credits")] == [
            (e["action"], e["rule"]) for e in stopped
        ]

    @pytest.mark.parametrize("kind", ADAPTERS, ids=ADAPTERS)
    def test_methods_scope_what_the_breaker_stops(
        self, server: ScriptedServer, kind: str
    ) -> None:
        """
        With methods: [POST], an open breaker stops POSTs while GETs still
        go through.
        """
        server.script("/find", [Reply(402)])
        server.script("/result", [Reply(200, body={"status": "done"})])
        pol = load(CREDITS_POST)

        with caller(kind, pol) as call:
            with pytest.raises(InsufficientCredits):
                call("POST", server.url("/find"))
            got = [call("GET", server.url("/result")) for _ in range(2)]
            with pytest.raises(CircuitOpen):
                call("POST", server.url("/result"))

        assert [200, 200] == got
        assert (1, 2) == (server.count("/find"), server.count("/result"))
        assert ["POST", "GET", "GET"] == [r.method for r in server.requests]

    def test_get_rule_opening_post_breaker_does_not_stop_gets(
        self, server: ScriptedServer
    ) -> None:
        """
        A breaker scoped to POST opened by a GET's 402 leaves the GETs
        alone (the rule's method is not the breaker's scope).
        """
        server.script("/find", [Reply(402), Reply(200)])
        pol = load(CREDITS_POST)

        with sync_client(pol) as client:
            with pytest.raises(InsufficientCredits):
                client.get(server.url("/find"))
            status = client.get(server.url("/find")).status_code

        assert 200 == status
        assert 2 == server.count("/find")

    def test_shared_state_stops_the_other_policy_object(
        self, server: ScriptedServer
    ) -> None:
        """
        Two policy objects loaded with one MemoryState share breakers: one
        opening it stops the other.
        """
        server.script("/find", [Reply(402)])
        state = referee.MemoryState()
        first = load(CREDITS, state=state)
        second = load(CREDITS, state=state)

        with sync_client(first) as one, sync_client(second) as two:
            with pytest.raises(InsufficientCredits):
                one.post(server.url("/find"))
            with pytest.raises(CircuitOpen) as exc_info:
                two.post(server.url("/find"))

        assert 1 == server.count("/find")
        assert "out-of-credits" == exc_info.value.rule_id

    def test_own_state_by_default(self, server: ScriptedServer) -> None:
        """
        Without state=, each loaded policy has its own: a breaker opened
        by one does not stop the other.
        """
        server.script("/find", [Reply(402)])
        first, second = load(CREDITS), load(CREDITS)

        with sync_client(first) as one, sync_client(second) as two:
            with pytest.raises(InsufficientCredits):
                one.post(server.url("/find"))
            with pytest.raises(InsufficientCredits):
                two.post(server.url("/find"))

        assert 2 == server.count("/find")

    def test_shared_state_is_namespaced_by_policy(
        self, server: ScriptedServer
    ) -> None:
        """
        A breaker opened by one policy does not stop another policy that
        shares the state but has another name.
        """
        server.script("/find", [Reply(402)])
        state = referee.MemoryState()
        first = load(CREDITS, state=state)
        other = load(
            CREDITS.replace("credits-test", "another-api"), state=state
        )

        with sync_client(first) as one, sync_client(other) as two:
            with pytest.raises(InsufficientCredits):
                one.post(server.url("/find"))
            with pytest.raises(InsufficientCredits):
                two.post(server.url("/find"))

        assert 2 == server.count("/find")

    def test_scoped_breaker_does_not_hide_another(
        self, server: ScriptedServer
    ) -> None:
        """
        While a POST-only breaker and an all-methods breaker are both
        open, a GET is stopped by the second.
        """
        server.script("/pay", [Reply(402)])
        server.script("/me", [Reply(401), Reply(200)])
        text = CREDITS_POST + (
            "  - id: key-revoked\n"
            "    when: {status: 401}\n"
            "    do: abort\n"
            "    breaker: {name: auth, open_for: 5m}\n"
        )
        pol = load(text)

        with sync_client(pol) as client:
            with pytest.raises(InsufficientCredits):
                client.post(server.url("/pay"))  # credits: 10m, POST
            with pytest.raises(referee.AuthenticationError):
                client.get(server.url("/me"))  # auth: 5m, every method
            with pytest.raises(CircuitOpen):
                client.get(server.url("/me"))

        assert 1 == server.count("/me")


# --- The failure-ratio breaker ----------------------------------------------

RATIO = """
policy: ratio-test
defaults:
  breaker: {{failure_ratio: 0.5, window: 60s, min_calls: 4, open_for: {open_for}}}
rules:
  - id: down
    when: {{status: 503}}
    {down}
  - id: bad-request
    when: {{status: 400}}
    do: abort
  - id: missing-is-fine
    when: {{status: 404}}
    do: accept
  - id: ongoing
    when: {{method: GET, body: {{status: ongoing}}}}
    do: poll
"""

DOWN_ABORT = "do: abort"
DOWN_RETRY_ONCE = "do: retry\n    retry: {attempts: 1}"
DOWN_RETRY = "do: retry\n    retry: {attempts: 3}"


def ratio(down: str = DOWN_ABORT, open_for: str = "30s") -> str:
    return RATIO.format(down=down, open_for=open_for)


class TestRatioBreaker:
    @pytest.mark.parametrize("kind", ADAPTERS, ids=ADAPTERS)
    @pytest.mark.parametrize(
        ("down", "error"),
        [(DOWN_ABORT, ServerError), (DOWN_RETRY_ONCE, RetriesExhausted)],
        ids=["abort", "retry-attempts-1"],
    )
    def test_trips_after_enough_failures(
        self,
        server: ScriptedServer,
        slept: referee.testing.SleepRecorder,
        kind: str,
        down: str,
        error: type[referee.Aborted],
    ) -> None:
        """
        Four 503s in a row (min_calls 4, ratio 1.0 >= 0.5) open the
        breaker: the fifth call fails fast without sending.
        """
        server.script("/api", [Reply(503)])
        pol = load(ratio(down))

        with caller(kind, pol) as call:
            for _ in range(4):
                with pytest.raises(error):
                    call("GET", server.url("/api"))
            with pytest.raises(CircuitOpen) as exc_info:
                call("GET", server.url("/api"))

        assert 4 == server.count("/api")
        assert exc_info.value.rule_id is None
        assert "breaker 'failure-ratio'" in str(exc_info.value)
        assert "opened by the failure ratio" in str(exc_info.value)

    def test_below_min_calls_does_not_trip(
        self, server: ScriptedServer
    ) -> None:
        """
        Three failures are fewer than min_calls: the fourth call is sent.
        """
        server.script("/api", [Reply(503), Reply(503), Reply(503), Reply(200)])
        pol = load(ratio())

        with sync_client(pol) as client:
            for _ in range(3):
                with pytest.raises(ServerError):
                    client.get(server.url("/api"))
            status = client.get(server.url("/api")).status_code

        assert 200 == status
        assert 4 == server.count("/api")

    def test_successes_keep_the_ratio_down(
        self, server: ScriptedServer
    ) -> None:
        """
        Fast-path successes count: 2 failures in 5 calls stay below 0.5.
        """
        server.script("/ok", [Reply(200)])
        server.script("/api", [Reply(503)])
        pol = load(ratio())

        with sync_client(pol) as client:
            for _ in range(3):
                client.get(server.url("/ok"))
            for _ in range(2):
                with pytest.raises(ServerError):
                    client.get(server.url("/api"))
            status = client.get(server.url("/ok")).status_code

        assert 200 == status
        assert 4 == server.count("/ok")

    def test_retries_count_and_stop_a_call_under_way(
        self, server: ScriptedServer, slept: referee.testing.SleepRecorder
    ) -> None:
        """
        Each retry is a failure: a call whose retries trip the breaker is
        stopped before its next send, with the trail of what it sent.
        """
        server.script("/api", [Reply(503)])
        pol = load(ratio(DOWN_RETRY))

        with sync_client(pol) as client:
            # 2 retries + 1 exhausted abort: three failures.
            with pytest.raises(RetriesExhausted):
                client.get(server.url("/api"))
            # Its first retry is the fourth failure.
            with pytest.raises(CircuitOpen) as exc_info:
                client.get(server.url("/api"))

        assert 4 == server.count("/api")
        assert ["retry"] == [r.action for r in exc_info.value.trail]

    @pytest.mark.parametrize(
        ("path", "replies"),
        [
            ("/missing", [Reply(404)]),
            (
                "/job",
                [Reply(200, body={"status": "ongoing"})] * 4
                + [Reply(200, body={"status": "done"})],
            ),
        ],
        ids=["accepted-404", "polls"],
    )
    def test_polls_and_accepted_negatives_are_not_failures(
        self,
        server: ScriptedServer,
        slept: referee.testing.SleepRecorder,
        path: str,
        replies: list[Reply],
    ) -> None:
        """
        Accepted 404s and polls of a running job count as successes:
        after four of them and one 503, calls still go through.
        """
        server.script(path, replies)
        server.script("/api", [Reply(503), Reply(200)])
        pol = load(ratio())

        with sync_client(pol) as client:
            statuses = [
                client.get(server.url(path)).status_code
                for _ in range(4 if path == "/missing" else 1)
            ]
            with pytest.raises(ServerError):
                client.get(server.url("/api"))
            last = client.get(server.url("/api")).status_code

        assert {404 if path == "/missing" else 200} == set(statuses)
        assert 200 == last
        assert 2 == server.count("/api")

    def test_aborted_4xx_is_not_a_failure(
        self, server: ScriptedServer
    ) -> None:
        """
        An abort of a 4xx (a bad request) is the caller's fault, not the
        API's: four of them do not trip the breaker.
        """
        server.script("/bad", [Reply(400)])
        pol = load(ratio())

        with sync_client(pol) as client:
            for _ in range(5):
                with pytest.raises(referee.BadRequest):
                    client.get(server.url("/bad"))

        assert 5 == server.count("/bad")

    @pytest.mark.parametrize(
        ("probe", "then"),
        [(200, 200), (503, None)],
        ids=["probe-succeeds-closes", "probe-fails-reopens"],
    )
    def test_half_open_lets_one_probe_through(
        self, server: ScriptedServer, probe: int, then: int | None
    ) -> None:
        """
        When open_for has passed, one probe is sent: a success closes the
        breaker, a failure opens it again at once.
        """
        server.script("/api", [Reply(503)])
        pol = load(ratio(open_for="400ms"))

        with sync_client(pol) as client:
            for _ in range(4):
                with pytest.raises(ServerError):
                    client.get(server.url("/api"))
            with pytest.raises(CircuitOpen):
                client.get(server.url("/api"))
            time.sleep(0.45)
            server.script("/api", [Reply(probe)])
            if probe == 200:
                first = client.get(server.url("/api")).status_code
                second = client.get(server.url("/api")).status_code
                assert (then, then) == (first, second)
                sent = 6
            else:
                with pytest.raises(ServerError):
                    client.get(server.url("/api"))
                with pytest.raises(CircuitOpen):
                    client.get(server.url("/api"))
                sent = 5

        assert sent == server.count("/api")

    def test_transport_failures_are_failures(
        self, slept: referee.testing.SleepRecorder
    ) -> None:
        """
        Connections refused and aborted by a rule count as failures: after
        four, the breaker stops the fifth before it tries to connect.
        """
        text = ratio().replace(
            "rules:\n", "rules:\n  - {when: {failure: connect}, do: abort}\n"
        )
        pol = load(text)
        sent: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            sent.append(str(request.url))
            raise httpx.ConnectError("refused", request=request)

        transport = PolicyTransport(pol, httpx.MockTransport(handler))
        with httpx.Client(transport=transport) as client:
            for _ in range(4):
                with pytest.raises(referee.Aborted) as exc_info:
                    client.get("http://api.test/x")
                assert "connect" == exc_info.value.failure
            with pytest.raises(CircuitOpen):
                client.get("http://api.test/x")

        assert 4 == len(sent)

    def test_scoped_breaker_does_not_hide_the_ratio_breaker(
        self, server: ScriptedServer
    ) -> None:
        """
        While the ratio breaker is open, a GET is stopped even if a
        POST-only breaker that closes later is open too.
        """
        server.script("/pay", [Reply(402)])
        server.script("/api", [Reply(503)])
        text = ratio() + (
            "  - id: out-of-credits\n"
            "    when: {status: 402}\n"
            "    do: abort\n"
            "    breaker: {name: credits, open_for: 10m, methods: [POST]}\n"
        )
        pol = load(text)

        with sync_client(pol) as client:
            with pytest.raises(InsufficientCredits):
                client.post(server.url("/pay"))
            # The 402 is a success for the ratio; three 503s make 3 of 4.
            for _ in range(3):
                with pytest.raises(ServerError):
                    client.get(server.url("/api"))
            with pytest.raises(CircuitOpen):
                client.get(server.url("/api"))

        assert 3 == server.count("/api")


# --- Retry budgets ----------------------------------------------------------

BUDGET = """
policy: budget-test
defaults:
  budget: {tokens: 4, refill: 0.5}
rules:
  - id: unavailable
    when: {status: 503}
    do: retry
    retry: {attempts: 10}
"""


class TestRetryBudget:
    @pytest.mark.parametrize("kind", ADAPTERS, ids=ADAPTERS)
    def test_budget_stops_retries(
        self,
        server: ScriptedServer,
        slept: referee.testing.SleepRecorder,
        kind: str,
    ) -> None:
        """
        With 4 tokens (retries allowed while more than half are left), a
        call that could make 10 attempts makes 3, then RetriesExhausted
        says the budget is spent; the next call gets no retry at all.
        """
        server.script("/down", [Reply(503)])
        pol = load(BUDGET)

        with caller(kind, pol) as call:
            with pytest.raises(RetriesExhausted) as first:
                call("GET", server.url("/down"))
            after_first = server.count("/down")
            with pytest.raises(RetriesExhausted):
                call("GET", server.url("/down"))

        assert (3, 4) == (after_first, server.count("/down"))
        assert "retry budget" in str(first.value)
        assert 503 == first.value.status
        assert 2 == len(slept.delays)

    def test_successes_refund(
        self, server: ScriptedServer, slept: referee.testing.SleepRecorder
    ) -> None:
        """
        Successes give back refill tokens: after two 200s (one token), a
        call may retry once again.
        """
        server.script("/down", [Reply(503)])
        server.script("/up", [Reply(200)])
        pol = load(BUDGET)

        with sync_client(pol) as client:
            with pytest.raises(RetriesExhausted):
                client.get(server.url("/down"))  # 3 sends: budget at 2
            with pytest.raises(RetriesExhausted):
                client.get(server.url("/down"))  # 1 send
            client.get(server.url("/up"))
            client.get(server.url("/up"))  # budget at 3
            with pytest.raises(RetriesExhausted):
                client.get(server.url("/down"))  # 2 sends: budget at 2

        assert 6 == server.count("/down")

    def test_refused_retry_is_logged_with_the_budget_reason(
        self, server: ScriptedServer, slept: referee.testing.SleepRecorder
    ) -> None:
        """
        The referee.decision event of a call the budget stopped is an
        abort whose reason names the budget.
        """
        server.script("/down", [Reply(503)])
        pol = load(BUDGET)

        with (
            sync_client(pol) as client,
            structlog.testing.capture_logs() as logs,
            pytest.raises(RetriesExhausted),
        ):
            client.get(server.url("/down"))

        decisions = [e for e in logs if e["event"] == "referee.decision"]
        assert ["retry", "retry", "abort"] == [e["action"] for e in decisions]
        assert "unavailable" == decisions[-1]["rule"]
        assert "retry budget for this host is spent" in decisions[-1]["reason"]

    def test_no_budget_block_no_budget(
        self, server: ScriptedServer, slept: referee.testing.SleepRecorder
    ) -> None:
        """
        Without defaults.budget, retries are bounded by attempts only.
        """
        server.script("/down", [Reply(503)])
        pol = load(BUDGET.replace("  budget: {tokens: 4, refill: 0.5}\n", ""))

        with sync_client(pol) as client, pytest.raises(RetriesExhausted):
            client.get(server.url("/down"))

        assert pol.budget is None
        assert 10 == server.count("/down")


# --- Rate limits ------------------------------------------------------------


def rate(
    *,
    requests: int = 3,
    per: str = "1s",
    by_path: bool = False,
    deadline: str | None = None,
) -> str:
    """
    A policy with no rules that paces POSTs.
    """
    limit = f"requests: {requests}, per: {per}, methods: [POST]"
    if by_path:
        limit += ", by_path: true"
    lines = ["policy: rate-test", "defaults:", f"  rate_limit: {{{limit}}}"]
    if deadline is not None:
        lines.append(f"  deadline: {deadline}")
    return "\n".join([*lines, "rules: []", ""])


class TestRateLimit:
    @pytest.mark.parametrize("kind", ADAPTERS, ids=ADAPTERS)
    def test_posts_are_paced(
        self,
        server: ScriptedServer,
        slept: referee.testing.SleepRecorder,
        kind: str,
    ) -> None:
        """
        Seven POSTs at 3 per second: the first goes at once, each of the
        others waits for its slot, an interval (1.05 s / 3) after the
        one before.
        """
        server.script("/a", [Reply(200)])
        pol = load(rate())

        with caller(kind, pol) as call:
            statuses = [call("POST", server.url("/a")) for _ in range(7)]

        assert [200] * 7 == statuses
        assert 7 == server.count("/a")
        # The clock under no_sleep moves by every skipped wait: six waits
        # of 0.35 s each (less the real time that passes between sends):
        # about 2.1 s in all, as real pacing takes.
        assert 1.9 < sum(slept.delays) <= 2.1 + 1e-6, slept.delays
        assert 6 == len([d for d in slept.delays if d > 0.2]), slept.delays

    def test_recorded_waits_add_up_to_real_pacing(
        self, server: ScriptedServer, slept: referee.testing.SleepRecorder
    ) -> None:
        """
        Under no_sleep the recorded waits of seven POSTs at 3 per second
        are what sleeping would take: six intervals of 0.35 s.
        """
        server.script("/a", [Reply(200)])
        pol = load(rate())

        with sync_client(pol) as client:
            for _ in range(7):
                client.post(server.url("/a"))

        assert 1.9 < sum(slept.delays) <= 2.1 + 1e-6, slept.delays

    def test_gets_are_not_paced(
        self, server: ScriptedServer, slept: referee.testing.SleepRecorder
    ) -> None:
        """
        methods: [POST] leaves GETs alone: seven GETs wait for nothing.
        """
        server.script("/a", [Reply(200)])
        pol = load(rate())

        with sync_client(pol) as client:
            for _ in range(7):
                client.get(server.url("/a"))

        assert [] == slept.delays
        assert 7 == server.count("/a")

    @pytest.mark.parametrize(
        ("by_path", "waits"),
        [(True, 4), (False, 6)],
        ids=["by-path", "one-bucket"],
    )
    def test_by_path_keeps_a_bucket_per_path(
        self,
        server: ScriptedServer,
        slept: referee.testing.SleepRecorder,
        by_path: bool,
        waits: int,
    ) -> None:
        """
        by_path: true paces each path on its own (the first POST to /b
        goes at once, the last to /a finds its slot passed); without it
        every POST but the first waits for its slot in one bucket.
        """
        server.script("/a", [Reply(200)])
        server.script("/b", [Reply(200)])
        pol = load(rate(by_path=by_path))

        with sync_client(pol) as client:
            for path in ["/a", "/a", "/a", "/b", "/b", "/b", "/a"]:
                client.post(server.url(path))

        # Waits for a slot; the few that follow a skipped wait by the real
        # time that passed in between are not counted.
        assert waits == len([d for d in slept.delays if d > 0.2])
        assert (4, 3) == (server.count("/a"), server.count("/b"))

    @pytest.mark.parametrize("kind", ADAPTERS, ids=ADAPTERS)
    def test_wait_past_the_deadline_fails_before_sending(
        self,
        server: ScriptedServer,
        slept: referee.testing.SleepRecorder,
        kind: str,
    ) -> None:
        """
        A rate-limit wait that would overrun deadline: 1s raises
        DeadlineExceeded at once; nothing is sent and nothing slept.
        """
        server.script("/a", [Reply(200)])
        pol = load(rate(requests=1, per="5s", deadline="1s"))

        with caller(kind, pol) as call:
            call("POST", server.url("/a"))
            with pytest.raises(DeadlineExceeded) as exc_info:
                call("POST", server.url("/a"))

        assert 1 == server.count("/a")
        assert [] == slept.delays
        assert "rate-limit slot" in str(exc_info.value)

    def test_polls_waiting_for_a_slot_keep_the_poll_deadline(
        self, server: ScriptedServer, slept: referee.testing.SleepRecorder
    ) -> None:
        """
        A call that polls past defaults.deadline (polls have their own)
        may still wait for a rate-limit slot before a poll.
        """
        server.script(
            "/job",
            [Reply(200, body={"status": "ongoing"})] * 5
            + [Reply(200, body={"status": "done"})],
        )
        pol = load(
            """
policy: rate-poll
defaults:
  rate_limit: {requests: 1, per: 1500ms}
  deadline: 2s
  poll: {initial: 1s, multiplier: 1, max: 1s, jitter: none, deadline: 1m}
rules:
  - {id: ongoing, when: {body: {status: ongoing}}, do: poll}
"""
        )

        with sync_client(pol) as client:
            status = client.get(server.url("/job")).status_code

        assert 200 == status
        assert 6 == server.count("/job")

    def test_polls_without_a_rate_limit_outlive_the_deadline(
        self, server: ScriptedServer, slept: referee.testing.SleepRecorder
    ) -> None:
        """
        The same call without a rate limit polls for 5 s despite
        deadline: 2s (the reference for the xfail above).
        """
        server.script(
            "/job",
            [Reply(200, body={"status": "ongoing"})] * 5
            + [Reply(200, body={"status": "done"})],
        )
        pol = load(
            """
policy: rate-poll
defaults:
  deadline: 2s
  poll: {initial: 1s, multiplier: 1, max: 1s, jitter: none, deadline: 1m}
rules:
  - {id: ongoing, when: {body: {status: ongoing}}, do: poll}
"""
        )

        with sync_client(pol) as client:
            status = client.get(server.url("/job")).status_code

        assert 200 == status
        assert [1.0] * 5 == slept.delays

    def test_retries_wait_for_a_slot(
        self, server: ScriptedServer, slept: referee.testing.SleepRecorder
    ) -> None:
        """
        A retried POST takes a slot for each send: every re-send of one
        call waits for its slot, an interval after the last.
        """
        server.script(
            "/a", [Reply(429, {"Retry-After": "0"})] * 3 + [Reply(200)]
        )
        text = rate().replace(
            "rules: []",
            "rules:\n  - {when: {status: 429}, do: retry, "
            "retry: {attempts: 5, unsafe_methods: true}}",
        )
        pol = load(text)

        with sync_client(pol) as client:
            status = client.post(server.url("/a")).status_code

        assert 200 == status
        assert 4 == server.count("/a")
        # Each Retry-After: 0 sleep is followed by a wait for a slot.
        assert [0.0] * 3 == slept.delays[::2]
        assert 6 == len(slept.delays)
        assert all(0.3 < d <= 0.35 + 1e-6 for d in slept.delays[1::2])


# --- Alerts -----------------------------------------------------------------

ALERTING = """
policy: alert-test
rules:
  - id: out-of-credits
    when: {status: 402}
    do: abort
    error: InsufficientCredits
    alert: {kind: topup, severity: critical, dedupe: DEDUPE, message: "{status} {body.reason}"}
"""


def alerting(dedupe: str = "1h") -> str:
    return ALERTING.replace("DEDUPE", dedupe)


class TestAlerts:
    def test_one_alert_per_window(self, server: ScriptedServer) -> None:
        """
        Three 402s in one de-dup window give the sink exactly one Alert,
        with the rendered message, the policy, the rule and the status.
        """
        server.script("/find", [Reply(402, body={"reason": "no credits"})])
        got: list[referee.Alert] = []
        pol = load(alerting(), alert_sinks=[got.append])

        with closing_alerts(pol), sync_client(pol) as client:
            for _ in range(3):
                with pytest.raises(InsufficientCredits):
                    client.post(server.url("/find"))
            assert pol.runtime.alerts.flush(2)

        assert 1 == len(got)
        alert = got[0]
        assert isinstance(alert, referee.Alert)
        assert (
            "topup",
            "critical",
            "alert-test",
            "out-of-credits",
            "402 no credits",
            402,
            None,
            0,
        ) == (
            alert.kind,
            alert.severity,
            alert.policy,
            alert.rule,
            alert.message,
            alert.status,
            alert.failure,
            alert.suppressed,
        )
        stats = pol.runtime.alerts.stats
        assert (3, 2, 1, 1) == (
            stats.submitted,
            stats.held,
            stats.sent,
            stats.delivered,
        )

    def test_next_window_reports_the_held_back_count(
        self, server: ScriptedServer
    ) -> None:
        """
        The first alert after the window says how many repeats it held
        back.
        """
        server.script("/find", [Reply(402, body={"reason": "no credits"})])
        got: list[referee.Alert] = []
        pol = load(alerting("400ms"), alert_sinks=[got.append])

        with closing_alerts(pol), sync_client(pol) as client:
            for _ in range(3):
                with pytest.raises(InsufficientCredits):
                    client.post(server.url("/find"))
            time.sleep(0.45)
            with pytest.raises(InsufficientCredits):
                client.post(server.url("/find"))
            assert pol.runtime.alerts.flush(2)

        assert [0, 2] == [a.suppressed for a in got]

    def test_structlog_event(self, server: ScriptedServer) -> None:
        """
        Each alert that goes out is logged as referee.alert, with or
        without sinks.
        """
        server.script("/find", [Reply(402, body={"reason": "no credits"})])
        pol = load(alerting())

        with (
            sync_client(pol) as client,
            structlog.testing.capture_logs() as logs,
        ):
            for _ in range(2):
                with pytest.raises(InsufficientCredits):
                    client.post(server.url("/find"))

        alerts = [e for e in logs if e["event"] == "referee.alert"]
        assert 1 == len(alerts)
        assert {
            "kind": "topup",
            "severity": "critical",
            "policy": "alert-test",
            "rule": "out-of-credits",
            "message": "402 no credits",
            "status": 402,
            "suppressed": 0,
        }.items() <= alerts[0].items()

    def test_raising_sink_does_not_break_the_call(
        self, server: ScriptedServer
    ) -> None:
        """
        A sink that raises is counted as failed; the call raises what the
        policy says and the other sinks still get the alert.
        """
        server.script("/find", [Reply(402)])
        got: list[referee.Alert] = []

        def broken(alert: referee.Alert) -> None:
            raise RuntimeError("sink down")

        pol = load(alerting(), alert_sinks=[broken, got.append])

        with (
            closing_alerts(pol),
            sync_client(pol) as client,
            structlog.testing.capture_logs() as logs,
        ):
            with pytest.raises(InsufficientCredits):
                client.post(server.url("/find"))
            # flush reports delivery: the broken sink's alert was lost.
            assert not pol.runtime.alerts.flush(2)

        assert 1 == len(got)
        assert (1, 1) == (
            pol.runtime.alerts.stats.failed,
            pol.runtime.alerts.stats.delivered,
        )
        assert ["referee.alert_sink_failed"] == [
            e["event"]
            for e in logs
            if e["event"].startswith("referee.alert_sink")
        ]

    def test_hanging_sink_does_not_hold_the_call(
        self, server: ScriptedServer
    ) -> None:
        """
        A sink that blocks holds only its own thread: the calls return
        and the other sink is served.
        """
        server.script("/find", [Reply(402)])
        release = threading.Event()
        got: list[referee.Alert] = []

        def hanging(alert: referee.Alert) -> None:
            release.wait(5)

        pol = load(alerting("0s"), alert_sinks=[hanging, got.append])
        try:
            with sync_client(pol) as client:
                for _ in range(3):
                    with pytest.raises(InsufficientCredits):
                        client.post(server.url("/find"))
            deadline = time.monotonic() + 2
            while len(got) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            release.set()
            pol.runtime.alerts.close(2)

        assert 3 == len(got)

    def test_webhook_receives_json(
        self, server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """
        alerts.webhook with the URL in an environment variable posts
        Slack-compatible JSON to it.
        """
        server.script("/find", [Reply(402, body={"reason": "no credits"})])
        server.script("/hook", [Reply(200, body=b"ok")])
        monkeypatch.setenv("TEST_HOOK", server.url("/hook"))
        text = alerting() + 'alerts:\n  webhook: {url: "${TEST_HOOK}"}\n'
        pol = load(text)

        with closing_alerts(pol), sync_client(pol) as client:
            with pytest.raises(InsufficientCredits):
                client.post(server.url("/find"))
            assert pol.runtime.alerts.flush(5)

        hooks = [r for r in server.requests if r.path == "/hook"]
        assert ["POST"] == [r.method for r in hooks]
        assert "application/json" == hooks[0].headers["content-type"]
        payload = json.loads(hooks[0].body)
        assert "[critical] alert-test: 402 no credits" == payload["text"]
        assert ("topup", "out-of-credits", 402) == (
            payload["referee"]["kind"],
            payload["referee"]["rule"],
            payload["referee"]["status"],
        )

    def test_webhook_min_severity(
        self, server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """
        An alert below the webhook's min_severity is not posted (it still
        reaches the other sinks).
        """
        server.script("/find", [Reply(402)])
        server.script("/hook", [Reply(200)])
        monkeypatch.setenv("TEST_HOOK", server.url("/hook"))
        got: list[referee.Alert] = []
        text = (
            alerting().replace("critical", "warning")
            + 'alerts:\n  webhook: {url: "${TEST_HOOK}", min_severity: error}\n'
        )
        pol = load(text, alert_sinks=[got.append])

        with closing_alerts(pol), sync_client(pol) as client:
            with pytest.raises(InsufficientCredits):
                client.post(server.url("/find"))
            assert pol.runtime.alerts.flush(5)

        assert 1 == len(got)
        assert 0 == server.count("/hook")

    def test_unset_webhook_variable_means_no_webhook(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """
        An unset variable loads: there is no webhook, and a warning says
        so.
        """
        name = f"REFEREE_TEST_UNSET_{uuid.uuid4().hex.upper()}"
        monkeypatch.delenv(name, raising=False)
        text = alerting() + f'alerts:\n  webhook: {{url: "${{{name}}}"}}\n'

        with structlog.testing.capture_logs() as logs:
            pol = load(text)

        assert name == pol.webhook.env
        assert () == pol.runtime.alerts.stats.sinks
        assert [name] == [
            e["variable"]
            for e in logs
            if e["event"] == "referee.alert_webhook_unset"
        ]

    def test_variable_that_is_no_url_is_a_referee_error(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """
        A variable that holds no http(s) URL fails the load with a
        RefereeError naming the variable, never showing the value.
        """
        monkeypatch.setenv("REFEREE_TEST_BAD_HOOK", "not-a-url-secret")
        text = (
            alerting()
            + 'alerts:\n  webhook: {url: "${REFEREE_TEST_BAD_HOOK}"}\n'
        )

        with pytest.raises(referee.RefereeError) as exc_info:
            load(text)

        assert "REFEREE_TEST_BAD_HOOK" in str(exc_info.value)
        assert "not-a-url-secret" not in str(exc_info.value)

    def test_literal_webhook_url_is_a_policy_error(self) -> None:
        """
        A webhook URL written in the file is refused: it must come from
        an environment variable.
        """
        text = (
            alerting()
            + 'alerts:\n  webhook: {url: "https://hooks.example/T0/B0/secret"}\n'
        )

        with pytest.raises(referee.PolicyError) as exc_info:
            load(text)

        message = str(exc_info.value)
        assert "$.alerts.webhook.url" in message
        assert "environment variable" in message


# --- Bundled policies and the CLI -------------------------------------------


class TestBundled:
    def test_enrow_paces_posts(self) -> None:
        """
        The bundled enrow policy carries Enrow's 10 POST/s per endpoint
        and a credits breaker that stops POSTs only.
        """
        pol = referee.load_policy("enrow")

        assert (
            RateLimitSettings(
                requests=10,
                per=1.0,
                methods=frozenset({"POST"}),
                by_path=True,
            )
            == pol.rate_limit
        )
        assert frozenset({"POST"}) == pol.breaker_scopes["credits"]

    def test_check_enrow(self, capsys: pytest.CaptureFixture[str]) -> None:
        """
        referee check enrow still exits 0.
        """
        code = referee.cli.main(["check", "enrow"])

        assert 0 == code, capsys.readouterr()
