# ruff: noqa: INP001 - a MkDocs hook file, loaded by path (mkdocs.yml)
"""
MkDocs hooks: the pages that are generated, not written.

- ``reference.md``: every key of the policy format.  From the JSON Schema
  when ``referee._tools.jsonschema`` (``referee schema``) is there,
  otherwise by
  walking the attrs classes of ``referee._core.schema`` that the loader
  structures documents into.  Either way the page follows the code.
- ``policies.md``: the decision table of every bundled policy, from
  ``referee._tools.table.render_table(policy, "md")`` when it exists.
- ``changelog.md``: the repository's ``CHANGELOG.md``, as a page.

A page asks for generated content with a marker comment on a line of its
own (``<!-- referee:reference -->``, ``<!-- referee:policies -->``).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import io
import json
import re
import types
import typing
from pathlib import Path
from typing import Any

import attrs
from mkdocs.structure.files import File


ROOT = Path(__file__).resolve().parent.parent
REFERENCE_MARK = "<!-- referee:reference -->"
POLICIES_MARK = "<!-- referee:policies -->"


# --- MkDocs events -----------------------------------------------------------


def on_files(files: Any, config: Any) -> Any:
    changelog = ROOT / "CHANGELOG.md"
    if changelog.exists():
        files.append(
            File.generated(
                config,
                "changelog.md",
                content=changelog.read_text(encoding="utf-8"),
            )
        )
    return files


def on_page_markdown(markdown: str, **_: Any) -> str:
    if REFERENCE_MARK in markdown:
        markdown = markdown.replace(REFERENCE_MARK, render_reference())
    if POLICIES_MARK in markdown:
        markdown = markdown.replace(POLICIES_MARK, render_policies())
    return markdown


# --- The policy reference ----------------------------------------------------


@attrs.frozen
class Key:
    """
    One key of the policy format, as the reference lists it.
    """

    path: str
    type: str
    required: bool
    enum: tuple[str, ...] = ()
    description: str = ""


def render_reference() -> str:
    schema = load_json_schema()
    if schema is not None:
        keys = keys_from_json_schema(schema)
        source = (
            "the JSON Schema that `referee schema` prints "
            "(`referee._tools.jsonschema`), itself generated from the attrs "
            "model"
        )
    else:
        keys = keys_from_attrs()
        source = (
            "the attrs classes of `referee._core.schema`, the model the "
            "loader "
            "structures every policy document into"
        )
    return (
        f"*Generated at build time from {source}: {len(keys)} keys.*\n\n"
        + keys_table(keys)
    )


def keys_table(keys: list[Key]) -> str:
    lines = [
        "| key | type | values | required | description |",
        "|---|---|---|---|---|",
    ]
    for key in keys:
        values = ", ".join(f"`{v}`" for v in key.enum)
        lines.append(
            f"| `{key.path}` | {_cell(key.type)} | {values} "
            f"| {'yes' if key.required else ''} | {_cell(key.description)} |"
        )
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


# --- ... from the JSON Schema ------------------------------------------------


def load_json_schema() -> dict[str, Any] | None:
    """
    The JSON Schema of the policy format, or None while there is no
    generator: a function of ``referee._tools.jsonschema`` that returns it, or
    else what ``referee schema`` prints.
    """
    try:
        module = importlib.import_module("referee._tools.jsonschema")
    except ImportError:
        return None
    for name in (
        "policy_schema",
        "json_schema",
        "schema",
        "generate",
        "generate_schema",
        "build_schema",
        "make_schema",
    ):
        fn = getattr(module, name, None)
        if callable(fn):
            with contextlib.suppress(TypeError):
                result = fn()
                if isinstance(result, str):
                    result = json.loads(result)
                if isinstance(result, dict):
                    return result
    from referee import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        cli.main(["schema"])
    with contextlib.suppress(ValueError):
        result = json.loads(out.getvalue())
        if isinstance(result, dict):
            return result
    return None


def keys_from_json_schema(schema: dict[str, Any]) -> list[Key]:
    walker = _SchemaWalker(schema)
    walker.walk(schema, "", {})
    return walker.keys


class _SchemaWalker:
    """
    Lists the keys of a JSON Schema: properties of objects, through
    ``$ref``, ``anyOf``/``oneOf``/``allOf`` and array ``items``; a
    definition met again below itself (conditions inside conditions) is
    named, not expanded.
    """

    def __init__(self, schema: dict[str, Any]) -> None:
        self.defs = {
            **schema.get("definitions", {}),
            **schema.get("$defs", {}),
        }
        self.keys: list[Key] = []

    def resolve(
        self, node: dict[str, Any]
    ) -> tuple[dict[str, Any], str | None]:
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return node, None
        name = ref.rsplit("/", 1)[-1]
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return {**self.defs.get(name, {}), **rest}, name

    def branches(
        self, node: dict[str, Any]
    ) -> list[tuple[dict[str, Any], str | None]]:
        node, ref = self.resolve(node)
        for word in ("anyOf", "oneOf", "allOf"):
            if isinstance(node.get(word), list):
                found = []
                for branch in node[word]:
                    if isinstance(branch, dict):
                        found.extend(self.branches(branch))
                return found
        return [(node, ref)]

    def type_of(self, node: dict[str, Any]) -> str:
        kinds: list[str] = []
        for branch, ref in self.branches(node):
            t = branch.get("type")
            if isinstance(t, list):
                kinds.extend(str(x) for x in t)
            elif t == "array":
                items = branch.get("items")
                inner = (
                    self.type_of(items) if isinstance(items, dict) else "any"
                )
                kinds.append(f"list of {inner}")
            elif t == "object" or "properties" in branch:
                kinds.append("mapping")
            elif isinstance(t, str):
                kinds.append(t)
            elif "enum" in branch or "const" in branch:
                kinds.append("string")
            elif ref is not None:
                kinds.append(ref)
        unique = [k for k in dict.fromkeys(kinds) if k != "null"]
        return " or ".join(unique) or "any"

    def enum_of(self, node: dict[str, Any]) -> tuple[str, ...]:
        values: list[str] = []
        for branch, _ in self.branches(node):
            values.extend(
                str(v) for v in branch.get("enum", []) if v is not None
            )
            if branch.get("const") is not None:
                values.append(str(branch["const"]))
        return tuple(dict.fromkeys(values))

    def objects(
        self, node: dict[str, Any]
    ) -> list[tuple[dict[str, Any], str | None, bool]]:
        found = []
        for branch, ref in self.branches(node):
            if "properties" in branch:
                found.append((branch, ref, False))
            items = branch.get("items")
            if branch.get("type") == "array" and isinstance(items, dict):
                found.extend((o, r, True) for o, r, _ in self.objects(items))
        return found

    def walk(
        self, node: dict[str, Any], prefix: str, seen: dict[str, str]
    ) -> None:
        for obj, ref, _ in self.objects(node):
            inner = {**seen, ref: prefix.rstrip(".")} if ref else seen
            required = set(obj.get("required", []))
            for name, child in obj.get("properties", {}).items():
                if not isinstance(child, dict):
                    continue
                path = f"{prefix}{name}"
                resolved, _ = self.resolve(child)
                description = str(
                    child.get("description")
                    or resolved.get("description")
                    or ""
                )
                again = [
                    inner[r] for _, r, _ in self.objects(child) if r in inner
                ]
                if again:
                    where = again[0] or "(top level)"
                    description = f"{description} The same keys as `{where}`."
                self.keys.append(
                    Key(
                        path,
                        self.type_of(child),
                        name in required,
                        self.enum_of(child),
                        description.strip(),
                    )
                )
                if not again:
                    lists = any(is_list for *_, is_list in self.objects(child))
                    self.walk(
                        child, f"{path}[]." if lists else f"{path}.", inner
                    )


# --- ... or from the attrs model ---------------------------------------------


def keys_from_attrs() -> list[Key]:
    from referee._core.errors import BUILTIN_ERRORS
    from referee._files import _hints, _schema, _snapshot
    from referee._files import convert as _convert

    notes = _newtype_notes(_schema)
    enums: dict[Any, tuple[str, ...]] = {
        (cls, field): tuple(choices)
        for (cls, field), choices in _convert._WORDS.items()  # noqa: SLF001
    }
    by_type: dict[Any, tuple[str, ...]] = {
        _schema.Failures: tuple(sorted(_snapshot.FAILURES)),
        _schema.ErrorName: tuple(c.__name__ for c in BUILTIN_ERRORS),
        _schema.HintSource: tuple(sorted(_hints.FORMATS)),
    }
    operators = tuple(_convert._OPERATORS)  # noqa: SLF001
    keys: list[Key] = []

    def walk(cls: type, prefix: str, parents: dict[type, str]) -> None:
        hints = typing.get_type_hints(cls)
        for a in attrs.fields(cls):
            key = _schema.RENAMED.get(a.name, a.name)
            path = f"{prefix}{key}"
            hint = hints[a.name]
            optional, hint = _strip_none(hint)
            required = not optional and a.default is attrs.NOTHING
            origin = typing.get_origin(hint)
            args = typing.get_args(hint)
            element = args[0] if origin is list and args else hint
            inner_cls = element
            described = _describe(hint, notes, operators)
            note = notes.get(getattr(element, "__name__", ""), "")
            if element is _schema.Word:
                note = ""  # the values column says which words
            enum = enums.get((cls, a.name), ())
            enum = enum or by_type.get(element, ()) or by_type.get(hint, ())
            if element is _schema.HintSource:
                described += " (`Header-Name` or `Header-Name:format`)"
            if attrs.has(inner_cls) and inner_cls is not _schema.ValueMatch:
                if inner_cls in parents:
                    keys.append(
                        Key(
                            path,
                            described,
                            required,
                            enum,
                            f"The same keys as `{parents[inner_cls]}`.",
                        )
                    )
                    continue
                keys.append(Key(path, described, required, enum, note))
                walk(
                    inner_cls,
                    f"{path}[]." if origin is list else f"{path}.",
                    {**parents, inner_cls: path},
                )
            else:
                keys.append(Key(path, described, required, enum, note))

    walk(_schema.PolicyDoc, "", {_schema.PolicyDoc: "(top level)"})
    meanings = _meanings()
    return [
        attrs.evolve(
            k,
            description=" ".join(
                x for x in (meanings.get(k.path, ""), k.description) if x
            ),
        )
        for k in keys
    ]


#: The tables of policy-language.md whose first column names keys, by the
#: heading above them, and where their keys sit in a document.
_TABLES = {
    "Top level": "",
    "Defaults": "defaults.",
    "Rules": "rules[].",
    "Conditions": "rules[].when.",
    "Alerts": "alerts.webhook.",
}


def _meanings() -> dict[str, str]:
    """
    The meaning of each key, from the tables of the language guide (the
    last column of a row whose first cell is a key in backticks).
    """
    guide = (ROOT / "docs" / "policy-language.md").read_text(encoding="utf-8")
    prefix: str | None = None
    found: dict[str, str] = {}
    for line in guide.splitlines():
        if line.startswith("#"):
            prefix = _TABLES.get(line.lstrip("#").strip())
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if prefix is None or len(cells) < 2 or not line.startswith("|"):
            continue
        first = cells[0]
        if first.startswith("`") and first.endswith("`"):
            found[prefix + first.strip("`")] = cells[-1]
    return found


def _strip_none(hint: Any) -> tuple[bool, Any]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is (
        typing.Union
    ):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        return optional, args[0] if len(args) == 1 else hint
    return False, hint


_PLAIN = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
}


def _describe(
    hint: Any, notes: dict[str, str], operators: tuple[str, ...]
) -> str:
    from referee._core import schema as _schema

    if hint in _PLAIN:
        return _PLAIN[hint]
    if hint is _schema.ValueMatch:
        return (
            "value matcher: a scalar, a list of scalars, or a mapping of "
            f"operators ({', '.join(f'`{o}`' for o in operators)})"
        )
    supertype = getattr(hint, "__supertype__", None)
    if supertype is not None:
        return _words(hint.__name__)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is list and args:
        inner = args[0]
        if attrs.has(inner):
            return "list of mappings"
        return f"list of {_describe(inner, notes, operators)}"
    if origin is dict and len(args) == 2:
        return (
            "mapping of names to "
            f"{_describe(args[1], notes, operators).split(':')[0]}s"
        )
    if attrs.has(hint):
        return "mapping"
    return "any value"


def _words(name: str) -> str:
    # LimitDuration -> "limit duration"
    return re.sub(r"(?<!^)([A-Z])", r" \1", name).lower()


def _newtype_notes(module: types.ModuleType) -> dict[str, str]:
    """
    The ``#:`` comment above each value type of *module*, by name.
    """
    source = inspect.getsource(module)
    lines = source.splitlines()
    notes: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if not isinstance(target, ast.Name):
                continue
            comment: list[str] = []
            n = node.lineno - 2
            while n >= 0 and lines[n].startswith("#:"):
                comment.insert(0, lines[n][2:].strip())
                n -= 1
            if comment:
                notes[target.id] = " ".join(comment)
    return notes


# --- Decision tables -------------------------------------------------------


def render_policies() -> str:
    import referee

    try:
        table = importlib.import_module("referee._tools.table")
    except ImportError:
        return (
            '!!! note "Not generated in this build"\n'
            "    The decision tables come from `referee table`\n"
            "    (`referee._tools.table.render_table`), which this version "
            "of\n"
            "    referee does not have yet.  Meanwhile, `referee explain`\n"
            "    and `referee simulate` show what a bundled policy does\n"
            "    with any outcome, and the policy files themselves are\n"
            "    commented rule by rule.\n\n"
            "Bundled policies: "
            + ", ".join(f"`{n}`" for n in referee.bundled_names())
            + ".\n"
        )
    parts = []
    for name in referee.bundled_names():
        rendered = table.render_table(referee.load_policy(name), "md")
        parts.append(_under_page_title(name, rendered.strip()) + "\n")
    return "\n".join(parts)


def _under_page_title(name: str, markdown: str) -> str:
    """
    *markdown* with its headings moved so that the highest is ``##`` (the
    page's title is the only ``#``); one named after the policy is added
    when it has none.
    """
    lines = markdown.splitlines()
    levels = [
        len(line) - len(line.lstrip("#"))
        for line in lines
        if re.match(r"#+ ", line)
    ]
    if not levels:
        return f"## {name}\n\n{markdown}"
    shift = "#" * max(0, 2 - min(levels))
    return "\n".join(
        shift + line if re.match(r"#+ ", line) else line for line in lines
    )
