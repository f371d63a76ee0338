"""
The only code that reads policy files: find, parse (YAML with the safe
loader, TOML, JSON), structure, validate, follow ``extends``, compile.

Every problem in a file is reported at once, as a :class:`~referee.Problem`
with the file, the line (YAML gives one for every node; JSON and TOML for
their syntax errors) and the path inside the document.
"""

from __future__ import annotations

import gc
import json
import re
import tomllib
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import yaml

from ._compile import Policy, compile_policy
from ._convert import collect, describe, join_path, structure, suggest
from ._errors import PolicyError, Problem


if TYPE_CHECKING:
    from collections.abc import Iterator

    from . import _schema as s


__all__ = [
    "SUFFIXES",
    "bundled_names",
    "load_policy",
    "load_policy_text",
    "parse_document",
]

SUFFIXES: Final = (".yaml", ".yml", ".toml", ".json")
#: The largest policy file read, in bytes.
MAX_FILE: Final = 4 * 1024 * 1024


def bundled_names() -> list[str]:
    """
    The names of the policies shipped with referee.
    """
    folder = resources.files("referee") / "policies"
    return sorted(
        p.name.rsplit(".", 1)[0]
        for p in folder.iterdir()
        if p.name.endswith(".yaml")
    )


def _is_path(name: str) -> bool:
    return name.endswith(SUFFIXES) or "/" in name or "\\" in name


def _read_bundled(name: str) -> str | None:
    res = resources.files("referee") / "policies" / f"{name}.yaml"
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
        while True:
            found = self.lines.get(path)
            if found is not None:
                return found
            cut = max(path.rfind("."), path.rfind("["))
            if cut <= 0:
                return self.lines.get("$")
            path = path[:cut]


def _yaml_to_python(
    text: str, source: str
) -> tuple[Any, _Lines, list[Problem]]:
    lines = _Lines()
    problems: list[Problem] = []
    loader = _YamlLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = exc.problem or str(exc)
        problems.append(
            Problem(source, line, "", f"this is not valid YAML: {what}")
        )
        return None, lines, problems
    except yaml.YAMLError as exc:
        problems.append(
            Problem(source, None, "", f"this is not valid YAML: {exc}")
        )
        return None, lines, problems
    finally:
        loader.dispose()
    if node is None:
        return None, lines, problems
    # Aliases share nodes, and expanding them can blow a small document up
    # ("billion laughs"): allow each distinct node a few visits at most.
    budget = [_distinct_nodes(node) * 4 + 10_000]
    limit = budget[0]

    def walk(n: yaml.Node, path: str) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise _TooBig
        lines.lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            out: dict[Any, Any] = {}
            loader.flatten_mapping(n)
            for knode, vnode in n.value:
                try:
                    key = loader.construct_object(knode, deep=True)
                except yaml.YAMLError as exc:
                    problems.append(
                        Problem(
                            source,
                            knode.start_mark.line + 1,
                            path,
                            f"this key cannot be read: {exc}",
                        )
                    )
                    continue
                if not isinstance(key, str):
                    hint = (
                        " (YAML reads yes/no/on/off/true/false as booleans "
                        "and bare numbers as numbers: quote the key)"
                        if isinstance(key, bool | int | float)
                        else ""
                    )
                    problems.append(
                        Problem(
                            source,
                            knode.start_mark.line + 1,
                            path,
                            f"found the key {describe(key)}; keys must be "
                            f"strings{hint}",
                        )
                    )
                    continue
                sub = join_path(path, key)
                if key in out:
                    problems.append(
                        Problem(
                            source,
                            knode.start_mark.line + 1,
                            sub,
                            f"duplicate key {key!r}; it is already given on "
                            f"line {lines.lines.get(sub, '?')}",
                        )
                    )
                    continue
                lines.lines[sub] = knode.start_mark.line + 1
                out[key] = walk(vnode, sub)
            return out
        if isinstance(n, yaml.SequenceNode):
            return [walk(v, join_path(path, i)) for i, v in enumerate(n.value)]
        if n.tag == _STR_TAG:
            return n.value
        try:
            return loader.construct_object(n, deep=True)
        except yaml.YAMLError as exc:
            problems.append(
                Problem(
                    source,
                    n.start_mark.line + 1,
                    path,
                    f"this value cannot be read: {_yaml_reason(exc)}",
                )
            )
            return None

    try:
        data = walk(node, "$")
    except _TooBig:
        problems.append(
            Problem(
                source,
                None,
                "",
                f"the document's aliases expand it to more than {limit} "
                f"nodes; refusing to load it",
            )
        )
        return None, lines, problems
    except RecursionError:
        problems.append(
            Problem(source, None, "", "the document is nested too deeply")
        )
        return None, lines, problems
    return data, lines, problems


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
        return exc.problem
    return str(exc).splitlines()[0]


