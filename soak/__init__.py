"""
A chaos soak for referee: thousands of calls through the httpx and requests
adapters against a server that misbehaves in every way the policy language
names, with the invariants that must hold checked and reported as figures.

``python -m soak [--seed N] [--calls N] [--json PATH]``; :func:`run` does
the same in-process and returns the report.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
import requests
import structlog

import referee
from referee.httpx import AsyncPolicyTransport
from referee.requests import PolicyAdapter


if TYPE_CHECKING:
    from collections.abc import MutableMapping


__all__ = ["POLICY", "main", "run"]

DEADLINE: Final = 5.0
#: A call that starts polling trades its deadline for the poll's, measured
#: from its first poll: a job call may take DEADLINE + POLL_DEADLINE.
POLL_DEADLINE: Final = 3.0
#: The client's read timeout: the server's slow answers take longer.
READ_TIMEOUT: Final = 0.3
CONNECT_TIMEOUT: Final = 2.0
#: Slack allowed past deadline + one attempt's timeout (a loaded machine).
MARGIN: Final = 1.5
ATTEMPTS: Final = 4
ASYNC_CONCURRENCY: Final = 64
THREADS: Final = 16
#: RSS growth from the 10 % sample to the end that fails the soak.
MEMORY_LIMIT: Final = 64 * 2**20

POLICY: Final = f"""\
policy: soak
extends: http-default
defaults:
  retry:
    attempts: {ATTEMPTS}
    backoff: {{initial: 10ms, multiplier: 2, max: 100ms, jitter: full}}
  poll: {{initial: 10ms, multiplier: 1.5, max: 100ms, deadline: 3s}}
  deadline: 5s
  server_delay: {{max: 2s, on_exceed: cap}}
rules:
  - id: out-of-credits
    when: {{status: 402}}
    do: abort
    error: InsufficientCredits
    alert: {{kind: topup, severity: critical, dedupe: 1s}}
  - id: job-running
    when: {{method: GET, status: 202, body: {{state: running}}}}
    do: poll
  - id: error-in-body
    description: a 200 carrying an error; also makes every 200 body read
      inside the middleware, so that a truncated one is a read failure
    when: {{status: [200, 201], body: {{error: {{exists: true}}}}}}
    do: abort
    error: BadRequest
  - id: rate-limited
    description: the API documents 429 as "not processed"
    when: {{status: 429}}
    do: retry
    error: RateLimited
    retry: {{unsafe_methods: true}}
