"""
Conditions compiled into predicates.

Rule 1: a predicate is a pure function of the :class:`Context` (the snapshot
and the call's state); it never raises on anything a server can send.
Rule 2: what costs (the body, its JSON parse, the URL split, a header look-up)
is done lazily, once per decision, and only for a rule that needs it.

Besides the predicate, compiling a condition yields what makes the engine
fast: the status codes (and failure words) the condition can match at all,
from which the policy's index is built, and the "needles" of its body
conditions: byte strings of which the raw body must contain at least one per
group, or the rule cannot match and the JSON parse is skipped.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import attrs
import orjson
import re2


if TYPE_CHECKING:
    from .schema import ConditionDoc, ValueMatch
    from .snapshot import Snapshot
    from .state import AttemptState


__all__ = [
    "MISSING",
    "REGEX_INPUT_LIMIT",
    "UNPARSED",
    "CompiledCondition",
    "Context",
    "Needles",
    "Part",
    "compile_condition",
    "compile_regex",
    "make_prefilter",
    "parse",
    "path_getter",
]

#: The longest string a ``matches`` pattern is run against.  RE2 already
#: matches in time linear in the input; this bounds the input too.
REGEX_INPUT_LIMIT: Final = 8192


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
#: What :class:`Context` holds before it has parsed (or loaded) the body.
UNPARSED: Final = _Missing()
_NOT_PARSED: Final = UNPARSED

Predicate = Callable[["Context"], bool]
Keys = frozenset[int | str] | None


class Context:
    """
    What one decision knows, computed lazily and at most once.
    """

    __slots__ = ("_body", "_json", "_url", "body_limit", "snap", "state")

    def __init__(
        self, snap: Snapshot, state: AttemptState, body_limit: int
    ) -> None:
        self.snap = snap
        self.state = state
        self.body_limit = body_limit
        self._body: bytes | _Missing | None = (
            snap.body if snap.body is not None else _NOT_PARSED
        )
        self._json: Any = _NOT_PARSED
        self._url: tuple[str, str] | None = None

    def body(self) -> bytes | None:
        """
        The raw body, loaded on first use; None when there is none.
        """
        body = self._body
        if body is _NOT_PARSED:
            loader = self.snap.load_body
            if loader is None or _too_long(self.snap, self.body_limit):
                body = None
            else:
                try:
                    body = loader()
                except Exception:  # noqa: BLE001 - a body that cannot be read does not match
                    body = None
            self._body = body
        return body  # type: ignore[return-value]

    def json(self) -> Any:
        """
        The body parsed as JSON, or MISSING when it is absent, too large or
        not JSON.
        """
        doc = self._json
        if doc is _NOT_PARSED:
            body = self.body()
            doc = MISSING if body is None else parse(body, self.body_limit)
            self._json = doc
        return doc

    def url_parts(self) -> tuple[str, str]:
        """
        ``(host, path)`` of the request's URL, lower-cased host.
        """
        parts = self._url
        if parts is None:
            try:
                split = urlsplit(self.snap.url)
                parts = ((split.hostname or "").lower(), split.path or "/")
            except ValueError:
                parts = ("", "")
            self._url = parts
        return parts


def parse(body: bytes, limit: int) -> Any:
    """
    *body* parsed as JSON, or MISSING when it is longer than *limit* or
    not JSON: the one parse of the engine.
    """
    if len(body) > limit:
        return MISSING
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return MISSING


def _too_long(snap: Snapshot, limit: int) -> bool:
    """
    Whether the response says its body is longer than *limit*: then it is
    not loaded at all (a rule cannot match a body it would not parse).
    """
    declared = snap.headers.get("content-length")
    if declared is None:
        return False
    try:
        return int(declared) > limit
    except ValueError:
        return False


@functools.lru_cache(maxsize=4096)
def path_getter(dotted: str) -> Callable[[Any], Any]:
    """
    The one walker of dotted paths into parsed JSON, for conditions and
    templates alike: ``results.0.status``, ``results.-1.id``.

    Each step is a key into an object; into an array, a step that spells
    an integer is an index (negative ones count from the end).  So a digit
    step reaches an object's ``"0"`` key as well as an array's first item.
    The getter returns MISSING when any step is absent.
    """
    raw = tuple(dotted.split("."))
    steps = tuple(int(p) if p.lstrip("-").isdigit() else None for p in raw)

    def get(doc: Any) -> Any:
        for key, index in zip(raw, steps, strict=True):
            if isinstance(doc, dict):
                doc = doc.get(key, MISSING)
            elif isinstance(doc, list) and index is not None:
                doc = doc[index] if -len(doc) <= index < len(doc) else MISSING
            else:
                return MISSING
            if doc is MISSING:
                return MISSING
        return doc

    return get


def _same(a: Any, b: Any) -> bool:
    # JSON and YAML agree on strings, numbers, booleans and null, but Python
    # says True == 1: keep booleans apart from numbers.
    if type(a) is bool or type(b) is bool:
        return a is b
    return bool(a == b)


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and len(value) < 64:
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _header_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def compile_value(
    vm: ValueMatch, *, header: bool = False
) -> Callable[[Any], bool]:
    """
    A value matcher as a function of the value (MISSING when absent).

    Header values are strings: the expected values are compared as text,
    names of booleans in lower case.
    """
    tests: list[Callable[[Any], bool]] = []
    if vm.one_of is not None:
        if header:
            texts = frozenset(_header_text(v) for v in vm.one_of)
            tests.append(lambda v: v in texts)
        elif len(vm.one_of) == 1:
            only = vm.one_of[0]
            if isinstance(only, str):
                tests.append(lambda v: v == only and type(v) is str)
            else:
                tests.append(lambda v: _same(v, only))
        else:
            choices = vm.one_of
            tests.append(lambda v: any(_same(v, c) for c in choices))
    if vm.has_contains:
        needle = vm.contains

        def contains(v: Any) -> bool:
            if isinstance(v, str):
                return _header_text(needle) in v
            if isinstance(v, list):
                return any(_same(x, needle) for x in v)
            return False

        tests.append(contains)
    if vm.matches is not None:
        tests.append(compile_regex(vm.matches))
    for op, bound in (
        ("gt", vm.gt),
        ("gte", vm.gte),
        ("lt", vm.lt),
        ("lte", vm.lte),
    ):
        if bound is not None:
            tests.append(_comparison(op, bound))
    exists = vm.exists
    if exists is False:
        return lambda v: v is MISSING
    if not tests:
        return lambda v: v is not MISSING
    if len(tests) == 1:
        only_test = tests[0]
        return lambda v: v is not MISSING and only_test(v)
    return lambda v: v is not MISSING and all(t(v) for t in tests)


def _re2_options() -> Any:
    options = re2.Options()
    # A bad pattern is a load error with its own message; RE2 must not
    # also print it to stderr.
    options.log_errors = False
    # Only whether it matches is wanted: no submatches to track.
    options.never_capture = True
    return options


_RE2_OPTIONS: Final = _re2_options()


@functools.lru_cache(maxsize=1024)
def compile_regex(pattern: str) -> Callable[[Any], bool]:
    """
    A ``matches`` pattern as a test of a value: a string in which RE2
    finds the pattern (a search, not a full match) within its first
    :data:`REGEX_INPUT_LIMIT` characters.

    RE2 runs in time linear in the input, whatever the pattern: no
    backtracking, so no pattern and no body can hang a call.

    Raises:
        ValueError: RE2 cannot compile *pattern*; the message names the
            construct (a lookaround, a backreference...) and what to write
            instead.
    """
    try:
        compiled = re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        raise ValueError(regex_problem(pattern, exc)) from None
    search = compiled.search

    def test(v: Any) -> bool:
        if not isinstance(v, str):
            return False
        # Bytes, not str: the wrapper then maps no offsets back to
        # characters; "surrogatepass" lets a lone surrogate through as
        # bytes that match no literal, instead of raising.
        text = v[:REGEX_INPUT_LIMIT].encode("utf-8", "surrogatepass")
        return search(text) is not None

    return test


#: Why RE2 lacks the constructs that need backtracking.
_LINEAR: Final = "RE2 matches in linear time"

_REPEAT: Final = f"{_LINEAR}; write the repeated text out, or split the rule"

#: Groups Python's ``re`` has and RE2 has not: (prefix, construct, advice).
_GROUPS: Final = (
    (
        "(?<=",
        "lookbehind (?<=...)",
        f"{_LINEAR}; match the text itself, or split the rule",
    ),
    (
        "(?<!",
        "negative lookbehind (?<!...)",
        f"{_LINEAR}; put the text it excludes in a 'not:' condition",
    ),
    (
        "(?=",
        "lookahead (?=...)",
        f"{_LINEAR}; match the text itself, or split the rule",
    ),
    (
        "(?!",
        "negative lookahead (?!...)",
        f"{_LINEAR}; put the text it excludes in a 'not:' condition",
    ),
    (
        "(?>",
        "atomic group (?>...)",
        f"{_LINEAR} and never backtracks; write (?:...) instead",
    ),
    ("(?P=", "backreference (?P=name)", _REPEAT),
    (
        "(?(",
        "conditional group (?(...)...)",
        f"{_LINEAR}; write one condition per branch under 'any:'",
    ),
    ("(?#", "comment (?#...)", "remove the comment"),
)

_FLAGS: Final = re.compile(r"\(\?([A-Za-z]*)(?:-[A-Za-z]*)?[:)]")
#: Python's flags that RE2 lacks: (construct, advice).
_PYTHON_FLAGS: Final = {
    "x": ("verbose mode (?x)", "write the pattern without spaces or comments"),
    "a": (
        "the ASCII flag (?a)",
        r"remove it: RE2's \d, \w, \s and \b are ASCII already",
    ),
    "u": (
        "the Unicode flag (?u)",
        r"remove it: RE2 reads UTF-8 text (\pL is any letter)",
    ),
    "L": ("the locale flag (?L)", "remove it"),
}


def _unsupported(pattern: str) -> tuple[str, str] | None:
    """
    The first construct of *pattern* that Python's ``re`` knows and RE2
    does not, with what to write instead; None when there is none.
    """
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            nxt = pattern[i + 1 : i + 2]
            if nxt.isdigit() and nxt != "0":
                return f"backreference \\{nxt}", _REPEAT
            if nxt == "Z":
                return r"\Z", r"write \z (the end of the text) or $"
            if nxt in {"u", "U", "N"}:
                return (
                    f"the escape \\{nxt}",
                    r"write the character, or \x{...} with its code point",
                )
            i += 2
            continue
        if ch == "[":
            i = _skip_class(pattern, i)
            continue
        if pattern.startswith("(?", i):
            for prefix, construct, advice in _GROUPS:
                if pattern.startswith(prefix, i):
                    return construct, advice
            flags = _FLAGS.match(pattern, i)
            for flag in flags.group(1) if flags else "":
                if flag in _PYTHON_FLAGS:
                    return _PYTHON_FLAGS[flag]
            i += 2
            continue
        if ch in "*+?}" and pattern.startswith("+", i + 1):
            quantifier = "{m,n}" if ch == "}" else ch
            return (
                f"possessive quantifier {quantifier}+",
                f"{_LINEAR} and never backtracks; write {quantifier} alone",
            )
        i += 1
    return None


def _skip_class(pattern: str, i: int) -> int:
    """
    The index after the character class that opens at *i*.
    """
    n = len(pattern)
    j = i + 1
    if j < n and pattern[j] == "^":
        j += 1
    if j < n and pattern[j] == "]":
        j += 1
    while j < n and pattern[j] != "]":
        j += 2 if pattern[j] == "\\" else 1
    return j + 1


def regex_problem(pattern: str, exc: Exception | None = None) -> str:
    """
    Why RE2 refuses *pattern*, in the policy author's terms.
    """
    found = _unsupported(pattern)
    if found is not None:
        construct, advice = found
        return (
            f"'matches' cannot use the pattern {pattern!r}: {construct} is "
            f"not supported: {advice}"
        )
    reason = exc.args[0] if exc is not None and exc.args else "invalid"
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    # RE2 names the fragment it stopped at; the whole pattern is already
    # in the message.
    reason = reason.removesuffix(f": {pattern}")
    return f"'matches' has an invalid regular expression {pattern!r}: {reason}"


def _comparison(op: str, bound: float) -> Callable[[Any], bool]:
    def test(v: Any) -> bool:
        n = _as_number(v)
        if n is None:
            return False
        if op == "gt":
            return n > bound
        if op == "gte":
            return n >= bound
        if op == "lt":
            return n < bound
        return n <= bound

    return test


def _glob(patterns: Sequence[str], *, case: bool) -> Callable[[str], bool]:
    parts = []
    for p in patterns:
        rx = ""
        i = 0
        while i < len(p):
            if p.startswith("**", i):
                rx += ".*"
                i += 2
            elif p[i] == "*":
                rx += "[^/]*"
                i += 1
            elif p[i] == "?":
                rx += "[^/]"
                i += 1
            elif p[i] == "[":
                end = p.find("]", i + 1)
                if end == -1:
                    rx += re.escape(p[i])
                    i += 1
                else:
                    rx += fnmatch.translate(p[i : end + 1])[4:-3]
                    i = end + 1
            else:
                rx += re.escape(p[i])
                i += 1
        parts.append(rx)
    flags = 0 if case else re.IGNORECASE
    match = re.compile("(?:" + "|".join(parts) + r")\Z", flags).match
    return lambda text: match(text) is not None


_SAFE_NEEDLE = re.compile(r"[ -!#-.0-\[\]-~]*")


@attrs.frozen
class Needles:
    """
    What the raw bytes of a JSON body must contain for one body condition
    to hold: one of *values* (JSON tokens such as ``"ongoing"``), and, when
    *pair* is set, a match of that pattern: the last key of the path
    followed by one of the values (``"qualification": "ongoing"``, with
    any spacing).
    The pair is what keeps a value that appears under another key from
    costing a parse.
    """

    values: frozenset[bytes]
    pair: re.Pattern[bytes] | None
    #: The pair as JSON writers spell it (``"k":"v"``, ``"k": "v"``):
    #: looked for with a byte search before the pattern is run.
    spellings: tuple[bytes, ...] = ()
    #: The key as it may stand right before a value: ``"k":``, ``"k": ``.
    keys: tuple[bytes, ...] = ()


def _body_needles(dotted: str, vm: ValueMatch) -> Needles | None:
    values = _needles(vm)
    if values is None:
        return None
    last = dotted.rsplit(".", 1)[-1]
    if vm.one_of is None or last.isdigit() or not _SAFE_NEEDLE.fullmatch(last):
        return Needles(values, None)
    alternatives = b"|".join(re.escape(v) for v in sorted(values))
    pattern = (
        rb'"'
        + re.escape(last.encode())
        + rb'"\s*:\s*(?:'
        + alternatives
        + b")"
    )
    key = b'"' + last.encode() + b'"'
    spellings = tuple(
        key + sep + v for v in sorted(values) for sep in (b":", b": ")
    )
    keys = (key + b":", key + b": ")
    return Needles(values, re.compile(pattern), spellings, keys)


def _needles(vm: ValueMatch) -> frozenset[bytes] | None:
    """
    Byte strings of which a JSON body must contain one for *vm* to hold, or
    None when no such set can be told cheaply.
    """
    if vm.exists is False:
        return None
    out: set[bytes] = set()
    if vm.one_of is not None:
        for v in vm.one_of:
            if isinstance(v, bool):
                out.add(b"true" if v else b"false")
            elif v is None:
                out.add(b"null")
            elif isinstance(v, str) and _SAFE_NEEDLE.fullmatch(v):
                out.add(b'"' + v.encode() + b'"')
            else:
                return None  # numbers have many spellings in JSON
        return frozenset(out)
    text = vm.contains
    if (
        vm.has_contains
        and isinstance(text, str)
        and text
        and _SAFE_NEEDLE.fullmatch(text)
    ):
        return frozenset({text.encode()})
    return None


@attrs.frozen
class Part:
    """
    One conjunct of a top-level condition, described for the code
    generator (:mod:`referee._core.codegen`), which inlines the common
    shapes instead of calling their predicates.

    *kind* is one of ``method`` (``args``: the methods), ``failure`` (the
    failure words), ``attempt`` (the comparisons ``(op, bound)``, or a
    value test), ``body_eq`` (a top-level key and the string it must
    equal), ``body`` (a path getter and a value test) or ``ctx`` (any
    predicate of the :class:`Context`).  *test* is the conjunct's
    predicate, what the interpreted matcher calls.
    """

    kind: str
    args: tuple[Any, ...]
    test: Predicate


class CompiledCondition:
    """
    A compiled ``when``.

    Attributes:
        test: The predicate, without the checks that the index already made.
        keys: The status codes and failure words it can match (None: any).
        needles: Groups of byte strings, one group per body condition of
            the top level; None when no such prefilter applies.
        methods: The methods of a top-level ``method`` condition (None:
            any).
        parts: The conjuncts of *test*, in the order it tries them (empty
            when *test* is None).
    """

    __slots__ = ("keys", "methods", "needles", "parts", "test")

    def __init__(
        self,
        test: Predicate | None,
        keys: Keys,
        needles: tuple[Needles, ...] | None,
        methods: frozenset[str] | None = None,
        parts: tuple[Part, ...] = (),
    ) -> None:
        self.test = test
        self.keys = keys
        self.needles = needles
        self.methods = methods
        self.parts = parts


def _and(tests: list[Predicate]) -> Predicate | None:
    if not tests:
        return None
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        a, b = tests
        return lambda c: a(c) and b(c)
    return lambda c: all(t(c) for t in tests)


def _keys_and(a: Keys, b: Keys) -> Keys:
    if a is None:
        return b
    if b is None:
        return a
    return a & b


def compile_condition(cond: ConditionDoc | None) -> CompiledCondition:
    """
    Compile a ``when``; the top-level status and failure checks are left to
    the index.
    """
    if cond is None:
        return CompiledCondition(None, None, None)
    parts: list[Part] = []
    test, keys, needles = _compile(cond, top=True, parts=parts)
    return CompiledCondition(test, keys, needles, cond.method, tuple(parts))


class _Tests(list[Predicate]):
    """
    The conjuncts of a condition, each also described as a :class:`Part`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[Part] = []

    def add(self, test: Predicate, kind: str = "ctx", *args: Any) -> None:
        self.append(test)
        self.parts.append(Part(kind, args, test))


