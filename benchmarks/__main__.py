"""
referee's decision beside its peers, in one run, as ratios.

    python -m benchmarks [--rounds N] [--e2e-rounds N] [--json PATH]
                         [--quick] [--docs] [--only KEY ...]

Each comparison times its contenders in interleaved rounds (A, B, A, B, …)
so that a burst of load on a shared machine hits both, takes the ratio in
each round, and reports the median ratio with its spread (the 25th to 75th
percentile).  Absolute times are printed for orientation only: on these
machines they vary from run to run, the ratios hold.

The end-to-end comparisons (``_e2e``) pair batches of loopback requests
instead; polling (``_polling``) is computed; the fleet (``_fleet``) starts
its own ``redis-server``.  The charts (``_charts``) go beside the JSON, or
with ``--docs`` to ``docs/img/``.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
import timeit
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _charts, _e2e, _fleet, _polling, cases


if TYPE_CHECKING:
    from collections.abc import Callable


def _per_call(fn: Callable[[], Any], number: int) -> float:
    timer = timeit.Timer(fn)
    return timer.timeit(number) / number


def _calibrate(fn: Callable[[], Any], target: float = 0.02) -> int:
    number = 1
    while True:
        took = timeit.Timer(fn).timeit(number)
        if took >= target or number >= 10_000_000:
            return number
        number *= 4 if took < target / 8 else 2


def compare(
    contenders: dict[str, Callable[[], Any]],
    rounds: int,
    baseline: str | None = None,
) -> dict[str, Any]:
    """
    Time each contender *rounds* times, interleaved; ratios are against the
    first contender (referee's).
    """
    numbers = {name: _calibrate(fn) for name, fn in contenders.items()}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            for name, fn in contenders.items():
                times[name].append(_per_call(fn, numbers[name]))
    finally:
        if gc_was:
            gc.enable()
    first = next(iter(contenders))
    if baseline is not None:
        # Overheads: each round's time less the baseline's in that round.
        base = times[baseline]
        times = {
            name: [max(t - b, 1e-12) for t, b in zip(ts, base, strict=True)]
            for name, ts in times.items()
            if name != baseline
        } | {baseline: base}
    out: dict[str, Any] = {}
    for name, ts in times.items():
        if name == baseline:
            out[name] = {
                "median_ns": statistics.median(ts) * 1e9,
                "spread_ns": [min(ts) * 1e9, max(ts) * 1e9],
                "ratio": None,
                "ratio_q1": None,
                "ratio_q3": None,
                "baseline": True,
            }
            continue
        ratios = [a / b for a, b in zip(times[first], ts, strict=True)]
        q = (
            statistics.quantiles(ratios, n=4)
            if len(ratios) > 1
            else [ratios[0]] * 3
        )
        out[name] = {
            "median_ns": statistics.median(ts) * 1e9,
            "spread_ns": [
                min(ts) * 1e9,
                max(ts) * 1e9,
            ],
            "ratio": statistics.median(ratios),
            "ratio_q1": q[0],
            "ratio_q3": q[2],
        }
    return out


def _table(
    title: str, target: str, result: dict[str, Any], baseline: str | None
) -> str:
    first = next(iter(result))
    what = "overhead" if baseline else "median"
    lines = [
        f"### {title}",
        "",
        f"Target: {target}",
        "",
        *(
            [
                f"Overheads: each time less the `{baseline}`'s, round by round.",
                "",
            ]
            if baseline
            else []
        ),
        f"| contender | {what} | min–max | {first} ÷ contender (IQR) |",
        "|---|---:|---:|---:|",
    ]
    for name, r in result.items():
        lo, hi = r["spread_ns"]
        if r.get("baseline"):
            ratio = "(baseline: its time)"
        elif name == first:
            ratio = "—"
        else:
            ratio = f"**{r['ratio']:.3f}** ({r['ratio_q1']:.3f}–{r['ratio_q3']:.3f})"
        lines.append(
            f"| {name} | {r['median_ns']:,.0f} ns | {lo:,.0f}–{hi:,.0f} ns "
            f"| {ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument(
        "--e2e-rounds",
        type=int,
        default=201,
        help="paired rounds of each end-to-end comparison",
    )
    parser.add_argument(
        "--quick", action="store_true", help="7 rounds (15 end to end)"
    )
    parser.add_argument(
        "--docs",
        action="store_true",
        help="write the charts to docs/img/ (instead of beside the JSON)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="KEY",
        help="run only these comparisons (keys as in the JSON; "
        "'polling', 'fleet', 'extras' for those parts)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("benchmarks/results/latest.json"),
        help="where to write the raw results",
    )
    args = parser.parse_args(argv)
    rounds = 7 if args.quick else args.rounds
    e2e_rounds = 15 if args.quick else args.e2e_rounds

    def wanted(key: str) -> bool:
        return args.only is None or key in args.only

    print(
        f"# referee benchmarks\n\nPython {platform.python_version()} on "
        f"{platform.machine()}, {rounds} interleaved rounds per comparison, "
        f"{time.strftime('%Y-%m-%d %H:%M')}.\n",
        flush=True,
    )
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "rounds": rounds,
        "e2e_rounds": e2e_rounds,
        "e2e_batch": _e2e.BATCH,
        "comparisons": {},
    }
    for comp in cases.COMPARISONS:
        if not wanted(comp.key):
            continue
        result = compare(comp.contenders(), rounds, comp.baseline)
        report["comparisons"][comp.key] = {
            "title": comp.title,
            "target": comp.target,
            "results": result,
        }
        print(
            _table(comp.title, comp.target, result, comp.baseline),
            "\n",
            flush=True,
        )
    for key, client, run in _e2e.E2E:
        if not wanted(key):
            continue
        title = (
            f"End to end on loopback, {client}: {_e2e.BATCH} GETs of a "
            "~300-byte JSON 200 per contender per round (keep-alive)"
        )
        target = "≤ 1.02× the bare client; never above the peer"
        result = run(e2e_rounds, cases.ENROW_VALID)
        report["comparisons"][key] = {
            "title": title,
            "target": target,
            "results": result,
        }
        print(_table(title, target, result, None), "\n", flush=True)
    if wanted("polling"):
        report["polling"] = polled = _polling.run()
        print(_polling.table(polled), "\n", flush=True)
    if wanted("fleet"):
        report["fleet"] = fleet = _fleet.run(rounds, compare)
        print(_fleet.table(fleet), "\n", flush=True)
    if wanted("extras"):
        for name, value in cases.extras().items():
            report[name] = value
            print(f"- {name}: {value}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"\nraw results: {args.json}", file=sys.stderr)
    charts = Path("docs/img") if args.docs else args.json.parent
    for path in _charts.draw(report, charts):
        print(f"chart: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
