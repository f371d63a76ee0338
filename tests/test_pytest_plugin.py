"""
referee.pytest_plugin: each fixture in an inner test session (pytester),
as a user's suite meets it, and referee.testing.assert_trail's messages.
"""

from __future__ import annotations

import pytest

import referee
from referee.testing import (
    AlertCollector,
    ScriptedServer,
    SleepRecorder,
    assert_trail,
    simulate,
)


pytest_plugins = ["pytester"]

#: The inner session's conftest: the plugin once, whether or not the
#: installed referee carries its entry point.
CONFTEST = """
from referee import pytest_plugin

def pytest_configure(config):
    if not config.pluginmanager.is_registered(pytest_plugin):
        config.pluginmanager.register(pytest_plugin, "referee")
"""

POLICY = '''
POLICY = """
policy: inner
defaults:
  retry: {attempts: 3, backoff: {initial: 10s, multiplier: 2, max: 60s, jitter: none}}
rules:
  - id: busy
    when: {status: 503}
    do: retry
  - id: broke
    when: {status: 402}
    do: abort
    error: InsufficientCredits
    alert: {kind: topup, severity: critical}
"""
'''


def run_inner(pytester: pytest.Pytester, body: str) -> pytest.RunResult:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_inner="import httpx, pytest, referee\n"
        "from referee.httpx import PolicyTransport\n"
        "from referee.testing import Reply, assert_trail\n" + POLICY + body
    )
    return pytester.runpytest("-q", "-p", "no:cacheprovider")


class TestFixtures:
    def test_no_sleep_records_the_whole_test(self, pytester):
        """
        referee_no_sleep holds for the whole test: a call that would sleep
        10 s and 20 s returns at once, and the delays are recorded.
        """
        result = run_inner(
            pytester,
            """
def test_retries(referee_no_sleep, referee_server):
    referee_server.script("/r", [Reply(503), Reply(503), Reply(200)])
    policy = referee.load_policy_text(POLICY)
    with httpx.Client(transport=PolicyTransport(policy)) as client:
        assert 200 == client.get(referee_server.url("/r")).status_code
    assert [10.0, 20.0] == referee_no_sleep.delays
""",
        )

        result.assert_outcomes(passed=1)
        assert result.duration < 5

    def test_alerts_collects_a_policys_alerts(self, pytester):
        """
        referee_alerts, passed as a sink, has the alerts the test raised
        once the test reads them (delivery is off the caller's thread).
        """
        result = run_inner(
            pytester,
            """
def test_topup(referee_alerts, referee_server):
    referee_server.script("/r", [Reply(402)])
    policy = referee.load_policy_text(POLICY, alert_sinks=[referee_alerts])
    with httpx.Client(transport=PolicyTransport(policy)) as client:
        with pytest.raises(referee.InsufficientCredits):
            client.get(referee_server.url("/r"))
    assert ["topup"] == referee_alerts.kinds
    assert "broke" == referee_alerts.alerts[0].rule
    assert 402 == referee_alerts.alerts[0].status
    referee_alerts.clear()
    assert [] == referee_alerts.alerts
""",
        )

        result.assert_outcomes(passed=1)

    def test_server_scripts_in_order_and_records(self, pytester):
        """
        referee_server serves a path's replies in order (the last repeats),
        records every request, and answers 404 on an unscripted path.
        """
        result = run_inner(
            pytester,
            """
def test_server(referee_server):
    referee_server.script(
        "/a", [Reply(201, {"X-N": "1"}, {"n": 1}), Reply(202, body="two")]
    )
    got = [httpx.post(referee_server.url("/a?q=1"), content=b"hi")
           for _ in range(3)]
    assert [201, 202, 202] == [r.status_code for r in got]
    assert "1" == got[0].headers["x-n"]
    assert {"n": 1} == got[0].json()
    assert "two" == got[2].text
    assert 404 == httpx.get(referee_server.url("/none")).status_code
    assert 3 == referee_server.count("/a")
    first = referee_server.requests[0]
    assert ("POST", "/a?q=1", b"hi") == (first.method, first.path, first.body)
""",
        )

        result.assert_outcomes(passed=1)

    def test_server_stops_after_the_test(self, pytester):
        """
        The server is stopped at teardown: its listening socket is closed
        and its thread has ended.
        """
        result = run_inner(
            pytester,
            """
SERVERS = []

def test_one(referee_server):
    SERVERS.append(referee_server)
    assert 200 != httpx.get(referee_server.url("/")).status_code

def test_two():
    (server,) = SERVERS
    assert -1 == server._httpd.socket.fileno()
    server._thread.join(5)
    assert not server._thread.is_alive()
""",
        )

        result.assert_outcomes(passed=2)

    def test_trail_failure_reads_in_the_report(self, pytester):
        """
        A failing assert_trail shows expected and actual steps side by
        side, with the rule of each, in the test's report.
        """
        result = run_inner(
            pytester,
            """
def test_trail(referee_no_sleep, referee_server):
    referee_server.script("/r", [Reply(503)])
    policy = referee.load_policy_text(POLICY)
    with httpx.Client(transport=PolicyTransport(policy)) as client:
        with pytest.raises(referee.RetriesExhausted) as ei:
            client.get(referee_server.url("/r"))
    assert_trail(ei.value, [("retry", 503), ("abort", 503)])
""",
        )

        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(
            [
                "*trail differs: expected 2 step(s), got 3*",
                "*1. retry 503 * retry 503 (rule busy)*",
                "*>> 2. abort 503 * retry 503 (rule busy)*",
                "*>> 3. (none) * abort 503 (rule busy)*",
            ]
        )


