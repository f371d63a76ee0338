"""
``referee demo``: a real client, a real policy, a fake Enrow on loopback.

The demo starts a :class:`~referee.testing.FakeEnrow`, then runs a workload
of email-finder and email-verifier calls through an ``httpx.Client`` whose
transport is a :class:`~referee.httpx.PolicyTransport`, from a small thread
pool, so that the fake's 10 POST/s limit is hit.  Each call is what an
Enrow client writes::

    started = client.post(path, json={...})
    found = client.get(path, params={"id": started.json()["id"]})

and nothing more: the policy's ``search-ongoing`` rule polls the GET until
the search is done, ``rate-limited`` retries the 429s, ``out-of-credits``
turns the final 402s into :class:`~referee.InsufficientCredits` with a
top-up alert.  A progress line on stderr follows the run; a summary on
stdout tells what the policy did.

The counts come from each call's trail (the outcome the transport attaches
when asked for responses instead of exceptions, or the error's trail);
the ``referee.decision`` events are captured for the progress line and
kept off the terminal, and structlog's configuration is restored after.
"""

from __future__ import annotations

import json
import math
import random
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, TextIO

import attrs
import structlog

from referee._core.errors import Aborted, CircuitOpen
from referee._core.units import format_duration, format_number
from referee._files.load import bundled_names, load_policy, load_policy_text

from .fake_enrow import COSTS, FINDER, VERIFIER, FakeEnrow


if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, MutableMapping

    import httpx

    from referee._core.compile import Policy
    from referee._core.decisions import AlertNotice
    from referee._core.state import CallOutcome


__all__ = ["DemoReport", "default_credits", "demo_policy", "run_demo"]

#: The first poll and retry delays the demo puts in place of the policy's,
#: so a run takes seconds: the enrow policy polls from 2 s and backs off
#: from 1 s.
DEMO_POLL_INITIAL: Final = 0.2
DEMO_BACKOFF_INITIAL: Final = 0.2

#: The share of the fake's requests that fail with a 500 or a 503.
DEMO_FAULT_RATE: Final = 0.03

#: How long a search stays ``ongoing`` on the fake, in seconds.
DEMO_ONGOING: Final = (0.05, 0.3)

_FIRST: Final = (
    "Ada",
    "Alan",
    "Grace",
    "Edsger",
    "Barbara",
    "Donald",
    "Margaret",
    "Ken",
    "Frances",
    "Radia",
    "Hedy",
    "Linus",
)
_LAST: Final = (
    "Lovelace",
    "Turing",
    "Hopper",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Hamilton",
    "Thompson",
    "Allen",
    "Perlman",
    "Lamarr",
    "Torvalds",
)
_DOMAINS: Final = (
    "acme.io",
    "initech.com",
    "globex.net",
    "umbrella.org",
    "hooli.xyz",
    "stark.dev",
)


@attrs.frozen
class _Job:
    n: int
    path: str
    payload: dict[str, Any]

    @property
    def cost(self) -> float:
        return COSTS[self.path]


def _workload(calls: int, rng: random.Random) -> list[_Job]:
    """
    *calls* jobs: about three finder searches for two verifications.
    """
    jobs = []
    for n in range(calls):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        domain = rng.choice(_DOMAINS)
        if rng.random() < 0.6:
            payload: dict[str, Any] = {
                "fullname": f"{first} {last}",
                "company_domain": domain,
            }
            jobs.append(_Job(n, FINDER, payload))
        else:
            email = f"{first[0]}.{last}@{domain}".lower()
            jobs.append(_Job(n, VERIFIER, {"email": email}))
    return jobs


def default_credits(jobs: list[_Job]) -> float:
    """
    A balance that pays for all but the last fifth of *jobs* (at least
    three), so the account runs out near the end of the run.
    """
    over = min(len(jobs), max(3, math.ceil(len(jobs) / 5)))
    return sum(job.cost for job in jobs[: len(jobs) - over])