def _compile(
    cond: ConditionDoc, *, top: bool, parts: list[Part] | None = None
) -> tuple[Predicate | None, Keys, tuple[Needles, ...] | None]:
    cheap = _Tests()
    costly = _Tests()
    keys: Keys = None
    if cond.status is not None:
        statuses: frozenset[int | str] = frozenset(cond.status)
        keys = statuses
        if not top:
            cheap.add(lambda c: c.snap.status in statuses)
    if cond.failure is not None:
        failures: frozenset[int | str] = frozenset(cond.failure)
        keys = _keys_and(keys, failures)
        if not top or cond.status is not None:
            cheap.add(
                lambda c: c.snap.failure in failures, "failure", failures
            )
    if cond.method is not None:
        methods = cond.method
        if len(methods) == 1:
            (only,) = methods
            cheap.add(lambda c: c.snap.method == only, "method", only)
        else:
            cheap.add(lambda c: c.snap.method in methods, "method", *methods)
    if cond.attempt is not None:
        attempt_ok = compile_value(cond.attempt)
        cheap.add(
            lambda c: attempt_ok(c.state.attempt),
            "attempt",
            attempt_ok,
            *_bounds(cond.attempt),
        )
    if cond.host is not None:
        host_ok = _glob(cond.host, case=False)
        costly.add(lambda c: host_ok(c.url_parts()[0]))
    if cond.path is not None:
        path_ok = _glob(cond.path, case=True)
        costly.add(lambda c: path_ok(c.url_parts()[1]))
    if cond.headers is not None:
        for name, vm in cond.headers.items():
            costly.add(_header_test(name, vm))
    if cond.request_headers is not None:
        for name, vm in cond.request_headers.items():
            costly.add(_request_header_test(name, vm))
    needles: list[Needles] = []
    if cond.body is not None:
        for dotted, vm in cond.body.items():
            costly.add(*_body_part(dotted, vm))
            group = _body_needles(dotted, vm)
            if group is not None:
                needles.append(group)
    for sub in cond.all or ():
        t, k, _n = _compile(sub, top=False)
        keys = _keys_and(keys, k)
        if t is not None:
            costly.add(t)
    if cond.any is not None:
        branches = [_compile(sub, top=False) for sub in cond.any]
        any_keys: Keys = frozenset()
        for _t, k, _n in branches:
            any_keys = None if k is None or any_keys is None else any_keys | k
        keys = _keys_and(keys, any_keys)
        tests = [t for t, _k, _n in branches]
        if any(t is None for t in tests):
            # A branch that always holds makes the whole any() hold: but its
            # key constraint still applies, so test the keys of each branch.
            keyed = [(t, k) for t, k, _n in branches]
            costly.add(
                lambda c: any(
                    (k is None or _key(c) in k) and (t is None or t(c))
                    for t, k in keyed
                )
            )
        else:
            keyed2 = [(t, k) for t, k, _n in branches]
            costly.add(
                lambda c: any(
                    (k is None or _key(c) in k) and t(c)  # type: ignore[misc]
                    for t, k in keyed2
                )
            )
    if cond.not_ is not None:
        t, k, _n = _compile(cond.not_, top=False)
        neg_keys = k

        def negated(c: Context) -> bool:
            if neg_keys is not None and _key(c) not in neg_keys:
                return True
            return not (t is None or t(c))

        costly.add(negated)
    test = _and(cheap + costly)
    if parts is not None:
        parts += cheap.parts + costly.parts
    if not top and cond.status is not None and cond.failure is not None:
        keys = frozenset()
    return test, keys, (tuple(needles) if needles and top else None)