class _TooBig(Exception):
    pass


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
            return tomllib.loads(text), lines, []
        except tomllib.TOMLDecodeError as exc:
            m = re.search(r"\(at line (\d+)", str(exc))
            line = int(m.group(1)) if m else None
            return (
                None,
                lines,
                [Problem(source, line, "", f"this is not valid TOML: {exc}")],
            )
    try:
        return json.loads(text), lines, []
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
    except RecursionError:
        return (
            None,
            lines,
            [Problem(source, None, "", "the document is nested too deeply")],
        )


def _format_of(source: str) -> str:
    if source.endswith(".toml"):
        return "toml"
    if source.endswith(".json"):
        return "json"
    return "yaml"


def _read_one(
    text: str, source: str, fmt: str
) -> tuple[s.PolicyDoc | None, list[Problem]]:
    data, lines, problems = parse_document(text, source, fmt)
    if problems:
        return None, problems
    if not isinstance(data, dict):
        return None, [
            Problem(
                source,
                lines.line("$"),
                "$",
                f"found {describe(data)}; a policy is a mapping with the "
                f"keys policy, description, extends, defaults, rules",
            )
        ]
    try:
        doc = structure(data)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a Problem
        found = collect(exc)
        if not found:
            found = [("$", f"{type(exc).__name__}: {exc}")]
        found_problems = [
            Problem(source, lines.line(path), path, msg) for path, msg in found
        ]
        # Document order: cattrs reports by field, not by line.
        found_problems.sort(key=lambda p: p.line or 0)
        return None, found_problems
    problems = _validate(doc, source, lines)
    return (None if problems else doc), problems


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


