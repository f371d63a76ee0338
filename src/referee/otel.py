"""
referee for OpenTelemetry: span events and metrics for every decision.

::

    import referee.otel

    instrumentation = referee.otel.instrument()
    ...
    instrumentation.uninstrument()

Needs the ``otel`` extra (``pip install referee[otel]``, which brings
``opentelemetry-api``); nothing else in referee imports OpenTelemetry.

referee adds *events*, not spans: each decision the runners carry out
becomes a ``referee.decision`` event on the span current at that moment
(``opentelemetry.trace.get_current_span()``): the HTTP client's span when
the application instruments its client and that span is open around the
policy, else the application's own span, else nothing (the no-op span).  So
referee composes with the client's instrumentation instead of competing
with it.

What is counted (every instrument is named ``referee.…``):

- ``referee.attempts``: the attempts that the flow decided, by
  policy, rule and action.  A first-try response no rule matches is
  returned by the runner's fast path, before the flow, and is not
  counted: counting it would put a cost on the hot path of every call.
  Every retry, poll, abort and matched accept is counted;
- ``referee.retries`` and ``referee.polls``, by policy and rule;
- ``referee.aborts``, by policy, rule and error (``CircuitOpen`` too, when
  an open breaker stopped a send; that send is no attempt);
- ``referee.budget_suppressed``: retries the retry budget refused, by
  policy and rule;
- ``referee.alerts.raised``: decisions that raised an alert, by policy,
  rule and kind (before de-duplication);
- ``referee.alerts``: an observable counter, by ``outcome`` (``sent`` or
  ``held``): what the alert dispatchers of this process let through or
  held back by de-duplication, summed over all of them;
- ``referee.breaker.opened``: breakers this process opened, by policy and
  breaker;
- ``referee.breaker.open``: an observable gauge, by policy and breaker: 1
  while a breaker this process opened, or found open on a send, is open;
  then 0.  In a fleet, a breaker another process opened shows only once
  a send here finds it open.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Final


try:
    from opentelemetry import metrics, trace
except ImportError as exc:  # pragma: no cover - tested in a subprocess
    raise ImportError(
        "referee.otel needs OpenTelemetry's API, which is not installed: "
        "pip install referee[otel]"
    ) from exc

from ._run import alerts as _alerts
from ._run import clock
from ._run.hooks import BreakerEvent, DecisionEvent, add_hook, remove_hook


if TYPE_CHECKING:
    from collections.abc import Iterable

    from opentelemetry.metrics import CallbackOptions, MeterProvider
    from opentelemetry.util.types import AttributeValue


__all__ = ["Instrumentation", "instrument"]

_SCOPE: Final = "referee"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("referee")
    except PackageNotFoundError:  # pragma: no cover - a source checkout
        return "0"


def _attributes(**values: AttributeValue | None) -> dict[str, AttributeValue]:
    # OpenTelemetry attributes cannot be None: a missing value is left out.
    return {k: v for k, v in values.items() if v is not None}


def _event_attributes(event: DecisionEvent) -> dict[str, AttributeValue]:
    return _attributes(
        **{
            "referee.policy": event.policy,
            "referee.rule": event.rule,
            "referee.action": event.action,
            "http.request.method": event.method,
            "url.full": event.url,
            "http.response.status_code": event.status,
            "referee.failure": event.failure,
            "referee.attempt": event.attempt,
            "referee.delay": event.delay,
            "referee.reason": event.reason,
            "referee.alert": event.alert,
            "referee.error": event.error,
            "referee.elapsed": event.elapsed,
            "referee.budget_suppressed": event.budget_suppressed,
            "referee.sent": event.sent,
        }
    )


class _AlertTotals:
    """
    The sent and held counts of every alert dispatcher in the process,
    including those already collected (counters never go down).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: weakref.WeakSet[_alerts.AlertDispatcher] = (
            weakref.WeakSet()
        )
        self._retired = [0, 0]

    def _retire(self, stats: _alerts.AlertStats) -> None:
        with self._lock:
            self._retired[0] += stats.sent
            self._retired[1] += stats.held

    def totals(self) -> tuple[int, int]:
        sent, held = 0, 0
        for dispatcher in list(_alerts._LIVE):  # noqa: SLF001 - our package
            with self._lock:
                if dispatcher not in self._seen:
                    self._seen.add(dispatcher)
                    # The stats object outlives its dispatcher in the
                    # finalizer: what it counted stays counted.
                    weakref.finalize(
                        dispatcher,
                        self._retire,
                        dispatcher._stats,  # noqa: SLF001 - our package
                    )
            stats = dispatcher.stats
            sent += stats.sent
            held += stats.held
        with self._lock:
            return sent + self._retired[0], held + self._retired[1]