def _key(c: Context) -> int | str | None:
    status = c.snap.status
    return c.snap.failure if status is None else status


def _header_test(name: str, vm: ValueMatch) -> Predicate:
    ok = compile_value(vm, header=True)
    lower = name.lower()

    def test(c: Context) -> bool:
        value = c.snap.headers.get(lower)
        return ok(MISSING if value is None else value)

    return test


def _request_header_test(name: str, vm: ValueMatch) -> Predicate:
    # The same matching as a response header's, on the request the
    # attempt sent (adapters hand over their client's case-insensitive
    # mapping; a failed attempt's snapshot carries it too).
    ok = compile_value(vm, header=True)
    lower = name.lower()

    def test(c: Context) -> bool:
        value = c.snap.request_headers.get(lower)
        return ok(MISSING if value is None else value)

    return test


def _bounds(vm: ValueMatch) -> tuple[tuple[str, float], ...]:
    """
    *vm*'s comparisons, when that is all it holds (then, on an integer,
    they are the whole test); else nothing.
    """
    if (
        vm.one_of is not None
        or vm.has_contains
        or vm.matches is not None
        or vm.exists is not None
    ):
        return ()
    ops = (("gt", vm.gt), ("gte", vm.gte), ("lt", vm.lt), ("lte", vm.lte))
    return tuple((op, float(b)) for op, b in ops if b is not None)


