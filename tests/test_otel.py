"""
referee.otel: span events and metrics for the drivers' decisions, checked
with the OpenTelemetry SDK's in-memory exporter and metric reader, through
the httpx transport over httpx.MockTransport (no sockets, no real sleeps);
and the drivers' hook mechanism underneath it.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import structlog
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

import referee
import referee.otel
from referee import (
    BreakerEvent,
    CircuitOpen,
    DecisionEvent,
    InsufficientCredits,
    RetriesExhausted,
    add_hook,
    hooks,
    remove_hook,
)
from referee.httpx import AsyncPolicyTransport, PolicyTransport
from referee.testing import no_sleep


if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence


RETRYING = """
policy: otel-test
rules:
  - id: unavailable
    when: {status: 503}
    do: retry
    retry: {attempts: 4}
  - id: accepted
    when: {status: 202}
    do: poll
  - id: out-of-credits
    when: {status: 402}
    do: abort
    error: InsufficientCredits
    alert: {kind: topup, severity: critical, dedupe: 1h, message: "{status}"}
"""

BUDGET = """
policy: otel-budget
defaults:
  budget: {tokens: 4, refill: 0.5}
rules:
  - id: unavailable
    when: {status: 503}
    do: retry
    retry: {attempts: 10}
"""

BREAKER = """
policy: otel-breaker
rules:
  - id: out-of-credits
    when: {status: 402}
    do: abort
    error: InsufficientCredits
    breaker: {name: credits, open_for: 10m}
