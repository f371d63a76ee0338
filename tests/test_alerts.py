"""
Alerts: the Alert value, de-duplication through a state backend, the
``referee.alert`` event, delivery to sinks off the caller's thread (sinks
that raise, hang or fall behind), the webhook sink against a loopback
server, and the webhook URL's resolution from the environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from tests.server import Reply, ScriptedServer, closed_port

from referee._core.decisions import AlertNotice
from referee._run import alerts as _alerts
from referee._run.alerts import (
    SEVERITIES,
    Alert,
    AlertDispatcher,
    WebhookError,
    WebhookSink,
    severity_rank,
    webhook_from_config,
)
from referee._run.memory import MemoryState


if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


HOUR = 3600.0
T0 = 1_700_000_000.0
SECRET = "T000/B111/sEcReTtOkEn"  # noqa: S105 — a fake token

TOPUP = AlertNotice(
    kind="topup",
    severity="critical",
    message="credits exhausted",
    key="enrow:topup",
    dedupe=HOUR,
)


def notice(
    key: str = "p:k", severity: str = "error", dedupe: float | None = None
) -> AlertNotice:
    return AlertNotice(
        kind="k", severity=severity, message="m", key=key, dedupe=dedupe
    )


class Recorder:
    """
    A sink that keeps what it gets and says when it got something.
    """

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.got = threading.Event()

    def __call__(self, alert: Alert) -> None:
        self.alerts.append(alert)
        self.got.set()


class Hanging:
    """
    A sink that blocks until released; *entered* is set once it blocks.
    """

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.alerts: list[Alert] = []

    def __repr__(self) -> str:
        return "<Hanging>"

    def __call__(self, alert: Alert) -> None:
        self.entered.set()
        self.release.wait(10)
        self.alerts.append(alert)


def explode(alert: Alert) -> None:
    raise RuntimeError("sink is down")


class RaisingGate:
    """
    A backend whose alert_gate always fails (Redis unreachable, say).
    """

    def alert_gate(
        self, key: str, window: float | None, now: float
    ) -> tuple[bool, int]:
        raise ConnectionError("backend unreachable")


@pytest.fixture
def make() -> Iterator[Callable[..., AlertDispatcher]]:
    """
    Dispatchers over a fresh MemoryState, closed (their hanging sinks
    released first) at the end of the test.
    """
    made: list[tuple[AlertDispatcher, list[Any]]] = []

    def make(*sinks: Any, state: Any = None, **kw: Any) -> AlertDispatcher:
        d = AlertDispatcher(
            MemoryState() if state is None else state, sinks, **kw
        )
        made.append((d, list(sinks)))
        return d

    yield make
    for d, sinks in made:
        for s in sinks:
            if isinstance(s, Hanging):
                s.release.set()
        d.close(timeout=2)


def submit(d: AlertDispatcher, n: AlertNotice, now: float = T0) -> None:
    d.submit(n, policy="enrow", rule="out-of-credits", status=402, now=now)


def wait_for(condition: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def alert_events(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "referee.alert"]


class TestAlert:
    def test_from_notice(self):
        """
        An alert carries the notice's fields, the call's and the held
        count.
        """
        alert = Alert.from_notice(
            TOPUP,
            policy="enrow",
            rule="out-of-credits",
            status=None,
            failure="read",
            now=T0,
            suppressed=3,
        )

        assert (
            Alert(
                kind="topup",
                severity="critical",
                policy="enrow",
                rule="out-of-credits",
                message="credits exhausted",
                status=None,
                failure="read",
                key="enrow:topup",
                occurred_at=T0,
                suppressed=3,
            )
            == alert
        )

    def test_severity_order(self):
        """
        info < warning < error < critical; unknown words rank as warning.
        """
        assert [0, 1, 2, 3] == [severity_rank(s) for s in SEVERITIES]
        assert severity_rank("warning") == severity_rank("loud")


class TestDedupe:
    def test_one_per_window_then_held_count(self, make):
        """
        Inside the window one alert goes out; the first after it reports
        how many were held back.
        """
        sink = Recorder()
        d = make(sink)

        for i in range(5):
            submit(d, TOPUP, T0 + i)
        submit(d, TOPUP, T0 + HOUR + 1)
        submit(d, TOPUP, T0 + HOUR + 2)

        assert d.flush(2)
        assert [0, 4] == [a.suppressed for a in sink.alerts]
        assert [T0, T0 + HOUR + 1] == [a.occurred_at for a in sink.alerts]
        stats = d.stats
        assert (7, 5, 2, 2) == (
            stats.submitted,
            stats.held,
            stats.sent,
            stats.delivered,
        )

    def test_keys_are_independent(self, make):
        """
        A held key does not hold another key.
        """
        sink = Recorder()
        d = make(sink)

        for key in ["a", "b", "a", "b"]:
            submit(d, notice(key, dedupe=HOUR))

        assert d.flush(2)
        assert ["a", "b"] == [a.key for a in sink.alerts]

    def test_no_dedupe_sends_every_alert(self, make):
        """
        Without a window every alert goes out.
        """
        sink = Recorder()
        d = make(sink)

        for _ in range(3):
            submit(d, notice())

        assert d.flush(2)
        assert 3 == len(sink.alerts)


class TestEvent:
    def test_logged_on_submit(self, make):
        """
        referee.alert is logged before submit returns, with no sink at
        all, at the alert's severity.
        """
        d = make()

        with structlog.testing.capture_logs() as logs:
            submit(d, TOPUP)

        assert [
            {
                "event": "referee.alert",
                "log_level": "critical",
                "kind": "topup",
                "severity": "critical",
                "policy": "enrow",
                "rule": "out-of-credits",
                "message": "credits exhausted",
                "status": 402,
                "failure": None,
                "key": "enrow:topup",
                "suppressed": 0,
            }
        ] == logs

    def test_held_alerts_are_not_logged(self, make):
        """
        Repeats held back by de-duplication log nothing; the next one that
        goes out says how many there were.
        """
        d = make()

        with structlog.testing.capture_logs() as logs:
            for i in range(3):
                submit(d, TOPUP, T0 + i)
            submit(d, TOPUP, T0 + 2 * HOUR)

        assert [0, 2] == [e["suppressed"] for e in alert_events(logs)]


class TestSinks:
    def test_callable_receives_alerts(self, make):
        """
        A plain callable gets Alert objects, off the caller's thread.
        """
        threads = []

        def sink(alert: Alert) -> None:
            threads.append((alert, threading.get_ident()))

        d = make(sink)

        submit(d, TOPUP)

        assert d.flush(2)
        [(alert, ident)] = threads
        assert "topup" == alert.kind
        assert threading.get_ident() != ident

    def test_min_severity_attribute_is_honoured(self, make):
        """
        A sink with min_severity only gets alerts at least that severe.
        """
        sink = Recorder()
        sink.min_severity = "error"  # type: ignore[attr-defined]
        d = make(sink)

        for sev in SEVERITIES:
            submit(d, notice(sev, severity=sev))

        assert d.flush(2)
        assert ["error", "critical"] == [a.severity for a in sink.alerts]
        assert 2 == d.stats.sinks[0].skipped

    def test_raising_sink_is_logged_and_counted(self, make):
        """
        A sink that raises is logged and counted; the other sinks still
        get the alert and submit does not raise.
        """
        sink = Recorder()
        d = make(explode, sink)

        with structlog.testing.capture_logs() as logs:
            submit(d, TOPUP)
            assert not d.flush(2)

        assert 1 == len(sink.alerts)
        stats = d.stats
        assert (1, 1) == (stats.failed, stats.delivered)
        assert (1, 0) == (stats.sinks[0].failed, stats.sinks[0].delivered)
        [failed] = [
            e for e in logs if e["event"] == "referee.alert_sink_failed"
        ]
        assert repr(explode) == failed["sink"]
        assert "RuntimeError('sink is down')" == failed["error"]

    def test_hanging_sink_does_not_block(self, make):
        """
        A sink that hangs holds back only itself: submit returns, the
        other sinks deliver, flush reports the backlog, and the hang is
        logged and counted as slow.
        """
        hanging, sink = Hanging(), Recorder()
        d = make(hanging, sink, sink_timeout=0.05)

        with structlog.testing.capture_logs() as logs:
            submit(d, notice("a"))
            assert hanging.entered.wait(2)
            submit(d, notice("b"))
            assert sink.got.wait(2)
            time.sleep(0.1)

            assert not d.flush(0.05)

        assert 2 == len(sink.alerts)
        assert 1 == d.stats.slow
        [slow] = [e for e in logs if e["event"] == "referee.alert_sink_slow"]
        assert ("<Hanging>", True) == (slow["sink"], slow["running"])
        hanging.release.set()
        assert d.flush(2)
        assert 2 == len(hanging.alerts)
        assert 4 == d.stats.delivered

    def test_full_queue_drops_and_counts(self, make):
        """
        When a stuck sink's queue is full, further alerts are dropped for
        it, counted, and logged once; submit still returns, and the other
        sink keeps up.
        """
        hanging, sink = Hanging(), Recorder()
        d = make(hanging, sink, queue_size=1)

        with structlog.testing.capture_logs() as logs:
            submit(d, notice("first"))
            assert hanging.entered.wait(2)  # the worker holds "first"
            assert wait_for(lambda: len(sink.alerts) == 1)
            for i in range(4):  # one fits in the queue, three do not
                submit(d, notice(f"more-{i}"))
                assert wait_for(lambda n=i: len(sink.alerts) == n + 2)

        stats = d.stats
        assert (3, 3, 0) == (
            stats.dropped,
            stats.sinks[0].dropped,
            stats.sinks[1].dropped,
        )
        dropped = [e for e in logs if e["event"] == "referee.alert_dropped"]
        assert 1 == len(dropped)
        assert ("<Hanging>", 1) == (dropped[0]["sink"], dropped[0]["dropped"])
        assert 5 == len(alert_events(logs))
        hanging.release.set()
        assert not d.flush(2)  # three were dropped
        assert ["first", "more-0"] == [a.key for a in hanging.alerts]
        assert d.flush(2)  # and that was said once

    def test_failing_gate_still_sends(self, make):
        """
        When the backend's alert_gate raises, the alert goes out anyway
        and the error is counted and logged.
        """
        sink = Recorder()
        d = make(sink, state=RaisingGate())

        with structlog.testing.capture_logs() as logs:
            submit(d, TOPUP)
            assert d.flush(2)

        assert [0] == [a.suppressed for a in sink.alerts]
        assert (1, 1) == (d.stats.gate_errors, d.stats.sent)
        assert ["referee.alert_gate_failed", "referee.alert"] == [
            e["event"] for e in logs
        ]

    def test_closed_dispatcher_logs_but_delivers_nothing(self, make):
        """
        After close, alerts are still logged but reach no sink: they are
        counted as dropped.
        """
        sink = Recorder()
        d = make(sink)
        submit(d, notice("before"))

        assert d.close(2)
        with structlog.testing.capture_logs() as logs:
            submit(d, notice("after"))

        assert ["before"] == [a.key for a in sink.alerts]
        assert 1 == d.stats.dropped
        assert 1 == len(alert_events(logs))
        assert not d.flush(0)

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
    def test_forked_child_delivers(self, make):
        """
        A dispatcher whose workers started before a fork delivers in the
        child too (the parent's threads do not exist there).
        """
        sink = Recorder()
        d = make(sink)
        submit(d, notice("parent"))
        assert d.flush(2)

        with warnings.catch_warnings():
            # 3.12+: "use of fork() may lead to deadlocks" (we handle it).
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: report by exit code only
            ok = False
            with contextlib.suppress(BaseException):
                submit(d, notice("child"))
                ok = d.flush(2) and ["parent", "child"] == [
                    a.key for a in sink.alerts
                ]
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)

        assert 0 == os.waitstatus_to_exitcode(status)

    def test_broken_logger_does_not_raise(self, make, monkeypatch):
        """
        Even an error inside submit itself is swallowed and counted.
        """
        d = make()

        def boom(*args: Any, **kw: Any) -> None:
            raise RuntimeError("no logging today")

        monkeypatch.setattr(_alerts._log, "critical", boom, raising=False)
        submit(d, TOPUP)

        assert 1 == d.stats.errors


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as s:
        yield s


def path() -> str:
    return f"/services/{SECRET}"


class TestWebhookSink:
    def test_posts_slack_json(self, server):
        """
        The alert is POSTed as JSON with a Slack text and the fields.
        """
        server.script(path(), [Reply(200, body=b"ok")])
        sink = WebhookSink(server.url(path()))
        alert = Alert.from_notice(
            TOPUP,
            policy="enrow",
            rule="out-of-credits",
            status=402,
            failure=None,
            now=T0,
            suppressed=2,
        )

        sink(alert)

        [req] = server.requests
        assert ("POST", "application/json") == (
            req.method,
            req.headers["content-type"],
        )
        assert {
            "text": "[critical] enrow: credits exhausted",
            "referee": {
                "kind": "topup",
                "severity": "critical",
                "policy": "enrow",
                "rule": "out-of-credits",
                "message": "credits exhausted",
                "status": 402,
                "failure": None,
                "key": "enrow:topup",
                "occurred_at": T0,
                "suppressed": 2,
            },
        } == json.loads(req.body)

    def test_below_min_severity_is_not_posted(self, server):
        """
        Alerts less severe than min_severity are not sent.
        """
        server.script(path(), [Reply(200)])
        sink = WebhookSink(server.url(path()), min_severity="error")

        sink(Alert.from_notice(notice(severity="warning"), **CALL))

        assert 0 == len(server.requests)

    def test_500_is_counted_and_url_not_logged(self, server, make):
        """
        A 5xx answer is a failed delivery; the log names the host only,
        never the URL's token.
        """
        server.script(path(), [Reply(500)])
        sink = WebhookSink(server.url(path()))
        d = make(webhook=sink)

        with structlog.testing.capture_logs() as logs:
            submit(d, TOPUP)
            assert not d.flush(3)

        assert (1, 1) == (server.count(path()), d.stats.failed)
        [failed] = [
            e for e in logs if e["event"] == "referee.alert_sink_failed"
        ]
        assert (
            f"WebhookSink('http://127.0.0.1:{server.port}')"
            == (failed["sink"])
        )
        assert "answered 500" in failed["error"]
        assert "sEcReT" not in str(logs)

    def test_redirect_is_not_followed(self, server):
        """
        A redirecting webhook is an error; the alert is not re-sent.
        """
        server.script(path(), [Reply(302, {"Location": "/elsewhere"})])
        sink = WebhookSink(server.url(path()))

        with pytest.raises(WebhookError, match="answered 302"):
            sink(Alert.from_notice(TOPUP, **CALL))

        assert 1 == len(server.requests)

    def test_unreachable_error_hides_url(self):
        """
        A refused connection raises WebhookError naming the host only.
        """
        sink = WebhookSink(f"http://127.0.0.1:{closed_port()}/{SECRET}")

        with pytest.raises(WebhookError) as exc:
            sink(Alert.from_notice(TOPUP, **CALL))

        assert "unreachable" in str(exc.value)
        assert "sEcReT" not in str(exc.value)
        assert "sEcReT" not in repr(sink)

    @pytest.mark.parametrize(
        "url",
        [f"ftp://host/{SECRET}", f"hooks.slack.com/{SECRET}", "https://"],
        ids=["ftp", "no-scheme", "no-host"],
    )
    def test_bad_url_is_refused_without_echo(self, url):
        """
        Only http(s) URLs with a host are taken; the error never shows the
        value.
        """
        with pytest.raises(ValueError, match="http:// or https://") as exc:
            WebhookSink(url)

        assert "sEcReT" not in str(exc.value)

    def test_bad_min_severity(self):
        """
        min_severity must be a severity word.
        """
        with pytest.raises(ValueError, match="min_severity must be one of"):
            WebhookSink("https://hooks.example", min_severity="loud")


CALL: dict[str, Any] = {
    "policy": "enrow",
    "rule": "r",
    "status": 402,
    "failure": None,
    "now": T0,
}


class TestWebhookFromConfig:
    @pytest.fixture(autouse=True)
    def _fresh_warnings(self, monkeypatch):
        monkeypatch.setattr(_alerts, "_UNSET_WARNED", set())

    def test_resolves_environment_variable(self, monkeypatch):
        """
        ${SLACK_WEBHOOK_URL} is read from the environment.
        """
        monkeypatch.setenv(
            "SLACK_WEBHOOK_URL", f"https://hooks.slack.com/services/{SECRET}"
        )

        sink = webhook_from_config(
            "${SLACK_WEBHOOK_URL}", min_severity="critical"
        )

        assert isinstance(sink, WebhookSink)
        assert ("https://hooks.slack.com", "critical") == (
            sink.origin,
            sink.min_severity,
        )

    def test_missing_variable_is_no_webhook(self, monkeypatch):
        """
        An unset variable gives no webhook and one warning, however often
        it is asked for.
        """
        monkeypatch.delenv("REFEREE_TEST_HOOK", raising=False)

        with structlog.testing.capture_logs() as logs:
            first = webhook_from_config("${REFEREE_TEST_HOOK}")
            second = webhook_from_config("${REFEREE_TEST_HOOK}")

        assert (None, None) == (first, second)
        assert [("referee.alert_webhook_unset", "REFEREE_TEST_HOOK")] == [
            (e["event"], e["variable"]) for e in logs
        ]

    @pytest.mark.parametrize(
        ("template", "found"),
        [
            (f"https://hooks.slack.com/services/{SECRET}", "a literal URL"),
            ("https://hooks.slack.com/${TOKEN}", "mixing text"),
            ("$SLACK_WEBHOOK_URL", "something else"),
        ],
        ids=["literal", "mixed", "bare-dollar"],
    )
    def test_only_a_variable_is_taken(self, template, found):
        """
        Anything but a single ${NAME} is refused, without echoing it.
        """
        with pytest.raises(ValueError, match="environment variable") as exc:
            webhook_from_config(template)

        assert found in str(exc.value)
        assert "sEcReT" not in str(exc.value)

    def test_variable_holding_no_url(self, monkeypatch):
        """
        A variable that does not hold an http(s) URL is refused, naming
        the variable but not its value.
        """
        monkeypatch.setenv("SLACK_WEBHOOK_URL", SECRET)

        with pytest.raises(ValueError, match=r"^\$SLACK_WEBHOOK_URL: ") as exc:
            webhook_from_config("${SLACK_WEBHOOK_URL}")

        assert "sEcReT" not in str(exc.value)
