"""
Server hints: how long a response header asks the client to wait.

`parse_hint` turns one header value into a delay in seconds, measured from a
``now`` that the caller supplies, in one of the formats of `FORMATS`:

- ``retry-after``: delay-seconds or an HTTP-date (RFC 9110, section 10.2.3);
  the HTTP-date may be an IMF-fixdate or one of the obsolete RFC 850 and
  asctime forms (RFC 9110, section 5.6.7). A date without a zone is UTC.
- ``ms``: a non-negative number of milliseconds (``retry-after-ms``).
- ``delta``: a non-negative number of seconds.
- ``epoch``: a Unix time in seconds.
- ``date``: an HTTP-date only.
- ``duration``: a Go-style duration (``6m0s``, ``1.5s``, ``20ms``), as in
  OpenAI's ``x-ratelimit-reset-requests``, or a bare number of seconds.
- ``ratelimit``: the ``RateLimit`` field of
  draft-ietf-httpapi-ratelimit-headers (an RFC 8941 structured list such as
  ``"default";r=0;t=10``), or the dictionary of its older drafts
  (``limit=100, remaining=0, reset=10``).
- ``auto``: told apart by shape; a number above 10**9 is an epoch time.

Rule 1: pure; the clock is an argument, nothing here reads it or does I/O.
Rule 2: total; any string yields a finite float or None, nothing raises.
Rule 3: no policy; a date in the past gives a negative delay and a huge value
is returned as it is: capping and skipping are the caller's business.
"""

from __future__ import annotations

import math
import re
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Final


if TYPE_CHECKING:
    from collections.abc import Callable


__all__ = [
    "FORMATS",
    "default_format",
    "parse_hint",
    "parse_pause",
    "parse_quota_policy",
]

FORMATS: Final[frozenset[str]] = frozenset(
    {
        "retry-after",
        "ms",
        "ratelimit",
        "delta",
        "epoch",
        "date",
        "duration",
        "auto",
    }
)

# No header value we understand comes near this (an IMF-fixdate has 29
# characters); anything longer is rejected before any parsing is done.
_MAX_LENGTH: Final = 64
#: The IETF RateLimit field may list several policies.
_MAX_FIELD: Final = 512

# In `auto`, a plain number above this is a Unix time, not a delay: 10**9
# seconds is 31 years of waiting, and the Unix time of September 2001.
_EPOCH_THRESHOLD: Final = 1_000_000_000

_DEFAULT_FORMATS: Final[dict[str, str]] = {
    "retry-after": "retry-after",
    "retry-after-ms": "ms",
    "ratelimit": "ratelimit",
}

