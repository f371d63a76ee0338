"""
referee.testing: no_sleep() over real calls (httpx against the loopback
server), and simulate() over scripted outcomes.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

import referee
from referee import (
    Abort,
    Accept,
    DeadlineExceeded,
    Poll,
    RetriesExhausted,
    Retry,
    Snapshot,
)
from referee.httpx import AsyncPolicyTransport, PolicyTransport
from referee.testing import (
    Reply,
    Simulation,
    SleepRecorder,
    assert_trail,
    no_sleep,
    simulate,
)


# Retries 503 with exactly 1, 2, 4, 8, 16 s; honours Retry-After up to
# a minute; six sends; a ten-minute deadline.
PATIENT = """
policy: patient
defaults:
  retry: {attempts: 6, backoff: {initial: 1s, multiplier: 2, max: 30s, jitter: none}}
  deadline: 10m
  server_delay: {max: 60s, on_exceed: fail}
rules:
  - id: busy
    when: {status: [429, 503]}
    do: retry
  - id: running
    when: {status: 202}
    do: poll
"""


@pytest.fixture
def patient() -> referee.Policy:
    return referee.load_policy_text(PATIENT)


def get(policy: referee.Policy, url: str) -> httpx.Response:
    with httpx.Client(transport=PolicyTransport(policy)) as client:
        return client.get(url)


class TestNoSleep:
    def test_records_delays_in_order(
        self, patient, referee_server, referee_no_sleep
    ):
        """
        The delays the driver was asked to sleep are recorded in order (by
        the plugin's no-sleep fixture, which holds for the whole test).
        """
        referee_server.script(
            "/r", [Reply(503), Reply(503), Reply(503), Reply(200)]
        )

        response = get(patient, referee_server.url("/r"))

        assert isinstance(referee_no_sleep, SleepRecorder)
        assert [1.0, 2.0, 4.0] == referee_no_sleep.delays
        assert 200 == response.status_code

    def test_does_not_really_sleep(self, patient, referee_server):
        """
        Five retries after Retry-After: 30 each (150 s of sleeping) finish
        at once.
        """
        referee_server.script(
            "/r", [Reply(429, {"Retry-After": "30"})] * 5 + [Reply(200)]
        )

        began = time.monotonic()
        with no_sleep() as slept:
            response = get(patient, referee_server.url("/r"))
        wall = time.monotonic() - began

        assert [30.0] * 5 == slept.delays
        assert 200 == response.status_code
        assert 6 == referee_server.count("/r")
        # 150 s if the sleeps were taken; this is no speed assertion.
        assert wall < 5

    def test_async_driver_does_not_sleep(self, patient, referee_server):
        """
        The async driver records instead of sleeping, too.
        """
        referee_server.script(
            "/r", [Reply(503, {"Retry-After": "30"})] * 2 + [Reply(200)]
        )

        async def go() -> httpx.Response:
            transport = AsyncPolicyTransport(patient)
            async with httpx.AsyncClient(transport=transport) as client:
                return await client.get(referee_server.url("/r"))

        began = time.monotonic()
        with no_sleep() as slept:
            response = asyncio.run(go())
        wall = time.monotonic() - began

        assert [30.0, 30.0] == slept.delays
        assert 200 == response.status_code
        assert wall < 5

    def test_nested(self, patient, referee_server):
        """
        An inner no_sleep records the delays of its own block; the outer
        one goes on recording (and not sleeping) after it.
        """
        referee_server.script("/a", [Reply(503), Reply(200)])
        referee_server.script("/b", [Reply(503), Reply(503), Reply(200)])
        referee_server.script(
            "/c", [Reply(429, {"Retry-After": "20"}), Reply(200)]
        )

        began = time.monotonic()
        with no_sleep() as outer:
            get(patient, referee_server.url("/a"))
            with no_sleep() as inner:
                get(patient, referee_server.url("/b"))
            get(patient, referee_server.url("/c"))
        wall = time.monotonic() - began

        assert [1.0, 2.0] == inner.delays
        assert [1.0, 20.0] == outer.delays
        assert wall < 5

    def test_recorder_is_removed_on_error(self, patient):
        """
        Leaving the block by an exception ends no_sleep all the same.
        """
        from referee._run.clock import active_recorder

        with pytest.raises(RuntimeError), no_sleep():
            raise RuntimeError

        assert active_recorder() is None

    def test_keeps_deadlines(self, referee_server):
        """
        The virtual clock moves by the skipped sleeps: with a 10 s deadline
        and Retry-After: 4, two retries fit and the third would overrun.
        """
        pol = referee.load_policy_text(
            """
policy: tight
defaults:
  retry: {attempts: 10}
  deadline: 10s
rules:
  - id: busy
    when: {status: 503}
    do: retry
"""
        )
        referee_server.script("/r", [Reply(503, {"Retry-After": "4"})])

        with no_sleep() as slept, pytest.raises(DeadlineExceeded) as ei:
            get(pol, referee_server.url("/r"))

        assert [4.0, 4.0] == slept.delays
        assert 3 == referee_server.count("/r")
        assert_trail(
            ei.value, [("retry", 503), ("retry", 503), ("abort", 503)]
        )


class TestSimulate:
    def test_times_are_cumulative_delays(self):
        """
        Each step is seen at the sum of the delays before it; the last
        decision is the final accept.
        """
        pol = referee.load_policy("http-default")

        sim = simulate(pol, [429, 503, 200])

        assert isinstance(sim, Simulation)
        assert sim.finished
        first, second, third = sim.steps
        assert [Retry, Retry, Accept] == [type(s.decision) for s in sim.steps]
        assert 0.0 == first.at
        assert first.decision.delay == second.at
        assert first.decision.delay + second.decision.delay == third.at
        assert third.at == sim.elapsed
        assert isinstance(sim.decision, Accept)
        assert sim.decision is third.decision
        assert sim.decision.rule_id is None
        assert [429, 503, 200] == [s.snapshot.status for s in sim.steps]

    def test_exact_schedule(self, patient):
        """
        Without jitter the times are the backoff schedule's sums.
        """
        sim = simulate(patient, [503, 503, 503, 200])

        assert [0.0, 1.0, 3.0, 7.0] == [s.at for s in sim.steps]
        assert 7.0 == sim.elapsed

    def test_seed_makes_jitter_repeatable(self):
        """
        The same seed gives the same delays.
        """
        pol = referee.load_policy("http-default")

        a = simulate(pol, [503, 503, 503], seed=7)
        b = simulate(pol, [503, 503, 503], seed=7)

        assert [s.at for s in a.steps] == [s.at for s in b.steps]

    def test_script_runs_out(self):
        """
        A script that ends before the policy does is not finished.
        """
        pol = referee.load_policy("http-default")

        sim = simulate(pol, [503])

        assert not sim.finished
        assert 1 == len(sim.steps)
        assert isinstance(sim.decision, Retry)
        assert sim.steps[0].decision.delay == sim.elapsed

    def test_empty_script(self):
        """
        An empty script is an unfinished simulation with no decision.
        """
        sim = simulate(referee.load_policy("http-default"), [])

        assert Simulation((), False, 0.0) == sim
        assert sim.decision is None

    def test_abort_finishes(self):
        """
        Running out of attempts finishes with an abort.
        """
        sim = simulate(referee.load_policy("http-default"), [503] * 5)

        assert sim.finished
        assert 3 == len(sim.steps)
        assert isinstance(sim.decision, Abort)

    def test_failure_words(self):
        """
        Failure words are transport failures of the request.
        """
        sim = simulate(
            referee.load_policy("http-default"),
            ["connect", "read", 200],
            method="PUT",
            url="https://api.example.com/x",
        )

        assert sim.finished
        assert ["connect", "read", None] == [
            s.snapshot.failure for s in sim.steps
        ]
        assert ("PUT", "https://api.example.com/x") == (
            sim.steps[0].snapshot.method,
            sim.steps[0].snapshot.url,
        )
        assert ["connect-failed", "transport-failed", None] == [
            s.decision.rule_id for s in sim.steps
        ]

    def test_method_matters(self):
        """
        A POST's read failure is not retried.
        """
        sim = simulate(
            referee.load_policy("http-default"), ["read", 200], method="POST"
        )

        assert sim.finished
        assert 1 == len(sim.steps)
        assert isinstance(sim.decision, Abort)

    def test_snapshots(self, patient):
        """
        Snapshots are taken as they are: their hints set the delays.
        """
        sim = simulate(
            patient,
            [
                Snapshot.response(429, headers={"Retry-After": "7"}),
                Snapshot.response(202),
                Snapshot.response(200, body=b"{}"),
            ],
        )

        assert [Retry, Poll, Accept] == [type(s.decision) for s in sim.steps]
        assert 7.0 == sim.steps[1].at
        assert 7.0 + sim.steps[1].decision.delay == sim.steps[2].at

    def test_start_sets_the_clock(self):
        """
        The virtual clock starts at *start*; times stay relative to it.
        """
        pol = referee.load_policy_text(
            """
policy: reset
defaults:
  retry: {attempts: 3}
rules:
  - id: limited
    when: {status: 429}
    do: retry
    retry: {delay_from: ["X-Reset:epoch"]}
"""
        )
        start = 1_700_000_000.0
        limited = Snapshot.response(429, headers={"X-Reset": str(start + 9)})

        sim = simulate(pol, [limited, 200], start=start)

        assert [0.0, 9.0] == [s.at for s in sim.steps]

    @pytest.mark.parametrize(
        "outcome",
        ["nope", None, "5xx", "Connect"],
        ids=["word", "none", "pattern", "capitalized-word"],
    )
    def test_bad_outcome(self, outcome):
        """
        An outcome that is no status, failure word or snapshot is a
        ValueError that names it and says what is allowed.
        """
        pol = referee.load_policy("http-default")

        with pytest.raises(ValueError, match="expected a status code") as ei:
            simulate(pol, [outcome])

        message = str(ei.value)
        assert repr(outcome) in message
        assert "connect" in message
        assert "Snapshot" in message

    @pytest.mark.parametrize(
        "outcome",
        [3.5, True, 42, 1000],
        ids=["float", "bool", "too-small", "too-large"],
    )
    def test_not_a_status(self, outcome):
        """
        A number that is no HTTP status code is a ValueError too.
        """
        pol = referee.load_policy("http-default")

        with pytest.raises(ValueError, match="status"):
            simulate(pol, [outcome])

    def test_exhausted_retries_in_simulation(self):
        """
        The abort of a simulation names the error a real call would raise.
        """
        sim = simulate(referee.load_policy("http-default"), ["connect"] * 3)

        assert isinstance(sim.decision, Abort)
        assert RetriesExhausted is sim.decision.error


JOBS = """
policy: jobs
rules:
  - id: accepted
    when: {method: POST, status: 202, headers: {Location: {exists: true}}}
    do: poll
    poll: {initial: 1s, deadline: 1m, request: {method: GET, url: "{header.Location}"}}
  - id: running
    when: {method: GET, status: 200, body: {status: running}}
    do: poll
    poll: {initial: 2s, deadline: 1m}
  - id: busy
    when: {status: 503}
    do: retry
    retry: {attempts: 3, backoff: {initial: 1s, jitter: none}, delay_from: [Retry-After]}
"""


class TestSimulateMappings:
    def test_headers_body_and_request(self):
        """
        A mapping outcome carries response headers (a hint), a JSON body
        (a body condition) and the poll's own request, whose method and
        URL the later outcomes take.
        """
        pol = referee.load_policy_text(JOBS)

        sim = simulate(
            pol,
            [
                {"status": 503, "headers": {"Retry-After": 5}},
                {
                    "status": 202,
                    "headers": {"Location": "https://api.example.com/j/1"},
                },
                {"status": 200, "body": {"status": "running"}},
                {"status": 200, "body": '{"status": "done"}'},
            ],
            method="POST",
            request_headers={"Idempotency-Key": "k-1"},
        )

        assert [
            ("busy", 5.0, "Retry-After"),
            ("accepted", 1.0, "schedule"),
            ("running", 3.0, "schedule"),
        ] == [
            (s.decision.rule_id, s.decision.delay, s.decision.delay_source)
            for s in sim.steps[:3]
        ]
        assert [
            ("POST", "https://api.example.com/"),
            ("POST", "https://api.example.com/"),
            ("GET", "https://api.example.com/j/1"),
            ("GET", "https://api.example.com/j/1"),
        ] == [(s.snapshot.method, s.snapshot.url) for s in sim.steps]
        assert "k-1" == sim.steps[0].snapshot.request_headers.get(
            "idempotency-key"
        )
        assert (True, 9.0) == (sim.finished, sim.elapsed)

    def test_counters(self):
        """
        Each step keeps the attempt it answered and the polls made before.
        """
        pol = referee.load_policy_text(JOBS)

        sim = simulate(
            pol,
            [
                503,
                {"status": 200, "body": {"status": "running"}},
                {"status": 200, "body": {"status": "running"}},
                200,
            ],
        )

        assert [(1, 0), (2, 0), (2, 1), (2, 2)] == [
            (s.attempt, s.polls) for s in sim.steps
        ]

    def test_at(self):
        """
        ``at`` moves the clock on to when the outcome is seen; one
        scripted before the policy sends it is seen when it is sent.
        """
        pol = referee.load_policy_text(JOBS)

        sim = simulate(
            pol, [503, {"status": 503, "at": 0.5}, {"status": 200, "at": "9s"}]
        )

        assert [0.0, 1.0, 9.0] == [s.at for s in sim.steps]

    def test_request_headers_add_up(self):
        """
        An outcome's request headers add to the call's.
        """
        pol = referee.load_policy_text(JOBS)

        sim = simulate(
            pol,
            [{"status": 200, "request_headers": {"X-B": "2"}}],
            request_headers={"X-A": "1"},
        )
        sent = sim.steps[0].snapshot.request_headers

        assert ("1", "2") == (sent.get("x-a"), sent.get("x-b"))

    @pytest.mark.parametrize(
        ("outcome", "message"),
        [
            ({"status": 200, "header": {}}, "unknown key 'header'"),
            ({"status": 200, "failure": "read"}, "exactly one of status"),
            ({}, "exactly one of status"),
            ({"failure": "read", "body": "x"}, "has no response headers"),
            ({"status": 42}, "not a status code"),
            ({"failure": "dns"}, "unknown failure 'dns'"),
            ({"status": 200, "headers": [1]}, "headers: expected a mapping"),
            ({"status": 200, "at": "soon"}, "expected a duration"),
            ({"status": 200, "body": {"x": {1, 2}}}, "not bytes, a string"),
        ],
        ids=[
            "unknown-key",
            "both",
            "neither",
            "failure-with-body",
            "bad-status",
            "bad-failure",
            "bad-headers",
            "bad-at",
            "body-not-json",
        ],
    )
    def test_bad_mapping(self, outcome, message):
        """
        A mapping that is no outcome is a ValueError that says why.
        """
        pol = referee.load_policy_text(JOBS)

        with pytest.raises(ValueError, match=message):
            simulate(pol, [outcome])