def _body_part(dotted: str, vm: ValueMatch) -> tuple[Any, ...]:
    """
    A body condition's predicate and its :class:`Part` description.
    """
    test = _body_test(dotted, vm)
    raw = dotted.split(".")
    if len(raw) == 1 and _plain(vm):
        return test, "body_eq", raw[0], vm.one_of[0]  # type: ignore[index]
    return test, "body", path_getter(dotted), compile_value(vm)


def _plain(vm: ValueMatch) -> bool:
    """
    Whether *vm* is ``one_of`` a single string and nothing else.
    """
    return (
        vm.one_of is not None
        and len(vm.one_of) == 1
        and type(vm.one_of[0]) is str
        and vm.exists is None
        and not vm.has_contains
        and vm.matches is None
        and vm.gt is vm.gte is vm.lt is vm.lte is None
    )


def _body_test(dotted: str, vm: ValueMatch) -> Predicate:
    raw = dotted.split(".")
    if _plain(vm) and len(raw) == 1:
        # The common shape, `qualification: ongoing`, without the general
        # machinery.
        key = raw[0]
        want = vm.one_of[0]  # type: ignore[index]

        def simple(c: Context) -> bool:
            doc = c.json()
            return type(doc) is dict and doc.get(key) == want

        return simple
    get = path_getter(dotted)
    ok = compile_value(vm)

    def test(c: Context) -> bool:
        doc = c.json()
        if doc is MISSING:
            return False
        return ok(get(doc))

    return test


