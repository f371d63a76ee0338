"""
Pauses the server asks for (a rule's ``pause:``): the headers that give
the pause's end, the decision that sets it, the flow that holds later
sends (wait, never past the deadline, or fail fast), the in-memory state,
and real calls over loopback sockets, sync and async.  The fleet-wide
pause on Redis is in tests/test_pause_redis.py.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx
import pytest
import requests
import structlog
from hypothesis import given
from hypothesis import strategies as st

import referee
from referee import Accept, DeadlineExceeded, RateLimited, Snapshot
from referee._core.backend import PauseState
from referee._core.engine import decide
from referee._core.hints import FORMATS, parse_pause
from referee._core.state import AttemptState
from referee._tools.check import check_policy
from referee.aiohttp import PolicyMiddleware
from referee.cli import main
from referee.httpx import AsyncPolicyTransport, PolicyTransport
from referee.requests import PolicyAdapter
from referee.testing import no_sleep, simulate

from .server import Reply, ScriptedServer


if TYPE_CHECKING:
    from collections.abc import Iterator


URL = "https://api.github.com/repos/o/r"

# GitHub's primary rate limit: a 200 that says the quota is spent holds
# every later call until the reset; a 403/429 is retried, and pauses the
# policy until the hint (Retry-After first, then the reset header).
GITHUB = """
policy: gh
defaults:
  deadline: {deadline}
rules:
  - id: quota-spent
    when: {{status: 200, headers: {{x-ratelimit-remaining: "0"}}}}
    do: accept
    pause: {{until: "x-ratelimit-reset:epoch", then: {then}, max: 1h}}
  - id: limited
    when: {{status: [403, 429]}}
    do: retry
    retry: {{attempts: 3, backoff: {{initial: 1s, jitter: none}}}}
    pause: {{until: [hint, {{header: x-ratelimit-reset, format: epoch}}], then: {then}}}
