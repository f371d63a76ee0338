"""
The only code that reads policy files: find, parse (YAML with the safe
loader, TOML, JSON), structure, validate, follow ``extends``, compile.

Every problem in a file is reported at once, as a :class:`~referee.Problem`
with the file, the line (YAML gives one for every node; JSON and TOML for
their syntax errors) and the path inside the document.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import re
import sys
import tomllib
import typing
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs
import yaml

from referee._core import schema as s
from referee._core.compile import Policy, compile_policy, nearest
from referee._core.errors import PolicyError, Problem
from referee._run.runtime import attach

from .convert import collect, describe, join_path, structure, suggest
from .declared import chain_problems, file_problems


if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from importlib.resources.abc import Traversable

    from referee._core.backend import StateBackend
    from referee._core.redact import Redaction


__all__ = [
    "PATH_VARIABLE",
    "SUFFIXES",
    "bundled_names",
    "load_policy",
    "load_policy_text",
    "parse_document",
    "search_path",
]

T = TypeVar("T")

SUFFIXES: Final = (".yaml", ".yml", ".toml", ".json")
#: The largest policy file read, in bytes.
MAX_FILE: Final = 4 * 1024 * 1024


def bundled_names() -> list[str]:
    """
    The names of the policies shipped with referee.
    """
    folder = policies_folder()
    return sorted(
        p.name.rsplit(".", 1)[0]
        for p in folder.iterdir()
        if p.name.endswith(".yaml")
    )


def policies_folder() -> Traversable:
    """
    Where the bundled policies are: ``referee/policies`` inside an
    installed wheel, or ``policies/`` at the top of a source checkout (an
    editable install), where the repository keeps them.
    """
    inside = resources.files("referee") / "policies"
    if inside.is_dir():
        return inside
    return Path(__file__).resolve().parents[3] / "policies"


def _is_path(name: str) -> bool:
    return name.endswith(SUFFIXES) or "/" in name or "\\" in name


def _read_bundled(name: str) -> str | None:
    res = policies_folder() / f"{name}.yaml"
    if not res.is_file():
        return None
    return res.read_text(encoding="utf-8")


# libyaml when PyYAML has it (about 20 times faster); both are safe loaders:
# no tag constructs an object.
_YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


_STR_TAG: Final = "tag:yaml.org,2002:str"


class _Lines:
    """
    Path → line, from a YAML node tree.
    """

    def __init__(self) -> None:
        self.lines: dict[str, int] = {}

    def line(self, path: str) -> int | None:
        return nearest(self.lines, path) or None  # 0: JSON or TOML


_MAP_TAG: Final = "tag:yaml.org,2002:map"
_SEQ_TAG: Final = "tag:yaml.org,2002:seq"
#: Deeper than this, libyaml's recursion could overflow the C stack (a
#: crash no handler can catch); the pure-Python loader is used instead,
#: whose RecursionError is reported as a problem.
_DEEP: Final = 200
_BRACKETS: Final = re.compile(r"[^\[\]{}]+")
_INDENT: Final = re.compile(r"^( *)", re.MULTILINE)


def _deep(text: str) -> bool:
    depth = deepest = 0
    for ch in _BRACKETS.sub("", text):
        depth = depth + 1 if ch in "[{" else max(depth - 1, 0)
        deepest = max(deepest, depth)
        if deepest > _DEEP:
            return True
    widest = max((len(m) for m in _INDENT.findall(text)), default=0)
    return widest > _DEEP


def _yaml_to_python(
    text: str, source: str
) -> tuple[Any, _Lines, list[Problem]]:
    lines = _Lines()
    problems: list[Problem] = []
    try:
        # The pure-Python reader checks the characters when it is made.
        loader = (yaml.SafeLoader if _deep(text) else _YamlLoader)(text)
    except yaml.YAMLError as exc:
        problems.append(
            Problem(
                source,
                None,
                "",
                f"this is not valid YAML: {_yaml_reason(exc)}",
            )
        )
        return None, lines, problems
    except UnicodeEncodeError as exc:
        # Only a string passed in can hold a lone surrogate (files are
        # decoded strictly); libyaml reads UTF-8, which cannot spell one.
        bad = exc.object[exc.start : exc.end]
        problems.append(
            Problem(
                source,
                None,
                "",
                f"this is not valid YAML: the text holds {bad!r} at "
                f"character {exc.start + 1}, a lone surrogate that no "
                f"UTF-8 file can hold",
            )
        )
        return None, lines, problems
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = _yaml_reason(exc)
        if "another document" in what:
            what += " (a policy file holds one document: remove the '---')"
        problems.append(
            Problem(source, line, "", f"this is not valid YAML: {what}")
        )
        return None, lines, problems
    except yaml.YAMLError as exc:
        problems.append(
            Problem(source, None, "", f"this is not valid YAML: {exc}")
        )
        return None, lines, problems
    except RecursionError:
        problems.append(
            Problem(source, None, "", "the document is nested too deeply")
        )
        return None, lines, problems
    finally:
        loader.dispose()
    if node is None:
        return _EMPTY, lines, problems
    # Aliases share nodes, and expanding them can blow a small document up
    # ("billion laughs"): allow each distinct node a few visits at most.
    written = _distinct_nodes(node)
    limit = written * 4 + 10_000
    budget = [limit]

    def problem(n: yaml.Node, path: str, message: str) -> None:
        problems.append(Problem(source, n.start_mark.line + 1, path, message))

    def construct(n: yaml.Node, path: str, what: str) -> Any:
        try:
            return loader.construct_object(n, deep=True)
        except Exception as exc:  # noqa: BLE001 - PyYAML raises many kinds
            reason = _scalar_reason(n, exc)
            problem(n, path, f"this {what} cannot be read: {reason}")
            return _BAD

    def walk(n: yaml.Node, path: str) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise _TooBig
        lines.lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            if n.tag != _MAP_TAG:
                problem(n, path, f"unsupported YAML tag {n.tag!r}")
                return None
            out: dict[Any, Any] = {}
            try:
                loader.flatten_mapping(n)
            except yaml.MarkedYAMLError as exc:  # a bad merge key
                mark = exc.problem_mark
                problems.append(
                    Problem(
                        source,
                        mark.line + 1 if mark else n.start_mark.line + 1,
                        path,
                        f"this mapping cannot be read: {_yaml_reason(exc)}",
                    )
                )
                return None
            for knode, vnode in n.value:
                key = _key_of(knode, path)
                if key is _BAD:
                    continue
                sub = join_path(path, key)
                if key in out:
                    problem(
                        knode,
                        sub,
                        f"duplicate key {key!r}; it is already given on "
                        f"line {lines.lines.get(sub, '?')}",
                    )
                    continue
                lines.lines[sub] = knode.start_mark.line + 1
                out[key] = walk(vnode, sub)
            return out
        if isinstance(n, yaml.SequenceNode):
            if n.tag != _SEQ_TAG:
                problem(n, path, f"unsupported YAML tag {n.tag!r}")
                return None
            return [walk(v, join_path(path, i)) for i, v in enumerate(n.value)]
        if n.tag == _STR_TAG:
            return n.value
        value = construct(n, path, "value")
        return None if value is _BAD else value

    def _key_of(knode: yaml.Node, path: str) -> Any:
        if not isinstance(knode, yaml.ScalarNode):
            kind = (
                "a mapping"
                if isinstance(knode, yaml.MappingNode)
                else "a list"
            )
            problem(
                knode, path, f"found {kind} as a key; keys must be strings"
            )
            return _BAD
        key = (
            knode.value
            if knode.tag == _STR_TAG
            else construct(knode, path, "key")
        )
        if key is _BAD or isinstance(key, str):
            return key
        hint = (
            " (YAML reads yes/no/on/off/true/false as booleans and bare "
            "numbers as numbers: quote the key)"
            if isinstance(key, bool | int | float)
            else ""
        )
        problem(
            knode,
            path,
            f"found the key {describe(key)}; keys must be strings{hint}",
        )
        return _BAD

    try:
        data = walk(node, "$")
    except _TooBig:
        problems.append(
            Problem(
                source,
                None,
                "",
                f"the document's aliases (*references to &anchors) expand "
                f"its {written} nodes past {limit}; refusing to load it",
            )
        )
        return None, lines, problems
    except RecursionError:
        problems.append(
            Problem(source, None, "", "the document is nested too deeply")
        )
        return None, lines, problems
    return data, lines, problems


_BAD: Final = object()
_EMPTY: Final = object()


def _distinct_nodes(root: yaml.Node) -> int:
    seen: set[int] = set()
    stack = [root]
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                stack.extend((k, v))
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
    return len(seen)


def _yaml_reason(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        return ", ".join(p for p in (exc.context, exc.problem) if p)
    return str(exc).splitlines()[0]


_DIGITS = re.compile(r"value has (\d+) digits")


def _too_many_digits(exc: BaseException) -> str | None:
    # Python refuses to turn more than 4300 digits into an int (CVE-2020-
    # 10735); say so in the author's terms, not Python's advice.
    m = _DIGITS.search(str(exc))
    if m is None:
        return None
    return (
        f"an integer of {m.group(1)} digits; at most "
        f"{sys.get_int_max_str_digits() or 4300} are allowed"
    )


_RESOLVER: Final = yaml.resolver.Resolver()


def _scalar_reason(n: yaml.Node, exc: BaseException) -> str:
    if isinstance(exc, yaml.YAMLError):
        return _yaml_reason(exc)
    digits = _too_many_digits(exc)
    if digits is not None:
        return digits
    if n.tag == "tag:yaml.org,2002:int" and isinstance(exc, ValueError):
        # A plain scalar (style None, or '' from libyaml) that YAML itself
        # resolves to int was meant as a word; anything else was tagged.
        style = getattr(n, "style", None)
        resolved = _RESOLVER.resolve(  # type: ignore[no-untyped-call]
            yaml.ScalarNode, n.value, (True, False)
        )
        implicit = not style and resolved == n.tag
        if implicit:  # YAML took a plain word for a number
            return (
                f"{n.value!r} is not a valid integer (quote it to make it a "
                f"string)"
            )
        return f"{n.value!r} is not a valid !!int; expected a whole number"
    if n.tag == "tag:yaml.org,2002:bool" and isinstance(exc, KeyError):
        return f"{n.value!r} is not a valid !!bool; expected true or false"
    return f"{type(exc).__name__}: {exc}"


class _TooBig(Exception):
    pass


class _JSONObject(dict[str, Any]):
    """
    A JSON object that remembers the keys it saw twice.
    """

    __slots__ = ("duplicates",)

    def __init__(self, items: list[tuple[str, Any]]) -> None:
        super().__init__()
        self.duplicates: list[str] = []
        for k, v in items:
            if k in self:
                self.duplicates.append(k)
            self[k] = v


def _duplicates(data: Any, source: str) -> list[Problem]:
    found: list[Problem] = []
    stack: list[tuple[str, Any]] = [("$", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            found.extend(
                Problem(
                    source, None, join_path(path, k), f"duplicate key {k!r}"
                )
                for k in getattr(value, "duplicates", ())
            )
            items = [(join_path(path, str(k)), v) for k, v in value.items()]
        elif isinstance(value, list):
            items = [(join_path(path, i), v) for i, v in enumerate(value)]
        else:
            continue
        stack.extend(reversed(items))
    return found


def parse_document(
    text: str, source: str, fmt: str
) -> tuple[Any, _Lines, list[Problem]]:
    """
    Parse *text* as *fmt* (``yaml``, ``toml`` or ``json``): the data, the
    line map and the syntax problems.
    """
    if fmt == "yaml":
        return _yaml_to_python(text, source)
    lines = _Lines()
    if fmt == "toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            m = re.search(r"\(at line (\d+)", str(exc))
            line = int(m.group(1)) if m else None
            return (
                None,
                lines,
                [Problem(source, line, "", f"this is not valid TOML: {exc}")],
            )
        except (ValueError, RecursionError) as exc:
            return None, lines, [_unreadable(source, exc)]
        if not data:
            return _EMPTY, lines, []
        _paths(data, lines)
        return data, lines, []
    if not text.strip():
        return _EMPTY, lines, []
    try:
        data = json.loads(text, object_pairs_hook=_JSONObject)
    except json.JSONDecodeError as exc:
        return (
            None,
            lines,
            [
                Problem(
                    source,
                    exc.lineno,
                    "",
                    f"this is not valid JSON: {exc.msg}",
                )
            ],
        )
    except (ValueError, RecursionError) as exc:
        return None, lines, [_unreadable(source, exc)]
    duplicates = _duplicates(data, source)
    if duplicates:
        return None, lines, duplicates
    _paths(data, lines)
    return data, lines, []


def _paths(data: Any, lines: _Lines) -> None:
    # JSON and TOML give no lines; record the paths a document sets (line
    # 0: unknown), so that a warning can still name the file that set them.
    for path in _order(data):
        lines.lines.setdefault(path, 0)


def _unreadable(source: str, exc: BaseException) -> Problem:
    if isinstance(exc, RecursionError):
        return Problem(source, None, "", "the document is nested too deeply")
    reason = _too_many_digits(exc) or f"{type(exc).__name__}: {exc}"
    return Problem(source, None, "", f"this document cannot be read: {reason}")


def _order(data: Any) -> dict[str, int]:
    """
    Path → position in the document, from the order of the parsed keys
    (dicts keep it): document order where the format gives no lines.
    """
    order: dict[str, int] = {}
    stack: list[tuple[str, Any]] = [("$", data)]
    while stack and len(order) < 100_000:
        path, value = stack.pop()
        order[path] = len(order)
        if isinstance(value, dict):
            items = [(join_path(path, str(k)), v) for k, v in value.items()]
        elif isinstance(value, list):
            items = [(join_path(path, i), v) for i, v in enumerate(value)]
        else:
            continue
        stack.extend(reversed(items))
    return order


def _position(order: dict[str, int], path: str) -> int:
    return nearest(order, path) or 0


def _format_of(source: str) -> str:
    if source.endswith(".toml"):
        return "toml"
    if source.endswith(".json"):
        return "json"
    return "yaml"


_KEYS_HINT: Final = (
    "a policy is a mapping with the keys policy, description, extends, "
    "defaults, alerts, redact, errors, rules"
)


def _read_one(
    text: str, source: str, fmt: str
) -> tuple[s.PolicyDoc | None, _Lines, list[Problem]]:
    data, lines, problems = parse_document(text, source, fmt)
    if problems:
        return None, lines, problems
    if data is _EMPTY:
        return None, lines, [Problem(source, None, "", f"empty; {_KEYS_HINT}")]
    if not isinstance(data, dict):
        return (
            None,
            lines,
            [
                Problem(
                    source,
                    lines.line("$"),
                    "$",
                    f"found {describe(data)}; {_KEYS_HINT}",
                )
            ],
        )
    try:
        doc: s.PolicyDoc = structure(data)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a Problem
        found = collect(exc)
        if not found:
            found = [("$", f"{type(exc).__name__}: {exc}")]
        found_problems = [
            Problem(source, lines.line(path), path, msg) for path, msg in found
        ]
        # Document order: cattrs reports by field, not by line; where the
        # format gives no lines, the order of the parsed keys is the
        # document's.
        # One structural problem must not hide the checks of what did
        # structure: validate the parts that do.
        found_problems.extend(_validate_parts(data, source, lines))
        order = _order(data)
        found_problems.sort(
            key=lambda p: (p.line or 0, _position(order, p.path))
        )
        return None, lines, found_problems
    problems = _validate(doc, source, lines)
    return (None if problems else doc), lines, problems


_TEMPLATE_FIELDS: Final = re.compile(r"\{([^{}]*)\}")
_KNOWN_FIELDS: Final = (
    "status",
    "method",
    "url",
    "request.url",
    "request.path",
    "request.method",
    "rule",
    "policy",
    "failure",
)


def _check_template(template: str) -> str | None:
    for m in _TEMPLATE_FIELDS.finditer(template):
        name = m.group(1)
        if name in _KNOWN_FIELDS:
            continue
        if re.fullmatch(
            r"body\.[^{}\s]+|header\.[A-Za-z0-9!#$%&'*+.^_`|~-]+", name
        ):
            continue
        known = ", ".join("{" + f + "}" for f in _KNOWN_FIELDS)
        return (
            f"unknown field {{{name}}} in the template {template!r}; "
            f"expected one of {known}, "
            f"{{body.<path>}} or {{header.<Name>}}"
            f"{suggest(name, _KNOWN_FIELDS)}"
        )
    return None


_ENV_URL: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _check_state_settings(
    d: s.DefaultsDoc, add: Callable[[str, str], None]
) -> None:
    b = d.breaker
    if b is not None:
        if b.failure_ratio is not None and not 0 < b.failure_ratio <= 1:
            add(
                "$.defaults.breaker.failure_ratio",
                f"found {b.failure_ratio!r}; expected a share of calls "
                f"above 0 and at most 1 (0.5: half the calls failed)",
            )
        for key in ("window", "open_for"):
            value = getattr(b, key)
            if value is not None and value <= 0:
                add(
                    f"$.defaults.breaker.{key}",
                    f"found {value!r}; expected a duration above 0",
                )
        if b.min_calls is not None and b.min_calls < 1:
            add(
                "$.defaults.breaker.min_calls",
                f"found {b.min_calls!r}; expected a whole number >= 1",
            )
    g = d.budget
    if g is not None:
        if g.tokens is not None and g.tokens <= 0:
            add(
                "$.defaults.budget.tokens",
                f"found {g.tokens!r}; expected a number of tokens above 0",
            )
        if g.refill is not None and g.refill < 0:
            add(
                "$.defaults.budget.refill",
                f"found {g.refill!r}; expected a number >= 0",
            )
    r = d.rate_limit
    if r is not None:
        if r.requests < 1:
            add(
                "$.defaults.rate_limit.requests",
                f"found {r.requests!r}; expected a whole number >= 1",
            )
        if r.per <= 0:
            add(
                "$.defaults.rate_limit.per",
                f"found {r.per!r}; expected a duration above 0",
            )


def _validate_parts(
    data: dict[str, Any], source: str, lines: _Lines
) -> list[Problem]:
    """
    :func:`_validate` over what of the document structures, when the whole
    does not: one pass reports every problem, the structural ones and
    those the types cannot say (duplicate ids, unknown template fields,
    settings of another action), even within the same rule.
    """
    top = {k: v for k, v in data.items() if k != "rules"}
    doc = _partial(top, s.PolicyDoc) or s.PolicyDoc(s.Name("?"))
    rules: list[tuple[int, s.RuleDoc]] = []
    unnamed: set[int] = set()
    raw = data.get("rules")
    for i, item in enumerate(raw if isinstance(raw, list) else ()):
        rule = _partial(item, s.RuleDoc)
        if rule is None:
            continue
        if rule.id is None and isinstance(item, dict) and "id" in item:
            unnamed.add(i)  # its id is wrong: it takes part in no duplicate
        rules.append((i, rule))
    # errors: that did not structure is dropped whole: then no name can be
    # called unknown.
    names_known = "errors" not in data or bool(doc.errors)
    return _validate(doc, source, lines, rules, unnamed, names_known)


#: Values for the required keys of a document part that does not
#: structure, so that the rest of it still can; ``do`` is then unknown.
_PLACEHOLDERS: Final[dict[type, dict[str, str]]] = {
    s.PolicyDoc: {"policy": "?"},
    s.RuleDoc: {"do": "accept"},
    s.AlertDoc: {"kind": "?"},
}
_UNKNOWN_ACTION: Final = s.Word("?")


def _partial(raw: Any, cls: type[T]) -> T | None:
    """
    *raw* structured as *cls* without the keys that do not structure
    (their problems are reported already), recursing into nested
    documents; None when not even that works.
    """
    if not isinstance(raw, dict):
        return None
    try:
        return structure(raw, cls)
    except Exception as exc:  # noqa: BLE001 - reported by the first pass
        bad = [path for path, _message in collect(exc)]
    fields = _fields_of(typing.cast("type", cls))
    kept: dict[str, Any] = {}
    nested: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            continue  # an unknown key
        here = join_path("$", key)
        if not any(
            p == here or p.startswith((f"{here}.", f"{here}[")) for p in bad
        ):
            kept[key] = value
            continue
        name, inner = fields[key]
        sub = None if inner is None else _partial(value, inner)
        if sub is not None:
            nested[name] = sub
    filled = {
        k: v for k, v in _PLACEHOLDERS.get(cls, {}).items() if k not in kept
    }
    try:
        doc = structure(kept | filled, cls)
    except Exception:  # noqa: BLE001 - a required key is wrong
        return None
    if cls is s.RuleDoc and "do" in filled:
        nested["do"] = _UNKNOWN_ACTION
    return attrs.evolve(doc, **nested)  # type: ignore[misc]


@functools.cache
def _fields_of(cls: type) -> dict[str, tuple[str, type | None]]:
    """
    Key in the file → (attribute, the document class it holds, if any).
    """
    out: dict[str, tuple[str, type | None]] = {}
    for a in attrs.fields(attrs.resolve_types(cls)):
        kinds = typing.get_args(a.type) or (a.type,)
        inner = next((k for k in kinds if attrs.has(k)), None)
        out[s.RENAMED.get(a.name, a.name)] = (a.name, inner)
    return out


def _validate(
    doc: s.PolicyDoc,
    source: str,
    lines: _Lines,
    rules: list[tuple[int, s.RuleDoc]] | None = None,
    unnamed: set[int] | frozenset[int] = frozenset(),
    names_known: bool = True,
) -> list[Problem]:
    """
    What the types cannot say: unique ids, settings that belong to another
    action, multipliers below one, templates, declared errors and the
    error names.  *rules* are the rules that structured, by index, when
    not all did; those in *unnamed* have an id that did not; *names_known*
    is False when ``errors:`` did not structure.
    """
    problems: list[Problem] = []

    def add(path: str, msg: str) -> None:
        problems.append(Problem(source, lines.line(path), path, msg))

    def check_backoff(path: str, multiplier: float | None) -> None:
        if multiplier is not None and multiplier < 1:
            add(
                f"{path}.multiplier",
                f"found {multiplier!r}; expected a number >= 1 (1 keeps the "
                f"delay constant)",
            )

    d = doc.defaults
    if d is not None:
        _check_state_settings(d, add)
        if d.retry is not None and d.retry.backoff is not None:
            check_backoff(
                "$.defaults.retry.backoff", d.retry.backoff.multiplier
            )
        # A rule's own deadline and hint ceiling; the policy's are spelled
        # at the top of defaults, and one setting has one spelling.
        for key in sorted(s.RULE_RETRY_KEYS):
            if d.retry is not None and getattr(d.retry, key) is not None:
                add(
                    f"$.defaults.retry.{key}",
                    f"retry.{key} belongs on a rule (its own {key}); the "
                    f"policy's is defaults.{key}: move it there",
                )
        if d.poll is not None:
            check_backoff("$.defaults.poll", d.poll.multiplier)
            if d.poll.request is not None and d.poll.request.url is not None:
                err = _check_template(d.poll.request.url)
                if err:
                    add("$.defaults.poll.request.url", err)

    hook = doc.alerts.webhook if doc.alerts is not None else None
    if hook is not None and not _ENV_URL.fullmatch(hook.url.strip()):
        add(
            "$.alerts.webhook.url",
            f"found {hook.url!r}; the webhook URL carries a secret, so it "
            f"comes from an environment variable, never from the file: "
            f'write url: "${{SLACK_WEBHOOK_URL}}"',
        )
    seen: dict[str, int] = {}
    for i, rule in enumerate(doc.rules) if rules is None else rules:
        path = f"$.rules[{i}]"
        rid = rule.id or f"rule-{i + 1}"
        if i not in unnamed and rid in seen:
            add(
                f"{path}.id" if rule.id else path,
                f"duplicate rule id {rid!r}; $.rules[{seen[rid]}] has it "
                f"already",
            )
        elif i not in unnamed:
            seen[rid] = i
        known = rule.do != _UNKNOWN_ACTION
        if rule.retry is not None and known and rule.do != "retry":
            add(
                f"{path}.retry",
                f"retry settings on a rule that does not retry (do: "
                f"{rule.do}); remove them or set do: retry",
            )
        if rule.poll is not None and known and rule.do != "poll":
            add(
                f"{path}.poll",
                f"poll settings on a rule that does not poll (do: "
                f"{rule.do}); remove them or set do: poll",
            )
        if rule.error is not None and rule.do == "accept":
            add(
                f"{path}.error",
                "an accept rule raises no error; remove error: or set "
                "do: abort",
            )
        if rule.retry is not None and rule.retry.backoff is not None:
            check_backoff(
                f"{path}.retry.backoff", rule.retry.backoff.multiplier
            )
        if rule.poll is not None:
            check_backoff(f"{path}.poll", rule.poll.multiplier)
            if rule.poll.request is not None and rule.poll.request.url:
                err = _check_template(rule.poll.request.url)
                if err:
                    add(f"{path}.poll.request.url", err)
        most = rule.pause.max if rule.pause is not None else None
        if most is not None and most <= 0:
            add(
                f"{path}.pause.max",
                f"found {most!r}; expected a duration above 0 (the "
                f"longest pause a header may set)",
            )
        if rule.alert is not None and rule.alert.message is not None:
            err = _check_template(rule.alert.message)
            if err:
                add(f"{path}.alert.message", err)
    for path, msg in file_problems(doc, rules=rules, names_known=names_known):
        add(path, msg)
    problems.sort(key=lambda p: p.line or 0)
    return problems


def _read_path(path: Path) -> tuple[str, str, str] | str:
    try:
        if path.stat().st_size > MAX_FILE:
            return f"it is larger than {MAX_FILE} bytes"
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    except UnicodeDecodeError:
        return "it is not UTF-8 text"
    return str(path), text, _format_of(path.name)


#: The environment variable naming the folders searched, in order, for a
#: policy named by name, before the bundled policies.
PATH_VARIABLE: Final = "REFEREE_POLICY_PATH"


def search_path() -> list[Path]:
    """
    The folders ``REFEREE_POLICY_PATH`` names (``os.pathsep``
    between them; empty entries are skipped), in order.
    """
    value = os.environ.get(PATH_VARIABLE, "")
    return [Path(p) for p in value.split(os.pathsep) if p.strip()]


def _on_search_path(name: str, after: str | None) -> Path | None:
    """
    The first ``<name>.yaml`` (``.yml``, ``.toml``, ``.json``) in the
    search path's folders; with *after* (a resolved path) among them, the
    first one after it.  A folder that does not exist is passed over.
    """
    found = [
        folder / f"{name}{suffix}"
        for folder in search_path()
        for suffix in SUFFIXES
        if (folder / f"{name}{suffix}").is_file()
    ]
    if after is not None:
        keys = [str(f.resolve()) for f in found]
        if after in keys:
            found = found[keys.index(after) + 1 :]
    return found[0] if found else None


def _resolve(
    name: str, base: Path | None, after: str | None = None
) -> tuple[str, str, str] | str:
    """
    ``(source, text, format)`` for a policy name or path, or why not.  A
    name is looked for on the search path first, then among the bundled
    policies; *after* is a file extending its own name: it extends the
    policy it overrides, the next one of that name on the search path or
    the bundled one.
    """
    if _is_path(name):
        path = Path(name)
        if base is not None and not path.is_absolute():
            path = base / path
        return _read_path(path)
    found = _on_search_path(name, after)
    if found is not None:
        return _read_path(found)
    text = _read_bundled(name)
    if text is None:
        names = bundled_names()
        folders = search_path()
        searched = (
            f"; searched {PATH_VARIABLE}: {', '.join(str(f) for f in folders)}"
            if folders
            else ""
        )
        return (
            f"there is no bundled policy named {name!r}; bundled: "
            f"{', '.join(names)}{suggest(name, names)} (a path needs a "
            f"suffix: {', '.join(SUFFIXES)}){searched}"
        )
    return name, text, "yaml"


def _cannot(name: str, reason: str) -> str:
    if reason.startswith("there is no bundled"):
        return reason
    return f"cannot read the policy file {name!r}: {reason}"


def _chain(
    first: tuple[str, str, str], lines_of: dict[str, dict[str, int]]
) -> list[tuple[str, s.PolicyDoc]]:
    chain: list[tuple[str, s.PolicyDoc]] = []
    seen: list[str] = []
    current = first
    while True:
        source, text, fmt = current
        doc, lines, problems = _read_one(text, source, fmt)
        if problems or doc is None:
            raise PolicyError(problems)
        key = str(Path(source).resolve()) if _is_path(source) else source
        seen.append(key)
        chain.append((source, doc))
        lines_of[source] = lines.lines
        if doc.extends is None:
            problems = _names_along(chain, lines_of)
            if problems:
                raise PolicyError(problems)
            return chain
        line = lines.line("$.extends")
        base = Path(source).parent if _is_path(source) else None
        # A file on the search path that extends its own name (enrow.yaml:
        # extends: enrow) extends the policy it overrides, not itself.
        own = Path(source).stem == doc.extends and _is_path(source)
        found = _resolve(doc.extends, base, key if own else None)
        if isinstance(found, str):
            raise PolicyError(
                [
                    Problem(
                        source, line, "$.extends", _cannot(doc.extends, found)
                    )
                ]
            )
        nxt = found[0]
        if (str(Path(nxt).resolve()) if _is_path(nxt) else nxt) in seen:
            cycle = " -> ".join([*(c for c, _d in chain), nxt])
            raise PolicyError(
                [
                    Problem(
                        source,
                        line,
                        "$.extends",
                        f"extends forms a cycle: {cycle}",
                    )
                ]
            )
        current = found


def _names_along(
    chain: list[tuple[str, s.PolicyDoc]], lines_of: dict[str, dict[str, int]]
) -> list[Problem]:
    """
    The error names each file of *chain* could not resolve alone, now that
    the declarations of the policies it extends are known: the extending
    file's first, each in line order.
    """
    order = [src for src, _doc in chain]
    found = [
        Problem(src, nearest(lines_of[src], path) or None, path, msg)
        for src, path, msg in chain_problems(chain)
    ]
    found.sort(key=lambda p: (order.index(p.file), p.line or 0))
    return found


def load_policy(
    name_or_path: str | Path,
    *,
    state: StateBackend | None = None,
    alert_sinks: Sequence[Callable[[Any], object]] = (),
    redact: Redaction | None = None,
) -> Policy:
    """
    Load a policy: a bundled name (``"enrow"``) or a path to a ``.yaml``,
    ``.yml``, ``.toml`` or ``.json`` file.

    A name is looked for first as ``<name>.yaml`` (``.yml``, ``.toml``,
    ``.json``) in the folders ``REFEREE_POLICY_PATH`` lists
    (``os.pathsep`` between them), then among the bundled policies; so is
    a name in ``extends``.  A file found there that extends its own name
    extends the policy it overrides.

    Args:
        name_or_path: The name or the path.
        state: Where breakers, retry budgets, rate limits and alert
            de-duplication live: by default a new
            :class:`~referee.MemoryState` of this policy's own; pass a
            :class:`referee.redis.RedisState` to share them with a fleet.
        alert_sinks: Callables that receive every :class:`~referee.Alert`
            (off the caller's thread), besides the ``referee.alert``
            structlog event and the policy file's webhook.
        redact: More secrets to mask in log events, errors, alerts and
            trails (a :class:`~referee.Redaction`: query parameters,
            headers, value patterns), besides the built-in ones and the
            file's ``redact:``.

    Raises:
        PolicyError: The file cannot be read, or it (or a policy it
            extends) is wrong; every problem is listed.
    """
    name = str(name_or_path)
    found = (
        _read_path(name_or_path)
        if isinstance(name_or_path, Path)
        else _resolve(name, None)
    )
    if isinstance(found, str):
        raise PolicyError([Problem(name, None, "", _cannot(name, found))])
    return attach(
        _redacting(_compile(found), redact),
        state=state,
        alert_sinks=alert_sinks,
    )


def _redacting(policy: Policy, redact: Redaction | None) -> Policy:
    if redact is None:
        return policy
    return attrs.evolve(policy, redaction=policy.redaction | redact)


def _compile(first: tuple[str, str, str]) -> Policy:
    lines: dict[str, dict[str, int]] = {}
    with _no_gc():
        policy = compile_policy(_chain(first, lines))
    return attrs.evolve(policy, lines=lines)


@contextmanager
def _no_gc() -> Iterator[None]:
    # Loading allocates many small acyclic objects; the cyclic collector
    # running over them doubled the time to load a 10,000-rule policy.
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def load_policy_text(
    text: str,
    *,
    fmt: str = "yaml",
    source: str = "<string>",
    state: StateBackend | None = None,
    alert_sinks: Sequence[Callable[[Any], object]] = (),
    redact: Redaction | None = None,
) -> Policy:
    """
    Load a policy from a string.  ``extends`` paths are resolved against
    the current directory; *state*, *alert_sinks* and *redact* as for
    :func:`load_policy`.

    Raises:
        PolicyError: As :func:`load_policy`.
    """
    if fmt not in {"yaml", "toml", "json"}:
        msg = f"fmt must be 'yaml', 'toml' or 'json', not {fmt!r}"
        raise ValueError(msg)
    return attach(
        _redacting(_compile((source, text, fmt)), redact),
        state=state,
        alert_sinks=alert_sinks,
    )