# Go's time.ParseDuration, without its signs: "1h2m3.5s", ".5s", "1.s".
_DURATION_PART: Final = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|ms|[hms])"
_DURATION: Final = re.compile(f"(?:{_DURATION_PART})+")
_DURATION_PARTS: Final = re.compile(
    r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|ms|[hms])"
)
_DURATION_UNITS: Final[dict[str, float]] = {
    "ns": 1e-9,
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# Go spells microseconds "us", or with the micro sign or the Greek mu.
_MICRO: Final = str.maketrans({"\u00b5": "u", "\u03bc": "u"})


def default_format(header_name: str) -> str:
    """
    The format a header is read in when ``delay_from`` names none.

    ``retry-after`` for ``Retry-After``, ``ms`` for ``retry-after-ms``,
    ``ratelimit`` for ``RateLimit`` (names are case-insensitive), and
    ``auto`` for every other header.
    """
    return _DEFAULT_FORMATS.get(header_name.lower(), "auto")


def parse_hint(value: str, fmt: str, now: float) -> float | None:
    """
    The delay in seconds that a header value asks for.

    Args:
        value: The header value; surrounding whitespace is ignored.
        fmt: One of `FORMATS`.
        now: The current Unix time in seconds; dates and epoch times are
            measured from it.

    Returns:
        The delay, negative for a time in the past and not capped; or None
        if the value is unusable: empty, malformed, negative, not ASCII,
        longer than 64 characters (512 for ``ratelimit``), or ``fmt`` is
        unknown. Never NaN or
        infinite.
    """
    # The common case, "Retry-After: 120", skips the dispatch below (a third
    # of the cost); isascii() is O(1) in CPython and isdigit() alone would
    # let "²" through.
    if (
        fmt == "retry-after"
        and value.isdigit()
        and value.isascii()
        and len(value) <= _MAX_LENGTH
    ):
        return float(value)
    if len(value) > (_MAX_FIELD if fmt == "ratelimit" else _MAX_LENGTH):
        return None
    if not value.isascii():
        # str.isdigit() is true of "²" and "١٢", so anything but ASCII is
        # refused here, once; except the micro sign of Go's "µs".
        if fmt not in ("duration", "auto"):
            return None
        value = value.translate(_MICRO)
        if not value.isascii():
            return None
    parse = _PARSERS.get(fmt)
    if parse is None:
        return None
    return parse(value.strip(), now)


def parse_pause(value: str, fmt: str, now: float) -> float | None:
    """
    How long a header value asks the client to stop sending, for a
    rule's ``pause:``: as :func:`parse_hint`, except that a ``RateLimit``
    field pauses only when a policy in it is exhausted (``r=0``): its
    ``t`` (the largest, when several are), else None.  A field that does
    not parse is ignored (None), as the draft asks.
    """
    if fmt != "ratelimit":
        return parse_hint(value, fmt, now)
    if len(value) > _MAX_FIELD or not value.isascii():
        return None
    return _exhausted(value)


def _exhausted(text: str) -> float | None:
    """
    The largest ``t`` among the ``r=0`` members of a ``RateLimit`` field
    (``"default";r=0;t=30``), or the ``reset`` of an older draft's
    dictionary whose ``remaining`` is 0; None when nothing is exhausted.
    """
    found: float | None = None
    remaining: float | None = None
    reset: float | None = None
    for member in text.split(","):
        item, *params = member.split(";")
        item = item.strip()
        key, equals, raw = item.partition("=")
        if equals and not item.startswith('"'):
            name = key.rstrip()
            if name == "remaining":
                remaining = _number(raw.strip())
            elif name == "reset":
                reset = _number(raw.strip())
            continue
        r: float | None = None
        t: float | None = None
        for param in params:
            name, _, param_value = param.strip().partition("=")
            if name == "t":
                t = _number(param_value.strip())
            elif name == "r":
                r = _number(param_value.strip())
        if r == 0 and t is not None and (found is None or t > found):
            found = t
    if found is None and remaining == 0:
        return reset
    return found


def _number(text: str) -> float | None:
    """
    A non-negative decimal number: ``120`` or ``2.5``.

    No sign, exponent, underscore, ``nan`` or ``inf``: float() accepts all of
    them, so it is only called on text already known to be digits. With at
    most 64 of them, the result is finite.
    """
    if text.isdigit():
        return float(text)
    whole, dot, fraction = text.partition(".")
    if dot and whole.isdigit() and fraction.isdigit():
        return float(text)
    return None


def _finite(delay: float) -> float | None:
    return delay if math.isfinite(delay) else None


def _http_date(text: str, now: float) -> float | None:
    # IMF-fixdate, RFC 850 and asctime (RFC 9110, section 5.6.7); email.utils
    # reads all three, and is lenient beyond them.
    try:
        when = parsedate_to_datetime(text)
        if when.tzinfo is None:
            # asctime has no zone, and "-0000" means "zone unknown"
            # (RFC 5322, section 3.3); HTTP-dates are always UTC.
            when = when.replace(tzinfo=UTC)
        timestamp = when.timestamp()
    except (ValueError, TypeError, OverflowError, IndexError):
        return None
    return _finite(timestamp - now)


def _retry_after(text: str, now: float) -> float | None:
    # Retry-After = HTTP-date / delay-seconds, and delay-seconds = 1*DIGIT
    # (RFC 9110, section 10.2.3): no fraction, no sign. The common case
    # ("120") takes the first branch and nothing else.
    if text.isdigit():
        return float(text)
    if not text:
        return None
    return _http_date(text, now)


def _ms(text: str, _now: float) -> float | None:
    number = _number(text)
    return None if number is None else number / 1000


def _delta(text: str, _now: float) -> float | None:
    return _number(text)


def _epoch(text: str, now: float) -> float | None:
    number = _number(text)
    return None if number is None else _finite(number - now)


def _date(text: str, now: float) -> float | None:
    if not text or text.isdigit():
        return None
    return _http_date(text, now)


def _go_duration(text: str) -> float | None:
    if not _DURATION.fullmatch(text):
        return None
    return sum(
        float(number) * _DURATION_UNITS[unit]
        for number, unit in _DURATION_PARTS.findall(text)
    )


def _duration(text: str, _now: float) -> float | None:
    number = _number(text)
    if number is not None:
        return number
    return _go_duration(text)


def _ratelimit(text: str, _now: float) -> float | None:
    """
    The ``t`` of a ``RateLimit`` field, or the ``reset`` of its older drafts.

    With several policies, the largest ``t`` among those with ``r=0`` (each
    of them blocks until it resets), else the first ``t``. The list is split
    at commas and semicolons without reading quoted strings, so a policy
    name that contains them is not supported.
    """
    first: float | None = None
    exhausted: float | None = None
    reset: float | None = None
    for member in text.split(","):
        item, *params = member.split(";")
        item = item.strip()
        key, equals, reset_value = item.partition("=")
        if equals and not item.startswith('"'):
            # A dictionary member: limit=100, remaining=0, reset=10.
            if key.rstrip() == "reset" and reset is None:
                reset = _number(reset_value.strip())
            continue
        remaining: float | None = None
        reset_after: float | None = None
        for param in params:
            name, _, param_value = param.strip().partition("=")
            if name == "t":
                reset_after = _number(param_value)
            elif name == "r":
                remaining = _number(param_value)
        if reset_after is None:
            continue
        if first is None:
            first = reset_after
        if remaining == 0 and (exhausted is None or reset_after > exhausted):
            exhausted = reset_after
    if exhausted is not None:
        return exhausted
    if first is not None:
        return first
    return reset


def _auto(text: str, now: float) -> float | None:
    number = _number(text)
    if number is not None:
        if number > _EPOCH_THRESHOLD:
            return _finite(number - now)
        return number
    if not text:
        return None
    duration = _go_duration(text)
    if duration is not None:
        return duration
    return _http_date(text, now)


_PARSERS: Final[dict[str, Callable[[str, float], float | None]]] = {
    "retry-after": _retry_after,
    "ms": _ms,
    "ratelimit": _ratelimit,
    "delta": _delta,
    "epoch": _epoch,
    "date": _date,
    "duration": _duration,
    "auto": _auto,
}


# --- RateLimit-Policy --------------------------------------------------------

# The RFC 9651 (Structured Fields) pieces a RateLimit-Policy field is made
# of: a list of items (a string or a token, the policy's name), each with
# parameters whose values are bare items.
_SF_STRING: Final = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*"'
_SF_TOKEN: Final = r"[A-Za-z*][A-Za-z0-9:/!#$%&'*+\-.^_`|~]*"  # noqa: S105
_SF_BARE: Final = (
    rf"(?:-?[0-9]{{1,15}}(?:\.[0-9]{{1,3}})?|{_SF_STRING}|{_SF_TOKEN}"
    r"|:[A-Za-z0-9+/=]*:|\?[01])"
)
_SF_PARAM: Final = re.compile(
    rf";[ ]*([a-z*][a-z0-9_\-.*]*)(?:=({_SF_BARE}))?"
)
_SF_MEMBER: Final = re.compile(
    rf"[ \t]*(?:{_SF_STRING}|{_SF_TOKEN})((?:;[ ]*[a-z*][a-z0-9_\-.*]*"
    rf"(?:={_SF_BARE})?)*)[ \t]*(?:,|$)"
)


def parse_quota_policy(value: str) -> tuple[int, int] | None:
    """
    The strictest quota a ``RateLimit-Policy`` field declares, as
    ``(q, w)``: the item with the lowest rate ``q / w`` (quota units per
    second), or None.

    The field is a Structured Fields list (draft-ietf-httpapi-ratelimit-
    headers): ``"burst";q=100;w=60, "daily";q=1000;w=86400``.  Only the
    items that give a rate of requests count: ``q`` >= 1, ``w`` >= 1, and
    ``qu`` absent or ``"requests"``; an item without ``w`` names no window,
    one of zero quota is the ``RateLimit`` field's business, and one
    counted in other units (``qu="content-bytes"``) says nothing about
    requests.  A malformed field — not a list, a ``q`` or ``w`` that is
    not a non-negative integer, an item without ``q`` — is ignored
    whole, as the draft requires.  Total: never raises.
    """
    if not value or len(value) > _MAX_FIELD:
        return None
    best: tuple[int, int] | None = None
    pos = 0
    end = len(value)
    while pos < end:
        member = _SF_MEMBER.match(value, pos)
        if member is None or member.end() == pos:
            return None
        pos = member.end()
        if value[pos - 1 : pos] == "," and pos >= end:
            return None  # a trailing comma
        params: dict[str, str] = {}
        for param in _SF_PARAM.finditer(member.group(1)):
            params[param.group(1)] = param.group(2) or "?1"
        q = params.get("q")
        if q is None or not q.isdigit():
            return None
        w = params.get("w")
        if w is not None and not w.isdigit():
            return None
        unit = params.get("qu")
        if w is None or int(q) < 1 or int(w) < 1:
            continue
        if unit is not None and unit != '"requests"':
            continue
        item = (int(q), int(w))
        if best is None or item[0] * best[1] < best[0] * item[1]:
            best = item
    return best