"""


def github(then: str = "wait", deadline: str = "2m") -> referee.Policy:
    return referee.load_policy_text(
        GITHUB.format(then=then, deadline=deadline)
    )


def spent(now: float, after: float = 30.0, **extra: str) -> dict[str, str]:
    """
    The headers of a 200 that spent the quota, resetting *after* seconds
    from *now*.
    """
    return {
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": str(int(now + after)),
        **extra,
    }


def snap(status: int, headers: dict[str, str], url: str = URL) -> Snapshot:
    return Snapshot.response(status, headers=headers, url=url)


# --- The headers --------------------------------------------------------------


class TestParsePause:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ('"default";r=0;t=30', 30.0),
            ('"default";r=50;t=30', None),  # not exhausted: no pause
            ('"a";r=5;t=10, "b";r=0;t=40, "c";r=0;t=20', 40.0),
            ("limit=100, remaining=0, reset=12", 12.0),  # an older draft
            ("limit=100, remaining=3, reset=12", None),
            ('"default";r=0;t=soon', None),  # malformed: ignored
            ("garbage", None),
            ("", None),
        ],
    )
    def test_ratelimit_pauses_only_when_exhausted(self, value, expected):
        """
        A RateLimit field pauses only a policy it says is exhausted (r=0),
        until its t; a malformed field is ignored.
        """
        assert expected == parse_pause(value, "ratelimit", 1000.0)

    @given(st.text(max_size=80), st.sampled_from(sorted(FORMATS)))
    def test_total(self, value, fmt):
        """
        Any string, in any format, gives a finite number or None.
        """
        got = parse_pause(value, fmt, 1000.0)

        assert got is None or math.isfinite(got)

    @pytest.mark.parametrize(
        ("value", "fmt", "expected"),
        [
            ("1030", "epoch", 30.0),
            ("30", "delta", 30.0),
            ("120", "retry-after", 120.0),
            ("1500", "ms", 1.5),
            ("soon", "epoch", None),
        ],
    )
    def test_other_formats_read_as_hints(self, value, fmt, expected):
        """
        Every other format reads as it does for a retry's delay_from.
        """
        assert expected == parse_pause(value, fmt, 1000.0)


# --- Loading ------------------------------------------------------------------


class TestLoad:
    def test_settings_and_their_defaults(self):
        """
        ``until: hint`` is Retry-After's family and RateLimit, in the
        draft's precedence; scope and then default to policy and wait, max
        to server_delay.max; a list keeps its order without repeats.
        """
        policy = github()
        spent_rule = policy.rule("quota-spent")
        limited = policy.rule("limited")

        assert spent_rule.pause is not None
        assert limited.pause is not None
        assert (
            (("x-ratelimit-reset", "epoch", "x-ratelimit-reset"),),
            "policy",
            "wait",
            3600.0,
        ) == (
            spent_rule.pause.sources,
            spent_rule.pause.scope,
            spent_rule.pause.then,
            spent_rule.pause.max,
        )
        assert [
            "retry-after-ms",
            "Retry-After",
            "RateLimit",
            "x-ratelimit-reset",
        ] == [name for _lower, _fmt, name in limited.pause.sources]
        assert 120.0 == limited.pause.max
        assert (("policy", None),) == policy.pause_scopes
        assert not policy.quiet

    def test_a_policy_without_pauses_checks_none(self):
        """
        No pause rule: no pause scope, and the fast path stays.
        """
        policy = referee.load_policy_text(
            "policy: p\nrules:\n  - {when: {status: 503}, do: retry}\n"
        )

        assert () == policy.pause_scopes
        assert policy.quiet


# --- The decision -------------------------------------------------------------


class TestDecide:
    def test_a_200_that_spent_the_quota_sets_a_pause(self):
        """
        The accept rule keeps its response and asks for a pause until the
        reset's epoch time.
        """
        now = 1_700_000_000.0
        decision = decide(
            github(), snap(200, spent(now)), AttemptState(), now=now
        )

        assert isinstance(decision, Accept)
        assert decision.pause is not None
        assert (now + 30, "*", "wait", "x-ratelimit-reset") == (
            decision.pause.until,
            decision.pause.scope,
            decision.pause.then,
            decision.pause.source,
        )

    def test_a_200_with_quota_left_sets_none(self):
        """
        The rule's condition decides: remaining above 0 is no match.
        """
        now = 1_700_000_000.0
        headers = {"x-ratelimit-remaining": "7", "x-ratelimit-reset": "1"}
        decision = decide(
            github(), snap(200, headers), AttemptState(), now=now
        )

        assert decision.pause is None

    def test_retry_after_takes_precedence_over_ratelimit(self):
        """
        With ``until: hint``, Retry-After wins over the RateLimit field's
        t, as the draft asks of clients.
        """
        now = 1_700_000_000.0
        headers = {"Retry-After": "5", "RateLimit": '"default";r=0;t=50'}
        decision = decide(
            github(), snap(429, headers), AttemptState(), now=now
        )

        assert decision.pause is not None
        assert (now + 5, "Retry-After") == (
            decision.pause.until,
            decision.pause.source,
        )

    def test_an_exhausted_ratelimit_field_pauses(self):
        """
        Without Retry-After, an exhausted RateLimit field gives the end.
        """
        now = 1_700_000_000.0
        headers = {"RateLimit": '"default";r=0;t=50'}
        decision = decide(
            github(), snap(429, headers), AttemptState(), now=now
        )

        assert decision.pause is not None
        assert now + 50 == decision.pause.until

    @pytest.mark.parametrize(
        "headers",
        [
            {"RateLimit": '"default";r=3;t=50'},  # not exhausted
            {"RateLimit": "nonsense;;"},  # malformed: ignored
            {"x-ratelimit-reset": "1600000000"},  # in the past
            {},
        ],
    )
    def test_no_pause_when_no_header_asks_for_one(self, headers):
        """
        A field that is not exhausted, malformed, a time past, or nothing:
        the rule still decides, and sets no pause.
        """
        now = 1_700_000_000.0
        decision = decide(
            github(), snap(429, headers), AttemptState(), now=now
        )

        assert (decision.rule_id, decision.pause) == ("limited", None)

    def test_a_malformed_source_lets_the_next_one_say(self):
        """
        A Retry-After that does not parse is skipped for the next source.
        """
        now = 1_700_000_000.0
        headers = {
            "Retry-After": "soon",
            "x-ratelimit-reset": str(int(now) + 9),
        }
        decision = decide(
            github(), snap(429, headers), AttemptState(), now=now
        )

        assert decision.pause is not None
        assert now + 9 == decision.pause.until

    def test_a_pause_longer_than_max_is_cut_to_it(self):
        """
        No server sets a pause longer than the rule's max (here 120s, the
        policy's server_delay.max).
        """
        now = 1_700_000_000.0
        headers = {"Retry-After": "86400"}
        decision = decide(
            github(), snap(429, headers), AttemptState(), now=now
        )

        assert decision.pause is not None
        assert (now + 120, "Retry-After (capped)") == (
            decision.pause.until,
            decision.pause.source,
        )

    def test_methods_narrow_the_scope(self):
        """
        ``methods:`` holds those calls only: the scope says which.
        """
        policy = referee.load_policy_text(
            "policy: p\nrules:\n"
            "  - when: {status: 429}\n    do: abort\n"
            "    pause: {until: Retry-After, methods: [post, PUT]}\n"
        )
        decision = decide(
            policy, snap(429, {"Retry-After": "7"}), AttemptState(), now=0.0
        )

        assert decision.pause is not None
        assert "*|POST,PUT" == decision.pause.scope
        assert (("policy", frozenset({"POST", "PUT"})),) == policy.pause_scopes

    def test_a_host_scope_names_the_response_host(self):
        """
        ``scope: host`` pauses the host of the response's URL.
        """
        policy = referee.load_policy_text(
            "policy: p\nrules:\n"
            "  - when: {status: 429}\n    do: abort\n"
            "    pause: {until: Retry-After, scope: host, then: fail}\n"
        )
        decision = decide(
            policy,
            snap(429, {"Retry-After": "7"}, "https://API.example.com/x"),
            AttemptState(),
            now=100.0,
        )

        assert decision.pause is not None
        assert ("api.example.com", "fail") == (
            decision.pause.scope,
            decision.pause.then,
        )
        assert (("host", None),) == policy.pause_scopes


# --- The flow, on the virtual clock ------------------------------------------

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class TestFlow:
    def test_a_retry_waits_for_the_pause_it_met(self):
        """
        The retry's backoff is 1s, but the pause the 429 set holds its
        send until the reset: it waits the rest, and the step says so.
        """
        sim = simulate(
            github(),
            [
                {"status": 429, "headers": spent(START, 30)},
                {"status": 200},
            ],
            url=URL,
            start=START,
        )
        first, second = sim.steps

        assert (0.0, 0.0) == (first.at, first.paused)
        assert (30.0, 29.0, True) == (second.at, second.paused, second.sent)
        assert isinstance(second.decision, Accept)

    def test_then_fail_stops_the_retry_without_sending(self):
        """
        ``then: fail``: the retry meets the pause and raises RateLimited;
        no outcome of the script is used for it.
        """
        sim = simulate(
            github(then="fail"),
            [
                {"status": 429, "headers": spent(START, 30)},
                {"status": 200},
            ],
            url=URL,
            start=START,
        )
        last = sim.steps[-1]

        assert (False, RateLimited, 1.0) == (
            last.sent,
            getattr(last.decision, "error", None),
            last.at,
        )
        assert "pause of the policy" in last.decision.reason

    def test_a_wait_past_the_deadline_fails_without_sleeping(self):
        """
        A pause that outlasts the call's deadline ends it with
        DeadlineExceeded at once: the clock does not move for it.
        """
        sim = simulate(
            github(deadline="10s"),
            [
                {"status": 429, "headers": spent(START, 30)},
                {"status": 200},
            ],
            url=URL,
            start=START,
        )
        last = sim.steps[-1]

        assert (False, DeadlineExceeded, 1.0, 0.0) == (
            last.sent,
            getattr(last.decision, "error", None),
            last.at,
            last.paused,
        )
        assert "would overrun the call's deadline" in last.decision.reason


# --- The in-memory state ------------------------------------------------------


class TestMemoryState:
    def test_the_later_pause_stands(self):
        """
        Setting a pause keeps a later one of the same scope.
        """
        state = referee.MemoryState()
        state.set_pause("p", PauseState("*", 50.0, "a", "wait"))
        state.set_pause("p", PauseState("*", 40.0, "b", "fail"))

        assert PauseState("*", 50.0, "a", "wait") == state.check_pause(
            "p", ("*",), 10.0
        )

    def test_the_scope_that_ends_last_holds(self):
        """
        Of the scopes a send is held by, the pause that ends last answers;
        other scopes and other policies are not held.
        """
        state = referee.MemoryState()
        state.set_pause("p", PauseState("*", 20.0, "a", "wait"))
        state.set_pause("p", PauseState("h.example", 30.0, "b", "fail"))

        assert "b" == state.check_pause("p", ("*", "h.example"), 10.0).rule_id
        assert (
            "a" == state.check_pause("p", ("*", "other.example"), 10.0).rule_id
        )
        assert state.check_pause("q", ("*",), 10.0) is None

    def test_an_ended_pause_is_dropped(self):
        """
        A pause whose time is up holds nothing and is forgotten.
        """
        state = referee.MemoryState()
        state.set_pause("p", PauseState("*", 20.0, "a", "wait"))

        assert state.check_pause("p", ("*",), 20.0) is None
        assert "pauses=0" in repr(state)


# --- Real calls over loopback -------------------------------------------------


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


def decisions(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "referee.decision"]


class TestCalls:
    def test_the_github_story(self, server):
        """
        A 200 with x-ratelimit-remaining: 0 holds the next call until the
        reset, before any 403 or 429: it waits, then sends; its decision
        event says how long it waited.
        """
        policy = github()
        server.script(
            "/r",
            [Reply(200, headers=spent(time.time(), 30)), Reply(200)],
        )
        client = httpx.Client(transport=PolicyTransport(policy))
        with (
            client,
            no_sleep() as slept,
            structlog.testing.capture_logs() as logs,
        ):
            assert 200 == client.get(server.url("/r")).status_code
            assert 0 == len(slept.delays)
            assert 200 == client.get(server.url("/r")).status_code

        (waited,) = slept.delays
        assert 28.0 < waited <= 30.0
        assert 2 == server.count("/r")
        events = decisions(logs)
        assert ["quota-spent", None] == [e["rule"] for e in events]
        assert waited == pytest.approx(events[-1]["paused"], abs=1e-3)
        assert [("policy", "quota-spent")] == [
            (e["scope"], e["rule"])
            for e in logs
            if e["event"] == "referee.pause_set"
        ]

    def test_then_fail_raises_rate_limited_without_sending(self, server):
        """
        ``then: fail``: the next call raises RateLimited at once, nothing
        sent, carrying when the pause ends.
        """
        policy = github(then="fail")
        reset = int(time.time()) + 30
        server.script(
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
        with (
            httpx.Client(transport=PolicyTransport(policy)) as client,
            no_sleep() as slept,
            structlog.testing.capture_logs() as logs,
        ):
            client.get(server.url("/r"))
            with pytest.raises(RateLimited) as ei:
                client.get(server.url("/r"))

        assert float(reset) == ei.value.resume_at
        last = decisions(logs)[-1]
        assert ("abort", False, float(reset)) == (
            last["action"],
            last["sent"],
            last["resume_at"],
        )
        assert ("quota-spent", ()) == (ei.value.rule_id, ei.value.trail)
        assert [] == slept.delays
        assert 1 == server.count("/r")

    def test_a_pause_past_the_deadline_fails_fast(self, server):
        """
        A call whose deadline ends before the pause does not wait: it
        raises DeadlineExceeded at once, nothing sent.
        """
        policy = github(deadline="10s")
        server.script(
            "/r", [Reply(200, headers=spent(time.time(), 30)), Reply(200)]
        )
        with (
            httpx.Client(transport=PolicyTransport(policy)) as client,
            no_sleep() as slept,
        ):
            client.get(server.url("/r"))
            with pytest.raises(DeadlineExceeded) as ei:
                client.get(server.url("/r"))

        assert ei.value.resume_at is not None
        assert [] == slept.delays
        assert 1 == server.count("/r")

    def test_the_retry_trail_shows_the_wait(self, server):
        """
        A 429 that pauses the policy until its reset: the retry's 1s
        backoff is not enough, its send waits out the rest, and the
        trail's record of that send says how long.
        """
        policy = github()
        server.script(
            "/r",
            [
                Reply(
                    429,
                    headers={"x-ratelimit-reset": str(int(time.time()) + 20)},
                ),
                Reply(429),
            ],
        )
        with (
            httpx.Client(transport=PolicyTransport(policy)) as client,
            no_sleep() as slept,
            pytest.raises(referee.RetriesExhausted) as ei,
        ):
            client.get(server.url("/r"))

        backoff, waited, again = slept.delays
        assert (1.0, 2.0) == (backoff, again)
        assert 17.0 < waited <= 19.0
        paused = [r.paused for r in ei.value.trail]
        assert [None, pytest.approx(waited, abs=1e-3), None] == paused
        assert 3 == server.count("/r")

    def test_requests_and_aiohttp_wait_too(self, server):
        """
        The other adapters run the same flow: a requests session's second
        call, and an aiohttp session's, wait for the pause the first
        call's 200 set.
        """
        policy = github()
        now = time.time()
        server.script(
            "/r",
            [
                Reply(200, headers=spent(now, 30)),
                Reply(200),
                Reply(200, headers=spent(now, 40)),
                Reply(200),
            ],
        )
        with requests.Session() as session, no_sleep() as slept:
            session.mount("http://", PolicyAdapter(policy))
            codes = [session.get(server.url("/r")).status_code for _ in "ab"]

        async def main() -> list[int]:
            async with aiohttp.ClientSession(
                middlewares=[PolicyMiddleware(policy)]
            ) as session:
                out = []
                for _ in "ab":
                    async with session.get(server.url("/r")) as response:
                        out.append(response.status)
                return out

        with no_sleep() as aslept:
            codes += asyncio.run(main())

        assert [200] * 4 == codes
        assert 1 == len(slept.delays) == len(aslept.delays)
        assert 4 == server.count("/r")

    def test_a_pause_of_some_methods_holds_those_only(self, server):
        """
        A pause of POSTs on one host stops the next POST to it
        (``then: fail``), while a GET goes.
        """
        policy = referee.load_policy_text(
            "policy: p\nrules:\n"
            "  - when: {status: 429}\n    do: abort\n    pause:\n"
            "      {until: Retry-After, scope: host, then: fail, "
            "methods: POST}\n"
        )
        server.script(
            "/r", [Reply(429, headers={"Retry-After": "60"}), Reply(200)]
        )
        with httpx.Client(transport=PolicyTransport(policy)) as client:
            with pytest.raises(RateLimited):
                client.post(server.url("/r"))
            with pytest.raises(RateLimited) as ei:
                client.post(server.url("/r"))
            get = client.get(server.url("/r")).status_code

        assert 200 == get
        assert 2 == server.count("/r")
        assert (
            "the API asked for a pause of host 127.0.0.1 (POST calls)"
        ) in str(ei.value)

    def test_a_backend_without_pauses_never_fails_a_call(self, server):
        """
        A state backend written before pauses (no set_pause, no
        check_pause): the calls go on unpaused, and the log says why.
        """

        class Older(referee.MemoryState):
            def __getattribute__(self, name: str) -> Any:
                if "pause" in name:
                    raise AttributeError(name)
                return super().__getattribute__(name)

        policy = referee.load_policy_text(
            GITHUB.format(then="fail", deadline="2m"), state=Older()
        )
        server.script("/r", [Reply(200, headers=spent(time.time(), 30))])
        with (
            httpx.Client(transport=PolicyTransport(policy)) as client,
            structlog.testing.capture_logs() as logs,
        ):
            codes = [client.get(server.url("/r")).status_code for _ in "ab"]

        assert [200, 200] == codes
        failed = {
            e["operation"]
            for e in logs
            if e["event"] == "referee.state_failed"
        }
        assert {"CheckPause", "SetPause"} == failed

    def test_async_calls_wait_too(self, server):
        """
        The async runner awaits the backend's twins: the second call
        waits for the pause the first one's 200 set.
        """
        policy = github()
        server.script(
            "/r", [Reply(200, headers=spent(time.time(), 30)), Reply(200)]
        )

        async def main() -> list[int]:
            async with httpx.AsyncClient(
                transport=AsyncPolicyTransport(policy)
            ) as client:
                first = await client.get(server.url("/r"))
                second = await client.get(server.url("/r"))
                return [first.status_code, second.status_code]

        with no_sleep() as slept:
            assert [200, 200] == asyncio.run(main())

        (waited,) = slept.delays
        assert 28.0 < waited <= 30.0
        assert 2 == server.count("/r")


class TestCheck:
    def test_a_pause_without_a_ceiling_is_flagged(self):
        """
        ``referee check`` warns about a pause no max bounds (the policy's
        server_delay.max is none, the rule sets none).
        """
        text = (
            "policy: p\ndefaults:\n  server_delay: {max: none}\nrules:\n"
            "  - id: spent\n    when: {status: 200}\n    do: accept\n"
            "    pause: {until: hint}\n"
            "  - id: bounded\n    when: {status: 429}\n    do: abort\n"
            "    pause: {until: hint, max: 1h}\n"
        )

        (problem,) = check_policy(referee.load_policy_text(text))

        assert ("$.rules[0].pause", "warning") == (
            problem.path,
            problem.severity,
        )
        assert "rule 'spent''s pause has no ceiling" in problem.message


class TestExplain:
    def test_explain_shows_the_pause(self, capsys, tmp_path):
        """
        ``referee explain`` says what pause a response sets, as text and
        as JSON.
        """
        path = tmp_path / "gh.yaml"
        path.write_text(GITHUB.format(then="fail", deadline="2m"))
        args = [
            "explain",
            str(path),
            "--status",
            "429",
            "--header",
            'RateLimit: "default";r=0;t=40',
        ]

        assert 0 == main(args)
        text = capsys.readouterr().out
        assert 0 == main([*args, "--json"])
        report = json.loads(capsys.readouterr().out)

        assert (
            "pause       holds the policy for 40s (from RateLimit); later "
            "calls fail"
        ) in text
        assert {
            "for": 40.0,
            "scope": "policy",
            "methods": None,
            "then": "fail",
            "source": "RateLimit",
        } == report["pause"]
