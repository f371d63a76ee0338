"""
The figures of a list of per-round ratios: the median, its interquartile
range (how the rounds spread), and a 95 % confidence interval of the
median itself (how sure the median is), distribution-free.
"""

from __future__ import annotations

import math
import statistics
from typing import Any


def ratio_figures(ratios: list[float]) -> dict[str, Any]:
    """
    ``ratio``, ``ratio_q1``, ``ratio_q3``, ``ratio_ci`` of *ratios*.

    The confidence interval is that of the median by order statistics
    (the binomial's normal approximation): the sorted ratios ranked
    n/2 ± 1.96·√n/2.  The IQR says how much one round varies; the
    interval says where the median of many lies, and is what a target is
    judged on.  With 7 rounds it is about the whole range.
    """
    n = len(ratios)
    if n == 1:
        only = ratios[0]
        return {
            "ratio": only,
            "ratio_q1": only,
            "ratio_q3": only,
            "ratio_ci": [only, only],
        }
    q = statistics.quantiles(ratios, n=4)
    ranked = sorted(ratios)
    half = 1.96 * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half))
    hi = min(n - 1, math.ceil(n / 2 + half) - 1)
    return {
        "ratio": statistics.median(ratios),
        "ratio_q1": q[0],
        "ratio_q3": q[2],
        "ratio_ci": [ranked[lo], ranked[hi]],
    }
