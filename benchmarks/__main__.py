"""
referee's decision beside its peers, in one run, as ratios.

    python -m benchmarks [--rounds N] [--e2e-rounds N] [--json PATH]
                         [--quick] [--docs] [--only KEY ...]
    python -m benchmarks --only targets     # the issue's targets, judged

The run ends with a "Targets" block: each target whose comparison ran,
the measured ratio (median, IQR, the median's 95 % confidence interval)
beside it, and whether it is met.  Overhead comparisons (a baseline
subtracted) time each round in short blocks beside the baseline's
(``_paired``).

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
from ._stats import ratio_figures


if TYPE_CHECKING:
    from collections.abc import Callable


#: Names for sets of comparisons, for --only.
GROUPS: dict[str, list[str]] = {
    "middleware": [
        c.key for c in cases.COMPARISONS if c.key.startswith("middleware")
    ],
    "e2e": [key for key, _, _ in _e2e.E2E],
    # The comparisons behind every target, and the old prebuilt-stub
    # lines beside them.
    "targets": sorted(
        {t.key for t in cases.TARGETS}
        | {"middleware_default_prebuilt", "middleware_enrow_prebuilt"}
    ),
}


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


#: Overhead comparisons (with a baseline) time blocks of about this long…
BLOCK = 1e-4
#: … as many pairs of them per contender and round as make about this long.
ROUND = 0.02


def _paired(
    contenders: dict[str, Callable[[], Any]], rounds: int, baseline: str
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """
    For an overhead comparison: per round, each contender (in turn, the
    order rotating) timed in short blocks (~0.1 ms) alternating with the
    baseline's; the median per-call time of its blocks, and of the
    baseline blocks beside them.  Returns both per contender, per round
    (the baseline's own entry: the median of all its blocks).

    An overhead is a small difference of two larger times (a few hundred
    ns on the stub's ~9 µs): a burst of load during one 20 ms block used
    to swamp it; here a burst spoils a few 0.1 ms blocks, which the
    median leaves out, and each contender is set against the baseline
    timed right beside it.  Each block starts with one untimed call, and
    contenders alternate only with the baseline (not with each other), so
    that a block measures its contender warm rather than the cache misses
    another one left.  The figure is of a typical call: work that recurs
    within a block's calls is counted, work rarer than every other block
    would not be.
    """
    names = [name for name in contenders if name != baseline]
    timers = {name: timeit.Timer(fn) for name, fn in contenders.items()}
    numbers = {name: _calibrate(fn, BLOCK) for name, fn in contenders.items()}

    def block(name: str) -> float:
        contenders[name]()
        n = numbers[name]
        return timers[name].timeit(n) / n

    took = {name: timers[name].timeit(numbers[name]) for name in contenders}
    pairs = {
        name: max(5, int(ROUND / (took[name] + took[baseline])))
        for name in names
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    bases: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        everything: list[float] = []
        for name in names[r % len(names) :] + names[: r % len(names)]:
            mine: list[float] = []
            base: list[float] = []
            for i in range(pairs[name]):
                if i % 2:
                    mine.append(block(name))
                    base.append(block(baseline))
                else:
                    base.append(block(baseline))
                    mine.append(block(name))
            times[name].append(statistics.median(mine))
            bases[name].append(statistics.median(base))
            everything += base
        times[baseline].append(statistics.median(everything))
    return times, bases


def compare(
    contenders: dict[str, Callable[[], Any]],
    rounds: int,
    baseline: str | None = None,
) -> dict[str, Any]:
    """
    Time each contender *rounds* times, interleaved; ratios are against the
    first contender (referee's).  With a *baseline*, the ratios are of
    overheads (each time less the baseline's in the same round), and each
    round is timed in short blocks beside the baseline's (:func:`_paired`).
    """
    times: dict[str, list[float]] = {name: [] for name in contenders}
    bases: dict[str, list[float]] = {}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        if baseline is not None:
            times, bases = _paired(contenders, rounds, baseline)
        else:
            numbers = {name: _calibrate(fn) for name, fn in contenders.items()}
            for _ in range(rounds):
                for name, fn in contenders.items():
                    times[name].append(_per_call(fn, numbers[name]))
    finally:
        if gc_was:
            gc.enable()
    first = next(iter(contenders))
    clamped: dict[str, int] = {}
    if baseline is not None:
        # Overheads: each round's time less the baseline's timed beside
        # it.  A round where a contender came out no slower than the
        # baseline (noise) has its overhead clamped to ~0; those rounds
        # are counted and shown, since they pull referee's ratios towards
        # 0 (or a peer's towards infinity).
        clamped = {
            name: sum(t <= b for t, b in zip(ts, bases[name], strict=True))
            for name, ts in times.items()
            if name != baseline
        }
        times = {
            name: [
                max(t - b, 1e-12) for t, b in zip(ts, bases[name], strict=True)
            ]
            for name, ts in times.items()
            if name != baseline
        } | {baseline: times[baseline]}
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
        out[name] = {
            "median_ns": statistics.median(ts) * 1e9,
            "spread_ns": [
                min(ts) * 1e9,
                max(ts) * 1e9,
            ],
            **ratio_figures(ratios),
        }
        if clamped.get(name):
            out[name]["clamped_rounds"] = clamped[name]
    if clamped.get(first):
        out[first]["clamped_rounds"] = clamped[first]
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
        if r.get("clamped_rounds"):
            ratio += f" ⚠ {r['clamped_rounds']} round(s) at ≤ 0 overhead"
        lines.append(
            f"| {name} | {r['median_ns']:,.0f} ns | {lo:,.0f}–{hi:,.0f} ns "
            f"| {ratio} |"
        )
    return "\n".join(lines)


def _verdict(ratio: float, ci: list[float], bound: float) -> str:
    lo, hi = ci
    if hi <= bound:
        return "met"
    if lo > bound:
        return "NOT MET"
    side = "under" if ratio <= bound else "over"
    return f"undecided (median {side}; its 95 % CI spans the target)"


def targets(report: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """
    The targets whose comparisons ran, in one block: the measured ratio
    (median, IQR, and the median's 95 % confidence interval) beside the
    target, and whether it is met.
    """
    rows: list[dict[str, Any]] = []
    for t in sorted(cases.TARGETS, key=lambda t: not t.issue):
        comp = report["comparisons"].get(t.key)
        if comp is None:
            continue
        r = comp["results"].get(t.contender)
        if r is None or r.get("ratio") is None:
            continue
        rows.append(
            {
                "key": t.key,
                "contender": t.contender,
                "what": t.what,
                "issue": t.issue,
                "target": t.bound,
                "ratio": r["ratio"],
                "ratio_q1": r["ratio_q1"],
                "ratio_q3": r["ratio_q3"],
                "ratio_ci": r["ratio_ci"],
                "verdict": _verdict(r["ratio"], r["ratio_ci"], t.bound),
                "limit": _charts.limit_ratio(report, t.key, t.contender),
            }
        )
    lines = [
        "## Targets",
        "",
        (
            "Ratio = referee ÷ contender: the median of the per-round "
            "ratios, their IQR (how one round varies), and the 95 % "
            "confidence interval of the median (how sure the median is).  "
            "'met' = the whole interval is at or under the target, 'NOT "
            "MET' = wholly over it, 'undecided' = it spans the target "
            "(more rounds would narrow it).  'limit' is the physical "
            "limit timed in the same run, as the same ratio: one dict "
            "look-up for a status-only decision, one byte search (and, "
            "when needed, one orjson parse) for a body rule, the bare "
            "client end to end; referee cannot go below it.  Rows marked "
            "* are the current issue's targets."
        ),
        "",
        "| | what | target | median | IQR | 95 % CI of median | limit | |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    lines.extend(
        f"| {'*' if row['issue'] else ''} | {row['what']} "
        f"| ≤ {row['target']:g}× "
        f"| **{row['ratio']:.3f}×** "
        f"| {row['ratio_q1']:.3f}–{row['ratio_q3']:.3f} "
        f"| {row['ratio_ci'][0]:.3f}–{row['ratio_ci'][1]:.3f} "
        f"| {'' if row['limit'] is None else format(row['limit'], '.3f') + '×'} "
        f"| {row['verdict']} |"
        for row in rows
    )
    skipped = report.get("skipped", {})
    if skipped:
        lines.append("")
    lines.extend(
        f"- not measured: {key}: {why}" for key, why in skipped.items()
    )
    return "\n".join(lines), rows


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
        help="run only these comparisons (keys as in the JSON, space- or "
        "comma-separated; 'polling', 'fleet', 'extras' for those parts; "
        "groups: "
        + "; ".join(f"'{g}' = {', '.join(ks)}" for g, ks in GROUPS.items())
        + ")",
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

    only: set[str] | None = None
    if args.only is not None:
        only = set()
        for item in (k for arg in args.only for k in arg.split(",")):
            only.update(GROUPS.get(item, [item]))

    def wanted(key: str) -> bool:
        return only is None or key in only

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
        try:
            result = run(e2e_rounds, cases.ENROW_VALID)
        except _e2e.Unavailable as exc:
            report.setdefault("skipped", {})[key] = str(exc)
            print(f"### {title}\n\nnot measured: {exc}\n", flush=True)
            continue
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
        report["fleet_cluster"] = on_cluster = _fleet.run_cluster(
            rounds, compare
        )
        print(_fleet.cluster_table(on_cluster), "\n", flush=True)
    if wanted("extras"):
        for name, value in cases.extras().items():
            report[name] = value
            print(f"- {name}: {value}", flush=True)
    block, report["targets"] = targets(report)
    if report["targets"]:
        print(block, "\n", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"\nraw results: {args.json}", file=sys.stderr)
    charts = Path("docs/img") if args.docs else args.json.parent
    for path in _charts.draw(report, charts):
        print(f"chart: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