@attrs.define
class DemoReport:
    """
    What a demo run did; the summary is printed from it.

    Attributes:
        calls: The calls run (each a POST and, if it succeeded, a GET).
        ok: Calls that ended with a result.
        aborted: Calls that ended with an error, by class name.
        abort_rules: Aborts by ``(error class, which rule)``.
        results: Calls by ``(endpoint, qualification)``, or ``(endpoint,
            "aborted")``.
        sent: Requests sent, by method.
        retries: Retries by rule.
        polls: Polls by rule.
        alerts: Alerts raised by the decisions, by ``(kind, severity,
            key)``.
        alert_notes: The first message and the dedupe window of each
            alert key.
        events: structlog events captured, by name.
        elapsed: Wall time in seconds.
    """

    calls: int = 0
    ok: int = 0
    aborted: Counter[str] = attrs.Factory(Counter)
    abort_rules: Counter[tuple[str, str]] = attrs.Factory(Counter)
    results: Counter[tuple[str, str]] = attrs.Factory(Counter)
    sent: Counter[str] = attrs.Factory(Counter)
    retries: Counter[str] = attrs.Factory(Counter)
    polls: Counter[str] = attrs.Factory(Counter)
    alerts: Counter[tuple[str, str, str]] = attrs.Factory(Counter)
    alert_notes: dict[str, tuple[str, float | None]] = attrs.Factory(dict)
    events: Counter[str] = attrs.Factory(Counter)
    elapsed: float = 0.0


class _Tally:
    """
    The report under construction, shared by the workers, and the live
    counts of the progress line.
    """

    def __init__(self, calls: int) -> None:
        self.report = DemoReport(calls=calls)
        self.lock = threading.Lock()
        self.done = 0
        self.live_retries = 0
        self.live_polls = 0

    def processor(
        self, _logger: Any, _name: str, event: MutableMapping[str, Any]
    ) -> Any:
        """
        A structlog processor: count the event, then drop it.
        """
        with self.lock:
            self.report.events[str(event.get("event"))] += 1
            action = event.get("action")
            if action == "retry":
                self.live_retries += 1
            elif action == "poll":
                self.live_polls += 1
        raise structlog.DropEvent

    def trail(
        self, method: str, records: tuple[Any, ...], least: int = 1
    ) -> None:
        """
        Count the sends, retries and polls of one HTTP call (at least
        *least* sends: 0 for a call an open breaker stopped).
        """
        with self.lock:
            self.report.sent[method] += max(least, len(records))
            for record in records:
                if record.action == "retry":
                    self.report.retries[record.rule_id] += 1
                elif record.action == "poll":
                    self.report.polls[record.rule_id] += 1

    def abort(self, path: str, error: str, rule: str | None) -> None:
        with self.lock:
            self.done += 1
            self.report.aborted[error] += 1
            self.report.abort_rules[error, _why(rule)] += 1
            self.report.results[path, "aborted"] += 1

    def alert(self, notice: AlertNotice) -> None:
        with self.lock:
            r = self.report
            r.alerts[notice.kind, notice.severity, notice.key] += 1
            r.alert_notes.setdefault(
                notice.key, (notice.message, notice.dedupe)
            )

    def result(self, path: str, qualification: str) -> None:
        with self.lock:
            self.done += 1
            self.report.ok += 1
            self.report.results[path, qualification] += 1

    def line(self, elapsed: float) -> str:
        with self.lock:
            aborts = sum(self.report.aborted.values())
            return (
                f"referee demo: {self.done}/{self.report.calls} calls, "
                f"{_plural(self.live_retries, 'retry', 'retries')}, "
                f"{_plural(self.live_polls, 'poll')}, "
                f"{_plural(aborts, 'abort')}, {format_duration(elapsed)}"
            )


@contextmanager
def _captured_events(tally: _Tally) -> Iterator[None]:
    """
    Send every structlog event to *tally* (and nowhere else) within the
    block; restore structlog's configuration after it.
    """
    config = structlog.get_config()
    structlog.configure(
        processors=[tally.processor],
        wrapper_class=structlog.make_filtering_bound_logger(0),
    )
    try:
        yield
    finally:
        structlog.configure(
            processors=config["processors"],
            wrapper_class=config["wrapper_class"],
        )


def demo_policy(name: str, *, real_timings: bool) -> tuple[Policy, str]:
    """
    The policy the demo runs, and how the summary names it: *name* itself
    with *real_timings*, else a policy that extends it with shorter poll
    and backoff delays.
    """
    base = load_policy(name)  # its own errors, named after it
    if real_timings:
        return base, f"{name} policy"
    extends = name if name in bundled_names() else _absolute(name)
    text = (
        "policy: demo\n"
        f"extends: {json.dumps(extends)}\n"
        "defaults:\n"
        f"  retry: {{backoff: {{initial: {DEMO_BACKOFF_INITIAL}}}}}\n"
        f"  poll: {{initial: {DEMO_POLL_INITIAL}}}\n"
    )
    label = (
        f"{name} policy with demo timings (polls from "
        f"{format_duration(DEMO_POLL_INITIAL)}, retry backoff from "
        f"{format_duration(DEMO_BACKOFF_INITIAL)})"
    )
    return load_policy_text(text, source=f"<demo timings over {name}>"), label