"""

ROOT: Final = Path(__file__).resolve().parent.parent


def _fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


def _rss() -> int:
    pages = Path("/proc/self/statm").read_text(encoding="ascii").split()[1]
    return int(pages) * os.sysconf("SC_PAGE_SIZE")


class _Workload:
    """
    The calls, their results, and the samples taken as they finish.
    """

    def __init__(self, seed: int, calls: int) -> None:
        self.seed = seed
        self.calls = calls
        self.lock = threading.Lock()
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.violations: list[str] = []
        self.hangs = 0
        self.max_wall = 0.0
        self.max_overrun = 0.0
        self.max_trail_attempts = 0
        self.done = 0
        self.rss: list[int] = []
        self.inflight: dict[str, float] = {}

    def call(self, i: int, side: str) -> tuple[str, str, dict[str, str]]:
        rng = random.Random(f"{self.seed}:call:{i}")
        rid = f"{side}-{i}"
        headers = {"X-Request-Id": rid}
        draw = rng.random()
        if draw < 0.45:
            return "GET", f"/items/{i}", headers
        if draw < 0.8:
            if rng.random() < 0.5:
                headers["Idempotency-Key"] = f"key-{rid}"
            return "POST", "/orders", headers
        return "GET", f"/jobs/{rid}", headers

    def finish(
        self, rid: str, path: str, wall: float, result: str, attempts: int
    ) -> None:
        allowed = _allowed(path)

        with self.lock:
            self.inflight.pop(rid, None)
            self.outcomes[result] += 1
            self.max_wall = max(self.max_wall, wall)
            self.max_overrun = max(self.max_overrun, wall - allowed)
            self.max_trail_attempts = max(self.max_trail_attempts, attempts)
            self.done += 1
            if self.done * 10 // self.calls > len(self.rss):
                self.rss.append(_rss())


def _allowed(path: str) -> float:
    """
    The longest a call to *path* may take by the policy.
    """
    return DEADLINE + (POLL_DEADLINE if path.startswith("/jobs/") else 0.0)


def _classify(exc: BaseException, work: _Workload) -> tuple[str, int]:
    if isinstance(exc, referee.Aborted):
        # Attempts count the first send and each retry; polls do not count.
        retries = sum(1 for r in exc.trail if r.action == "retry")
        return type(exc).__name__, 1 + retries
    if isinstance(exc, referee.RefereeError):
        return type(exc).__name__, 0
    with work.lock:
        work.violations.append(f"{type(exc).__name__}: {exc}")
    return f"foreign:{type(exc).__name__}", 0


async def _async_half(
    work: _Workload, policy: referee.Policy, base: str, indices: range
) -> None:
    transport = AsyncPolicyTransport(
        policy,
        transport=httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=ASYNC_CONCURRENCY)
        ),
    )
    timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
    todo = iter(indices)
    async with httpx.AsyncClient(
        transport=transport, base_url=base, timeout=timeout
    ) as client:

        async def one(i: int) -> None:
            method, path, headers = work.call(i, "httpx")
            body = b'{"sku":"x"}' if method == "POST" else None
            start = time.monotonic()
            result, attempts = "ok", 0
            bound = _allowed(path) + READ_TIMEOUT + MARGIN + 1.0
            try:
                await asyncio.wait_for(
                    client.request(
                        method, path, headers=headers, content=body
                    ),
                    bound,
                )
            except TimeoutError:
                with work.lock:
                    work.hangs += 1
                    work.violations.append(f"hang: {method} {path}")
                result = "hang"
            except Exception as exc:  # noqa: BLE001 - classified, not hidden
                # referee releases the error's last response itself (read
                # within body_limit, then closed): nothing to close here.
                result, attempts = _classify(exc, work)
            work.finish(
                headers["X-Request-Id"],
                path,
                time.monotonic() - start,
                result,
                attempts,
            )

        async def worker() -> None:
            for i in todo:
                await one(i)

        await asyncio.gather(*(worker() for _ in range(ASYNC_CONCURRENCY)))


def _thread_half(
    work: _Workload, policy: referee.Policy, base: str, indices: range
) -> list[threading.Thread]:
    todo = iter(indices)
    todo_lock = threading.Lock()

    def worker() -> None:
        with requests.Session() as session:
            session.mount("http://", PolicyAdapter(policy))
            while True:
                with todo_lock:
                    i = next(todo, None)
                if i is None:
                    return
                method, path, headers = work.call(i, "requests")
                rid = headers["X-Request-Id"]
                body = b'{"sku":"x"}' if method == "POST" else None
                start = time.monotonic()
                with work.lock:
                    work.inflight[rid] = start
                result, attempts = "ok", 0
                try:
                    session.request(
                        method,
                        base + path,
                        headers=headers,
                        data=body,
                        timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                    ).close()
                except Exception as exc:  # noqa: BLE001 - classified
                    result, attempts = _classify(exc, work)
                work.finish(
                    rid, path, time.monotonic() - start, result, attempts
                )

    threads = [
        threading.Thread(target=worker, daemon=True, name=f"soak-{n}")
        for n in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    return threads


def _start_server(
    seed: int, balance: int
) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(  # noqa: S603 - our own module
        [
            sys.executable,
            "-m",
            "soak.server",
            "--seed",
            str(seed),
            "--credits",
            str(balance),
            "--slow",
            str(READ_TIMEOUT * 2),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None  # noqa: S101
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the fault server did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[-1])}"


def _stop_server(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None  # noqa: S101
    assert proc.stdout is not None  # noqa: S101
    proc.stdin.close()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()


class _Events:
    """
    A structlog processor that counts referee's events and drops them.
    """

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.max_attempt = 0
        self.lock = threading.Lock()

    def __call__(
        self, logger: Any, name: str, event: MutableMapping[str, Any]
    ) -> Any:
        with self.lock:
            self.counts[str(event.get("event"))] += 1
            attempt = event.get("attempt")
            if isinstance(attempt, int):
                self.max_attempt = max(self.max_attempt, attempt)
        raise structlog.DropEvent


def run(seed: int = 0, calls: int = 10_000) -> dict[str, Any]:
    """
    Run the soak and return its report (``report["ok"]``: every invariant
    held).
    """
    started = time.monotonic()
    events = _Events()
    saved = structlog.get_config()
    structlog.configure(processors=[events])
    alerts: list[referee.Alert] = []
    proc, base = _start_server(seed, max(20, calls // 40))
    try:
        fds_before = _fds()
        policy = referee.load_policy_text(POLICY, alert_sinks=[alerts.append])
        work = _Workload(seed, calls)
        half = calls // 2
        threads = _thread_half(work, policy, base, range(half, calls))
        asyncio.run(_async_half(work, policy, base, range(half)))
        limit = time.monotonic() + _allowed("/jobs/") + READ_TIMEOUT + MARGIN
        for thread in threads:
            thread.join(max(0.0, limit - time.monotonic()))
            if thread.is_alive():
                limit = time.monotonic() + DEADLINE * 2
        stuck = [t for t in threads if t.is_alive()]
        if stuck:
            work.hangs += len(work.inflight)
            work.violations.append(f"{len(work.inflight)} thread calls hung")
        policy.runtime.alerts.flush()
        fds_unclosed = _fds()
        # Responses referenced from exceptions' tracebacks are freed by the
        # cycle collector; what is still open after it is a real leak.
        gc.collect()
        fds_after = _fds()
        with urllib.request.urlopen(f"{base}/_stats", timeout=10) as r:  # noqa: S310
            stats = json.load(r)
    finally:
        _stop_server(proc)
        structlog.configure(**saved)
    wall = time.monotonic() - started
    return _report(
        seed=seed,
        calls=calls,
        work=work,
        events=events,
        stats=stats,
        alerts=len(alerts),
        # Descriptors other code (an earlier test) held and let go while the
        # soak ran make the difference negative: that is not a leak.
        fd_leaks=max(fds_after - fds_before, 0),
        fds_until_gc=fds_unclosed - fds_after,
        wall=wall,
    )


def _report(
    *,
    seed: int,
    calls: int,
    work: _Workload,
    events: _Events,
    stats: dict[str, Any],
    alerts: int,
    fd_leaks: int,
    fds_until_gc: int,
    wall: float,
) -> dict[str, Any]:
    executions = stats["executions"]
    duplicates = sum(1 for n in executions.values() if n > 1)
    server_attempts = max(stats["attempts"].values(), default=0)
    max_attempts = max(
        work.max_trail_attempts, events.max_attempt, server_attempts
    )
    overrun = max(0.0, work.max_overrun)
    tolerance = READ_TIMEOUT + MARGIN
    growth = work.rss[-1] - work.rss[0] if work.rss else 0
    finished = sum(work.outcomes.values())
    checks = {
        "every call ended": finished == calls and work.hangs == 0,
        "no foreign exception": not any(
            k.startswith("foreign:") for k in work.outcomes
        ),
        f"attempts <= {ATTEMPTS}": max_attempts <= ATTEMPTS,
        f"overrun <= {tolerance:.1f}s": overrun <= tolerance,
        "no duplicate execution": duplicates == 0,
        "no fd leak": fd_leaks <= 0,
        f"memory growth <= {MEMORY_LIMIT >> 20} MiB": growth <= MEMORY_LIMIT,
    }
    return {
        "ok": all(checks.values()),
        "checks": checks,
        "seed": seed,
        "calls": calls,
        "finished": finished,
        "requests_sent": stats["requests"],
        "faults": dict(sorted(stats["faults"].items())),
        "outcomes": dict(sorted(work.outcomes.items())),
        "max_attempts": max_attempts,
        "attempts_bound": ATTEMPTS,
        "deadline": DEADLINE,
        "poll_deadline": POLL_DEADLINE,
        "max_call_seconds": round(work.max_wall, 3),
        "max_overrun_seconds": round(overrun, 3),
        "unkeyed_posts_executed": len(executions),
        "duplicate_executions": duplicates,
        "keyed_posts_reexecuted": sum(
            1 for n in stats["keyed_executions"].values() if n > 1
        ),
        "hangs": work.hangs,
        "fd_leaks": fd_leaks,
        "fds_freed_only_by_gc": fds_until_gc,
        "rss_samples_mib": [round(r / 2**20, 1) for r in work.rss],
        "memory_growth_mib": round(growth / 2**20, 1),
        "alerts_delivered": alerts,
        "log_events": dict(events.counts),
        "violations": work.violations[:20],
        "wall_seconds": round(wall, 2),
    }


def format_report(report: dict[str, Any]) -> str:
    """
    The report as the summary table ``python -m soak`` prints.
    """
    rows: list[tuple[str, str]] = [
        ("seed", str(report["seed"])),
        ("calls", f"{report['calls']} ({report['finished']} ended)"),
        ("requests sent", str(report["requests_sent"])),
        ("faults injected", str(sum(report["faults"].values()))),
    ]
    rows += [(f"  {k}", str(v)) for k, v in report["faults"].items()]
    rows.append(("outcomes", ""))
    rows += [(f"  {k}", str(v)) for k, v in report["outcomes"].items()]
    rows += [
        (
            "max attempts",
            f"{report['max_attempts']} (bound {report['attempts_bound']})",
        ),
        (
            "max call time",
            (
                f"{report['max_call_seconds']:.3f}s "
                f"(deadline {report['deadline']:.0f}s, "
                f"+{report['poll_deadline']:.0f}s polling; overrun "
                f"{report['max_overrun_seconds']:.3f}s)"
            ),
        ),
        (
            "duplicate executions",
            (
                f"{report['duplicate_executions']} (of "
                f"{report['unkeyed_posts_executed']} unkeyed POSTs executed)"
            ),
        ),
        ("hangs", str(report["hangs"])),
        ("fd leaks", str(report["fd_leaks"])),
        (
            "memory growth",
            (
                f"{report['memory_growth_mib']} MiB (RSS "
                f"{report['rss_samples_mib'][:1]}.."
                f"{report['rss_samples_mib'][-1:]} MiB)"
            ),
        ),
        ("alerts delivered", str(report["alerts_delivered"])),
        ("wall time", f"{report['wall_seconds']:.2f}s"),
        ("invariants", ""),
    ]
    rows += [
        (f"  {k}", "ok" if v else "FAILED")
        for k, v in report["checks"].items()
    ]
    rows += [("  violation", v) for v in report["violations"]]
    width = max(len(k) for k, _ in rows) + 3
    return "".join(f"{k:<{width}}{v}\n" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    """
    ``python -m soak``: run, print the table, write the JSON; 1 on failure.
    """
    parser = argparse.ArgumentParser(prog="python -m soak")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument(
        "--full", action="store_true", help="the full 10,000 calls"
    )
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    calls = 10_000 if args.full else args.calls
    report = run(args.seed, calls)
    sys.stdout.write(format_report(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["ok"] else 1
