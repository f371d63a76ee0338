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

from .matchers import MISSING, UNPARSED, Context, parse


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
#: The conjuncts that read the parsed body.
_BODY: Final = frozenset({"body", "body_eq"})

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
            "UNPARSED": UNPARSED,
            "ESCAPE": ESCAPE,
            "parse": parse,
        }
        self.depth = 1
        self._names: dict[Any, str] = {}
        #: For each needle, the local that says whether the body holds it.
        self.flags: dict[bytes, str] = {}
        #: The name of the body limit.
        self.limit = ""
        #: Whether the function reads the body at all.
        self.bodied = False

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
    that matches, or None.  *act* also has ``poll`` and ``retry``, what
    it calls for those actions when the rule raises no alert; they are
    called directly.

    *label* names the function (``200``, ``connect``, ``fallback``).
    """
    w = _Writer()
    w.limit = w.const(body_limit)
    w.bodied = any(_looks(r) or _parses(r) for r in rules)
    w.line("ctx = None")
    if w.bodied:
        w.line("body = snap.body")
        w.line("loaded = body is not None")
        w.line("esc = None")
        w.line("doc = UNPARSED")
    needles = list(dict.fromkeys(r.needle for r in rules if r.needle))
    for i, needle in enumerate(needles):
        w.flags[needle] = f"n{i}"
        w.line(f"n{i} = None  # where the body holds {needle!r} (-1: not)")
    gated = bool(rules) and all(r.needle is not None for r in rules)
    if gated:
        w.line("# the body must hold one of the needles, or no candidate")
        w.line("# can match")
        w.open("body is None")
        w.open("snap.load_body is None")
        w.line("return None")
        w.depth -= 1
        _new_ctx(w)
        w.line("body = ctx.body()")
        w.line("loaded = True")
        w.open("body is None")
        w.line("return None")
        w.depth -= 2
        finds = " or ".join(
            f"(n{i} := body.find({w.const(n)})) >= 0"
            for i, n in enumerate(needles)
        )
        w.open(f"not ({finds}) and body.find(ESCAPE) < 0")
        w.line("return None")
        w.depth -= 1
    for rule in rules:
        if _rule(w, rule, loaded=gated):
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


def _looks(rule: Any) -> bool:
    """
    Whether *rule* looks for bytes in the body before parsing it.
    """
    return rule.needle is not None or rule.prefilter is not None


def _pair_keys(rule: Any) -> tuple[bytes, ...]:
    """
    For a rule whose one needle is a value under a key, the spellings of
    that key that may stand right before the value (``"status":``,
    ``"status": ``); else nothing.
    """
    needles = rule.when.needles
    if rule.needle is None or not needles or len(needles) != 1:
        return ()
    only = needles[0]
    return only.keys if only.pair is not None else ()


def _renders(rule: Any) -> bool:
    """
    Whether deciding with *rule* may render a template (an alert, a poll
    request), which reads the outcome through the context.
    """
    poll = rule.poll
    return rule.alert is not None or (
        poll is not None
        and (poll.request_url is not None or poll.request_method is not None)
    )


def _parses(rule: Any) -> bool:
    return any(p.kind in _BODY for p in rule.when.parts)


def _new_ctx(w: _Writer) -> None:
    """
    Make the :class:`Context` if there is none yet; it shares the parse
    made here, so that nothing parses the body twice.
    """
    w.open("ctx is None")
    w.line(f"ctx = Context(snap, state, {w.limit})")
    if w.bodied:
        w.line("ctx._json = doc")
    w.depth -= 1


def _parse(w: _Writer) -> None:
    """
    Parse the body (known to be there) once, as :meth:`Context.json`
    does.
    """
    w.open("doc is UNPARSED")
    w.line(f"doc = parse(body, {w.limit})")
    w.open("ctx is not None")
    w.line("ctx._json = doc")
    w.depth -= 2


def _rule(w: _Writer, rule: Any, *, loaded: bool) -> bool:
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
    there = False  # whether the body is known to be there
    if _looks(rule):
        there = True
        if not loaded:
            w.open("not loaded")
            _new_ctx(w)
            w.line("body = ctx.body()")
            w.line("loaded = True")
            w.depth -= 1
            w.open("body is not None")
        # Once the body is parsed, its conditions are cheaper to test
        # than its bytes: the needle and the prefilter only spare a parse.
        tests = []
        if rule.needle is not None:
            flag = w.flags[rule.needle]
            tests.append(
                f"({flag} if {flag} is not None else "
                f"({flag} := body.find({w.const(rule.needle)}))) >= 0"
            )
        keys = _pair_keys(rule)
        if keys:
            # The key just before the value, as writers spell it (the
            # byte before the value says which spelling to compare); the
            # pattern (any spacing, any occurrence) when it is not.
            flag = w.flags[rule.needle]
            compact, spaced = keys
            near = (
                f"({flag} >= {len(spaced)} and body[{flag} - {len(spaced)}:"
                f"{flag}] == {w.const(spaced)} if body[{flag} - 1] == 32 "
                f"else {flag} >= {len(compact)} and body[{flag} - "
                f"{len(compact)}:{flag}] == {w.const(compact)})"
            )
            pattern = f"{w.const(rule.prefilter)}(body)"
            tests.append(f"({near} or {pattern})")
        elif rule.prefilter is not None:
            tests.append(f"{w.const(rule.prefilter)}(body)")
        test = " and ".join(tests)
        if len(tests) > 1:
            test = f"({test})"
        w.open(
            f"doc is not UNPARSED or {test} or (esc if esc is not None "
            f"else (esc := body.find(ESCAPE) >= 0))"
        )
    for part in costly:
        if part.kind in _BODY and there:
            _parse(w)
        else:
            _new_ctx(w)
            if part.kind in _BODY:
                w.line("doc = ctx.json()")
        if part.kind == "body_eq":
            key, want = part.args
            w.open(
                f"type(doc) is dict and doc.get({w.const(key)}) == "
                f"{w.const(want)}"
            )
        elif part.kind == "body":
            get, ok = part.args
            w.open(
                f"doc is not MISSING and {w.const(ok)}({w.const(get)}(doc))"
            )
        else:
            w.open(f"{w.const(part.test)}(ctx)")
    always = w.depth == 1
    if w.bodied and _renders(rule):
        # What renders templates reads the body through the context.
        _new_ctx(w)
    r = w.const(rule)
    plain = rule.alert is None and rule.pause is None
    if plain and rule.action == "poll":
        # What act() would do for it, without the dispatch.
        w.line(
            f"return act.poll(policy, {r}, snap, state, ctx, now, rng, None)"
        )
    elif plain and rule.action == "retry":
        w.line(f"return act.retry(policy, {r}, snap, state, now, rng, None)")
    else:
        w.line(f"return act(policy, {r}, snap, state, ctx, now, rng)")
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
