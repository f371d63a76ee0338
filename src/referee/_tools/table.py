"""
A policy as a decision table: one row per rule, in the order they are tried.

`render_table` renders a compiled :class:`~referee.Policy` (the extended
policies' rules included, each with the policy that wrote it) as Markdown or
HTML, for docs and reviews; ``referee table`` prints it.  Every cell is
computed from the policy, so a table in the docs cannot drift from the file.
"""

from __future__ import annotations

import html
import json
import math
import re
from typing import TYPE_CHECKING, Any, Final

from referee._core.compile import default_error
from referee._core.units import format_duration, format_number


if TYPE_CHECKING:
    from referee._core import schema as s
    from referee._core.compile import (
        CompiledRule,
        Policy,
        PollSettings,
        RetrySettings,
    )


__all__ = ["COLUMNS", "FORMATS", "render_table", "table_rows"]

#: Between a backoff's first delay and its multiplier (1s, times, 2).
_TIMES: Final = "\N{MULTIPLICATION SIGN}"
#: The formats `render_table` knows.
FORMATS: Final = ("md", "html")
#: The columns of the table, in order.
COLUMNS: Final = (
    "rule",
    "origin",
    "condition",
    "action",
    "delays",
    "error",
    "alert",
    "breaker",
)


# -- cells ---------------------------------------------------------------


def _dur(seconds: float) -> str:
    return format_duration(seconds)


def _num(value: float) -> str:
    return format_number(value)


def _statuses(codes: frozenset[int]) -> str:
    """
    ``5xx`` for a full class, ``500-504`` for a run of three or more,
    otherwise the codes, separated by commas.
    """
    left = sorted(codes)
    parts: list[str] = []
    while left:
        first = left[0]
        base = first - first % 100
        if first == base and set(range(base, base + 100)) <= codes:
            parts.append(f"{base // 100}xx")
            left = [c for c in left if not base <= c < base + 100]
            continue
        end = 0
        while end + 1 < len(left) and left[end + 1] == left[end] + 1:
            end += 1
        if end >= 2:
            parts.append(f"{first}-{left[end]}")
            left = left[end + 1 :]
        else:
            parts.append(str(first))
            left = left[1:]
    return ",".join(parts)


def _value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _match(subject: str, m: s.ValueMatch) -> str:
    parts: list[str] = []
    if m.one_of is not None:
        if len(m.one_of) == 1:
            parts.append(f"{subject} = {_value(m.one_of[0])}")
        else:
            shown = ", ".join(_value(v) for v in m.one_of)
            parts.append(f"{subject} in [{shown}]")
    if m.exists is not None:
        parts.append(f"{subject} {'exists' if m.exists else 'absent'}")
    if m.has_contains:
        parts.append(f"{subject} contains {_value(m.contains)}")
    if m.matches is not None:
        parts.append(f"{subject} matches {m.matches}")
    for op, sign in (("gt", ">"), ("gte", ">="), ("lt", "<"), ("lte", "<=")):
        bound = getattr(m, op)
        if bound is not None:
            parts.append(f"{subject} {sign} {_num(bound)}")
    return " and ".join(parts)


def render_condition(cond: s.ConditionDoc | None) -> str:
    """
    A compact human rendering of a ``when``: ``GET and status 429``.
    """
    if cond is None:
        return "always"
    parts: list[str] = []
    if cond.method is not None:
        parts.append(",".join(sorted(cond.method)))
    if cond.status is not None:
        parts.append(f"status {_statuses(cond.status)}")
    if cond.failure is not None:
        parts.append(f"failure {','.join(sorted(cond.failure))}")
    if cond.host is not None:
        parts.append(f"host {','.join(cond.host)}")
    if cond.path is not None:
        parts.append(f"path {','.join(cond.path)}")
    for name, m in (cond.headers or {}).items():
        parts.append(_match(f"header {name}", m))
    for name, m in (cond.request_headers or {}).items():
        parts.append(_match(f"request header {name}", m))
    for path, m in (cond.body or {}).items():
        parts.append(_match(f"body.{path}", m))
    if cond.attempt is not None:
        parts.append(_match("attempt", cond.attempt))
    for word, subs in (("any", cond.any), ("all", cond.all)):
        if subs is not None:
            inner = ", ".join(render_condition(c) for c in subs)
            parts.append(f"{word}({inner})")
    if cond.not_ is not None:
        parts.append(f"not({render_condition(cond.not_)})")
    return " and ".join(parts) or "always"