def make_prefilter(
    needles: tuple[Needles, ...] | None,
) -> tuple[bytes | None, Callable[[bytes], bool] | None]:
    """
    Cheap tests of the raw body, False when it cannot satisfy the body
    conditions the needles come from (unless it spells them with ``\\u``
    escapes, which the engine checks once per decision), so that the JSON
    parse can be skipped: a single byte string the engine looks for
    inline, and a function for the rest.
    """
    if not needles:
        return None, None
    if len(needles) == 1 and len(needles[0].values) == 1:
        (only,) = needles[0].values
        pair = needles[0].pair
        return only, (
            None if pair is None else _searches(pair, needles[0].spellings)
        )
    groups = tuple((tuple(n.values), n.pair) for n in needles)

    def prefilter(body: bytes) -> bool:
        for values, pair in groups:
            if not any(v in body for v in values):
                return False
            if pair is not None and pair.search(body) is None:
                return False
        return True

    return None, prefilter


def _searches(
    pair: re.Pattern[bytes], spellings: tuple[bytes, ...]
) -> Callable[[bytes], bool]:
    # A byte search costs about a third of the pattern's: the common
    # spellings first, the pattern (any spacing) when they are absent.
    search = pair.search
    if len(spellings) == 2:  # one value: compact and spaced, unrolled
        compact, spaced = spellings
        return lambda body: (
            body.find(compact) >= 0
            or body.find(spaced) >= 0
            or search(body) is not None
        )
    return lambda body: (
        any(body.find(s) >= 0 for s in spellings) or search(body) is not None
    )