"""

URL = "https://api.example/v1/search?api_key=secret"


# --- Harness ----------------------------------------------------------------


class Telemetry:
    """
    An instrumentation with in-memory exporters: the spans finished and
    the metrics read so far.
    """

    def __init__(self, *, span_events: bool = True) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(
            SimpleSpanProcessor(self.exporter)
        )
        self.tracer = self.tracer_provider.get_tracer("tests")
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(
            metric_readers=[self.reader], shutdown_on_exit=False
        )
        self.instrumentation = referee.otel.instrument(
            meter_provider=self.meter_provider, span_events=span_events
        )

    def close(self) -> None:
        self.instrumentation.uninstrument()
        self.meter_provider.shutdown()
        self.tracer_provider.shutdown()

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """
        The (name, attributes) of every event on the finished spans.
        """
        return [
            (event.name, dict(event.attributes or {}))
            for span in self.exporter.get_finished_spans()
            for event in span.events
        ]

    def metric(self, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """
        Metric *name*'s points: sorted attribute pairs -> value.
        """
        data = self.reader.get_metrics_data()
        found: dict[tuple[tuple[str, Any], ...], Any] = {}
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        key = tuple(sorted((point.attributes or {}).items()))
                        found[key] = point.value  # type: ignore[union-attr]
        return found


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    got = Telemetry()
    try:
        yield got
    finally:
        got.close()


def attrs_(**values: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(values.items()))


def serve(statuses: Sequence[int]) -> httpx.MockTransport:
    """
    A mock transport answering with *statuses* in order, then the last.
    """
    left = list(statuses)

    def handler(request: httpx.Request) -> httpx.Response:
        status = left.pop(0) if len(left) > 1 else left[0]
        return httpx.Response(status, json={})

    return httpx.MockTransport(handler)


def call(
    policy: referee.Policy, statuses: Sequence[int], url: str = URL
) -> httpx.Response:
    """
    One GET through the policy transport over *statuses*, without
    sleeping.
    """
    transport = PolicyTransport(policy, serve(statuses))
    with no_sleep(), httpx.Client(transport=transport) as client:
        return client.get(url)


def try_call(
    policy: referee.Policy, statuses: Sequence[int]
) -> BaseException | None:
    try:
        call(policy, statuses)
    except referee.Aborted as exc:
        return exc
    return None


# --- Span events ------------------------------------------------------------


class TestSpanEvents:
    def test_retried_call_adds_decision_events(
        self, telemetry: Telemetry
    ) -> None:
        """
        A call retried twice inside a span leaves three referee.decision
        events on it: two retries and the accept, with the redacted URL.
        """
        policy = referee.load_policy_text(RETRYING)

        with telemetry.tracer.start_as_current_span("app"):
            response = call(policy, [503, 503, 200])

        events = telemetry.events()
        first = events[0][1]

        assert 200 == response.status_code
        assert ["referee.decision"] * 3 == [name for name, _ in events]
        assert ["retry", "retry", "accept"] == [
            a["referee.action"] for _, a in events
        ]
        assert [1, 2, 3] == [a["referee.attempt"] for _, a in events]
        assert {
            "referee.policy": "otel-test",
            "referee.rule": "unavailable",
            "referee.action": "retry",
            "http.request.method": "GET",
            "url.full": first["url.full"],
            "http.response.status_code": 503,
            "referee.attempt": 1,
            "referee.delay": first["referee.delay"],
            "referee.reason": first["referee.reason"],
            "referee.elapsed": first["referee.elapsed"],
            "referee.budget_suppressed": False,
            "referee.sent": True,
        } == first
        assert "secret" not in first["url.full"]
        assert first["referee.delay"] > 0
        assert "unavailable" in first["referee.reason"]

    def test_abort_event_names_error_and_alert(
        self, telemetry: Telemetry
    ) -> None:
        """
        An abort's event carries the error's name and the alert's kind.
        """
        policy = referee.load_policy_text(RETRYING)

        with telemetry.tracer.start_as_current_span("app"):
            error = try_call(policy, [402])

        ((_, got),) = telemetry.events()

        assert isinstance(error, InsufficientCredits)
        assert ("abort", "InsufficientCredits", "topup") == (
            got["referee.action"],
            got["referee.error"],
            got["referee.alert"],
        )

    def test_async_driver_adds_events(self, telemetry: Telemetry) -> None:
        """
        The async driver reports the same decisions as the sync one.
        """
        policy = referee.load_policy_text(RETRYING)

        async def main() -> int:
            transport = AsyncPolicyTransport(policy, serve([503, 200]))
            async with httpx.AsyncClient(transport=transport) as client:
                return (await client.get(URL)).status_code

        with no_sleep(), telemetry.tracer.start_as_current_span("app"):
            status = asyncio.run(main())

        assert 200 == status
        assert ["retry", "accept"] == [
            a["referee.action"] for _, a in telemetry.events()
        ]

    def test_without_span_nothing_fails(self, telemetry: Telemetry) -> None:
        """
        Outside any span the events go nowhere; the metrics still count.
        """
        policy = referee.load_policy_text(RETRYING)

        response = call(policy, [503, 200])

        assert 200 == response.status_code
        assert [] == telemetry.events()
        assert {
            attrs_(policy="otel-test", rule="unavailable"): 1
        } == telemetry.metric("referee.retries")

    def test_span_events_off(self) -> None:
        """
        span_events=False counts without adding events.
        """
        telemetry = Telemetry(span_events=False)
        policy = referee.load_policy_text(RETRYING)
        try:
            with telemetry.tracer.start_as_current_span("app"):
                call(policy, [503, 200])
            events = telemetry.events()
            retries = telemetry.metric("referee.retries")
        finally:
            telemetry.close()

        assert [] == events
        assert [1] == list(retries.values())


# --- Metrics ----------------------------------------------------------------


class TestMetrics:
    def test_attempts_by_rule_and_action(self, telemetry: Telemetry) -> None:
        """
        Every attempt through the driver counts under its rule and action;
        the accept no rule made has no rule attribute.
        """
        policy = referee.load_policy_text(RETRYING)

        call(policy, [503, 503, 200])

        assert {
            attrs_(policy="otel-test", rule="unavailable", action="retry"): 2,
            attrs_(policy="otel-test", action="accept"): 1,
        } == telemetry.metric("referee.attempts")

    def test_fast_path_accept_not_counted(self, telemetry: Telemetry) -> None:
        """
        A first-try response no rule matches never reaches the driver:
        no attempt is counted, no event is added.
        """
        policy = referee.load_policy_text(RETRYING)

        with telemetry.tracer.start_as_current_span("app"):
            call(policy, [200])

        assert {} == telemetry.metric("referee.attempts")
        assert [] == telemetry.events()

    def test_retries_and_polls_by_rule(self, telemetry: Telemetry) -> None:
        """
        Retries and polls are counted by rule.
        """
        policy = referee.load_policy_text(RETRYING)

        call(policy, [503, 202, 202, 200])

        assert (
            {attrs_(policy="otel-test", rule="unavailable"): 1},
            {attrs_(policy="otel-test", rule="accepted"): 2},
        ) == (
            telemetry.metric("referee.retries"),
            telemetry.metric("referee.polls"),
        )

    @pytest.mark.parametrize(
        ("statuses", "rule", "error"),
        [
            ([402], "out-of-credits", InsufficientCredits),
            ([503], "unavailable", RetriesExhausted),
        ],
        ids=["rule-error", "retries-exhausted"],
    )
    def test_aborts_by_error(
        self,
        telemetry: Telemetry,
        statuses: list[int],
        rule: str,
        error: type[referee.Aborted],
    ) -> None:
        """
        An abort counts under the name of the error it raises.
        """
        policy = referee.load_policy_text(RETRYING)

        raised = try_call(policy, statuses)

        assert isinstance(raised, error)
        assert {
            attrs_(policy="otel-test", rule=rule, error=error.__name__): 1
        } == telemetry.metric("referee.aborts")

    def test_budget_suppressed(self, telemetry: Telemetry) -> None:
        """
        A retry the budget refuses counts as budget-suppressed, and its
        abort as RetriesExhausted; its event says so.
        """
        policy = referee.load_policy_text(BUDGET)

        with telemetry.tracer.start_as_current_span("app"):
            raised = try_call(policy, [503])

        last = telemetry.events()[-1][1]
        by_rule = attrs_(policy="otel-budget", rule="unavailable")

        assert isinstance(raised, RetriesExhausted)
        assert {by_rule: 1} == telemetry.metric("referee.budget_suppressed")
        assert {
            attrs_(
                policy="otel-budget",
                rule="unavailable",
                error="RetriesExhausted",
            ): 1
        } == telemetry.metric("referee.aborts")
        assert (True, "abort") == (
            last["referee.budget_suppressed"],
            last["referee.action"],
        )

    def test_alerts_raised_sent_and_held(self, telemetry: Telemetry) -> None:
        """
        Three 402s in one de-dup window raise three alerts: the dispatcher
        sends one and holds two back.
        """
        # The counter sums every dispatcher in the process, those of earlier
        # tests included: collect their garbage first, and let no
        # collection run between the two readings, so that only this
        # test's alerts move them.
        gc.collect()
        gc.disable()
        try:
            before = telemetry.metric("referee.alerts")
            policy = referee.load_policy_text(RETRYING)

            for _ in range(3):
                try_call(policy, [402])
            after = telemetry.metric("referee.alerts")
        finally:
            gc.enable()

        def delta(outcome: str) -> int:
            key = attrs_(outcome=outcome)
            return int(after[key] - before.get(key, 0))

        assert {
            attrs_(policy="otel-test", rule="out-of-credits", kind="topup"): 3
        } == telemetry.metric("referee.alerts.raised")
        assert (1, 2) == (delta("sent"), delta("held"))

    def test_breaker_open_and_circuit_open(self, telemetry: Telemetry) -> None:
        """
        A 402 opens the breaker (counted, and the gauge shows 1); the next
        call fails fast with CircuitOpen: an abort, but no attempt.
        """
        policy = referee.load_policy_text(BREAKER)

        first = try_call(policy, [402])
        second = try_call(policy, [402])
        key = attrs_(policy="otel-breaker", breaker="credits")

        assert (InsufficientCredits, CircuitOpen) == (
            type(first),
            type(second),
        )
        assert {key: 1} == telemetry.metric("referee.breaker.opened")
        assert {key: 1} == telemetry.metric("referee.breaker.open")
        assert {
            attrs_(
                policy="otel-breaker",
                rule="out-of-credits",
                error="InsufficientCredits",
            ): 1,
            attrs_(
                policy="otel-breaker",
                rule="out-of-credits",
                error="CircuitOpen",
            ): 1,
        } == telemetry.metric("referee.aborts")
        assert {
            attrs_(
                policy="otel-breaker", rule="out-of-credits", action="abort"
            ): 1
        } == telemetry.metric("referee.attempts")

    def test_breaker_gauge_drops_when_closed(
        self, telemetry: Telemetry
    ) -> None:
        """
        Once a breaker's time is up, the gauge shows 0.
        """
        telemetry.instrumentation(
            BreakerEvent("p", "b", None, until=1.0, opened=False)
        )

        assert {attrs_(policy="p", breaker="b"): 0} == telemetry.metric(
            "referee.breaker.open"
        )


# --- Uninstrument and the hooks ---------------------------------------------


class TestUninstrument:
    def test_stops_events_and_counts(self) -> None:
        """
        After uninstrument, no hook is left, calls add no events and no
        counts, and the observable instruments report nothing.
        """
        telemetry = Telemetry()
        policy = referee.load_policy_text(RETRYING)
        try:
            telemetry.instrumentation.uninstrument()
            telemetry.instrumentation.uninstrument()
            with telemetry.tracer.start_as_current_span("app"):
                try_call(policy, [402])
            got = (
                list(hooks()),
                telemetry.events(),
                telemetry.metric("referee.attempts"),
                telemetry.metric("referee.alerts"),
            )
        finally:
            telemetry.close()

        assert ([], [], {}, {}) == got

    def test_two_instrumentations_are_independent(self) -> None:
        """
        Each instrument() registers its own hook; removing one leaves the
        other.
        """
        one, two = Telemetry(), Telemetry()
        try:
            one.close()
            registered = list(hooks())
        finally:
            two.close()

        assert [two.instrumentation] == registered
        assert () == hooks()


class TestHooks:
    def test_none_registered_by_default(self) -> None:
        """
        Without instrumentation no hook is registered.
        """
        assert () == hooks()

    def test_failing_hook_is_logged_not_raised(self) -> None:
        """
        A hook that raises is logged as referee.hook_failed; the call goes
        on.
        """

        def broken(event: DecisionEvent | BreakerEvent) -> None:
            raise RuntimeError("boom")

        policy = referee.load_policy_text(RETRYING)
        add_hook(broken)
        try:
            with structlog.testing.capture_logs() as logs:
                response = call(policy, [503, 200])
        finally:
            remove_hook(broken)

        failed = [e for e in logs if e["event"] == "referee.hook_failed"]

        assert 200 == response.status_code
        assert 2 == len(failed)
        assert "boom" in failed[0]["error"]

    def test_events_match_the_log(self) -> None:
        """
        A hook sees one DecisionEvent per logged referee.decision, with the
        same fields.
        """
        seen: list[DecisionEvent | BreakerEvent] = []
        policy = referee.load_policy_text(RETRYING)
        add_hook(seen.append)
        try:
            with structlog.testing.capture_logs() as logs, no_sleep():
                transport = PolicyTransport(policy, serve([503, 402]))
                with (
                    httpx.Client(transport=transport) as client,
                    pytest.raises(InsufficientCredits),
                ):
                    client.get(URL)
        finally:
            remove_hook(seen.append)

        logged = [
            (e["rule"], e["action"], e["status"], e["attempt"], e["url"])
            for e in logs
            if e["event"] == "referee.decision"
        ]

        assert logged == [
            (e.rule, e.action, e.status, e.attempt, e.url)
            for e in seen
            if isinstance(e, DecisionEvent)
        ]


# --- Without OpenTelemetry --------------------------------------------------


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


class TestWithoutOpenTelemetry:
    def test_referee_never_imports_opentelemetry(self) -> None:
        """
        Importing referee and referee.httpx and running a retried call
        imports nothing of OpenTelemetry.
        """
        done = run_python(
            """
            import sys
            import httpx
            import referee, referee.httpx
            from referee.testing import no_sleep

            policy = referee.load_policy("http-default")
            left = [503, 200]
            transport = referee.httpx.PolicyTransport(
                policy,
                httpx.MockTransport(lambda r: httpx.Response(left.pop(0))),
            )
            with no_sleep(), httpx.Client(transport=transport) as client:
                assert client.get("https://api.example/").status_code == 200
            loaded = sorted(m for m in sys.modules if "opentelemetry" in m)
            print("loaded:", loaded)
            """
        )

        assert 0 == done.returncode, done.stderr
        assert "loaded: []" == done.stdout.splitlines()[-1]

    def test_missing_api_says_how_to_install(self) -> None:
        """
        Without opentelemetry-api, importing referee.otel raises an
        ImportError naming the extra.
        """
        done = run_python(
            """
            import sys
            sys.modules["opentelemetry"] = None
            try:
                import referee.otel
            except ImportError as exc:
                print(exc)
            """
        )

        assert "pip install referee[otel]" in done.stdout, done.stderr