def _absolute(path: str) -> str:
    from pathlib import Path

    return str(Path(path).resolve())


def _outcome(response: httpx.Response) -> CallOutcome | None:
    from referee.httpx import OUTCOME_EXTENSION

    outcome: CallOutcome | None = response.extensions.get(OUTCOME_EXTENSION)
    return outcome


def _call(client: httpx.Client, job: _Job, tally: _Tally) -> None:
    """
    One Enrow call, as a client writes it: start the search, then ask for
    its result once (the policy polls until the search is done).
    """
    started = _step(
        tally, job, "POST", lambda: client.post(job.path, json=job.payload)
    )
    if started is None:
        return
    params = {"id": started["id"]}
    done = _step(
        tally, job, "GET", lambda: client.get(job.path, params=params)
    )
    if done is not None:
        tally.result(job.path, str(done["qualification"]))


def _step(
    tally: _Tally,
    job: _Job,
    method: str,
    send: Callable[[], httpx.Response],
) -> dict[str, Any] | None:
    """
    Send one request; its JSON body when it holds what the call needs next
    (the search's ``id``, or its ``qualification``), else None: the call
    is counted as aborted.
    """
    needs = "id" if method == "POST" else "qualification"
    import httpx

    try:
        response = send()
    except Aborted as exc:
        tally.trail(
            method, exc.trail, 0 if isinstance(exc, CircuitOpen) else 1
        )
        tally.abort(job.path, type(exc).__name__, exc.rule_id)
        return None
    except httpx.HTTPError as exc:
        tally.trail(method, ())
        tally.abort(job.path, type(exc).__name__, _PASSED)
        return None
    outcome = _outcome(response)
    tally.trail(method, outcome.trail if outcome else ())
    if outcome is not None and outcome.decision.alert is not None:
        tally.alert(outcome.decision.alert)
    if outcome is not None and outcome.error is not None:
        error = outcome.error
        tally.abort(job.path, type(error).__name__, error.rule_id)
        return None
    try:
        body = response.json()
    except ValueError:
        body = None
    if (
        response.status_code >= 300
        or not isinstance(body, dict)
        or needs not in body
    ):
        # The policy let through an answer that holds no result: the
        # caller is left to deal with it.
        status = response.status_code
        tally.abort(job.path, f"HTTP {status}", _PASSED)
        return None
    return body


def _progress(
    tally: _Tally, started: float, err: TextIO, stop: threading.Event
) -> None:
    width = 0
    while True:
        stopping = stop.wait(0.1)
        line = tally.line(time.monotonic() - started)
        err.write("\r" + line.ljust(width))
        width = len(line)
        err.flush()
        if stopping:
            err.write("\n")
            err.flush()
            return