class TestFixtureValues:
    """
    The fixtures in this suite itself (tests/conftest.py registers the
    plugin), with the types the documentation gives.
    """

    def test_types(self, referee_no_sleep, referee_alerts, referee_server):
        assert isinstance(referee_no_sleep, SleepRecorder)
        assert isinstance(referee_alerts, AlertCollector)
        assert isinstance(referee_server, ScriptedServer)


HTTP_DEFAULT = referee.load_policy("http-default")


class TestAssertTrail:
    def test_passes_on_actions_and_statuses(self):
        """
        Steps may be actions alone or (action, status or failure) pairs.
        """
        sim = simulate(HTTP_DEFAULT, [503, "connect", 200])

        assert_trail(sim, [("retry", 503), ("retry", "connect"), "accept"])
        assert_trail(sim, ["retry", "retry", "accept"])

    def test_records_of_an_error(self):
        """
        An Aborted's trail, or the trail itself, is accepted.
        """
        err = referee.Aborted(
            "no",
            rule_id="r",
            trail=simulate_trail(),
        )

        assert_trail(err, [("retry", 503), ("abort", 400)])
        assert_trail(err.trail, ["retry", "abort"])

    def test_mismatch_message(self):
        """
        The message numbers the steps, marks those that differ and gives
        the rule that decided each.
        """
        sim = simulate(HTTP_DEFAULT, [503, 200])

        with pytest.raises(AssertionError) as ei:
            assert_trail(sim, [("retry", 503), ("retry", 503)])

        lines = str(ei.value).splitlines()
        assert "trail differs: expected 2 step(s), got 2" == lines[0]
        assert lines[2].startswith("   1. retry 503")
        assert lines[3].startswith(">> 2. retry 503")
        assert lines[3].endswith("accept 200 (rule -)")

    def test_not_a_trail(self):
        """
        Anything without a trail is a TypeError that says what is taken.
        """
        with pytest.raises(TypeError, match="has no trail"):
            assert_trail(42, ["accept"])


def simulate_trail() -> tuple[object, ...]:
    from referee._core.state import AttemptRecord

    return (
        AttemptRecord(503, None, "busy", "retry", 1.0, 0.0),
        AttemptRecord(400, None, "bad", "abort", None, 1.0),
    )