def _hints(delay_from: tuple[tuple[str, str, str], ...]) -> str:
    return ", ".join(written for _low, _fmt, written in delay_from)


def _backoff(
    initial: float, multiplier: float, cap: float, jitter: str
) -> str:
    text = f"{_dur(initial)}{_TIMES}{_num(multiplier)} ≤{_dur(cap)}"
    return (
        f"{text} no jitter" if jitter == "none" else f"{text} {jitter} jitter"
    )


def retry_text(r: RetrySettings) -> str:
    """
    A retry's settings: attempts, backoff (first delay, multiplier, cap),
    jitter, server hints, and the rule's own hint ceiling and deadline.
    """
    parts = [
        "unlimited attempts"
        if r.attempts is None
        else f"{r.attempts} attempt{'s' if r.attempts != 1 else ''}",
        _backoff(r.initial, r.multiplier, r.max, r.jitter),
    ]
    if r.delay_from:
        parts.append(f"hints {_hints(r.delay_from)}")
    if r.delay_min:
        parts.append(f"at least {_dur(r.delay_min)}")
    if r.server_delay_max is not None or r.on_exceed is not None:
        ceiling = (
            "policy's"
            if r.server_delay_max is None
            else _dur(r.server_delay_max)
        )
        on_exceed = f" ({r.on_exceed})" if r.on_exceed else ""
        parts.append(f"hint ceiling {ceiling}{on_exceed}")
    if r.deadline is not None:
        parts.append(f"deadline {_dur(r.deadline)}")
    if r.unsafe_methods:
        parts.append("unsafe methods too")
    return ", ".join(parts)


def poll_text(p: PollSettings) -> str:
    """
    A poll's settings: schedule, jitter, deadline, hints, request.
    """
    text = f"{_dur(p.initial)}{_TIMES}{_num(p.multiplier)} ≤{_dur(p.max)}"
    parts = [text if p.jitter == "none" else f"{text} {p.jitter} jitter"]
    parts.append(f"deadline {_dur(p.deadline)}")
    if p.delay_from:
        parts.append(f"hints {_hints(p.delay_from)}")
    if p.request_method or p.request_url:
        target = " ".join(x for x in (p.request_method, p.request_url) if x)
        parts.append(f"request {target}")
    return ", ".join(parts)


def _error(rule: CompiledRule) -> str:
    if rule.error is not None:
        return rule.error.__name__
    if rule.action == "retry":
        return "RetriesExhausted"
    if rule.action == "poll":
        return "DeadlineExceeded"
    if rule.action != "abort":
        return ""
    # An abort without error: raises by status; name it when the
    # condition's statuses all give the same one.
    when = rule.doc.when
    if when is not None and when.status is not None:
        found = {default_error(code) for code in when.status}
        if len(found) == 1:
            return found.pop().__name__
    return "by status"


def _alert(rule: CompiledRule) -> str:
    a = rule.alert
    if a is None:
        return ""
    text = f"{a.kind} {a.severity}"
    return f"{text}, dedupe {_dur(a.dedupe)}" if a.dedupe else text


def _breaker(rule: CompiledRule) -> str:
    b = rule.breaker
    if b is None:
        return ""
    text = f"{b.name} {_dur(b.open_for)}"
    return f"{text} {','.join(sorted(b.methods))}" if b.methods else text


def _delays(rule: CompiledRule) -> str:
    if rule.retry is not None:
        return retry_text(rule.retry)
    if rule.poll is not None:
        return poll_text(rule.poll)
    return ""


