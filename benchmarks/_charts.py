"""
The two charts, drawn from a run's report with matplotlib's Agg backend:
the decision's cost beside its peers (``peers.png``) and its cost against
the number of rules (``rules.png``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import cases


if TYPE_CHECKING:
    from pathlib import Path


#: (comparison key, contender, label): the bars of the peers chart.
BARS = [
    (
        "floor",
        "urllib3 Retry.is_retry('GET', 200)",
        "decide 200 vs urllib3 is_retry",
    ),
    (
        "retry_after",
        "urllib3 increment + get_retry_after",
        "decide 503+Retry-After vs urllib3",
    ),
    (
        "floor",
        cases.LIMIT_LOOKUP,
        "decide 200 vs one dict.get (the limit)",
    ),
    ("body_skip", "json.loads(body)", "decide body (no parse) vs json.loads"),
    ("body_parse", "json.loads(body)", "decide body (parsed) vs json.loads"),
    (
        "middleware_default",
        "httpx_retries.RetryTransport",
        "overhead http-default vs httpx-retries",
    ),
    (
        "middleware_default",
        "tenacity.retry around the call",
        "overhead http-default vs tenacity",
    ),
    (
        "middleware_default",
        "stamina.retry around the call",
        "overhead http-default vs stamina",
    ),
    (
        "middleware_default",
        "backoff.on_predicate around the call",
        "overhead http-default vs backoff",
    ),
    (
        "middleware_default",
        "redress.retry around the call",
        "overhead http-default vs redress",
    ),
    (
        "middleware_enrow",
        "httpx_retries.RetryTransport",
        "overhead enrow vs httpx-retries",
    ),
    (
        "middleware_enrow",
        "tenacity.retry around the call",
        "overhead enrow vs tenacity",
    ),
    (
        "e2e_httpx",
        "httpx.Client + httpx-retries",
        "e2e httpx vs httpx-retries",
    ),
    (
        "e2e_httpx_async",
        "httpx.AsyncClient + httpx-retries",
        "e2e httpx async vs httpx-retries",
    ),
    (
        "e2e_requests",
        "requests + HTTPAdapter(max_retries=Retry(3))",
        "e2e requests vs urllib3 Retry",
    ),
    (
        "e2e_aiohttp",
        "aiohttp_retry.RetryClient",
        "e2e aiohttp vs aiohttp-retry",
    ),
    ("e2e_httpx", "bare httpx.Client", "e2e httpx vs bare"),
    ("e2e_httpx_async", "bare httpx.AsyncClient", "e2e httpx async vs bare"),
    ("e2e_httpx2", "bare httpx2.Client", "e2e httpx2 vs bare"),
    ("e2e_requests", "bare requests.Session", "e2e requests vs bare"),
    ("e2e_aiohttp", "bare aiohttp.ClientSession", "e2e aiohttp vs bare"),
]


def limit_ratio(report: dict[str, Any], key: str, name: str) -> float | None:
    """
    Where the physical limit of comparison *key* stands against contender
    *name*: the limit's median time over the contender's (None when the
    comparison has no limit line).  Referee's bar cannot go below it.
    """
    limit = next(
        (t.limit for t in cases.TARGETS if t.key == key and t.limit), None
    )
    comp = report["comparisons"].get(key)
    if limit is None or comp is None:
        return None
    results = comp["results"]
    if limit == cases.BARE:
        return 1.0 if name.startswith("bare") else None
    mine, theirs = results.get(limit), results.get(name)
    if mine is None or theirs is None or not theirs["median_ns"]:
        return None
    return float(mine["median_ns"] / theirs["median_ns"])


def _result(report: dict[str, Any], key: str, name: str) -> Any:
    comp = report["comparisons"].get(key)
    if comp is None:
        return None
    return comp["results"].get(name)


def draw(report: dict[str, Any], where: Path) -> list[Path]:
    """
    Write the charts into *where*; their paths.
    """
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    where.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    labels, ratios, lows, highs = [], [], [], []
    limits: list[float | None] = []
    for key, name, label in BARS:
        r = _result(report, key, name)
        if r is None or r.get("ratio") is None:
            continue
        labels.append(label)
        ratios.append(r["ratio"])
        lows.append(r["ratio"] - r["ratio_q1"])
        highs.append(r["ratio_q3"] - r["ratio"])
        limits.append(limit_ratio(report, key, name))
    if labels:
        written.append(_peers(plt, where, labels, ratios, lows, highs, limits))

    sizes, times = [], []
    for n in sorted(cases.SIZES):
        r = _result(report, "scale", f"referee decide, {n:,} rules")
        if r is not None:
            sizes.append(n)
            times.append(r["median_ns"])
    if sizes:
        written.append(_rules(plt, where, sizes, times))
    return written


def _peers(
    plt: Any,
    where: Path,
    labels: list[str],
    ratios: list[float],
    lows: list[float],
    highs: list[float],
    limits: list[float | None],
) -> Path:
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(labels) + 1.5))
    y = range(len(labels))
    # A ratio of overheads can reach ~0 in a noisy round (an overhead
    # clamped at 0): the axis stops at a third of the smallest median,
    # and whiskers are cut there, so that one round does not squash the
    # chart.
    left = min(ratios) / 3
    lows = [min(lo, r - left) for r, lo in zip(ratios, lows, strict=True)]
    colors = ["tab:green" if r <= 1 else "tab:orange" for r in ratios]
    ax.barh(y, ratios, xerr=[lows, highs], color=colors, capsize=3)
    marked = [(i, lim) for i, lim in enumerate(limits) if lim is not None]
    if marked:
        ax.scatter(
            [lim for _i, lim in marked],
            [i for i, _lim in marked],
            marker="|",
            s=300,
            color="black",
            zorder=3,
            label="physical limit (dict look-up; byte search + orjson "
            "parse; the bare client)",
        )
        ax.legend(loc="lower right", fontsize=7)
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel(
        "referee ÷ peer (median of rounds, IQR bars; < 1: referee cheaper)"
    )
    ax.set_title("The decision's cost beside its peers")
    for i, (r, hi) in enumerate(zip(ratios, highs, strict=True)):
        ax.text((r + hi) * 1.1, i, f"{r:.3g}×", va="center", fontsize=7)
    ax.set_xlim(
        left=left,
        right=max(r + h for r, h in zip(ratios, highs, strict=True)) * 2,
    )
    fig.tight_layout()
    path = where / "peers.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _rules(
    plt: Any, where: Path, sizes: list[int], times: list[float]
) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(sizes, times, marker="o")
    ax.set_xscale("log")
    ax.set_xlim(min(sizes) / 2, max(sizes) * 2)
    ax.set_ylim(0, max(times) * 1.4)
    ax.set_xlabel("status-indexed rules in the policy")
    ax.set_ylabel("decide, ns (median)")
    ax.set_title("Decision cost vs number of rules")
    for n, t in zip(sizes, times, strict=True):
        ax.annotate(
            f"{t:,.0f} ns",
            (n, t),
            textcoords="offset points",
            xytext=(0, 8),
            ha="center",
            fontsize=8,
        )
    fig.tight_layout()
    path = where / "rules.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
