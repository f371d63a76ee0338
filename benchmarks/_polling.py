"""
Target 7, polling: what a poll schedule costs over a distribution of job
durations — requests per completed job, and the lag between a job's
completion and the poll that sees it — for enrow's schedule beside a
fixed 2-second poller (Enrow's SDK).  Pure computation on the schedule
the policy compiled (``PollSettings.schedule``, no jitter), seeded.

The job is created by the first request (t = 0), whose answer is
``ongoing``; each poll follows the previous request by the schedule's
next delay (its last repeating); the poll at or after the completion
sees it.  A job still running at the rule's deadline is given up (and
counted apart).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import statistics
from typing import Any

import referee


#: The simulated jobs: lognormal durations, median 20 s.
JOBS = 20_000
MEDIAN = 20.0
SIGMA = 0.8
SEED = 7


def _times(schedule: tuple[float, ...], deadline: float) -> list[float]:
    """
    The request times of one call: 0, then each poll, up to *deadline*.
    """
    out = [0.0]
    delays = itertools.chain(schedule, itertools.repeat(schedule[-1]))
    for delay in delays:
        at = out[-1] + delay
        if at > deadline:
            return out
        out.append(at)
    raise AssertionError  # pragma: no cover - the chain never ends


def _p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20)[-1]


def simulate(
    schedule: tuple[float, ...], deadline: float, durations: list[float]
) -> dict[str, Any]:
    """
    Requests per completed job and detection lag, means and p95s.
    """
    times = _times(schedule, deadline)
    requests: list[float] = []
    lags: list[float] = []
    given_up = 0
    for d in durations:
        i = bisect.bisect_left(times, d)
        if i == len(times):
            given_up += 1
            continue
        requests.append(i + 1)
        lags.append(times[i] - d)
    return {
        "requests_mean": statistics.fmean(requests),
        "requests_p95": _p95(requests),
        "lag_mean_s": statistics.fmean(lags),
        "lag_p95_s": _p95(lags),
        "given_up": given_up,
    }


def run(jobs: int = JOBS) -> dict[str, Any]:
    """
    enrow's ``search-ongoing`` schedule and a fixed 2 s poller over the
    same *jobs* durations.
    """
    policy = referee.load_policy("enrow")
    settings = policy.rule("search-ongoing").poll
    assert settings is not None
    rng = random.Random(SEED)
    mu = math.log(MEDIAN)
    durations = [rng.lognormvariate(mu, SIGMA) for _ in range(jobs)]
    ours = simulate(settings.schedule, settings.deadline, durations)
    fixed = simulate((2.0,), settings.deadline, durations)
    return {
        "jobs": jobs,
        "durations": {
            "distribution": f"lognormal, median {MEDIAN:g} s, sigma {SIGMA}",
            "p95_s": _p95(durations),
        },
        "schedule": list(settings.schedule),
        "enrow": ours,
        "fixed_2s": fixed,
        "requests_ratio": ours["requests_mean"] / fixed["requests_mean"],
        "lag_ratio": ours["lag_mean_s"] / fixed["lag_mean_s"],
    }


def table(result: dict[str, Any]) -> str:
    ours, fixed = result["enrow"], result["fixed_2s"]
    lines = [
        "### Polling: enrow's schedule vs a fixed 2-second poller",
        "",
        (
            f"{result['jobs']:,} jobs, {result['durations']['distribution']} "
            f"(p95 {result['durations']['p95_s']:.0f} s); enrow's schedule "
            f"{', '.join(f'{s:g}' for s in result['schedule'])} s (last "
            "repeating)."
        ),
        "",
        "| poller | requests per job (mean, p95) | detection lag (mean, p95) |",
        "|---|---:|---:|",
        (
            f"| enrow schedule | {ours['requests_mean']:.1f}, "
            f"{ours['requests_p95']:.0f} | {ours['lag_mean_s']:.1f} s, "
            f"{ours['lag_p95_s']:.1f} s |"
        ),
        (
            f"| fixed 2 s | {fixed['requests_mean']:.1f}, "
            f"{fixed['requests_p95']:.0f} | {fixed['lag_mean_s']:.1f} s, "
            f"{fixed['lag_p95_s']:.1f} s |"
        ),
        "",
        (
            f"Requests: **{result['requests_ratio']:.2f}×** the fixed poller's; "
            f"detection lag: **{result['lag_ratio']:.1f}×** "
            f"(given up at the deadline: {ours['given_up']} vs "
            f"{fixed['given_up']})."
        ),
    ]
    return "\n".join(lines)
