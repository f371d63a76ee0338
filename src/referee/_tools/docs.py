"""
The generated parts of the docs, written into the pages themselves.

Three pages of ``docs/`` hold text computed from the code, so that it
cannot drift from what the code does, and so that it reads the same in the
repository as on the site:

- ``reference.md``: every key of the policy format, from the JSON Schema
  that ``referee schema`` prints (`referee._tools.jsonschema`);
- ``policies.md``: the decision table of every bundled policy, from
  `referee._tools.table.render_table`;
- ``changelog.md``: a copy of the repository's ``CHANGELOG.md``.

A page's generated text sits between two marker comments, each on a line of
its own; the prose around them is written by hand and kept::

    <!-- begin generated: reference (python3 dev.py docs) -->
    ...
    <!-- end generated: reference -->

``python3 dev.py docs`` (that is, ``python -m referee._tools.docs`` in the
repository's root) rewrites the regions in place; ``--check`` only says
which pages are out of date.  The output is deterministic (sorted, no
timestamps, only the built-in errors), and ``tests/test_docs.py`` fails when
a page differs from it.

Rule 1: this module reads and writes only the files given to it; every
``render_*`` function is a function of the code alone.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from referee._files.load import PATH_VARIABLE


if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


__all__ = [
    "COMMAND",
    "Key",
    "expected_pages",
    "keys_from_json_schema",
    "main",
    "render_policies",
    "render_reference",
    "replace_regions",
    "stale_pages",
    "write_pages",
]

#: The one command that regenerates the pages, from the repository's root.
COMMAND: Final = "python3 dev.py docs"

_REGION: Final = re.compile(
    r"^(<!-- begin generated: (?P<name>[a-z-]+)[^\n]*-->\n)"
    r"(?P<body>.*?)"
    r"^(<!-- end generated: (?P=name) -->)$",
    re.MULTILINE | re.DOTALL,
)


# -- the pages ----------------------------------------------------------------


def replace_regions(text: str, renderers: dict[str, Callable[[], str]]) -> str:
    """
    *text* with the body of each generated region replaced by what its
    renderer returns now.

    Raises:
        ValueError: A region names no renderer.
    """

    def one(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in renderers:
            msg = (
                f"no generator for the region {name!r}; "
                f"known: {', '.join(sorted(renderers))}"
            )
            raise ValueError(msg)
        body = renderers[name]().rstrip("\n")
        return f"{match[1]}\n{body}\n\n{match[4]}"

    return _REGION.sub(one, text)


def expected_pages(root: Path) -> dict[Path, str]:
    """
    What each generated page of the repository at *root* should hold, by
    its path.
    """
    docs = root / "docs"
    renderers: dict[str, Callable[[], str]] = {
        "reference": render_reference,
        "policies": render_policies,
    }
    pages = {
        docs / name: replace_regions(
            (docs / name).read_text(encoding="utf-8"), renderers
        )
        for name in ("reference.md", "policies.md")
    }
    pages[docs / "changelog.md"] = (root / "CHANGELOG.md").read_text(
        encoding="utf-8"
    )
    return pages


def stale_pages(root: Path) -> list[Path]:
    """
    The generated pages of *root* that differ from what the code makes.
    """
    return [
        path
        for path, text in expected_pages(root).items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]


def write_pages(root: Path) -> list[Path]:
    """
    Regenerate the pages of *root* that are out of date; return them.
    """
    pages = expected_pages(root)
    stale = stale_pages(root)
    for path in stale:
        path.write_text(pages[path], encoding="utf-8", newline="\n")
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    """
    ``python -m referee._tools.docs [--check] [--root DIR]``.
    """
    parser = argparse.ArgumentParser(
        prog="python -m referee._tools.docs",
        description="Write the generated parts of docs/reference.md, "
        "docs/policies.md and docs/changelog.md.",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path.cwd(),
        help="the repository (default: the current directory)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 when a page is out of date",
    )
    args = parser.parse_args(argv)
    root: Path = args.root
    # The bundled policies, not a folder of the caller's that shadows a
    # name (their own enrow.yaml, an http-default that extends ours).
    os.environ.pop(PATH_VARIABLE, None)
    if not (root / "docs").is_dir() or not (root / "CHANGELOG.md").exists():
        sys.stderr.write(f"{root}: not referee's repository (no docs/)\n")
        return 2
    if args.check:
        stale = stale_pages(root)
        for path in stale:
            sys.stdout.write(
                f"{path.relative_to(root)}: out of date; run {COMMAND}\n"
            )
        return 1 if stale else 0
    for path in write_pages(root):
        sys.stdout.write(f"{path.relative_to(root)}: regenerated\n")
    return 0


# -- the policy reference -----------------------------------------------------


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
    """
    The table of every key of the policy format.
    """
    from referee._core.errors import BUILTIN_ERRORS
    from referee._tools.jsonschema import policy_schema

    # Only the built-in errors: what a test registered must not show.
    schema = policy_schema(c.__name__ for c in BUILTIN_ERRORS)
    keys = keys_from_json_schema(schema)
    lines = [
        (
            f"*Generated by `{COMMAND}` from the JSON Schema that `referee "
            "schema` prints, itself generated from the document model the "
            f"loader uses: {len(keys)} keys.*"
        ),
        "",
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
    # One line, no column break, and no '<name>' read as an HTML tag
    # (outside code spans: between backticks it shows as written).
    parts = " ".join(text.split()).replace("|", "\\|").split("`")
    return "`".join(
        p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;")
        for i, p in enumerate(parts)
    )


def keys_from_json_schema(schema: dict[str, Any]) -> list[Key]:
    """
    Every key of *schema*, depth first, in the order of its properties.
    """
    walker = _SchemaWalker(schema)
    walker.walk(schema, "", {})
    return walker.keys


_Node = dict[str, Any]


class _SchemaWalker:
    """
    Lists the keys of a JSON Schema: properties of objects, through
    ``$ref``, ``anyOf``/``oneOf``/``allOf`` and array ``items``; a
    definition met again below itself (conditions inside conditions) is
    named, not expanded.
    """

    def __init__(self, schema: _Node) -> None:
        self.defs: dict[str, _Node] = {
            **schema.get("definitions", {}),
            **schema.get("$defs", {}),
        }
        self.keys: list[Key] = []

    def resolve(self, node: _Node) -> tuple[_Node, str | None]:
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return node, None
        name = ref.rsplit("/", 1)[-1]
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return {**self.defs.get(name, {}), **rest}, name

    def branches(self, node: _Node) -> list[tuple[_Node, str | None]]:
        node, ref = self.resolve(node)
        for word in ("anyOf", "oneOf", "allOf"):
            if isinstance(node.get(word), list):
                found: list[tuple[_Node, str | None]] = []
                for branch in node[word]:
                    if isinstance(branch, dict):
                        found.extend(self.branches(branch))
                return found
        return [(node, ref)]

    def type_of(self, node: _Node) -> str:
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

    def enum_of(self, node: _Node) -> tuple[str, ...]:
        values: list[str] = []
        for branch, _ in self.branches(node):
            values.extend(
                str(v) for v in branch.get("enum", []) if v is not None
            )
            if branch.get("const") is not None:
                values.append(str(branch["const"]))
        return tuple(dict.fromkeys(values))

    def objects(self, node: _Node) -> list[tuple[_Node, str | None, bool]]:
        found: list[tuple[_Node, str | None, bool]] = []
        for branch, ref in self.branches(node):
            if "properties" in branch:
                found.append((branch, ref, False))
            items = branch.get("items")
            if branch.get("type") == "array" and isinstance(items, dict):
                found.extend((o, r, True) for o, r, _ in self.objects(items))
        return found

    def walk(self, node: _Node, prefix: str, seen: dict[str, str]) -> None:
        for obj, ref, _ in self.objects(node):
            inner = {**seen, ref: prefix.rstrip(".")} if ref else seen
            required = set(obj.get("required", []))
            for name, child in obj.get("properties", {}).items():
                if isinstance(child, dict):
                    self.key(f"{prefix}{name}", child, name in required, inner)

    def key(
        self, path: str, child: _Node, required: bool, seen: dict[str, str]
    ) -> None:
        """
        List the key at *path*, then the keys inside it: its properties,
        and the keys of a mapping whose names the writer chooses (the
        schema's ``additionalProperties``) as ``<name>``.
        """
        resolved, _ = self.resolve(child)
        description = str(
            child.get("description") or resolved.get("description") or ""
        )
        again = [seen[r] for _, r, _ in self.objects(child) if r in seen]
        if again:
            where = again[0] or "(top level)"
            description = f"{description} The same keys as `{where}`."
        self.keys.append(
            Key(
                path,
                self.type_of(child),
                required,
                self.enum_of(child),
                description.strip(),
            )
        )
        if again:
            return
        lists = any(is_list for *_, is_list in self.objects(child))
        self.walk(child, f"{path}[]." if lists else f"{path}.", seen)
        for branch, _ in self.branches(child):
            named = branch.get("additionalProperties")
            if isinstance(named, dict):
                self.key(f"{path}.<name>", named, False, seen)


# -- the decision tables ------------------------------------------------------


def render_policies() -> str:
    """
    The decision table of every bundled policy, by name (unset
    ``REFEREE_POLICY_PATH`` first: a name found there would win).
    """
    from referee._files.load import bundled_names, load_policy
    from referee._tools.table import render_table

    parts = [
        _under_page_title(name, render_table(load_policy(name), "md").strip())
        for name in bundled_names()
    ]
    return "\n\n".join(parts) + "\n"


def _under_page_title(name: str, markdown: str) -> str:
    """
    *markdown* with its headings moved so that the highest is ``##`` (the
    page's title is the only ``#``); one named after the policy is added
    when it has none.
    """
    heading = re.compile(r"#+ ")
    lines = markdown.splitlines()
    levels = [
        len(line) - len(line.lstrip("#"))
        for line in lines
        if heading.match(line)
    ]
    if not levels:
        return f"## {name}\n\n{markdown}"
    shift = "#" * max(0, 2 - min(levels))
    return "\n".join(
        shift + line if heading.match(line) else line for line in lines
    )


if __name__ == "__main__":
    raise SystemExit(main())