class Instrumentation:
    """
    What :func:`instrument` registered; :meth:`uninstrument` takes it
    away.
    """

    def __init__(
        self, meter_provider: MeterProvider | None, *, span_events: bool
    ) -> None:
        provider = meter_provider or metrics.get_meter_provider()
        meter = provider.get_meter(_SCOPE, _version())
        self.span_events = span_events
        self.active = True
        self._attempts = meter.create_counter(
            "referee.attempts",
            unit="{attempt}",
            description="Attempts that went the referee flow decided.",
        )
        self._retries = meter.create_counter(
            "referee.retries",
            unit="{retry}",
            description="Retries decided, by rule.",
        )
        self._polls = meter.create_counter(
            "referee.polls", unit="{poll}", description="Polls, by rule."
        )
        self._aborts = meter.create_counter(
            "referee.aborts",
            unit="{call}",
            description="Calls aborted, by error.",
        )
        self._suppressed = meter.create_counter(
            "referee.budget_suppressed",
            unit="{retry}",
            description="Retries the retry budget refused.",
        )
        self._raised = meter.create_counter(
            "referee.alerts.raised",
            unit="{alert}",
            description="Alerts decisions raised, before de-duplication.",
        )
        self._opened = meter.create_counter(
            "referee.breaker.opened",
            unit="{breaker}",
            description="Breakers this process opened.",
        )
        self._totals = _AlertTotals()
        meter.create_observable_counter(
            "referee.alerts",
            callbacks=[self._observe_alerts],
            unit="{alert}",
            description="Alerts sent or held back by de-duplication.",
        )
        self._lock = threading.Lock()
        self._breakers: dict[tuple[str, str], float] = {}
        meter.create_observable_gauge(
            "referee.breaker.open",
            callbacks=[self._observe_breakers],
            unit="1",
            description="1 while the breaker is open, else 0.",
        )
        add_hook(self)

    def __repr__(self) -> str:
        return f"<Instrumentation active={self.active}>"

    def uninstrument(self) -> None:
        """
        Stop listening: no more span events or counts; the observable
        instruments report nothing from now on.  Safe to call twice.
        """
        self.active = False
        remove_hook(self)

    def __call__(self, event: DecisionEvent | BreakerEvent) -> None:
        if isinstance(event, BreakerEvent):
            self._breaker(event)
        else:
            self._decision(event)

    def _decision(self, event: DecisionEvent) -> None:
        if self.span_events:
            span = trace.get_current_span()
            if span.is_recording():
                span.add_event("referee.decision", _event_attributes(event))
        by_rule = _attributes(policy=event.policy, rule=event.rule)
        if event.sent:
            self._attempts.add(
                1,
                _attributes(
                    policy=event.policy, rule=event.rule, action=event.action
                ),
            )
        if event.action == "retry":
            self._retries.add(1, by_rule)
        elif event.action == "poll":
            self._polls.add(1, by_rule)
        elif event.action == "abort":
            self._aborts.add(
                1,
                _attributes(
                    policy=event.policy, rule=event.rule, error=event.error
                ),
            )
        if event.budget_suppressed:
            self._suppressed.add(1, by_rule)
        if event.alert is not None:
            self._raised.add(
                1,
                _attributes(
                    policy=event.policy, rule=event.rule, kind=event.alert
                ),
            )

    def _breaker(self, event: BreakerEvent) -> None:
        key = (event.policy, event.breaker)
        with self._lock:
            self._breakers[key] = max(
                self._breakers.get(key, 0.0), event.until
            )
        if event.opened:
            self._opened.add(
                1, {"policy": event.policy, "breaker": event.breaker}
            )

    def _observe_alerts(
        self, options: CallbackOptions
    ) -> Iterable[metrics.Observation]:
        if not self.active:
            return []
        sent, held = self._totals.totals()
        return [
            metrics.Observation(sent, {"outcome": "sent"}),
            metrics.Observation(held, {"outcome": "held"}),
        ]

    def _observe_breakers(
        self, options: CallbackOptions
    ) -> Iterable[metrics.Observation]:
        if not self.active:
            return []
        # The runners' clock: under referee.testing.no_sleep it runs ahead
        # of the wall clock by the sleeps skipped.
        now = clock.now()
        with self._lock:
            breakers = list(self._breakers.items())
        return [
            metrics.Observation(
                1 if until > now else 0, {"policy": policy, "breaker": name}
            )
            for (policy, name), until in breakers
        ]


def instrument(
    *,
    meter_provider: MeterProvider | None = None,
    span_events: bool = True,
) -> Instrumentation:
    """
    Report every decision referee's runners carry out to OpenTelemetry:
    a ``referee.decision`` event on the current span (unless *span_events*
    is false) and the ``referee.*`` metrics of this module's docstring.

    Args:
        meter_provider: Where the metrics go (default: the global one).
        span_events: Whether to add span events.

    Each call registers one more listener; :meth:`Instrumentation.
    uninstrument` removes it.

    .. versionadded:: 0.2.0
    """
    return Instrumentation(meter_provider, span_events=span_events)
