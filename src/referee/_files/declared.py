"""
The error classes a policy file declares under ``errors:``, checked.

Rule 1: a name in ``error:`` or in a declaration's ``base:`` means, first
match wins: a class declared in the same file, one declared in a policy it
extends (nearest first), a built-in class, a class registered with
``referee.register_error``.  A declaration may not take a built-in's name
nor redeclare one it extends; it may hide a registered name, in its own
policy only.

Rule 2: a file is checked alone first, so that every problem it has is
reported at once; the names it leaves unknown while it extends another
policy are checked when the whole ``extends`` chain has been read
(:func:`chain_problems`), against what the policies it extends declare.

A declared class is made per policy by the compiler
(``referee._core.errors.declare_error``), never registered.
"""

from __future__ import annotations

import keyword
import re
from typing import TYPE_CHECKING, Final

from referee._core.errors import BUILTIN_ERRORS, registered_errors

from .convert import describe, join_path, suggest


if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from referee._core import schema as s


__all__ = ["chain_problems", "file_problems"]

#: ``CardError``: a capital letter, then letters and digits.
NAME: Final = re.compile(r"[A-Z][A-Za-z0-9]*")

#: Names a declaration cannot take.
RESERVED: Final = frozenset(
    {c.__name__ for c in BUILTIN_ERRORS} | {"RefereeError", "PolicyError"}
)

Found = list[tuple[str, str]]


def file_problems(
    doc: s.PolicyDoc,
    *,
    rules: Sequence[tuple[int, s.RuleDoc]] | None = None,
    names_known: bool = True,
) -> Found:
    """
    ``(path, message)`` for what is wrong with *doc*'s declarations and
    error names on its own: names, built-ins taken, cycles, and -- when it
    extends nothing -- names that mean no class.  *rules* are the rules
    that structured, by index, when not all did; *names_known* is False
    when ``errors:`` itself did not structure: then no name is called
    unknown.
    """
    out: Found = []
    for name in doc.errors:
        path = join_path("$.errors", name)
        if not NAME.fullmatch(name) or keyword.iskeyword(name):
            msg = (
                f"found the error name {describe(name)}; expected a "
                f"CamelCase Python identifier: a capital letter, then "
                f"letters and digits (CardError)"
            )
            out.append((path, msg))
        elif name in RESERVED:
            msg = (
                f"{name!r} is a built-in error class; a declared error "
                f"needs a name of its own (and may extend {name}: "
                f"base: {name})"
            )
            out.append((path, msg))
    out.extend(_cycles(doc.errors))
    if doc.extends is None and names_known:
        out.extend(_unknown(doc, {}, rules))
    return out


def chain_problems(
    chain: Sequence[tuple[str, s.PolicyDoc]],
) -> list[tuple[str, str, str]]:
    """
    ``(source, path, message)`` for the names a file that extends another
    leaves unknown, checked against the declarations of the policies it
    extends, and for declarations that redeclare one of those.  *chain*
    is the extending document first.
    """
    out: list[tuple[str, str, str]] = []
    inherited: dict[str, str] = {}
    for src, doc in reversed(chain):
        if doc.extends is not None:
            out.extend((src, p, m) for p, m in _unknown(doc, inherited))
            out.extend(
                (
                    src,
                    join_path("$.errors", name),
                    (
                        f"{name!r} is declared already by the policy "
                        f"{inherited[name]!r}, which this one extends; use "
                        f"it as it is, or declare a new name (base: {name})"
                    ),
                )
                for name in doc.errors
                if name in inherited
            )
        inherited.update(dict.fromkeys(doc.errors, doc.policy))
    return out


def _references(
    doc: s.PolicyDoc, rules: Sequence[tuple[int, s.RuleDoc]] | None
) -> Iterator[tuple[str, str]]:
    for name, ed in doc.errors.items():
        yield f"{join_path('$.errors', name)}.base", ed.base
    for i, rule in enumerate(doc.rules) if rules is None else rules:
        if rule.error is not None:
            yield f"$.rules[{i}].error", rule.error


def _unknown(
    doc: s.PolicyDoc,
    inherited: Mapping[str, str],
    rules: Sequence[tuple[int, s.RuleDoc]] | None = None,
) -> Found:
    declared = {*doc.errors, *inherited}
    known = declared | set(registered_errors())
    shown = sorted(n for n in known if NAME.fullmatch(n) or n not in declared)
    out: Found = []
    for path, name in _references(doc, rules):
        if name in known:
            continue
        which = "declared, built-in or registered" if declared else ""
        which = which or "built-in or registered"
        out.append(
            (
                path,
                (
                    f"found {describe(name)}; expected a {which} error class: "
                    f"{', '.join(shown)}{suggest(name, shown)} (declare your "
                    f"own under errors:, or register it with "
                    f"referee.register_error)"
                ),
            )
        )
    return out


def _cycles(errors: Mapping[str, s.ErrorDoc]) -> Found:
    out: Found = []
    reported: set[str] = set()
    for start in errors:
        walk = [start]
        while errors[walk[-1]].base in errors:
            nxt = errors[walk[-1]].base
            if nxt in walk:
                loop = walk[walk.index(nxt) :]
                if not reported & set(loop):
                    reported.update(loop)
                    shown = " -> ".join([*loop, nxt])
                    out.append(
                        (
                            f"{join_path('$.errors', loop[0])}.base",
                            (
                                f"the declared errors form a cycle: {shown}; "
                                f"one of them must extend a built-in or "
                                f"registered error (base: BadRequest)"
                            ),
                        )
                    )
                break
            walk.append(nxt)
    return out