def _validate(doc: s.PolicyDoc, source: str, lines: _Lines) -> list[Problem]:
    """
    What the types cannot say: unique ids, settings that belong to another
    action, multipliers below one, templates.
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
        if d.retry is not None and d.retry.backoff is not None:
            check_backoff(
                "$.defaults.retry.backoff", d.retry.backoff.multiplier
            )
        if d.poll is not None:
            check_backoff("$.defaults.poll", d.poll.multiplier)
            if d.poll.request is not None and d.poll.request.url is not None:
                err = _check_template(d.poll.request.url)
                if err:
                    add("$.defaults.poll.request.url", err)

    seen: dict[str, int] = {}
    for i, rule in enumerate(doc.rules):
        path = f"$.rules[{i}]"
        rid = rule.id or f"rule-{i + 1}"
        if rid in seen:
            add(
                f"{path}.id" if rule.id else path,
                f"duplicate rule id {rid!r}; $.rules[{seen[rid]}] has it "
                f"already",
            )
        else:
            seen[rid] = i
        if rule.retry is not None and rule.do != "retry":
            add(
                f"{path}.retry",
                f"retry settings on a rule that does not retry (do: "
                f"{rule.do}); remove them or set do: retry",
            )
        if rule.poll is not None and rule.do != "poll":
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
        if rule.alert is not None and rule.alert.message is not None:
            err = _check_template(rule.alert.message)
            if err:
                add(f"{path}.alert.message", err)
    return problems


def _resolve(name: str, base: Path | None) -> tuple[str, str, str] | None:
    """
    ``(source, text, format)`` for a policy name or path, or None.
    """
    if _is_path(name):
        path = Path(name)
        if base is not None and not path.is_absolute():
            path = base / path
        try:
            if path.stat().st_size > MAX_FILE:
                raise _FileTooBig(str(path))
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        return str(path), text, _format_of(path.name)
    text_b = _read_bundled(name)
    if text_b is None:
        return None
    return name, text_b, "yaml"


class _FileTooBig(Exception):
    pass


def _not_found(name: str, referrer: str | None) -> Problem:
    if _is_path(name):
        msg = f"cannot read the policy file {name!r}"
    else:
        names = bundled_names()
        msg = (
            f"no bundled policy named {name!r}; bundled: {', '.join(names)}"
            f"{suggest(name, names)} (a path needs a suffix: "
            f"{', '.join(SUFFIXES)})"
        )
    if referrer is None:
        return Problem(name, None, "", msg)
    return Problem(referrer, None, "$.extends", msg)


def _chain(
    first: tuple[str, str, str],
) -> list[tuple[str, s.PolicyDoc]]:
    chain: list[tuple[str, s.PolicyDoc]] = []
    seen: list[str] = []
    current: tuple[str, str, str] | None = first
    while current is not None:
        source, text, fmt = current
        key = str(Path(source).resolve()) if _is_path(source) else source
        if key in seen:
            cycle = " -> ".join([*(c for c, _d in chain), source])
            raise PolicyError(
                [
                    Problem(
                        chain[-1][0],
                        None,
                        "$.extends",
                        f"extends forms a cycle: {cycle}",
                    )
                ]
            )
        seen.append(key)
        doc, problems = _read_one(text, source, fmt)
        if problems or doc is None:
            raise PolicyError(problems)
        chain.append((source, doc))
        if doc.extends is None:
            break
        base = Path(source).parent if _is_path(source) else None
        try:
            current = _resolve(doc.extends, base)
        except _FileTooBig as exc:
            raise PolicyError(
                [Problem(source, None, "$.extends", f"{exc} is too large")]
            ) from None
        if current is None:
            raise PolicyError([_not_found(doc.extends, source)])
    return chain


def load_policy(name_or_path: str | Path) -> Policy:
    """
    Load a policy: a bundled name (``"enrow"``) or a path to a ``.yaml``,
    ``.yml``, ``.toml`` or ``.json`` file.

    Raises:
        PolicyError: The file cannot be read, or it (or a policy it
            extends) is wrong; every problem is listed.
    """
    name = str(name_or_path)
    if isinstance(name_or_path, Path) and not name.endswith(SUFFIXES):
        name = str(name_or_path)
    try:
        first = (
            _resolve(name, None)
            if not isinstance(name_or_path, Path)
            else _resolve_path(name_or_path)
        )
    except _FileTooBig:
        raise PolicyError(
            [Problem(name, None, "", f"larger than {MAX_FILE} bytes")]
        ) from None
    if first is None:
        raise PolicyError([_not_found(name, None)])
    with _no_gc():
        return compile_policy(_chain(first))


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


def _resolve_path(path: Path) -> tuple[str, str, str] | None:
    try:
        if path.stat().st_size > MAX_FILE:
            raise _FileTooBig(str(path))
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return str(path), text, _format_of(path.name)


def load_policy_text(
    text: str, *, fmt: str = "yaml", source: str = "<string>"
) -> Policy:
    """
    Load a policy from a string.  ``extends`` paths are resolved against
    the current directory.

    Raises:
        PolicyError: As :func:`load_policy`.
    """
    if fmt not in {"yaml", "toml", "json"}:
        msg = f"fmt must be 'yaml', 'toml' or 'json', not {fmt!r}"
        raise ValueError(msg)
    with _no_gc():
        return compile_policy(_chain((source, text, fmt)))
