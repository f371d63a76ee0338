"""
Candidate lists compiled to Python functions, as attrs generates
``__init__``: the source text is built from the compiled rules, and
``compile()``/``exec`` run once per list, on its first decision.

Rule 1: a generated function decides exactly as the interpreted matcher
(:func:`referee._core.engine.interpret`) does: the same rule wins, or none
does.  The tests hold the two side by side on generated snapshots.
Rule 2: a generated function is pure, like the engine: it reads the
snapshot and the state and calls the predicates the matchers compiled.
Rule 3: only constants the compiler made reach the source, and only by
name (``_c0``, ``_c1``…); text from a policy file appears in comments, as
``repr``, never as code.

What the generated code saves, per decision: the loop over the candidates
and the attribute reads that pick each rule's needle, prefilter and test;
one call per conjunct (the common shapes, a method, an attempt bound, a
top-level body key equal to a string, are inlined); and, when every
candidate needs bytes in the body, all their needles are looked for in one
pass at the top, so that a body none of them can match is accepted after
that search alone.  A generated function reads::

    def candidates_200(policy, snap, state, now, rng, act):
        # the body must contain one of these, or no candidate can match
        body = snap.body
        ...
        if body.find(_c0) < 0 and body.find(_c1) < 0 and body.find(ESCAPE) < 0:
            return None
        # rule 'search-ongoing' ($.rules[8])
        if snap.method == _c2:
            ...
                if type(doc) is dict and doc.get(_c4) == _c5:
                    return act(policy, _c6, snap, state, ctx, now, rng)
        ...
        return None
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Final

from .matchers import MISSING, Context


if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .matchers import Part


__all__ = ["Generated", "generate"]

#: Candidate lists longer than this are left to the interpreted matcher:
#: a generated function grows with its list, and a policy's rules that
#: name no status are candidates for every status it names.
MAX_RULES: Final = 64

#: A body with a backslash may spell a needle with a ``\\u`` escape.
ESCAPE: Final = b"\\"

_CMP: Final = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}

#: The conjuncts tried before the body is looked at.
_CHEAP: Final = frozenset({"method", "failure", "attempt"})

_counter = itertools.count()


class Generated:
    """
    A generated function and the source it was compiled from.
    """

    __slots__ = ("fn", "source")

    def __init__(self, fn: Callable[..., Any], source: str) -> None:
        self.fn = fn
        self.source = source

    def __repr__(self) -> str:
        return f"<generated {self.fn.__name__}>"


class _Writer:
    """
    Source lines at an indentation, and the constants they name.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.ns: dict[str, Any] = {
            "Context": Context,
            "MISSING": MISSING,
            "ESCAPE": ESCAPE,
        }
        self.depth = 1
        self._names: dict[Any, str] = {}

    def const(self, value: Any) -> str:
        # Equal strings share a name; anything else is named by identity
        # (every constant is kept alive in the namespace, so an id is
        # never reused while it is there).
        key: Any = (
            (type(value), value) if type(value) in {str, bytes} else id(value)
        )
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = f"_c{len(self._names)}"
            self.ns[name] = value
        return name

    def line(self, text: str) -> None:
        self.lines.append("    " * self.depth + text)

    def open(self, condition: str) -> None:
        self.line(f"if {condition}:")
        self.depth += 1


def _comment(text: str) -> str:
    # A rule id or path is author's text: shown as repr, and on one line.
    return text.replace("\n", " ").replace("\r", " ")


