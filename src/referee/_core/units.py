"""
Durations and sizes with units, as policy files write them.
"""

from __future__ import annotations

import math
import re
from typing import Final


__all__ = [
    "format_duration",
    "format_number",
    "parse_duration",
    "parse_size",
    "round_seconds",
]

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


def round_seconds(seconds: float) -> float:
    """
    *seconds* to the microsecond: what a recorded delay keeps, so that
    ``0.1 * 3`` is recorded as ``0.3``, not ``0.30000000000000004``.
    """
    return round(seconds, 6)


def format_duration(seconds: float) -> str:
    """
    A duration as people read it, and as a policy file may write it.

    Three significant digits below a minute (``250ms``, ``0.5ms``,
    ``1.5s``, ``12.3s``); whole seconds from a minute up (``25m``,
    ``1m30s``, ``1h2m5s``); whole hours from two days up (``3d``,
    ``2d12h``).  ``inf`` is ``none``, as in policy files.  Never an
    exponent, never float noise.
    """
    if math.isnan(seconds):  # nothing a policy or a hint yields
        return "?"
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if math.isinf(seconds):
        return "none"
    micros = round(seconds * 1e6)
    if micros == 0:
        return "0s"
    if micros < 1_000_000:
        ms = _significant(micros / 1000, 3)
        if ms != "1000":
            return f"{ms}ms"
        seconds = 1.0
    if seconds < 60:
        text = _significant(seconds, 3)
        if text != "60":
            return f"{text}s"
    total = round(seconds)
    if total >= 2 * 86400:
        days, hours = divmod(round(total / 3600), 24)
        return f"{days}d" + (f"{hours}h" if hours else "")
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = ((hours, "h"), (minutes, "m"), (secs, "s"))
    return "".join(f"{n}{unit}" for n, unit in parts if n)


def format_number(value: float) -> str:
    """
    A number that is not a duration (a multiplier, a ratio, a bound, a
    count) as people read it: ``2``, ``1.5``, ``0.3``, ``1000000``; six
    significant digits (whole numbers from 100,000 up), never an
    exponent, never float noise.
    """
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value == int(value) or abs(value) >= 1e5:
        return str(round(value))
    return _plain(f"{value:.6g}")


def _significant(value: float, digits: int) -> str:
    """
    *value* (positive, below 1000) to *digits* significant digits, but
    never fewer decimals than needed for a thousandth, with no trailing
    zeros: ``12.3``, ``1.5``, ``0.5``, ``250``.
    """
    whole = len(str(int(value))) if value >= 1 else 0
    places = min(max(digits - whole, 0), 3)
    text = f"{value:.{places}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _plain(text: str) -> str:
    """
    A ``g``-formatted number written out without its exponent.
    """
    if "e" not in text:
        return text
    mantissa, _, exp = text.partition("e")
    sign = "-" if mantissa.startswith("-") else ""
    digits = mantissa.lstrip("-").replace(".", "")
    point = mantissa.lstrip("-").find(".")
    point = (point if point >= 0 else len(digits)) + int(exp)
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}".rstrip("0").rstrip(".")
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"
