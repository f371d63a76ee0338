"""
Alerts: what a rule's ``alert:`` turns into once a runner has seen it, and
how it reaches people without ever slowing down or breaking the call.

Path of one alert::

    runner ──submit(notice)──▶ AlertDispatcher
                                 │ state.alert_gate(key, dedupe, now)
                                 │   held back?  count it, stop
                                 │ structlog event ``referee.alert``
                                 │   (on the caller's thread, always)
                                 ▼
                   one bounded queue + one daemon thread PER SINK
                   sink(alert)   raised?  log + count ``failed``
                                 slow?    log + count ``slow``
                                 full?    drop, count ``dropped``

At exit (:mod:`atexit`, registered once, with the first dispatcher) every
live dispatcher is flushed within a bound (its *exit_timeout*, else
``REFEREE_ALERT_EXIT_TIMEOUT``, else 5 s), and what was not delivered is
logged with its count (``referee.alerts_lost``).  The workers are daemon
threads, so a hung sink cannot hold the process: the bound is all it costs.

Why a queue and a thread per sink rather than one shared queue: a Python
call cannot be interrupted, so a sink that hangs (a webhook behind a dead
proxy) holds its thread for good.  With one worker per sink it backs up
only its own queue — whose overflow is counted as dropped *for that sink*
— while every other sink keeps delivering.  A call that runs longer than
*sink_timeout* is logged (``referee.alert_sink_slow``) and counted once,
while it is still running if anyone looks (each submit and flush does).

:meth:`AlertDispatcher.submit` never blocks on a sink and never raises; the
only outside call it makes is the state backend's ``alert_gate`` (an
exception there is counted and the alert goes out, un-deduplicated).

The webhook sink posts Slack-compatible JSON with the standard library.
Its URL carries a token, so it comes from the environment only
(``alerts: {webhook: "${SLACK_WEBHOOK_URL}"}``) and is never logged or
shown: logs and reprs name only its scheme and host.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import queue
import re
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeAlias
from urllib.parse import urlsplit

import attrs
import structlog

from referee._core.units import parse_duration


if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from referee._core.backend import StateBackend
    from referee._core.decisions import AlertNotice


__all__ = [
    "SEVERITIES",
    "Alert",
    "AlertDispatcher",
    "AlertSink",
    "AlertStats",
    "SinkStats",
    "WebhookError",
    "WebhookSink",
    "exit_timeout",
    "flush_alerts",
    "severity_rank",
    "webhook_from_config",
]

_log = structlog.get_logger("referee")

#: The severities, least severe first.
SEVERITIES: Final = ("info", "warning", "error", "critical")
_RANK: Final = {name: rank for rank, name in enumerate(SEVERITIES)}

#: How often at most a repeated complaint (a full queue, a failing gate)
#: is logged, in seconds.
_COMPLAINT_INTERVAL: Final = 1.0

#: The environment variable that bounds the wait for alerts at exit.
EXIT_TIMEOUT_ENV: Final = "REFEREE_ALERT_EXIT_TIMEOUT"
#: The bound when neither it nor a dispatcher's *exit_timeout* says.
DEFAULT_EXIT_TIMEOUT: Final = 5.0


def severity_rank(severity: str) -> int:
    """
    The order of *severity*: info < warning < error < critical.  An unknown
    word ranks as ``warning``.
    """
    return _RANK.get(severity, 1)


@attrs.frozen
class Alert:
    """
    One alert, as the sinks receive it.

    Attributes:
        kind: What kind of trouble (``topup``, ``auth``, …).
        severity: ``info``, ``warning``, ``error`` or ``critical``.
        policy: The name of the policy whose rule raised it.
        rule: The rule's id (None when no rule is to blame).
        message: The rendered message.
        status: The response's status, or None after a transport failure.
        failure: The transport failure (``connect``, ``timeout``, ``read``,
            ``protocol``), or None after a response.
        key: The de-duplication key.
        occurred_at: When, in Unix seconds.
        suppressed: How many alerts with this key were held back since the
            last one that went out.

    .. versionadded:: 0.2.0
    """

    kind: str
    severity: str
    policy: str
    rule: str | None
    message: str
    status: int | None
    failure: str | None
    key: str
    occurred_at: float
    suppressed: int = 0

    @classmethod
    def from_notice(
        cls,
        notice: AlertNotice,
        *,
        policy: str,
        rule: str | None,
        status: int | None,
        failure: str | None,
        now: float,
        suppressed: int = 0,
    ) -> Alert:
        """
        The alert a rule's *notice* becomes.
        """
        return cls(
            kind=notice.kind,
            severity=notice.severity,
            policy=policy,
            rule=rule,
            message=notice.message,
            status=status,
            failure=failure,
            key=notice.key,
            occurred_at=now,
            suppressed=suppressed,
        )

    def as_dict(self) -> dict[str, Any]:
        """
        The fields, JSON-ready.
        """
        return attrs.asdict(self)


#: A sink: any callable taking one :class:`Alert`; what it returns is
#: ignored, what it raises is logged and counted.
AlertSink: TypeAlias = Callable[[Alert], object]


@attrs.define
class SinkStats:
    """
    What happened to the alerts handed to one sink.

    Attributes:
        sink: The sink's repr.
        delivered: Calls that returned.
        failed: Calls that raised.
        dropped: Alerts lost because the sink's queue was full (or the
            dispatcher was closed).
        slow: Calls that ran longer than *sink_timeout*.
        skipped: Alerts below the sink's ``min_severity``.
    """

    sink: str
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    slow: int = 0
    skipped: int = 0


@attrs.define
class AlertStats:
    """
    Counters of an :class:`AlertDispatcher`; :attr:`AlertDispatcher.stats`
    hands out a copy.

    Attributes:
        submitted: Notices handed to :meth:`~AlertDispatcher.submit`.
        held: Notices held back by de-duplication.
        sent: Alerts that passed the gate (each logged as
            ``referee.alert``).
        delivered: Sink calls that returned, over all sinks.
        failed: Sink calls that raised, over all sinks.
        dropped: Alerts lost to full queues, over all sinks.
        slow: Sink calls that ran longer than *sink_timeout*.
        gate_errors: Times the state backend's ``alert_gate`` raised (the
            alert went out anyway).
        errors: Unexpected errors inside ``submit`` (swallowed).
        sinks: The same, per sink, in the order given.
    """

    submitted: int = 0
    held: int = 0
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    slow: int = 0
    gate_errors: int = 0
    errors: int = 0
    sinks: tuple[SinkStats, ...] = ()


_STOP: Final = object()


class _Worker:
    """
    One sink, its queue and its thread (started on first use).
    """

    def __init__(self, index: int, sink: AlertSink, queue_size: int) -> None:
        self.index = index
        self.sink = sink
        self.name = _safe_repr(sink)
        min_severity = getattr(sink, "min_severity", None)
        self.min_rank = (
            severity_rank(min_severity) if isinstance(min_severity, str) else 0
        )
        self.queue: queue.Queue[object] = queue.Queue(queue_size)
        self.thread: threading.Thread | None = None
        self.stats = SinkStats(self.name)
        # When the running call started (monotonic), and whether it has
        # already been counted as slow.
        self.busy_since: float | None = None
        self.slow_noted = False
        # Alerts put on the queue, and alerts settled (delivered, failed or
        # dropped at close), since the start.  The queue is FIFO, so the
        # n-th alert handed over is settled once settled >= n.
        self.handed = 0
        self.settled = 0


@attrs.define
class _Watch:
    """
    One flush under way: how many alerts each worker had been handed when
    it began (what it answers for), and how many of those were lost.
    """

    targets: list[int]
    lost: int


def _safe_repr(obj: object) -> str:
    try:
        return repr(obj)
    except Exception:  # noqa: BLE001 — a broken __repr__ must not break us
        return f"<{type(obj).__name__}>"


class _Throttle:
    """
    Says yes at most once per *interval* seconds per topic.
    """

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def ready(self, topic: str) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(topic)
            if last is not None and now - last < self._interval:
                return False
            self._last[topic] = now
            return True


class AlertDispatcher:
    """
    De-duplicates alerts through a state backend, logs each one, and hands
    it to every sink off the caller's thread.

    Args:
        state: The backend whose ``alert_gate`` de-duplicates.
        sinks: Callables taking one :class:`Alert`.  A sink with a
            ``min_severity`` attribute (as :class:`WebhookSink`) only
            receives alerts at least that severe.
        webhook: A webhook sink, appended to *sinks*.
        queue_size: How many alerts each sink's queue holds; more are
            dropped and counted.
        sink_timeout: A sink call running longer than this is logged and
            counted as slow (it cannot be interrupted; see the module's
            docstring).
        exit_timeout: How long, at most, the process waits at exit for
            this dispatcher's alerts to be delivered; None: the
            ``REFEREE_ALERT_EXIT_TIMEOUT`` environment variable, or 5 s.
            Also settable afterwards, as the attribute.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        state: StateBackend,
        sinks: Iterable[AlertSink] = (),
        *,
        webhook: WebhookSink | None = None,
        queue_size: int = 1000,
        sink_timeout: float = 5.0,
        exit_timeout: float | None = None,
    ) -> None:
        if queue_size < 1:
            raise ValueError(
                f"queue_size must be at least 1, got {queue_size}"
            )
        all_sinks: list[AlertSink] = list(sinks)
        if webhook is not None:
            all_sinks.append(webhook)
        self._state = state
        self._sink_timeout = sink_timeout
        self.exit_timeout = exit_timeout
        self._workers = tuple(
            _Worker(i, s, queue_size) for i, s in enumerate(all_sinks)
        )
        self._stats = AlertStats()
        self._lock = threading.Lock()
        # Flushes under way, and the alerts lost (a sink raised, a queue
        # was full, close dropped them) that no flush has answered for yet.
        self._watches: list[_Watch] = []
        self._unreported = 0
        self._idle = threading.Condition(self._lock)
        self._closed = False
        self._throttle = _Throttle(_COMPLAINT_INTERVAL)
        self._queue_size = queue_size
        _LIVE.add(self)
        _hook_exit()

    def _after_fork(self) -> None:
        """
        Start afresh in a forked child: the parent's worker threads do not
        exist here and its locks may have been held at the fork.  What the
        parent had queued is the parent's to deliver.
        """
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._watches = []
        self._unreported = 0
        self._throttle = _Throttle(_COMPLAINT_INTERVAL)
        for worker in self._workers:
            worker.queue = queue.Queue(self._queue_size)
            worker.thread = None
            worker.busy_since = None
            worker.handed = worker.settled = 0

    def __repr__(self) -> str:
        return f"<AlertDispatcher sinks={[w.name for w in self._workers]}>"

    @property
    def closed(self) -> bool:
        """
        Whether :meth:`close` was called.
        """
        return self._closed

    @property
    def stats(self) -> AlertStats:
        """
        A copy of the counters, taken now.
        """
        with self._lock:
            return attrs.evolve(
                self._stats,
                sinks=tuple(attrs.evolve(w.stats) for w in self._workers),
            )

    def submit(
        self,
        notice: AlertNotice,
        *,
        policy: str,
        rule: str | None,
        status: int | None = None,
        failure: str | None = None,
        now: float,
        gate: tuple[bool, int] | None = None,
    ) -> None:
        """
        Raise the alert *notice* asks for, unless de-duplication holds it
        back.  Returns at once; never raises.

        *gate* is the backend's de-duplication answer when the caller
        asked it already (the async runner awaits it); by default it is
        asked here.
        """
        try:
            self._submit(notice, policy, rule, status, failure, now, gate)
        except Exception as exc:  # noqa: BLE001 — alerts never break a call
            with self._lock:
                self._stats.errors += 1
            # Not even a broken logger may break the call.
            with contextlib.suppress(Exception):
                _log.error("referee.alert_error", error=repr(exc))

    def _submit(
        self,
        notice: AlertNotice,
        policy: str,
        rule: str | None,
        status: int | None,
        failure: str | None,
        now: float,
        gate: tuple[bool, int] | None,
    ) -> None:
        with self._lock:
            self._stats.submitted += 1
        if gate is None:
            try:
                gate = self._state.alert_gate(notice.key, notice.dedupe, now)
            except Exception as exc:  # noqa: BLE001 — the backend's fault: send
                self.gate_failed(policy, notice.key, exc)
                gate = (True, 0)
        send, held = gate
        if not send:
            with self._lock:
                self._stats.held += 1
            return
        alert = Alert.from_notice(
            notice,
            policy=policy,
            rule=rule,
            status=status,
            failure=failure,
            now=now,
            suppressed=held,
        )
        with self._lock:
            self._stats.sent += 1
        level = alert.severity if alert.severity in _RANK else "warning"
        getattr(_log, level)(
            "referee.alert",
            kind=alert.kind,
            severity=alert.severity,
            policy=alert.policy,
            rule=alert.rule,
            message=alert.message,
            status=alert.status,
            failure=alert.failure,
            key=alert.key,
            suppressed=alert.suppressed,
        )
        rank = severity_rank(alert.severity)
        for worker in self._workers:
            if rank < worker.min_rank:
                with self._lock:
                    worker.stats.skipped += 1
                continue
            self._enqueue(worker, alert)

    def gate_failed(self, policy: str, key: str, exc: BaseException) -> None:
        """
        Count and log (at most once per interval) a de-duplication gate
        that failed: the alert goes out, as if it were the first.
        """
        with self._lock:
            self._stats.gate_errors += 1
        if self._throttle.ready("gate"):
            _log.warning(
                "referee.alert_gate_failed",
                policy=policy,
                key=key,
                error=repr(exc),
            )

    def _enqueue(self, worker: _Worker, alert: Alert) -> None:
        self._check_slow(worker)
        with self._lock:
            if not self._closed:
                if worker.thread is None:
                    worker.thread = threading.Thread(
                        target=self._run,
                        args=(worker,),
                        name=f"referee-alerts:{worker.name}",
                        daemon=True,
                    )
                    worker.thread.start()
                try:
                    worker.queue.put_nowait((worker.handed + 1, alert))
                except queue.Full:
                    pass
                else:
                    worker.handed += 1
                    return
            worker.stats.dropped += 1
            self._stats.dropped += 1
            self._lost(worker, None)
            dropped = worker.stats.dropped
        if self._throttle.ready(f"drop:{id(worker)}"):
            _log.warning(
                "referee.alert_dropped",
                sink=worker.name,
                reason="closed" if self._closed else "queue full",
                dropped=dropped,
                kind=alert.kind,
                key=alert.key,
            )

    def _run(self, worker: _Worker) -> None:
        while True:
            item = worker.queue.get()
            if item is _STOP:
                return
            assert isinstance(item, tuple)  # noqa: S101 — for mypy
            number, item = item
            assert isinstance(item, Alert)  # noqa: S101 — for mypy
            started = time.monotonic()
            with self._lock:
                worker.busy_since, worker.slow_noted = started, False
            try:
                worker.sink(item)
            except Exception as exc:  # noqa: BLE001 — a sink's fault is logged
                with self._lock:
                    worker.stats.failed += 1
                    self._stats.failed += 1
                    self._lost(worker, number)
                _log.error(
                    "referee.alert_sink_failed",
                    sink=worker.name,
                    error=repr(exc),
                    kind=item.kind,
                    key=item.key,
                )
            else:
                with self._lock:
                    worker.stats.delivered += 1
                    self._stats.delivered += 1
            self._check_slow(worker, finished=True)
            with self._lock:
                worker.busy_since = None
                worker.settled = number
                self._idle.notify_all()

    def _lost(self, worker: _Worker, number: int | None) -> None:
        """
        Note an alert that will not be delivered (the lock held): every
        flush under way that answers for it (it was handed over before the
        flush began) says so; else the next flush does.  *number* is its
        place in *worker*'s queue; None for one that never got there.
        """
        answered = False
        if number is not None:
            for watch in self._watches:
                if number <= watch.targets[worker.index]:
                    watch.lost += 1
                    answered = True
        if not answered:
            self._unreported += 1

    def _check_slow(self, worker: _Worker, *, finished: bool = False) -> None:
        """
        Count and log a sink call that has run longer than *sink_timeout*,
        once per call, whether it has returned or not.
        """
        with self._lock:
            since = worker.busy_since
            if since is None or worker.slow_noted:
                return
            elapsed = time.monotonic() - since
            if elapsed <= self._sink_timeout:
                return
            worker.slow_noted = True
            worker.stats.slow += 1
            self._stats.slow += 1
        _log.warning(
            "referee.alert_sink_slow",
            sink=worker.name,
            elapsed=round(elapsed, 3),
            timeout=self._sink_timeout,
            running=not finished,
        )

    def flush(self, timeout: float = 5.0) -> bool:
        """
        Wait up to *timeout* seconds until every alert submitted so far
        has been through its sinks; whether they all were *delivered*.

        False when any is still queued or running at the timeout, or when
        any was lost: a sink raised (a webhook that failed), a queue was
        full, or :meth:`close` dropped it.  Each loss is reported by the
        flushes under way when it happens, or else by the next flush: a
        later flush is True again once everything after it went out.
        """
        left, lost = self.drain(timeout)
        return not left and not lost

    def drain(self, timeout: float) -> tuple[int, int]:
        """
        :meth:`flush`, counted: how many alerts were still queued or
        running at the timeout, and how many were lost.
        """
        for worker in self._workers:
            self._check_slow(worker)
        deadline = time.monotonic() + timeout
        with self._idle:
            watch = _Watch(
                targets=[w.handed for w in self._workers],
                # Losses a flush under way answers for are older than this
                # one, so this one answers for them too.
                lost=self._unreported
                + max((w.lost for w in self._watches), default=0),
            )
            self._unreported = 0
            self._watches.append(watch)
            try:
                while True:
                    left = sum(
                        max(0, target - w.settled)
                        for target, w in zip(
                            watch.targets, self._workers, strict=True
                        )
                    )
                    remaining = deadline - time.monotonic()
                    if not left or remaining <= 0:
                        return left, watch.lost
                    self._idle.wait(remaining)
            finally:
                self._watches.remove(watch)

    def close(self, timeout: float = 5.0) -> bool:
        """
        Deliver what is queued (waiting up to *timeout* seconds), then stop
        the workers; later alerts are still logged but reach no sink.
        Whether everything queued was delivered.
        """
        drained = self.flush(timeout)
        with self._lock:
            self._closed = True
            for worker in self._workers:
                # A hung sink's leftovers are lost: count them.
                while True:
                    try:
                        item = worker.queue.get_nowait()
                    except queue.Empty:
                        break
                    if not isinstance(item, tuple):  # closed before: _STOP
                        continue
                    worker.stats.dropped += 1
                    self._stats.dropped += 1
                    self._lost(worker, item[0])
                    worker.settled = item[0]
                if worker.thread is not None:
                    worker.queue.put_nowait(_STOP)
            self._idle.notify_all()
        return drained


