"""
Scripts for ``referee simulate POLICY FILE``: a YAML or JSON sequence of
outcomes, read and checked the way policy files are (every problem at
once, each with the file, the line where the format gives one, and the
path inside the document).

A script is a list of outcomes, or a mapping::

    request:                       # optional; what the call sends
      method: POST
      url: https://api.example.com/v1/charges
      headers: {Idempotency-Key: k-1}
    start: 2026-01-01T00:00:00Z    # optional; the virtual clock's start
    outcomes:
      - {status: 429, headers: {Retry-After: 3}}
      - failure: connect
      - {status: 200, body: {status: done}, at: 10s}

An outcome is a status code, a failure word, or a mapping with ``status``
or ``failure`` and optionally ``headers``, ``body`` (a string is sent as
it is, any other JSON value as JSON), ``request_headers``, ``method``,
``url`` and ``at`` (the time from the call's start at which it is seen).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

import attrs

from referee._core.errors import Problem, RefereeError
from referee._core.snapshot import FAILURES
from referee._core.units import parse_duration
from referee._files.convert import describe, join_path, suggest
from referee._files.load import MAX_FILE, parse_document


__all__ = [
    "DEFAULT_START",
    "Script",
    "ScriptError",
    "read_script",
]

#: The virtual clock's start when a script names none: a fixed time, so
#: that a script's epoch and HTTP-date hints read the same on every run.
DEFAULT_START: Final = datetime(2026, 1, 1, tzinfo=UTC).timestamp()

_TOP_KEYS: Final = ("request", "start", "outcomes")
_REQUEST_KEYS: Final = ("method", "url", "headers")
_OUTCOME_KEYS: Final = (
    "status",
    "failure",
    "headers",
    "body",
    "request_headers",
    "method",
    "url",
    "at",
)


class ScriptError(RefereeError):
    """
    A simulation script is wrong; :attr:`problems` says where and how.
    """

    problems: tuple[Problem, ...]

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@attrs.frozen
class Script:
    """
    A checked script.

    Attributes:
        source: The file it was read from.
        method: The request's method (None: the command line's).
        url: The request's URL (None: the command line's).
        request_headers: The request's headers.
        start: The virtual clock's start, a Unix time.
        outcomes: The outcomes, as ``referee.testing.simulate`` takes
            them (``at`` in seconds).
        lines: The line of each outcome, where the format gives one.
    """

    source: str
    method: str | None
    url: str | None
    request_headers: dict[str, str]
    start: float
    outcomes: tuple[dict[str, Any], ...]
    lines: tuple[int | None, ...]


class _Reader:
    def __init__(self, source: str, lines: Any) -> None:
        self.source = source
        self.lines = lines
        self.problems: list[Problem] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(
            Problem(self.source, self.lines.line(path), path, message)
        )

    def keys(
        self, value: dict[str, Any], path: str, allowed: tuple[str, ...]
    ) -> None:
        for key in value:
            if key not in allowed:
                self.problem(
                    join_path(path, key),
                    f"unknown key {key!r}; expected "
                    f"{', '.join(allowed)}{suggest(key, allowed)}",
                )

    def text(self, value: Any, path: str, what: str) -> str | None:
        if isinstance(value, str) and value.strip():
            return value.strip()
        self.problem(path, f"found {describe(value)}; expected {what}")
        return None

    def headers(self, value: Any, path: str) -> dict[str, str]:
        if not isinstance(value, dict):
            self.problem(
                path,
                f"found {describe(value)}; expected a mapping of header "
                f"names to values, such as {{Retry-After: 3}}",
            )
            return {}
        out: dict[str, str] = {}
        for name, v in value.items():
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                self.problem(
                    join_path(path, name),
                    f"found {describe(v)}; a header's value is a string "
                    f"or a number",
                )
                continue
            out[str(name)] = v if isinstance(v, str) else str(v)
        return out

    def start(self, value: Any, path: str) -> float | None:
        if isinstance(value, datetime):
            stamp = value if value.tzinfo else value.replace(tzinfo=UTC)
            return stamp.timestamp()
        if isinstance(value, date):
            return datetime(*value.timetuple()[:3], tzinfo=UTC).timestamp()
        if isinstance(value, int | float) and not isinstance(value, bool):
            if math.isfinite(value) and value >= 0:
                return float(value)
        elif isinstance(value, str):
            try:
                stamp = datetime.fromisoformat(value.strip())
            except ValueError:
                pass
            else:
                if stamp.tzinfo is None:
                    stamp = stamp.replace(tzinfo=UTC)
                return stamp.timestamp()
        self.problem(
            path,
            f"found {describe(value)}; expected a time: an ISO 8601 date "
            f"and time such as 2026-01-01T00:00:00Z, or a Unix time in "
            f"seconds",
        )
        return None

    def outcome(self, value: Any, path: str) -> dict[str, Any] | None:
        if isinstance(value, bool):
            pass
        elif isinstance(value, int):
            return self.outcome({"status": value}, path)
        elif isinstance(value, str):
            word = value.strip().lower()
            if word.isdigit():
                return self.outcome({"status": int(word)}, path)
            return self.outcome({"failure": word}, path)
        elif isinstance(value, dict):
            return self._mapping(value, path)
        self.problem(
            path,
            f"found {describe(value)}; expected an outcome: a status code, "
            f"a failure word ({', '.join(sorted(FAILURES))}) or a mapping "
            f"with status or failure",
        )
        return None

    def _mapping(self, value: dict[str, Any], path: str) -> dict[str, Any]:
        before = len(self.problems)
        self.keys(value, path, _OUTCOME_KEYS)
        out: dict[str, Any] = {}
        status, failure = value.get("status"), value.get("failure")
        if (status is None) == (failure is None):
            self.problem(
                path,
                "give exactly one of status (a response) and failure (a "
                "transport failure)",
            )
        if status is not None:
            if (
                isinstance(status, int)
                and not isinstance(status, bool)
                and 100 <= status <= 599
            ):
                out["status"] = status
            else:
                self.problem(
                    join_path(path, "status"),
                    f"found {describe(status)}; expected a status code "
                    f"from 100 to 599",
                )
        if failure is not None:
            if failure in FAILURES:
                out["failure"] = failure
            else:
                word = str(failure)
                self.problem(
                    join_path(path, "failure"),
                    f"found {describe(failure)}; expected a failure word: "
                    f"{', '.join(sorted(FAILURES))}"
                    f"{suggest(word, sorted(FAILURES))}",
                )
            for key in ("headers", "body"):
                if key in value:
                    self.problem(
                        join_path(path, key),
                        f"a transport failure has no response {key}",
                    )
        for key in ("headers", "request_headers"):
            if key in value:
                out[key] = self.headers(value[key], join_path(path, key))
        if "body" in value:
            body = value["body"]
            try:
                if not isinstance(body, str):
                    json.dumps(body, allow_nan=False)
            except (TypeError, ValueError):
                self.problem(
                    join_path(path, "body"),
                    f"found {describe(body)}, which holds a value JSON "
                    f"cannot write (YAML reads 2026-01-01 as a date: quote "
                    f"it)",
                )
            else:
                out["body"] = body
        for key, what in (("method", "a method"), ("url", "a URL")):
            if key in value:
                out[key] = self.text(value[key], join_path(path, key), what)
        if "at" in value:
            try:
                out["at"] = parse_duration(value["at"])
            except ValueError as exc:
                self.problem(join_path(path, "at"), str(exc))
        if out.get("method"):
            out["method"] = out["method"].upper()
        return out if len(self.problems) == before else {}


def read_script(path: str) -> Script:
    """
    Read and check the script at *path*.

    Raises:
        ScriptError: with every problem found.
    """
    try:
        with Path(path).open("rb") as f:
            raw = f.read(MAX_FILE + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ScriptError(
            [Problem(path, None, "", f"cannot read the script: {reason}")]
        ) from None
    if len(raw) > MAX_FILE:
        raise ScriptError(
            [
                Problem(
                    path,
                    None,
                    "",
                    f"the script is larger than {MAX_FILE} bytes",
                )
            ]
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScriptError(
            [Problem(path, None, "", f"the script is not UTF-8: {exc}")]
        ) from None
    fmt = "json" if path.endswith(".json") else "yaml"
    data, lines, problems = parse_document(text, path, fmt)
    if problems:
        raise ScriptError(problems)
    reader = _Reader(path, lines)
    if not isinstance(data, dict | list):
        reader.problem(
            "$",
            "the script is empty; expected a list of outcomes, or a "
            "mapping with request, start and outcomes"
            if not text.strip()
            else f"found {describe(data)}; expected a list of outcomes, "
            f"or a mapping with request, start and outcomes",
        )
        raise ScriptError(reader.problems)
    method = url = None
    headers: dict[str, str] = {}
    start: float | None = DEFAULT_START
    items: Any = data
    where = "$"
    if isinstance(data, dict):
        reader.keys(data, "$", _TOP_KEYS)
        request = data.get("request", {})
        if isinstance(request, dict):
            reader.keys(request, "$.request", _REQUEST_KEYS)
            if "method" in request:
                found = reader.text(
                    request["method"], "$.request.method", "a method"
                )
                method = found.upper() if found else None
            if "url" in request:
                url = reader.text(request["url"], "$.request.url", "a URL")
            if "headers" in request:
                headers = reader.headers(
                    request["headers"], "$.request.headers"
                )
        else:
            reader.problem(
                "$.request",
                f"found {describe(request)}; expected a mapping with "
                f"{', '.join(_REQUEST_KEYS)}",
            )
        if "start" in data:
            start = reader.start(data["start"], "$.start")
        where = "$.outcomes"
        items = data.get("outcomes")
        if items is None:
            reader.problem("$", "the script has no outcomes")
            raise ScriptError(reader.problems)
    if not isinstance(items, list) or not items:
        reader.problem(
            where,
            f"found {describe(items)}; expected a non-empty list of "
            f"outcomes (or a mapping with request, start and outcomes)",
        )
        raise ScriptError(reader.problems)
    outcomes: list[dict[str, Any]] = []
    at_lines: list[int | None] = []
    for i, item in enumerate(items):
        path_i = join_path(where, i)
        outcome = reader.outcome(item, path_i)
        if outcome is not None:
            outcomes.append(outcome)
        at_lines.append(lines.line(path_i))
    if reader.problems:
        raise ScriptError(reader.problems)
    assert start is not None  # noqa: S101 - a bad start is a problem
    return Script(
        path,
        method,
        url,
        headers,
        start,
        tuple(outcomes),
        tuple(at_lines),
    )