def generate(rules: Sequence[Any], body_limit: int, label: str) -> Generated:
    """
    The function that tries *rules* (compiled rules, in order) on an
    outcome: ``fn(policy, snap, state, now, rng, act)`` returns
    ``act(policy, rule, snap, state, ctx, now, rng)`` for the first rule
    that matches, or None.

    *label* names the function (``200``, ``connect``, ``fallback``).
    """
    w = _Writer()
    limit = w.const(body_limit)
    bodied = [r for r in rules if r.needle is not None or r.prefilter]
    if bodied:
        w.line("ctx = None")
        w.line("body = snap.body")
        w.line("loaded = body is not None")
        w.line("esc = None")
    else:
        w.line("ctx = None")
    gated = bool(rules) and all(r.needle is not None for r in rules)
    if gated:
        needles = list(dict.fromkeys(r.needle for r in rules))
        w.line("# the body must contain one of these, or no candidate can")
        w.line(f"# match: {', '.join(repr(n) for n in needles)}")
        w.open("body is None")
        w.open("snap.load_body is None")
        w.line("return None")
        w.depth -= 1
        w.line(f"ctx = Context(snap, state, {limit})")
        w.line("body = ctx.body()")
        w.line("loaded = True")
        w.open("body is None")
        w.line("return None")
        w.depth -= 2
        finds = " and ".join(f"body.find({w.const(n)}) < 0" for n in needles)
        w.open(f"{finds} and body.find(ESCAPE) < 0")
        w.line("return None")
        w.depth -= 1
    for rule in rules:
        if _rule(w, rule, limit, loaded=gated):
            break  # it always matches: the rules after it never run
    else:
        w.depth = 1
        w.line("return None")
    name = f"candidates_{label}_{next(_counter)}"
    source = "\n".join(
        [f"def {name}(policy, snap, state, now, rng, act):", *w.lines, ""]
    )
    code = compile(source, f"<referee {name}>", "exec")
    # The source is built above from the compiled rules: names of
    # constants, never text from the policy (Rule 3).
    exec(code, w.ns)  # noqa: S102
    return Generated(w.ns[name], source)


def _rule(w: _Writer, rule: Any, limit: str, *, loaded: bool) -> bool:
    """
    The block that tries *rule*; *loaded*: the body is there already
    (after the prologue of a list whose every rule needs it).  Returns
    whether the rule matches whatever the outcome.
    """
    w.depth = 1
    w.line(f"# rule {_comment(repr(rule.id))} ({_comment(rule.path)})")
    parts: tuple[Part, ...] = rule.when.parts
    cheap = [p for p in parts if p.kind in _CHEAP]
    costly = [p for p in parts if p.kind not in _CHEAP]
    for part in cheap:
        w.open(_cheap(w, part))
    if rule.needle is not None or rule.prefilter is not None:
        if not loaded:
            w.open("not loaded")
            w.open("ctx is None")
            w.line(f"ctx = Context(snap, state, {limit})")
            w.depth -= 1
            w.line("body = ctx.body()")
            w.line("loaded = True")
            w.depth -= 1
            w.open("body is not None")
        tests = []
        if rule.needle is not None:
            tests.append(f"body.find({w.const(rule.needle)}) >= 0")
        if rule.prefilter is not None:
            tests.append(f"{w.const(rule.prefilter)}(body)")
        w.line(f"ok = {' and '.join(tests)}")
        w.open("not ok")
        w.open("esc is None")
        w.line("esc = body.find(ESCAPE) >= 0")
        w.depth -= 1
        w.line("ok = esc")
        w.depth -= 1
        w.open("ok")
    for part in costly:
        w.open("ctx is None")
        w.line(f"ctx = Context(snap, state, {limit})")
        w.depth -= 1
        if part.kind == "body_eq":
            key, want = part.args
            w.line("doc = ctx.json()")
            w.open(
                f"type(doc) is dict and doc.get({w.const(key)}) == "
                f"{w.const(want)}"
            )
        elif part.kind == "body":
            get, ok = part.args
            w.line("doc = ctx.json()")
            w.open(
                f"doc is not MISSING and {w.const(ok)}({w.const(get)}(doc))"
            )
        else:
            w.open(f"{w.const(part.test)}(ctx)")
    always = w.depth == 1
    w.line(f"return act(policy, {w.const(rule)}, snap, state, ctx, now, rng)")
    return always


def _cheap(w: _Writer, part: Part) -> str:
    if part.kind == "method":
        if len(part.args) == 1:
            return f"snap.method == {w.const(part.args[0])}"
        return f"snap.method in {w.const(frozenset(part.args))}"
    if part.kind == "failure":
        return f"snap.failure in {w.const(part.args[0])}"
    # attempt: the bounds inline when they are the whole test (the
    # attempt is an int), else the value test.
    ok, *bounds = part.args
    if bounds:
        return " and ".join(
            f"state.attempt {_CMP[op]} {w.const(bound)}"
            for op, bound in bounds
        )
    return f"{w.const(ok)}(state.attempt)"