def run_demo(
    *,
    policy: str = "enrow",
    calls: int = 40,
    seed: int = 1,
    credits: float | None = None,  # noqa: A002 - Enrow's word
    workers: int = 8,
    progress: bool = True,
    real_timings: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """
    Run the demo and print its summary; return the exit code.

    Args:
        policy: The policy to run (a bundled name or a path).
        calls: How many finder and verifier calls to make.
        seed: Seeds the workload, the fake and the jitter.
        credits: The fake account's balance; by default, enough for all
            but the last fifth of the calls.
        workers: The threads making calls.
        progress: Show the progress line (only on a terminal).
        real_timings: Run the policy's own delays instead of the demo's.
        out: Where the summary goes (default: stdout).
        err: Where the progress line and errors go (default: stderr).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        import httpx

        from referee.httpx import PolicyTransport
    except ImportError:
        err.write(
            "referee demo needs httpx, which is not installed: "
            "pip install referee[httpx]\n"
        )
        return 1
    compiled, label = demo_policy(policy, real_timings=real_timings)
    rng = random.Random(seed)
    jobs = _workload(calls, rng)
    balance = default_credits(jobs) if credits is None else credits
    tally = _Tally(calls)
    fake = FakeEnrow(
        credits=balance,
        seed=seed,
        ongoing=DEMO_ONGOING,
        fault_rate=DEMO_FAULT_RATE,
    )
    transport = PolicyTransport(
        compiled, raise_on_abort=False, rng=random.Random(seed)
    )
    show = progress and err.isatty()
    stop = threading.Event()
    started = time.monotonic()
    with (
        fake,
        _captured_events(tally),
        httpx.Client(
            base_url=fake.url,
            headers={"x-api-key": fake.api_key},
            transport=transport,
            timeout=10.0,
        ) as client,
    ):
        ticker = None
        if show:
            ticker = threading.Thread(
                target=_progress,
                args=(tally, started, err, stop),
                daemon=True,
            )
            ticker.start()
        try:
            with ThreadPoolExecutor(workers, "referee-demo") as pool:
                for future in [
                    pool.submit(_call, client, job, tally) for job in jobs
                ]:
                    future.result()
        finally:
            stop.set()
            if ticker is not None:
                ticker.join()
        tally.report.elapsed = time.monotonic() - started
        stats = fake.stats()
    _print_summary(
        out, tally.report, stats, label, fake, balance, workers, seed
    )
    return 0


# -- the summary -----------------------------------------------------------


def _print_summary(
    out: TextIO,
    r: DemoReport,
    stats: Any,
    label: str,
    fake: FakeEnrow,
    balance: float,
    workers: int,
    seed: int,
) -> None:
    def line(text: str = "") -> None:
        out.write(text + "\n")

    def row(label: str, n: object, text: str = "", indent: int = 0) -> None:
        name = " " * indent + label
        line(f"{name:<24}{n!s:>6}   {text}".rstrip())

    aborted = sum(r.aborted.values())
    line(f"referee demo: {label}")
    line(
        f"fake Enrow API: {fake.url}, {_num(balance)} credits, "
        f"{fake.rate_limit} POST/s per key and endpoint, "
        f"{DEMO_FAULT_RATE:.0%} faults"
    )
    line(f"client: httpx, {r.calls} calls from {workers} workers, seed {seed}")
    line()
    row("calls", r.calls, f"ok {r.ok}, aborted {aborted}")
    for path, name in ((FINDER, "email finder"), (VERIFIER, "email verifier")):
        found = {q: n for (p, q), n in r.results.items() if p == path}
        found = dict(sorted(found.items(), key=_result_order))
        if found:
            row(name, sum(found.values()), _pairs(found), indent=2)
    sent = sum(r.sent.values())
    row("requests sent", sent, _pairs(dict(sorted(r.sent.items()))))
    row("retries", sum(r.retries.values()))
    for rule, n in r.retries.most_common():
        row(rule, n, indent=2)
    row("polls", sum(r.polls.values()))
    for rule, n in r.polls.most_common():
        row(rule, n, indent=2)
    row("aborts", aborted)
    for (error, rule), n in r.abort_rules.most_common():
        row(error, n, rule, indent=2)
    row("alerts raised", sum(r.alerts.values()))
    for (kind, severity, key), n in r.alerts.most_common():
        message, dedupe = r.alert_notes[key]
        held = "" if dedupe is None else f", dedupe {format_duration(dedupe)}"
        row(f"{kind} ({severity})", n, f"{message} (key {key}{held})", 2)
    by_status: Counter[int] = Counter()
    for (_endpoint, status), n in stats.requests.items():
        by_status[status] += n
    row(
        "server answered",
        stats.total,
        ", ".join(f"{s} x{n}" for s, n in sorted(by_status.items())),
    )
    row(
        "credits spent",
        _num(stats.credits_spent),
        f"of {_num(balance)}; {stats.searches_started} searches started, "
        f"{stats.searches_finished} finished",
    )
    events = ", ".join(f"{e} x{n}" for e, n in sorted(r.events.items()))
    row("log events", sum(r.events.values()), events)
    row("wall time", format_duration(r.elapsed))


#: How an abort that no rule decided is described: the policy let the
#: answer (or the client's exception) through to the caller.
_PASSED: Final = "passed through to the caller"


def _why(rule: str | None) -> str:
    if rule is None:
        return "no rule"
    if rule == _PASSED:
        return rule
    return f"rule {rule}"


def _result_order(item: tuple[str, int]) -> tuple[int, str]:
    """
    valid, invalid, whatever else came through, then aborted.
    """
    order = {"valid": 0, "invalid": 1, "aborted": 3}
    return order.get(item[0], 2), item[0]


def _plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {words or word + 's'}"


def _pairs(counts: dict[Any, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in counts.items())


def _num(value: float) -> str:
    return format_number(value)