#: Every dispatcher alive, to reset in a forked child (a fleet of worker
#: processes is often forked from one that has already loaded its policy).
_LIVE: Final[weakref.WeakSet[AlertDispatcher]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _UNSET_LOCK, _EXIT_LOCK  # noqa: PLW0603 — a lock held at the fork is dead
    _UNSET_LOCK = threading.Lock()
    _EXIT_LOCK = threading.Lock()
    for dispatcher in list(_LIVE):
        dispatcher._after_fork()  # noqa: SLF001


if hasattr(os, "register_at_fork"):  # POSIX only
    os.register_at_fork(after_in_child=_after_fork_in_child)


_EXIT_LOCK = threading.Lock()
_exit_hooked = False


def _hook_exit() -> None:
    """
    Register the exit flush, once per process (a forked child inherits
    the registration).
    """
    global _exit_hooked  # noqa: PLW0603 — once per process
    with _EXIT_LOCK:
        if not _exit_hooked:
            atexit.register(_flush_at_exit)
            _exit_hooked = True


def exit_timeout() -> float:
    """
    The bound on the wait for alerts at exit, from
    ``REFEREE_ALERT_EXIT_TIMEOUT`` (seconds, or a duration such as
    ``"500ms"``), else 5 s.  A value that is not a duration is logged
    (``referee.alert_exit_timeout_invalid``) and the default holds.
    """
    raw = os.environ.get(EXIT_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_EXIT_TIMEOUT
    try:
        return parse_duration(raw)
    except ValueError as exc:
        _log.warning(
            "referee.alert_exit_timeout_invalid",
            variable=EXIT_TIMEOUT_ENV,
            reason=str(exc),
            timeout=DEFAULT_EXIT_TIMEOUT,
        )
        return DEFAULT_EXIT_TIMEOUT


def flush_alerts(timeout: float | None = None) -> bool:
    """
    Deliver the alerts every loaded policy has queued, waiting up to
    *timeout* seconds in all; whether every one was delivered.  What was
    not (still queued or running at the bound, or lost to a failing sink)
    is logged as ``referee.alerts_lost`` with its count.

    This runs by itself at a normal interpreter exit.  Call it in a
    shutdown hook where the process ends otherwise (a SIGTERM handler
    that does not raise :exc:`SystemExit`, ``os._exit``, a
    :mod:`multiprocessing` worker).

    Args:
        timeout: The bound; None: each dispatcher's *exit_timeout*, else
            ``REFEREE_ALERT_EXIT_TIMEOUT``, else 5 s.

    .. versionadded:: 0.3.0
    """
    start = time.monotonic()
    default = exit_timeout() if timeout is None else timeout
    ok = True
    # The workers of all dispatchers run at once: one deadline for all.
    for dispatcher in list(_LIVE):
        if dispatcher.closed:  # whoever closed it had its answer
            continue
        bound = default
        if timeout is None and dispatcher.exit_timeout is not None:
            bound = dispatcher.exit_timeout
        left, lost = dispatcher.drain(
            max(0.0, start + bound - time.monotonic())
        )
        if left or lost:
            ok = False
            _log.error(
                "referee.alerts_lost",
                lost=left + lost,
                undelivered=left,
                failed=lost,
                timeout=bound,
                sinks=[w.name for w in dispatcher._workers],  # noqa: SLF001
            )
    return ok


def _flush_at_exit() -> None:
    # At exit nothing may raise: the process is ending anyway.
    with contextlib.suppress(Exception):
        flush_alerts()


class WebhookError(Exception):
    """
    A webhook did not take an alert.  The message names the webhook by its
    scheme and host only.
    """


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A webhook that redirects is misconfigured; following it would
    # re-send (or, for a POST, silently drop) the alert elsewhere.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER: Final = urllib.request.build_opener(_NoRedirect)


class WebhookSink:
    """
    A sink that POSTs each alert as Slack-compatible JSON::

        {"text": "[critical] enrow: credits exhausted", "referee": {…}}

    (``referee`` holds the :class:`Alert`'s fields) with the standard
    library.  Raises :class:`WebhookError` on any answer but 2xx and on
    transport failures; the dispatcher logs and counts it.

    The URL is a secret (Slack's carry a token): the sink's repr, its
    errors and the logs show only ``scheme://host``.

    Args:
        url: An ``http`` or ``https`` URL.
        timeout: Seconds to wait for the webhook.
        min_severity: Alerts less severe are not posted.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self, url: str, *, timeout: float = 5.0, min_severity: str = "warning"
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            # Never echo the value: it may be the secret itself.
            raise ValueError(
                "the webhook URL must be an http:// or https:// URL with a "
                f"host (got one with scheme {parts.scheme!r})"
            )
        if min_severity not in _RANK:
            raise ValueError(
                f"min_severity must be one of {', '.join(SEVERITIES)}, "
                f"got {min_severity!r}"
            )
        self._url = url
        self.timeout = timeout
        self.min_severity = min_severity
        host = parts.hostname
        if ":" in host:  # an IPv6 literal
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        #: ``scheme://host[:port]``: all of the URL that may be shown.
        self.origin = f"{parts.scheme}://{host}{port}"

    def __repr__(self) -> str:
        return f"WebhookSink({self.origin!r})"

    def payload(self, alert: Alert) -> dict[str, Any]:
        """
        The JSON object posted for *alert*.
        """
        return {
            "text": f"[{alert.severity}] {alert.policy}: {alert.message}",
            "referee": alert.as_dict(),
        }

    def __call__(self, alert: Alert) -> None:
        if severity_rank(alert.severity) < _RANK[self.min_severity]:
            return
        request = urllib.request.Request(  # noqa: S310 — scheme checked
            self._url,
            data=json.dumps(self.payload(alert)).encode(),
            headers={
                "Content-Type": "application/json",
                "User-Agent": "referee",
            },
            method="POST",
        )
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                response.read(64 * 1024)
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
        except urllib.error.URLError as exc:
            reason = exc.reason
            raise WebhookError(
                f"webhook {self.origin} unreachable: {_describe(reason)}"
            ) from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise WebhookError(
                f"webhook {self.origin} failed: {_describe(exc)}"
            ) from None
        if not 200 <= status < 300:
            raise WebhookError(f"webhook {self.origin} answered {status}")


def _describe(reason: object) -> str:
    # OSError texts (errno words) never carry the URL; http.client's and
    # urllib's ValueErrors may (``InvalidURL``, ``unknown url type``), so
    # only their class is shown.
    if isinstance(reason, OSError):
        return f"{type(reason).__name__}: {reason}"
    return type(reason).__name__


_ENV_REF: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_UNSET_WARNED: set[str] = set()
_UNSET_LOCK = threading.Lock()


def webhook_from_config(
    url_template: str,
    *,
    timeout: float = 5.0,
    min_severity: str = "warning",
    environ: Mapping[str, str] | None = None,
) -> WebhookSink | None:
    """
    The webhook sink a policy file's ``alerts.webhook`` names.

    The value must be exactly one environment variable reference, as
    ``${SLACK_WEBHOOK_URL}``: a webhook URL carries a token and never
    belongs in a policy file.  When the variable is unset or empty, there
    is no webhook: None, and a ``referee.alert_webhook_unset`` warning
    (once per variable and process).

    Raises:
        ValueError: The value is not a single ``${NAME}`` reference, or
            the variable does not hold an http(s) URL.  The messages never
            show the value.
    """
    match = _ENV_REF.fullmatch(url_template.strip())
    if match is None:
        if "${" in url_template:
            what = "a template mixing text and variables"
        elif "://" in url_template:
            what = "a literal URL"
        else:
            what = "something else"
        raise ValueError(
            "the webhook URL must come from an environment variable, "
            'written as "${SLACK_WEBHOOK_URL}" (the URL carries a secret '
            f"token and never belongs in a policy file); found {what}"
        )
    name = match.group(1)
    env = os.environ if environ is None else environ
    url = env.get(name, "").strip()
    if not url:
        with _UNSET_LOCK:
            first = name not in _UNSET_WARNED
            _UNSET_WARNED.add(name)
        if first:
            _log.warning(
                "referee.alert_webhook_unset",
                variable=name,
                reason=f"${name} is not set: alerts go to no webhook",
            )
        return None
    try:
        return WebhookSink(url, timeout=timeout, min_severity=min_severity)
    except ValueError as exc:
        raise ValueError(f"${name}: {exc}") from None