def table_rows(policy: Policy) -> list[tuple[str, ...]]:
    """
    One tuple of cells (see `COLUMNS`) per rule, in order.
    """
    return [
        (
            rule.id,
            rule.origin,
            render_condition(rule.doc.when),
            rule.action,
            _delays(rule),
            _error(rule),
            _alert(rule),
            _breaker(rule),
        )
        for rule in policy.rules
    ]


def summary(policy: Policy) -> list[tuple[str, str]]:
    """
    The header: ``(label, value)`` pairs for the sources and defaults.
    """
    out = [("sources", " → ".join(policy.sources))]
    out.append(
        (
            "deadline",
            "none" if math.isinf(policy.deadline) else _dur(policy.deadline),
        )
    )
    out.append(
        (
            "server_delay",
            (
                f"max {_dur(policy.server_delay_max)}, "
                f"on_exceed {policy.on_exceed}"
            ),
        )
    )
    out.append(("retry", retry_text(policy.retry)))
    out.append(("poll", poll_text(policy.poll)))
    r = policy.rate_limit
    out.append(
        (
            "rate_limit",
            "off"
            if r is None
            else f"{r.requests} per {_dur(r.per)}"
            + (f", {','.join(sorted(r.methods))}" if r.methods else "")
            + (", by path" if r.by_path else "")
            + (", seeded by RateLimit-Policy" if r.seed else ""),
        )
    )
    g = policy.budget
    out.append(
        (
            "budget",
            "off"
            if g is None
            else f"{_num(g.tokens)} tokens, refill {_num(g.refill)}",
        )
    )
    b = policy.breaker
    out.append(
        (
            "breaker",
            "off"
            if b is None
            else f"ratio {_num(b.failure_ratio)} over {_dur(b.window)} (at "
            f"least {b.min_calls} calls), open {_dur(b.open_for)}",
        )
    )
    if policy.errors:
        # Declared classes, each with the class it extends: the table is
        # read without the file, and "CardError" alone says nothing of
        # what catches it.
        out.append(
            (
                "errors",
                ", ".join(
                    f"{name} ({cls.__mro__[1].__name__})"
                    for name, cls in policy.errors.items()
                ),
            )
        )
    return out


# -- formats ---------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_|<>\[\]])")


def md_escape(text: str) -> str:
    """
    *text* safe in a Markdown table cell: one line, specials escaped.
    """
    return _MD_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def _markdown(policy: Policy) -> str:
    lines = [f"## {md_escape(policy.name)}", ""]
    if policy.description:
        lines += [md_escape(policy.description), ""]
    lines += [f"- {md_escape(k)}: {md_escape(v)}" for k, v in summary(policy)]
    lines += ["", "| " + " | ".join(COLUMNS) + " |"]
    lines.append("|" + "---|" * len(COLUMNS))
    for row in table_rows(policy):
        lines.append("| " + " | ".join(md_escape(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


def _html(policy: Policy) -> str:
    e = html.escape
    lines = [f"<h2>{e(policy.name)}</h2>"]
    if policy.description:
        lines.append(f"<p>{e(policy.description)}</p>")
    lines.append("<ul>")
    lines += [f"  <li>{e(k)}: {e(v)}</li>" for k, v in summary(policy)]
    lines += ["</ul>", "<table>", "  <thead>", "    <tr>"]
    lines += [f"      <th>{e(c)}</th>" for c in COLUMNS]
    lines += ["    </tr>", "  </thead>", "  <tbody>"]
    for row in table_rows(policy):
        lines.append("    <tr>")
        lines += [f"      <td>{e(c)}</td>" for c in row]
        lines.append("    </tr>")
    lines += ["  </tbody>", "</table>"]
    return "\n".join(lines) + "\n"


def render_table(policy: Policy, fmt: str = "md") -> str:
    """
    *policy* as a decision table.

    Args:
        policy: A compiled policy.
        fmt: ``md`` (a GitHub-flavoured Markdown table) or ``html``.

    Raises:
        ValueError: An unknown *fmt*.
    """
    if fmt == "md":
        return _markdown(policy)
    if fmt == "html":
        return _html(policy)
    msg = f"fmt must be one of {', '.join(FORMATS)}, not {fmt!r}"
    raise ValueError(msg)
