"""
Alerts at the end of a process: ``flush()`` reports delivery, not hand-off;
pending alerts are flushed at a normal exit within a bound and what could
not be delivered is logged with its count; a SIGTERM handler that calls
``sys.exit`` gets the same.  The exit tests run a real child process that
calls a loopback server through the httpx adapter and returns normally.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from tests.server import Reply, ScriptedServer

import referee
from referee._core.decisions import AlertNotice
from referee._run import alerts as _alerts
from referee._run.alerts import Alert, AlertDispatcher
from referee._run.memory import MemoryState


if TYPE_CHECKING:
    from collections.abc import Iterator


SRC = str(Path(referee.__file__).resolve().parent.parent)
T0 = 1_700_000_000.0


def notice(key: str = "p:k") -> AlertNotice:
    return AlertNotice(
        kind="topup", severity="critical", message="m", key=key, dedupe=None
    )


def submit(d: AlertDispatcher, key: str = "p:k") -> None:
    d.submit(notice(key), policy="p", rule="r", status=402, now=T0)


class Gate:
    """
    A sink that blocks until released, then delivers or raises.
    """

    def __init__(self, *, fail: bool = False) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail = fail
        self.alerts: list[Alert] = []

    def __repr__(self) -> str:
        return "<Gate>"

    def __call__(self, alert: Alert) -> None:
        self.entered.set()
        self.release.wait(10)
        if self.fail:
            raise RuntimeError("sink is down")
        self.alerts.append(alert)


@pytest.fixture
def live(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[AlertDispatcher]]:
    """
    A registry of live dispatchers of this test's own (the suite's others
    stay out of flush_alerts), and a list that the test's dispatchers go
    into, closed at the end.
    """
    monkeypatch.setattr(_alerts, "_LIVE", weakref.WeakSet())
    monkeypatch.delenv(_alerts.EXIT_TIMEOUT_ENV, raising=False)
    made: list[AlertDispatcher] = []
    yield made
    for d in made:
        for worker in d._workers:
            if isinstance(worker.sink, Gate):
                worker.sink.release.set()
        d.close(2)


def dispatcher(
    made: list[AlertDispatcher], *sinks: Any, **kw: Any
) -> AlertDispatcher:
    d = AlertDispatcher(MemoryState(), sinks, **kw)
    made.append(d)
    return d


class TestFlushReportsDelivery:
    def test_waits_for_a_slow_sink(self, live):
        """
        flush returns once the sink has returned, not when the alert was
        handed to its thread.
        """
        got: list[Alert] = []

        def slow(alert: Alert) -> None:
            time.sleep(0.2)
            got.append(alert)

        d = dispatcher(live, slow)
        submit(d)

        assert d.flush(2)
        assert 1 == len(got)

    def test_raising_sink_is_false_once(self, live):
        """
        A sink that raised makes the next flush False; once that was said,
        a flush after a delivered alert is True again.
        """
        calls = []

        def flaky(alert: Alert) -> None:
            calls.append(alert)
            if len(calls) == 1:
                raise RuntimeError("down")

        d = dispatcher(live, flaky)
        submit(d, "a")
        assert not d.flush(2)
        submit(d, "b")

        assert d.flush(2)
        assert 2 == len(calls)

    def test_failure_after_a_timed_out_flush_is_reported(self, live):
        """
        An alert still running when one flush timed out, whose sink then
        raises, makes the next flush False.
        """
        gate = Gate(fail=True)
        d = dispatcher(live, gate)
        submit(d)
        assert gate.entered.wait(2)

        assert (1, 0) == d.drain(0.05)
        gate.release.set()
        assert not d.flush(2)
        assert d.flush(2)

    def test_failure_during_a_flush_is_reported_by_it(self, live):
        """
        A sink that raises while a flush waits for it makes that flush
        False, with the loss counted.
        """
        gate = Gate(fail=True)
        d = dispatcher(live, gate)
        submit(d)
        assert gate.entered.wait(2)
        threading.Timer(0.1, gate.release.set).start()

        assert (0, 1) == d.drain(2)

    def test_one_failing_sink_of_two(self, live):
        """
        The other sink's delivery does not hide the failure.
        """
        got: list[Alert] = []

        def broken(alert: Alert) -> None:
            raise RuntimeError("down")

        d = dispatcher(live, broken, got.append)
        submit(d)

        assert (0, 1) == d.drain(2)
        assert 1 == len(got)

    def test_unfinished_alerts_are_counted(self, live):
        """
        drain says how many alerts were still queued or running.
        """
        gate = Gate()
        d = dispatcher(live, gate)
        for key in "abc":
            submit(d, key)
        assert gate.entered.wait(2)

        assert (3, 0) == d.drain(0.05)
        gate.release.set()
        assert (0, 0) == d.drain(2)
        assert 3 == len(gate.alerts)

    def test_alerts_after_the_flush_began_are_not_awaited(self, live):
        """
        A flush answers for what was submitted before it: an alert that
        comes while it waits does not keep it waiting.
        """
        first = Gate()
        d = dispatcher(live, first)
        submit(d, "a")
        assert first.entered.wait(2)
        result: list[tuple[int, int]] = []
        waiter = threading.Thread(target=lambda: result.append(d.drain(5)))
        waiter.start()
        time.sleep(0.05)
        submit(d, "b")  # queued behind "a", after the flush began
        first.release.set()
        waiter.join(5)

        assert [(0, 0)] == result
        assert d.flush(2)
        assert ["a", "b"] == [a.key for a in first.alerts]


class TestFlushAlerts:
    def test_logs_the_lost_count(self, live):
        """
        flush_alerts waits up to its bound and logs what was not delivered
        (still running, or failed) as referee.alerts_lost.
        """
        gate = Gate()

        def broken(alert: Alert) -> None:
            raise RuntimeError("down")

        d = dispatcher(live, gate, broken)
        submit(d, "a")
        submit(d, "b")
        assert gate.entered.wait(2)

        with structlog.testing.capture_logs() as logs:
            started = time.monotonic()
            ok = referee.flush_alerts(0.2)
            took = time.monotonic() - started

        assert not ok
        assert 0.15 < took < 1.5
        [lost] = [e for e in logs if e["event"] == "referee.alerts_lost"]
        assert (4, 2, 2, 0.2) == (
            lost["lost"],
            lost["undelivered"],
            lost["failed"],
            lost["timeout"],
        )
        assert "<Gate>" in lost["sinks"]

    def test_all_delivered_logs_nothing(self, live):
        """
        When everything went out, flush_alerts is True and quiet.
        """
        got: list[Alert] = []
        d = dispatcher(live, got.append)
        submit(d)

        with structlog.testing.capture_logs() as logs:
            assert referee.flush_alerts()

        assert [] == logs
        assert 1 == len(got)

    def test_closed_dispatchers_are_skipped(self, live):
        """
        A dispatcher already closed was answered for by close().
        """

        def broken(alert: Alert) -> None:
            raise RuntimeError("down")

        d = dispatcher(live, broken)
        submit(d)
        assert not d.close(2)

        assert referee.flush_alerts(0.1)

    def test_dispatcher_exit_timeout_wins(self, live, monkeypatch):
        """
        Without an explicit bound, a dispatcher's exit_timeout bounds the
        wait for it, over the environment variable.
        """
        monkeypatch.setenv(_alerts.EXIT_TIMEOUT_ENV, "30s")
        gate = Gate()
        d = dispatcher(live, gate, exit_timeout=0.1)
        submit(d)
        assert gate.entered.wait(2)

        started = time.monotonic()
        with structlog.testing.capture_logs() as logs:
            assert not referee.flush_alerts()

        assert time.monotonic() - started < 2
        assert [0.1] == [
            e["timeout"] for e in logs if e["event"] == "referee.alerts_lost"
        ]


class TestExitTimeout:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [("", 5.0), ("2", 2.0), ("500ms", 0.5), ("1m", 60.0), ("0", 0.0)],
        ids=["unset", "seconds", "ms", "minutes", "zero"],
    )
    def test_from_environment(self, monkeypatch, value, expected):
        """
        REFEREE_ALERT_EXIT_TIMEOUT takes seconds or a duration.
        """
        monkeypatch.setenv(_alerts.EXIT_TIMEOUT_ENV, value)

        assert expected == _alerts.exit_timeout()

    def test_invalid_value_is_logged(self, monkeypatch):
        """
        A value that is not a duration is logged; the default holds.
        """
        monkeypatch.setenv(_alerts.EXIT_TIMEOUT_ENV, "soon")

        with structlog.testing.capture_logs() as logs:
            assert 5.0 == _alerts.exit_timeout()

        assert ["referee.alert_exit_timeout_invalid"] == [
            e["event"] for e in logs
        ]


# --- the real thing: a child process that returns normally -------------

CHILD = textwrap.dedent(
    '''
    import json, os, signal, sys, time
    import httpx, structlog
    import referee
    from referee.httpx import PolicyTransport

    structlog.configure(processors=[
        structlog.processors.add_log_level,
        structlog.processors.JSONRenderer(),
    ])

    POLICY = """
    policy: exit-test
    rules:
      - id: out-of-credits
        when: {status: 402}
        do: abort
        error: InsufficientCredits
        alert: {kind: topup, severity: critical, message: "credits out"}
    """
    WEBHOOK = 'alerts:\\n  webhook: {url: "${TEST_HOOK}"}\\n'

    def main(url, out, mode):
        def sink(alert):
            time.sleep(float(os.environ["SINK_DELAY"]))
            with open(out, "a") as f:
                f.write(f"{alert.kind} {alert.message}\\n")

        text = POLICY + (WEBHOOK if mode == "webhook" else "")
        sinks = [] if mode == "webhook" else [sink]
        policy = referee.load_policy_text(text, alert_sinks=sinks)
        if mode == "sigterm":
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
        with httpx.Client(transport=PolicyTransport(policy)) as client:
            try:
                client.post(url)
            except referee.InsufficientCredits:
                pass
        print(json.dumps({"event": "returning", "at": time.time()}),
              flush=True)
        if mode == "sigterm":
            time.sleep(30)  # until the parent's SIGTERM

    main(*sys.argv[1:])
    '''
)


def run_child(
    tmp_path: Path,
    server: ScriptedServer,
    *,
    mode: str = "callable",
    sink_delay: float = 0.3,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[str], Path]:
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    out = tmp_path / "alerts.txt"
    child_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [SRC, *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        "SINK_DELAY": str(sink_delay),
        "TEST_HOOK": server.url("/hook"),
    }
    child_env.pop(_alerts.EXIT_TIMEOUT_ENV, None)
    child_env.update(env or {})
    proc = subprocess.Popen(  # noqa: S603 - our own script
        [sys.executable, str(script), server.url("/find"), str(out), mode],
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, out


def events(stdout: str) -> list[dict[str, Any]]:
    found = []
    for line in stdout.splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as s:
        s.script("/find", [Reply(402, body={"message": "no credits"})])
        s.script("/hook", [Reply(200, body=b"ok", delay=0.3)])
        yield s


class TestExit:
    def test_slow_callable_sink_gets_the_alert(self, tmp_path, server):
        """
        A child that raises a top-up alert and returns normally waits for
        its slow sink: the alert is in the sink's file, nothing is lost.
        """
        proc, out = run_child(tmp_path, server)
        stdout, stderr = proc.communicate(timeout=30)

        assert 0 == proc.returncode, stderr
        assert "topup credits out\n" == out.read_text(encoding="utf-8")
        assert "referee.alerts_lost" not in stdout

    def test_webhook_gets_the_alert_before_exit(self, tmp_path, server):
        """
        A webhook sink from ${TEST_HOOK} receives the alert before the
        child exits, although its answer takes 0.3 s.
        """
        proc, _ = run_child(tmp_path, server, mode="webhook")
        stdout, stderr = proc.communicate(timeout=30)

        assert 0 == proc.returncode, stderr
        [hook] = [r for r in server.requests if r.path == "/hook"]
        body = json.loads(hook.body)
        assert ("topup", "exit-test") == (
            body["referee"]["kind"],
            body["referee"]["policy"],
        )
        assert "referee.alerts_lost" not in stdout

    def test_sink_slower_than_the_bound(self, tmp_path, server):
        """
        A sink slower than REFEREE_ALERT_EXIT_TIMEOUT does not hold the
        process: it exits within the bound and a margin, logging one lost
        alert.
        """
        proc, out = run_child(
            tmp_path,
            server,
            sink_delay=30,
            env={_alerts.EXIT_TIMEOUT_ENV: "500ms"},
        )
        stdout, stderr = proc.communicate(timeout=30)
        ended = time.time()

        assert 0 == proc.returncode, stderr
        logged = events(stdout)
        [returning] = [e for e in logged if e["event"] == "returning"]
        assert 0.5 <= ended - returning["at"] < 0.5 + 2.5
        [lost] = [e for e in logged if e["event"] == "referee.alerts_lost"]
        assert (1, 1, 0, 0.5, "error") == (
            lost["lost"],
            lost["undelivered"],
            lost["failed"],
            lost["timeout"],
            lost["level"],
        )
        assert not out.exists()

    @pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
    def test_sigterm_handler_that_exits_flushes(self, tmp_path, server):
        """
        With the handler docs/ops.md recommends (SIGTERM -> sys.exit), a
        terminated child still delivers its pending alert.
        """
        proc, out = run_child(tmp_path, server, mode="sigterm", sink_delay=0.5)
        try:
            assert proc.stdout is not None
            # Once it says so, the call is done and the alert queued.
            for line in proc.stdout:
                if '"returning"' in line:
                    break
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
        finally:
            proc.kill()
            proc.communicate()

        assert 143 == proc.returncode, stderr
        assert "topup credits out\n" == out.read_text(encoding="utf-8")
