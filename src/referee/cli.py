"""
The ``referee`` command: check policy files, explain decisions.

- ``referee check FILE...``: load each policy, print its errors and the
  warnings of the static checks; exit 0 when clean, 1 on errors, 2 on
  warnings under ``--strict``.
- ``referee explain POLICY --status N ...``: decide one made-up outcome and
  say which rule fired, what it does, and why.
- ``referee simulate POLICY FILE`` (or ``--responses 429,503,200``): run
  the attempt loop over scripted outcomes on a virtual clock and print the
  trail: every decision, its delay and where the delay came from, the
  counters.
- ``referee demo``: run a workload against a fake Enrow API on loopback,
  with a real httpx client and the real policy, and summarize what the
  policy did.
- ``referee schema``: print the JSON Schema of policy files.
- ``referee table POLICY [--format md|html]``: print a policy as a decision
  table, one row per rule.

``check``, ``explain``, ``simulate`` and ``table`` take ``--import MODULE``
(repeatable), for error classes registered in code; errors a policy file
declares under ``errors:`` need none.

Output goes to stdout, errors and notes to stderr.  ``main`` returns the exit
code instead of exiting, so tests can call it in-process.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import random
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._core.decisions import Abort, Accept, Poll, Retry
from ._core.engine import decide, scope_parts
from ._core.errors import PolicyError, Problem, RetriesExhausted
from ._core.snapshot import FAILURES, Snapshot
from ._core.state import AttemptState
from ._core.units import format_duration, round_seconds
from ._files.load import load_policy
from ._tools.check import check_policy


if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._core.compile import CompiledRule, Policy
    from ._core.decisions import Decision
    from ._tools.script import Script
    from .testing import Simulation, Step


__all__ = ["main"]

#: The URL of an explained request when ``--url`` is not given.
DEFAULT_URL = "https://api.example.com/"
#: The most later sends ``explain --json`` lists.
SCHEDULE_LIMIT = 100
#: The most later sends ``explain`` prints.
SCHEDULE_SHOWN = 6


def _version() -> str:
    try:
        return metadata.version("referee")
    except metadata.PackageNotFoundError:  # pragma: no cover - not installed
        return "unknown"


def _out(text: str = "", *, err: bool = False) -> None:
    """
    Print *text*, replacing what the terminal's encoding cannot show
    (``≤`` on a cp1252 console) rather than crashing.
    """
    stream = sys.stderr if err else sys.stdout
    try:
        print(text, file=stream)
    except UnicodeEncodeError:
        enc = getattr(stream, "encoding", None) or "ascii"
        print(text.encode(enc, "replace").decode(enc), file=stream)


# -- parsing -------------------------------------------------------------


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        msg = f"expected 'Name: value', found {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return name.strip(), value.strip()


def _status(text: str) -> int:
    try:
        status = int(text)
    except ValueError:
        status = 0
    if not 100 <= status <= 599:
        msg = f"expected an HTTP status from 100 to 599, found {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return status


def _responses(text: str) -> list[int | str]:
    out: list[int | str] = []
    for item in text.split(","):
        word = item.strip().lower()
        if word in FAILURES:
            out.append(word)
            continue
        try:
            out.append(_status(word))
        except argparse.ArgumentTypeError:
            msg = (
                f"expected status codes (100-599) or failure words "
                f"({', '.join(sorted(FAILURES))}) separated by commas, "
                f"found {item.strip()!r}"
            )
            raise argparse.ArgumentTypeError(msg) from None
    return out


def _credits(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < math.inf:
        msg = f"expected a number of credits >= 0, found {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _at_least(low: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            msg = f"expected an integer >= {low}, found {text!r}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """
    The argument parser of the ``referee`` command.
    """
    parser = argparse.ArgumentParser(
        prog="referee",
        description="Declarative error policies for HTTP API clients.",
    )
    parser.add_argument(
        "--version", action="version", version=f"referee {_version()}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = sub.add_parser(
        "check",
        help="load policy files and warn about suspicious rules",
        description="Load each policy (a path or a bundled name), print "
        "its errors, then the warnings of the static checks. Exit 0 when "
        "clean, 1 when a file has errors, 2 with --strict when there are "
        "warnings.",
    )
    check.add_argument(
        "files", nargs="+", metavar="FILE", help="a policy file or name"
    )
    check.add_argument(
        "--strict", action="store_true", help="exit 2 on warnings"
    )
    check.add_argument(
        "--json",
        action="store_true",
        help="print one JSON list of problems instead",
    )
    _add_imports(check)
    check.set_defaults(run=_run_check)

    explain = sub.add_parser(
        "explain",
        help="show what a policy decides for one outcome",
        description="Decide one made-up outcome (a response, or a "
        "transport failure) and show the rule that fires, the action, "
        "its delay, error, alert and breaker, and the reason. The call "
        "is taken to start now: deadlines are whole, and epoch or date "
        "hints are read against the real clock.",
    )
    explain.add_argument("policy", metavar="POLICY", help="a file or name")
    outcome = explain.add_mutually_exclusive_group(required=True)
    outcome.add_argument(
        "--status", type=_status, metavar="N", help="the response status"
    )
    outcome.add_argument(
        "--failure",
        choices=sorted(FAILURES),
        help="a transport failure instead of a response",
    )
    explain.add_argument("--method", default="GET", help="default: GET")
    explain.add_argument(
        "--url", default=DEFAULT_URL, help=f"default: {DEFAULT_URL}"
    )
    explain.add_argument(
        "--header",
        type=_header,
        action="append",
        default=[],
        metavar="'K: V'",
        help="a response header (repeatable)",
    )
    explain.add_argument(
        "--request-header",
        type=_header,
        action="append",
        default=[],
        metavar="'K: V'",
        help="a request header, e.g. Idempotency-Key (repeatable)",
    )
    explain.add_argument(
        "--body", metavar="JSON", help="the response body (sent as is)"
    )
    explain.add_argument(
        "--attempt",
        type=_at_least(1),
        default=1,
        metavar="N",
        help="the attempt decided; 1 is the first send (default: 1)",
    )
    explain.add_argument(
        "--polls",
        type=_at_least(0),
        default=0,
        metavar="N",
        help="how many polls the call has made (default: 0)",
    )
    explain.add_argument(
        "--seed", type=int, help="seed the jitter for a reproducible delay"
    )
    explain.add_argument(
        "--json", action="store_true", help="print one JSON object"
    )
    _add_imports(explain)
    explain.set_defaults(run=_run_explain, parser=explain)

    simulate = sub.add_parser(
        "simulate",
        help="run a policy over scripted outcomes",
        description="Run the policy's attempt loop over a script of "
        "outcomes, on a virtual clock that moves on by each delay, and "
        "print the trail: for each outcome its virtual time, the action, "
        "the rule, the delay and where it came from (the backoff, the "
        "poll schedule or a header), the counters and the reason; then "
        "how the call ended. The script is a YAML or JSON file of "
        "outcomes with status or failure, headers, body, request headers "
        "and the time each is seen at; --responses takes status codes "
        "and failure words instead.",
    )
    simulate.add_argument("policy", metavar="POLICY", help="a file or name")
    simulate.add_argument(
        "script",
        nargs="?",
        metavar="FILE",
        help="a YAML or JSON script of outcomes",
    )
    simulate.add_argument(
        "--script",
        dest="script_option",
        metavar="FILE",
        help="the script, as an option",
    )
    simulate.add_argument(
        "--responses",
        type=_responses,
        metavar="LIST",
        help="outcomes in order instead of a script, e.g. '429,503,200' "
        "or 'connect,200'; the failure words are "
        f"{', '.join(sorted(FAILURES))}",
    )
    simulate.add_argument("--method", help="default: the script's, or GET")
    simulate.add_argument(
        "--url", help=f"default: the script's, or {DEFAULT_URL}"
    )
    simulate.add_argument(
        "--seed", type=int, default=0, help="seed the jitter (default: 0)"
    )
    simulate.add_argument(
        "--json", action="store_true", help="print one JSON object"
    )
    _add_imports(simulate)
    simulate.set_defaults(run=_run_simulate, parser=simulate)

    demo = sub.add_parser(
        "demo",
        help="run a client against a fake Enrow API",
        description="Start a fake of the Enrow API on a loopback port, "
        "with a rate limit, random faults and a balance that runs out, "
        "and run email finder and verifier calls through a real httpx "
        "client with the policy in its transport; show a progress line "
        "on stderr and a summary on stdout. Needs httpx (pip install "
        "referee[httpx]).",
    )
    demo.add_argument(
        "--policy",
        default="enrow",
        metavar="POLICY",
        help="a file or name (default: enrow)",
    )
    demo.add_argument(
        "--calls",
        type=_at_least(1),
        default=40,
        metavar="N",
        help="how many calls to make (default: 40)",
    )
    demo.add_argument(
        "--seed", type=int, default=1, help="seed the run (default: 1)"
    )
    demo.add_argument(
        "--credits",
        type=_credits,
        metavar="N",
        help="the account's balance (default: enough for all but the "
        "last fifth of the calls)",
    )
    demo.add_argument(
        "--workers",
        type=_at_least(1),
        default=8,
        metavar="N",
        help="threads making calls (default: 8)",
    )
    demo.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress line (it shows only on a terminal anyway)",
    )
    demo.add_argument(
        "--real-timings",
        action="store_true",
        help="keep the policy's own delays (polls from 2s: slow) instead "
        "of the demo's shorter ones",
    )
    demo.set_defaults(run=_run_demo)

    schema = sub.add_parser(
        "schema",
        help="print the JSON Schema of policy files",
        description="Print the JSON Schema (draft 2020-12) of policy "
        "documents, generated from referee's document model, for editors "
        "and CI. error: takes any name (the built-in ones are listed for "
        "completion): a file may declare its own under errors:. The same "
        "schema ships as referee/policy.schema.json.",
    )
    schema.set_defaults(run=_run_schema)

    table = sub.add_parser(
        "table",
        help="print a policy as a decision table",
        description="Print one row per rule, in the order they are tried "
        "(inherited rules included, with the policy that wrote them): "
        "its condition, action, delays, error, alert and breaker; above "
        "the table, the policy's sources and defaults.",
    )
    table.add_argument("policy", metavar="POLICY", help="a file or name")
    table.add_argument(
        "--format",
        choices=["md", "html"],
        default="md",
        help="Markdown (default) or HTML",
    )
    _add_imports(table)
    table.set_defaults(run=_run_table)
    return parser


def _add_imports(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (repeatable), for error classes it "
        "registers with referee.register_error; the current directory is "
        "searched too. Errors a policy declares under errors: need none",
    )


def _import_all(modules: Sequence[str]) -> str | None:
    """
    Import each of *modules*; the first failure, in words, or None.
    """
    # As `python -m` does, and uvicorn's --app-dir: a module beside the
    # policy files, in the directory the command runs from, is found.
    here = str(Path.cwd())
    if modules and here not in sys.path:
        sys.path.insert(0, here)
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - reported, exit 2
            return f"--import {name}: {type(exc).__name__}: {exc}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the ``referee`` command with *argv* (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 1 when a policy has errors, 2 for
        usage errors (and ``check --strict`` warnings).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        failed = _import_all(getattr(args, "imports", ()))
        if failed is not None:
            _out(f"referee: {failed}", err=True)
            return 2
        code: int = args.run(args)
    except SystemExit as exc:  # argparse: usage errors, --help, --version
        return exc.code if isinstance(exc.code, int) else 2
    return code


# -- check ---------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _warning_line(p: Problem) -> str:
    where = p.file if p.line is None else f"{p.file}:{p.line}"
    path = f" {p.path}:" if p.path else ""
    return f"{where}: {p.severity}:{path} {p.message}"


def _problem_json(p: Problem) -> dict[str, Any]:
    return {
        "file": p.file,
        "severity": p.severity,
        "line": p.line,
        "path": p.path,
        "message": p.message,
    }


def _run_check(args: argparse.Namespace) -> int:
    found: list[Problem] = []
    errors = warnings = 0
    for name in args.files:
        try:
            policy = load_policy(name)
        except PolicyError as exc:
            errors += len(exc.problems)
            found.extend(exc.problems)
            if not args.json:
                for p in exc.problems:
                    _out(str(p))
                _out(f"{name}: {_plural(len(exc.problems), 'error')}")
            continue
        notes = check_policy(policy)
        warnings += len(notes)
        found.extend(notes)
        if not args.json:
            for p in notes:
                _out(_warning_line(p))
            rules = _plural(len(policy.rules), "rule")
            if notes:
                _out(f"{name}: {rules}, {_plural(len(notes), 'warning')}")
            else:
                _out(f"{name}: ok, {rules}")
    if args.json:
        _out(json.dumps([_problem_json(p) for p in found], indent=2))
    if errors:
        return 1
    if warnings and args.strict:
        return 2
    return 0


# -- explain -------------------------------------------------------------


def _snapshot(args: argparse.Namespace) -> Snapshot:
    request_headers = _headers(args.request_header)
    if args.failure is not None:
        return Snapshot.failed(
            args.failure,
            method=args.method,
            url=args.url,
            request_headers=request_headers,
        )
    body = None
    if args.body is not None:
        body = args.body.encode()
        try:
            json.loads(args.body)
        except ValueError as exc:
            _out(
                f"referee explain: note: --body is not valid JSON ({exc}); "
                f"it is sent as raw bytes, and body conditions do not "
                f"match it",
                err=True,
            )
    return Snapshot.response(
        args.status,
        method=args.method,
        url=args.url,
        headers=_headers(args.header),
        request_headers=request_headers,
        body=body,
    )


def _headers(pairs: list[tuple[str, str]]) -> dict[str, str]:
    # Repeated fields combine into one, comma-separated (RFC 9110 §5.3).
    out: dict[str, str] = {}
    index: dict[str, str] = {}
    for name, value in pairs:
        key = index.setdefault(name.lower(), name)
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _run_explain(args: argparse.Namespace) -> int:
    if args.failure is not None and (args.header or args.body is not None):
        args.parser.error(
            "--header and --body describe a response; a transport failure "
            "(--failure) has neither"
        )
    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        for p in exc.problems:
            _out(str(p), err=True)
        return 1
    snap = _snapshot(args)
    now = time.time()
    state = AttemptState(
        attempt=args.attempt,
        polls=args.polls,
        started=now,
        poll_started=now if args.polls else None,
    )
    decision = decide(
        policy, snap, state, now=now, rng=random.Random(args.seed)
    )
    report = _report(policy, snap, state, decision, now)
    if args.json:
        _out(json.dumps(report, indent=2))
    else:
        _print_report(policy, report)
    return 0


_ACTIONS = {Accept: "accept", Retry: "retry", Poll: "poll", Abort: "abort"}


def _jitter_range(base: float, jitter: str) -> tuple[float, float]:
    if jitter == "full":
        return 0.0, base
    if jitter == "equal":
        return base / 2, base
    return base, base


def _at(schedule: tuple[float, ...], n: int) -> float:
    """
    The *n*-th (0-based) delay of a schedule; its last repeats forever.
    """
    return schedule[n] if n < len(schedule) else schedule[-1]


def _later_retries(
    policy: Policy, rule: CompiledRule, decision: Retry
) -> tuple[list[tuple[int, float]], bool]:
    """
    ``(attempt, upper bound of the delay before it)`` for the sends after
    the one *decision* schedules, and whether the list was cut short.
    """
    settings = rule.retry
    assert settings is not None  # noqa: S101 - retry rules have settings
    last = settings.attempts
    # delay_min raises every delay to its floor, which server_delay.max
    # caps (as the engine does).
    floor = min(settings.delay_min, policy.server_delay_max)
    out: list[tuple[int, float]] = []
    attempt = decision.attempt + 1
    while last is None or attempt <= last:
        if len(out) == SCHEDULE_LIMIT:
            return out, True
        bound = max(_at(settings.schedule, attempt - 2), floor)
        out.append((attempt, bound))
        attempt += 1
    return out, False


def _later_polls(
    rule: CompiledRule, decision: Poll
) -> tuple[list[tuple[int, float]], bool]:
    """
    ``(poll, upper bound of the delay before it)`` for the polls after this
    one that fit in the poll deadline, if every delay took its upper bound.
    """
    settings = rule.poll
    assert settings is not None  # noqa: S101 - poll rules have settings
    elapsed = decision.delay
    out: list[tuple[int, float]] = []
    n = decision.poll + 1
    while True:
        bound = _at(settings.schedule, n - 1)
        if elapsed + bound > settings.deadline:
            return out, False
        if len(out) == SCHEDULE_LIMIT:
            return out, True
        out.append((n, bound))
        elapsed += bound
        n += 1


def _delay_range(
    rule: CompiledRule | None, decision: Decision, state: AttemptState
) -> tuple[float, float, str] | None:
    """
    The range the jitter drew the delay from: ``(low, high, jitter)``.
    """
    if rule is None:
        return None
    if isinstance(decision, Retry) and decision.delay_source == "backoff":
        assert rule.retry is not None  # noqa: S101
        base = _at(rule.retry.schedule, state.attempt - 1)
        return (*_jitter_range(base, rule.retry.jitter), rule.retry.jitter)
    if isinstance(decision, Poll) and decision.delay_source == "schedule":
        assert rule.poll is not None  # noqa: S101
        base = _at(rule.poll.schedule, state.polls)
        return (*_jitter_range(base, rule.poll.jitter), rule.poll.jitter)
    return None


def _gives_up_with(rule: CompiledRule | None) -> str | None:
    if rule is None:
        return None
    if rule.action == "retry":
        return (rule.error or RetriesExhausted).__name__
    if rule.action == "poll":
        return rule.error.__name__ if rule.error else "DeadlineExceeded"
    return None


def _seconds(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _report(
    policy: Policy,
    snap: Snapshot,
    state: AttemptState,
    decision: Decision,
    now: float = 0.0,
) -> dict[str, Any]:
    rule = None if decision.rule_id is None else policy.rule(decision.rule_id)
    delay = decision.delay if isinstance(decision, Retry | Poll) else None
    source = (
        decision.delay_source if isinstance(decision, Retry | Poll) else None
    )
    spread = _delay_range(rule, decision, state)
    schedule: list[tuple[int, float]] | None = None
    truncated = False
    if isinstance(decision, Retry) and rule is not None:
        schedule, truncated = _later_retries(policy, rule, decision)
    elif isinstance(decision, Poll) and rule is not None:
        schedule, truncated = _later_polls(rule, decision)
    alert = decision.alert
    breaker = decision.breaker
    request = decision.request if isinstance(decision, Poll) else None
    return {
        "policy": policy.name,
        "sources": list(policy.sources),
        "outcome": {
            "status": snap.status,
            "failure": snap.failure,
            "method": snap.method,
            "url": snap.url,
        },
        "attempt": state.attempt,
        "polls": state.polls,
        "rule": decision.rule_id,
        "origin": rule.origin if rule is not None else None,
        "description": rule.description if rule is not None else None,
        "action": _ACTIONS[type(decision)],
        "delay": delay,
        "delay_source": source,
        "jitter": None if spread is None else spread[2],
        "delay_range": None if spread is None else [spread[0], spread[1]],
        "next_attempt": decision.attempt
        if isinstance(decision, Retry)
        else None,
        "poll": decision.poll if isinstance(decision, Poll) else None,
        "attempts": (
            rule.retry.attempts
            if rule is not None and rule.retry is not None
            else None
        ),
        "deadline": _seconds(
            rule.poll.deadline
            if rule is not None and rule.poll is not None
            else rule.retry.deadline
            if rule is not None
            and rule.retry is not None
            and rule.retry.deadline is not None
            else policy.deadline
        ),
        "schedule": None if schedule is None else [b for _n, b in schedule],
        "schedule_truncated": truncated,
        "poll_request": (
            None
            if request is None
            else {"method": request.method, "url": request.url}
        ),
        "error": decision.error.__name__
        if isinstance(decision, Abort)
        else None,
        "gives_up_with": _gives_up_with(rule),
        "alert": None
        if alert is None
        else {
            "kind": alert.kind,
            "severity": alert.severity,
            "message": alert.message,
            "key": alert.key,
            "dedupe": alert.dedupe,
        },
        "breaker": None
        if breaker is None
        else {"name": breaker.name, "open_for": breaker.open_for},
        "pause": None
        if decision.pause is None
        else {
            "for": round_seconds(decision.pause.until - now),
            "scope": scope_parts(decision.pause.scope)[0],
            "methods": scope_parts(decision.pause.scope)[1],
            "then": decision.pause.then,
            "source": decision.pause.source,
        },
        "log": decision.log,
        "reason": decision.reason,
    }


def _print_report(policy: Policy, r: dict[str, Any]) -> None:
    def row(label: str, text: str) -> None:
        _out(f"{label:<11} {text}")

    def more(text: str) -> None:
        _out(f"{'':<11} {text}")

    row("policy", policy.name)
    if policy.description:
        more(policy.description)
    row("sources", " → ".join(policy.sources))
    o = r["outcome"]
    what = (
        o["status"] if o["status"] is not None else f"{o['failure']} failure"
    )
    row("outcome", f"{o['method']} {o['url']} → {what}")
    counts = f"attempt {r['attempt']}"
    if r["polls"]:
        counts += f", after {_plural(r['polls'], 'poll')}"
    more(counts)
    if r["rule"] is None:
        row("rule", "none matched")
    else:
        origin = r["origin"]
        row(
            "rule",
            r["rule"]
            if origin == policy.name
            else f"{r['rule']} (from {origin})",
        )
        if r["description"]:
            more(r["description"])
    action = r["action"]
    if action == "accept":
        passed = (
            "the failure propagates"
            if o["failure"] is not None
            else "the response is returned"
        )
        row("action", f"accept: {passed}")
    elif action == "retry":
        limit = "" if r["attempts"] is None else f" of {r['attempts']}"
        row("action", f"retry: send attempt {r['next_attempt']}{limit}")
    elif action == "poll":
        row("action", f"poll: poll {r['poll']}")
    else:
        row("action", "abort")
        row("error", r["error"])
    if r["delay"] is not None:
        row("delay", _delay_text(r, policy))
    if r["schedule"] is not None:
        row("later", _schedule_text(r))
    if r["poll_request"] is not None:
        pr = r["poll_request"]
        row("poll with", f"{pr['method']} {pr['url']}")
    if r["gives_up_with"] is not None and action != "abort":
        row("gives up", f"with {r['gives_up_with']}")
    alert = r["alert"]
    if alert is None:
        row("alert", "none")
    else:
        dedupe = (
            ""
            if alert["dedupe"] is None
            else f", dedupe {format_duration(alert['dedupe'])}"
        )
        row("alert", f"{alert['kind']} ({alert['severity']}{dedupe})")
        more(alert["message"])
        more(f"key {alert['key']}")
    breaker = r["breaker"]
    if breaker is None:
        row("breaker", "none")
    else:
        row(
            "breaker",
            f"opens {breaker['name']!r} for "
            f"{format_duration(breaker['open_for'])}",
        )
    pause = r["pause"]
    if pause is not None:
        row(
            "pause",
            f"holds {_scope_text(pause)} for "
            f"{format_duration(pause['for'])} (from {pause['source']}); "
            f"later calls {pause['then']}",
        )
    row("reason", r["reason"])


def _delay_text(r: dict[str, Any], policy: Policy) -> str:
    delay = format_duration(r["delay"])
    source = r["delay_source"]
    if r["delay_range"] is None:
        text = f"{delay} (from {source})"
        if source.endswith("(capped)"):
            text += (
                f"; server_delay.max is "
                f"{format_duration(policy.server_delay_max)}"
            )
        return text
    low, high = r["delay_range"]
    what = "backoff" if source == "backoff" else "poll schedule"
    if r["jitter"] == "none":
        return f"{delay} ({what}, no jitter)"
    return (
        f"{delay} ({what}, {r['jitter']} jitter over "
        f"[{format_duration(low)}, {format_duration(high)}])"
    )


def _schedule_text(r: dict[str, Any]) -> str:
    notes: list[str] = []
    if r["action"] == "retry":
        first, word = r["next_attempt"] + 1, "attempt"
    else:
        first, word = r["poll"] + 1, "poll"
    schedule = r["schedule"]
    bounds = ", ".join(
        f"{word} {first + i} ≤{format_duration(b)}"
        for i, b in enumerate(schedule[:SCHEDULE_SHOWN])
    )
    if not bounds:
        bounds = f"no later {word}s"
    if r["schedule_truncated"]:
        bounds += " …"
        notes.append(f"more than {len(schedule)} {word}s")
    elif len(schedule) > SCHEDULE_SHOWN:
        bounds += " …"
        notes.append(f"{len(schedule)} later {word}s")
    if r["action"] == "retry":
        attempts = r["attempts"]
        notes.append(
            f"attempts: {'unlimited' if attempts is None else attempts}"
        )
    if r["deadline"] is not None:
        notes.append(f"deadline {format_duration(r['deadline'])}")
    return f"{bounds} ({'; '.join(notes)})" if notes else bounds


# -- simulate ------------------------------------------------------------


def _alert_json(decision: Decision) -> dict[str, Any] | None:
    alert = decision.alert
    if alert is None:
        return None
    return {
        "kind": alert.kind,
        "severity": alert.severity,
        "message": alert.message,
        "key": alert.key,
        "dedupe": alert.dedupe,
    }


def _counters(
    policy: Policy, step: Step
) -> tuple[int | None, int | None, int | None]:
    """
    ``(the rule's attempt limit, the next attempt, the poll number)`` of
    a step: what a retry schedules and out of how many, or which poll.
    """
    d = step.decision
    rule = None if d.rule_id is None else _rule_or_none(policy, d.rule_id)
    limit = (
        rule.retry.attempts
        if rule is not None and rule.retry is not None
        else None
    )
    return (
        limit,
        d.attempt if isinstance(d, Retry) else None,
        d.poll if isinstance(d, Poll) else None,
    )


def _rule_or_none(policy: Policy, rule_id: str) -> CompiledRule | None:
    try:
        return policy.rule(rule_id)
    except KeyError:
        return None


def _step_json(
    policy: Policy,
    n: int,
    step: Step,
    script: Script | None,
) -> dict[str, Any]:
    d = step.decision
    snap = step.snapshot
    rule = None if d.rule_id is None else _rule_or_none(policy, d.rule_id)
    limit, next_attempt, poll = _counters(policy, step)
    scripted = script.outcomes[n - 1].get("at") if script is not None else None
    return {
        "step": n,
        "line": script.lines[n - 1] if script is not None else None,
        "at": step.at,
        "scripted_at": scripted,
        "status": snap.status,
        "failure": snap.failure,
        "method": snap.method,
        "url": snap.url,
        "rule": d.rule_id,
        "rule_index": None if rule is None else rule.index,
        "origin": None if rule is None else rule.origin,
        "action": _ACTIONS[type(d)],
        "delay": d.delay if isinstance(d, Retry | Poll) else None,
        "delay_source": (
            d.delay_source if isinstance(d, Retry | Poll) else None
        ),
        "attempt": step.attempt,
        "attempts": limit,
        "next_attempt": next_attempt,
        "polls": step.polls,
        "poll": poll,
        "error": d.error.__name__ if isinstance(d, Abort) else None,
        "alert": _alert_json(d),
        "pause": _pause_json(d, script.start if script is not None else 0.0),
        "paused": step.paused,
        "sent": step.sent,
        "reason": d.reason,
    }


def _scope_text(pause: dict[str, Any]) -> str:
    """
    The scope of a reported pause in words: ``the policy``, ``host
    api.example.com``, ``the policy (POST calls)``.
    """
    scope = pause["scope"]
    text = "the policy" if scope == "policy" else f"host {scope}"
    if pause["methods"] is not None:
        text += f" ({', '.join(pause['methods'])} calls)"
    return text


def _pause_json(decision: Decision, start: float) -> dict[str, Any] | None:
    """
    The pause a decision sets: until when (seconds from the call's start,
    as ``at``), its scope, what later calls do, and the header it came
    from.
    """
    pause = decision.pause
    if pause is None:
        return None
    return {
        "until": round_seconds(pause.until - start),
        "scope": scope_parts(pause.scope)[0],
        "methods": scope_parts(pause.scope)[1],
        "then": pause.then,
        "source": pause.source,
    }


def _script_or_problems(
    args: argparse.Namespace,
) -> tuple[Script | None, int | None]:
    """
    The script the command names (None for ``--responses``), or the exit
    code after its problems were printed.
    """
    from ._tools.script import ScriptError, read_script

    given = [
        x
        for x in (args.script, args.script_option, args.responses)
        if x is not None
    ]
    if len(given) != 1:
        args.parser.error(
            "give the outcomes once: a script FILE (or --script FILE), or "
            "--responses LIST"
        )
    path = args.script if args.script is not None else args.script_option
    if path is None:
        return None, None
    try:
        return read_script(path), None
    except ScriptError as exc:
        for p in exc.problems:
            _out(str(p), err=True)
        _out(
            f"{path}: {_plural(len(exc.problems), 'error')}; nothing was "
            f"simulated",
            err=True,
        )
        return None, 1


def _run_simulate(args: argparse.Namespace) -> int:
    from .testing import simulate

    script, code = _script_or_problems(args)
    if code is not None:
        return code
    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        for p in exc.problems:
            _out(str(p), err=True)
        return 1
    method = (
        args.method or (script.method if script else None) or "GET"
    ).upper()
    url = args.url or (script.url if script else None) or DEFAULT_URL
    outcomes: list[Any] = (
        list(script.outcomes) if script is not None else args.responses
    )
    start = script.start if script is not None else 0.0
    headers = script.request_headers if script is not None else {}
    try:
        sim = simulate(
            policy,
            outcomes,
            method=method,
            url=url,
            seed=args.seed,
            start=start,
            request_headers=headers,
        )
    except ValueError as exc:  # pragma: no cover - the script was checked
        _out(f"referee simulate: {exc}", err=True)
        return 1
    steps = [
        _step_json(policy, n, step, script)
        for n, step in enumerate(sim.steps, 1)
    ]
    unused = len(outcomes) - sum(step.sent for step in sim.steps)
    result = None
    if sim.finished:
        last = steps[-1]
        result = {
            "action": last["action"],
            "rule": last["rule"],
            "error": last["error"],
        }
    if args.json:
        report = {
            "policy": policy.name,
            "script": None if script is None else script.source,
            "method": method,
            "url": url,
            "request_headers": sorted(headers),
            "start": start,
            "seed": args.seed,
            "steps": steps,
            "finished": sim.finished,
            "elapsed": sim.elapsed,
            "unused": unused,
            "result": result,
        }
        _out(json.dumps(report, indent=2))
        return 0
    _print_trail(policy, script, method, url, headers, steps)
    noun = "response" if script is None else "outcome"
    _out(f"{'result':<11} {_simulate_result(sim, steps, unused, noun)}")
    return 0


def _counters_text(step: dict[str, Any]) -> str:
    text = f"attempt {step['attempt']}"
    if step["attempts"] is not None:
        text += f" of {step['attempts']}"
    if step["poll"] is not None:
        text += f", poll {step['poll']}"
    elif step["polls"]:
        text += f", {_plural(step['polls'], 'poll')}"
    return text


def _print_trail(
    policy: Policy,
    script: Script | None,
    method: str,
    url: str,
    headers: dict[str, str],
    steps: list[dict[str, Any]],
) -> None:
    _out(f"{'policy':<11} {policy.name} ({' → '.join(policy.sources)})")
    sent = f" with {', '.join(headers)}" if headers else ""
    _out(f"{'request':<11} {method} {url}{sent}")
    if script is not None:
        clock = datetime.fromtimestamp(script.start, UTC)
        _out(
            f"{'script':<11} {script.source}, "
            f"{_plural(len(script.outcomes), 'outcome')}; the clock starts "
            f"at {clock.isoformat().replace('+00:00', 'Z')}"
        )
    table = [("at", "outcome", "action", "rule", "delay", "from", "counters")]
    table += [
        (
            _clock(step["at"]),
            str(step["status"] or step["failure"])
            if step["sent"]
            else "not sent",
            step["action"],
            step["rule"] or "-",
            "-" if step["delay"] is None else format_duration(step["delay"]),
            step["delay_source"] or "-",
            _counters_text(step),
        )
        for step in steps
    ]
    reasons = ["reason", *(step["reason"] for step in steps)]
    widths = [max(len(row[i]) for row in table) for i in range(7)]
    for row, reason in zip(table, reasons, strict=True):
        at, *middle = row
        cells = [at.rjust(widths[0])]
        cells += [c.ljust(w) for c, w in zip(middle, widths[1:], strict=True)]
        _out("  " + "  ".join([*cells, reason]))
    for step in steps:
        pause = step["pause"]
        if step["paused"]:
            _out(
                f"{'note':<11} the send of outcome {step['step']} waited "
                f"{format_duration(step['paused'])} for a pause the API "
                f"asked for"
            )
        if pause is not None:
            _out(
                f"{'pause':<11} outcome {step['step']} pauses "
                f"{_scope_text(pause)} until "
                f"{_clock(pause['until'])} (from {pause['source']}); later "
                f"calls {pause['then']}"
            )
    if script is None:
        return
    for step in steps:
        scripted = step["scripted_at"]
        if scripted is not None and scripted < step["at"]:
            where = (
                script.source
                if step["line"] is None
                else f"{script.source}:{step['line']}"
            )
            _out(
                f"{'note':<11} outcome {step['step']} ({where}) is scripted "
                f"at {_clock(scripted)}, but the policy sent it only at "
                f"{_clock(step['at'])}: it is seen then"
            )


def _clock(at: float) -> str:
    return format_duration(at)


def _simulate_result(
    sim: Simulation,
    steps: list[dict[str, Any]],
    unused: int,
    noun: str = "response",
) -> str:
    n = _plural(sum(step["sent"] for step in steps), "outcome")
    if not sim.finished:
        last = steps[-1]["action"] if steps else None
        wanted = "" if last is None else f" (the last was a {last})"
        return (
            f"unfinished: the {noun}s ran out after {n}{wanted}; the "
            f"policy would send again at {_clock(sim.elapsed)}"
        )
    last = steps[-1]
    if not last["sent"]:
        text = f"abort before sending: raises {last['error']}"
    elif last["action"] == "abort":
        text = f"abort: raises {last['error']}"
    elif last["failure"] is not None:
        text = "accept: the failure propagates"
    else:
        text = "accept: the response is returned"
    text += f" after {n}, at {_clock(sim.elapsed)}"
    if unused:
        text += f" ({_plural(unused, noun)} left unused)"
    return text


# -- demo ----------------------------------------------------------------


def _run_demo(args: argparse.Namespace) -> int:
    from ._tools.demo import run_demo

    try:
        return run_demo(
            policy=args.policy,
            calls=args.calls,
            seed=args.seed,
            credits=args.credits,
            workers=args.workers,
            progress=args.progress,
            real_timings=args.real_timings,
        )
    except PolicyError as exc:
        for p in exc.problems:
            _out(str(p), err=True)
        return 1


# -- schema and table ------------------------------------------------------


def _run_schema(args: argparse.Namespace) -> int:  # noqa: ARG001
    from ._tools.jsonschema import policy_schema

    _out(json.dumps(policy_schema(), indent=2))
    return 0


def _run_table(args: argparse.Namespace) -> int:
    from ._tools.table import render_table

    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        for p in exc.problems:
            _out(str(p), err=True)
        return 1
    _out(render_table(policy, args.format).rstrip("\n"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
