"""
Durations and sizes with units, as policy files write them.
"""

from __future__ import annotations

import math
import re
from typing import Final


__all__ = ["format_duration", "parse_duration", "parse_size"]

_DURATION_UNITS: Final = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|kB|KB|KiB|MB|MiB|GB|GiB)?")
_SIZE_UNITS: Final = {
    None: 1,
    "B": 1,
    "kB": 1000,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}


def parse_duration(value: object) -> float:
    """
    Seconds from ``1.5``, ``"250ms"``, ``"2s"``, ``"10m"``, ``"1h"``,
    ``"1d"`` or ``"1m30s"``.

    Raises:
        ValueError: with a message saying what is allowed.
    """
    if isinstance(value, bool):
        raise ValueError(_duration_msg(value))
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(_duration_msg(value))
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if _DURATION.fullmatch(text):
            return sum(
                float(n) * _DURATION_UNITS[u]
                for n, u in _DURATION_PART.findall(text)
            )
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            if math.isfinite(number) and number >= 0:
                return number
    raise ValueError(_duration_msg(value))


def _duration_msg(value: object) -> str:
    return (
        f"found {value!r}; expected a duration: a number of seconds "
        f"or a string with units such as '250ms', '2s', '10m', '1h', "
        f"'1m30s' (not negative)"
    )


def parse_size(value: object) -> int:
    """
    Bytes from ``65536``, ``"64KiB"``, ``"1MiB"`` or ``"500kB"``.

    Raises:
        ValueError: with a message saying what is allowed.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = _SIZE.fullmatch(value.strip())
        if m is not None:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])
    msg = (
        f"found {value!r}; expected a size: a number of bytes or a string "
        f"such as '64KiB', '1MiB', '500kB'"
    )
    raise ValueError(msg)


def format_duration(seconds: float) -> str:
    """
    ``1.5s``, ``250ms``, ``2m``, ``1h30m``: a short human form.
    """
    if math.isinf(seconds):
        return "none"
    if seconds < 1 and seconds != 0:
        return f"{seconds * 1000:g}ms"
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes:g}m" + (f"{secs:g}s" if secs else "")
    hours, minutes = divmod(minutes, 60)
    if hours >= 48:
        return f"{seconds / 86400:,.0f}d"
    return f"{hours:g}h" + (f"{minutes:g}m" if minutes else "")
