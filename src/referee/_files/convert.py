"""
Structuring parsed policy documents into the ``_schema`` classes.

The converter is strict: unknown keys, wrong types and out-of-range values
are all errors, every one of them is collected (cattrs' detailed validation),
and each message says what was found and what is allowed.  ``_load`` turns
the collected errors into :class:`~referee.Problem`\\ s with file, line and
path.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, override

from referee._core import schema as s
from referee._core.hints import FORMATS, default_format
from referee._core.matchers import compile_regex
from referee._core.redact import compile_pattern
from referee._core.snapshot import FAILURES
from referee._core.units import parse_duration, parse_size


__all__ = ["Invalid", "collect", "join_path", "structure"]


T = TypeVar("T")


class Invalid(ValueError):
    """
    A value is not allowed; the message says what was found and what is.
    """


def describe(value: object) -> str:
    """
    ``'abc' (a string)``: the value and what YAML made of it.
    """
    kinds: dict[type, str] = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
        type(None): "null",
    }
    kind = kinds.get(type(value), type(value).__name__)
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{shown} ({kind})"


def suggest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """
    ``; did you mean 'attempts'?`` or nothing.
    """
    # A prefix ('warn' for 'warning') is a near miss whatever its ratio; a
    # ratio below 0.75 suggests nonsense ('openai' for 'nope').
    prefixed = [c for c in choices if len(word) >= 3 and c.startswith(word)]
    if len(prefixed) == 2:
        # 'delay' for delay_from or delay_min: name both, not one at random.
        return f"; did you mean {prefixed[0]!r} or {prefixed[1]!r}?"
    close = prefixed[:1] or difflib.get_close_matches(
        word, list(choices), n=1, cutoff=0.75
    )
    return f"; did you mean {close[0]!r}?" if close else ""


def _strict(kind: type, name: str) -> Callable[[Any, Any], Any]:
    def hook(value: Any, _: Any) -> Any:
        if isinstance(value, bool) and kind is not bool:
            raise Invalid(f"found {describe(value)}; expected {name}")
        if kind is float and isinstance(value, int):
            return float(value)
        if not isinstance(value, kind):
            raise Invalid(f"found {describe(value)}; expected {name}")
        return value

    return hook


def _word(field: str, choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if isinstance(value, str) and value in choices:
            return value
        hint = suggest(value, choices) if isinstance(value, str) else ""
        raise Invalid(
            f"found {describe(value)}; expected one of "
            f"{', '.join(choices)}{hint}"
        )

    check.__name__ = f"check_{field}"
    return check


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")


def _name(value: Any, _: Any) -> str:
    if isinstance(value, str) and _NAME.fullmatch(value):
        return value
    raise Invalid(
        f"found {describe(value)}; expected a name of letters, digits, "
        f"'-', '_', '.' and ':' (starting with a letter or digit)"
    )


def _duration(value: Any, _: Any) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def _limit_duration(value: Any, _: Any) -> float:
    if value == "none":
        return float("inf")
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise Invalid(f"{exc}, or 'none' for no limit") from None


def _size(value: Any, _: Any) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def _attempts(value: Any, _: Any) -> int:
    if value == "unlimited":
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise Invalid(
        f"found {describe(value)}; expected a whole number of sends >= 1 "
        f"(the first send counts), or 'unlimited'"
    )


_STATUS_CLASS = re.compile(r"([1-5])xx", re.IGNORECASE)
_STATUS_RANGE = re.compile(r"(\d{3})\s*-\s*(\d{3})")
_STATUS_EXPECTED = (
    "expected a status code from 100 to 599 (429), a class ('5xx'), a "
    "range ('500-599'), or a list of those"
)


def _one_status(value: Any) -> frozenset[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        if 100 <= value <= 599:
            return frozenset({value})
    elif isinstance(value, str):
        text = value.strip()
        if text.isdigit() and 100 <= int(text) <= 599:
            return frozenset({int(text)})
        m = _STATUS_CLASS.fullmatch(text)
        if m:
            base = int(m.group(1)) * 100
            return frozenset(range(base, base + 100))
        m = _STATUS_RANGE.fullmatch(text)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if 100 <= lo <= hi <= 599:
                return frozenset(range(lo, hi + 1))
    raise Invalid(f"found {describe(value)}; {_STATUS_EXPECTED}")


def _status(value: Any, _: Any) -> frozenset[int]:
    if isinstance(value, list):
        if not value:
            raise Invalid(f"found an empty list; {_STATUS_EXPECTED}")
        out: frozenset[int] = frozenset()
        for item in value:
            out |= _one_status(item)
        return out
    return _one_status(value)


def _strings(value: Any, what: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v for v in items):
        raise Invalid(
            f"found {describe(value)}; expected {what} or a list of them"
        )
    return items


_METHOD = re.compile(r"[A-Za-z]+")


def _methods(value: Any, _: Any) -> frozenset[str]:
    items = _strings(value, "an HTTP method name (GET)")
    for m in items:
        if not _METHOD.fullmatch(m):
            raise Invalid(
                f"found {describe(m)}; expected an HTTP method name (GET)"
            )
    return frozenset(m.upper() for m in items)


def _globs(value: Any, _: Any) -> tuple[str, ...]:
    return tuple(_strings(value, "a glob pattern ('/email/*/single')"))


def _failures(value: Any, _: Any) -> frozenset[str]:
    words = sorted(FAILURES)
    items = _strings(value, f"one of {', '.join(words)}")
    for w in items:
        if w not in FAILURES:
            raise Invalid(
                f"found {describe(w)}; expected one of "
                f"{', '.join(words)}{suggest(w, words)}"
            )
    return frozenset(items)


def _error_name(value: Any, _: Any) -> str:
    # Only the form: whether the name means a class depends on the policy
    # (what it and the policies it extends declare), which the loader
    # checks once the whole extends chain is read.
    if isinstance(value, str) and value.strip():
        return value
    raise Invalid(
        f"found {describe(value)}; expected the name of an error class "
        f"(BadRequest, or one declared under errors:)"
    )


def _hint_source(value: Any, _: Any) -> tuple[str, str]:
    if isinstance(value, str) and value.strip():
        name, _sep, fmt = value.partition(":")
        name, fmt = name.strip(), fmt.strip()
        if not fmt:
            return (name, default_format(name))
        if fmt in FORMATS and re.fullmatch(
            r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name
        ):
            return (name, fmt)
        formats = sorted(FORMATS)
        raise Invalid(
            f"found {describe(value)}; expected 'Header-Name' or "
            f"'Header-Name:format' with a format among "
            f"{', '.join(formats)}{suggest(fmt, formats)}"
        )
    raise Invalid(
        f"found {describe(value)}; expected a header name, optionally with "
        f"a format ('X-RateLimit-Reset:epoch')"
    )


#: ``until: hint``: the standard hints, in the order a client honours
#: them (draft-ietf-httpapi-ratelimit-headers: Retry-After takes
#: precedence over the RateLimit field's ``t``).
HINT_SOURCES: Final = (
    ("retry-after-ms", "ms"),
    ("Retry-After", "retry-after"),
    ("RateLimit", "ratelimit"),
)


def _pause_source(value: Any) -> tuple[tuple[str, str], ...]:
    if value == "hint":
        return HINT_SOURCES
    if isinstance(value, Mapping):
        extra = sorted(str(k) for k in value if k not in ("header", "format"))
        if extra:
            raise Invalid(
                f"unknown key {extra[0]!r} in {describe(value)}; allowed "
                f"here: header, format"
                f"{suggest(extra[0], ['header', 'format'])}"
            )
        if not isinstance(value.get("header"), str):
            raise Invalid(
                f"found {describe(value)}; expected {{header: Name, format: "
                f"epoch|delta|...}} (format optional)"
            )
        fmt = value.get("format")
        if fmt is not None and not isinstance(fmt, str):
            raise Invalid(f"found {describe(fmt)} as format; expected a word")
        text = value["header"] if fmt is None else f"{value['header']}:{fmt}"
        return (_hint_source(text, None),)
    if isinstance(value, str):
        return (_hint_source(value, None),)
    raise Invalid(
        f"found {describe(value)}; expected 'hint', a header with a format "
        f"('X-RateLimit-Reset:epoch' or {{header: X-RateLimit-Reset, "
        f"format: epoch}}), or a list of those"
    )


def _pause_until(value: Any, _: Any) -> tuple[tuple[str, str], ...]:
    items = value if isinstance(value, list) and value else [value]
    out: list[tuple[str, str]] = []
    for item in items:
        for source in _pause_source(item):
            if source not in out:
                out.append(source)
    return tuple(out)


_HEADER: Final = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_PARAM: Final = re.compile(r"[^\s=&;#?]+")


def _header_names(value: Any, _: Any) -> tuple[str, ...]:
    items = _strings(value, "a header name (X-My-Secret)")
    for name in items:
        if not _HEADER.fullmatch(name):
            raise Invalid(
                f"found {describe(name)}; expected a header name of "
                f"letters, digits and !#$%&'*+.^_`|~- (X-My-Secret)"
            )
    return tuple(items)


def _param_names(value: Any, _: Any) -> tuple[str, ...]:
    items = _strings(value, "a query parameter name (my_token)")
    for name in items:
        if not _PARAM.fullmatch(name):
            raise Invalid(
                f"found {describe(name)}; expected a query parameter name "
                f"without spaces, '=', '&', ';', '#' or '?' (my_token)"
            )
    return tuple(items)


def _patterns(value: Any, _: Any) -> tuple[str, ...]:
    items = _strings(value, "a regular expression ('tok_[A-Za-z0-9]{20,}')")
    for pattern in items:
        try:
            compile_pattern(pattern)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
    return tuple(items)


_SCALARS = (str, int, float, bool, type(None))
_OPERATORS: Final = (
    "exists",
    "equals",
    "in",
    "contains",
    "matches",
    "gt",
    "gte",
    "lt",
    "lte",
)


def _number(op: str, value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise Invalid(f"'{op}' takes a number; found {describe(value)}")


def _value_match(value: Any, _: Any) -> s.ValueMatch:
    if isinstance(value, _SCALARS):
        return s.ValueMatch(one_of=(value,))
    if isinstance(value, list):
        if not value or not all(isinstance(v, _SCALARS) for v in value):
            raise Invalid(
                f"found {describe(value)}; a list here must hold one or "
                f"more plain values (strings, numbers, booleans, null)"
            )
        return s.ValueMatch(one_of=tuple(value))
    if not isinstance(value, Mapping) or not value:
        raise Invalid(
            f"found {describe(value)}; expected a value, a list of values, "
            f"or a mapping of operators ({', '.join(_OPERATORS)})"
        )
    unknown = [k for k in value if k not in _OPERATORS]
    if unknown:
        k = str(unknown[0])
        raise Invalid(
            f"unknown operator {k!r}; expected {', '.join(_OPERATORS)}"
            f"{suggest(k, _OPERATORS)}"
        )
    if "equals" in value and "in" in value:
        raise Invalid("give 'equals' or 'in', not both")
    kw: dict[str, Any] = {}
    if "equals" in value:
        if not isinstance(value["equals"], _SCALARS):
            raise Invalid(
                "'equals' takes a plain value; found "
                f"{describe(value['equals'])}"
            )
        kw["one_of"] = (value["equals"],)
    if "in" in value:
        items = value["in"]
        if not isinstance(items, list) or not all(
            isinstance(v, _SCALARS) for v in items
        ):
            raise Invalid(
                f"'in' takes a list of plain values; found {describe(items)}"
            )
        kw["one_of"] = tuple(items)
    if "exists" in value:
        if not isinstance(value["exists"], bool):
            raise Invalid(
                "'exists' takes true or false; found "
                f"{describe(value['exists'])}"
            )
        kw["exists"] = value["exists"]
    if "contains" in value:
        if not isinstance(value["contains"], _SCALARS):
            raise Invalid(
                f"'contains' takes a plain value; found "
                f"{describe(value['contains'])}"
            )
        kw["contains"] = value["contains"]
        kw["has_contains"] = True
    if "matches" in value:
        pattern = value["matches"]
        if not isinstance(pattern, str):
            raise Invalid(
                "'matches' takes a regular expression; found "
                f"{describe(pattern)}"
            )
        try:
            compile_regex(pattern)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        kw["matches"] = pattern
    for op in ("gt", "gte", "lt", "lte"):
        if op in value:
            kw[op] = _number(op, value[op])
    return s.ValueMatch(**kw)


def _attempt_match(value: Any, t: Any) -> s.ValueMatch:
    m = _value_match(value, t)
    plain = m.one_of is None or all(
        isinstance(v, int) and not isinstance(v, bool) for v in m.one_of
    )
    if not plain or m.matches is not None or m.has_contains:
        raise Invalid(
            f"found {describe(value)}; expected an attempt number (1 is the "
            f"first send) or comparisons such as {{gte: 3}}"
        )
    return m


def _list_of(
    conv: cattrs.Converter, inner: Any
) -> Callable[[Any, Any], list[Any]]:
    def hook(value: Any, _: Any) -> list[Any]:
        if not isinstance(value, list):
            raise Invalid(f"found {describe(value)}; expected a list")
        errors: list[Exception] = []
        out = []
        for i, item in enumerate(value):
            try:
                out.append(conv.structure(item, inner))
            except Exception as exc:  # noqa: BLE001 - collected, reported
                exc.__notes__ = [
                    *getattr(exc, "__notes__", []),
                    IterableValidationNote(f"@ index {i}", i, inner),
                ]
                errors.append(exc)
        if errors:
            raise IterableValidationError("list", errors, list)
        return out

    return hook


def _key(key: Any, what: str) -> str:
    if not isinstance(key, str) or not key:
        raise Invalid(f"found the key {describe(key)}; expected {what}")
    return key


def _header_key(key: Any, _what: str) -> str:
    # A name no HTTP message can carry (a space, a colon) would never
    # match: say so when the policy loads (RFC 9110 §5.1, a token).
    if not isinstance(key, str) or not _HEADER.fullmatch(key):
        raise Invalid(
            f"found the key {describe(key)}; expected a header name of "
            f"letters, digits and !#$%&'*+.^_`|~- (Idempotency-Key)"
        )
    return key


def _token_header(value: Any, _: Any) -> str | None:
    # idempotency.header: a name the request can carry (RFC 9110 §5.1).
    if value is None:
        return None
    if not isinstance(value, str) or not _HEADER.fullmatch(value):
        raise Invalid(
            f"found {describe(value)}; expected a header name of letters, "
            f"digits and !#$%&'*+.^_`|~- (Idempotency-Key)"
        )
    return value


def _at_key(exc: Exception, k: Any, inner: Any) -> Exception:
    exc.__notes__ = [
        *getattr(exc, "__notes__", []),
        IterableValidationNote(f"@ key {k!r}", str(k), inner),
    ]
    return exc


def _dict_of(
    conv: cattrs.Converter,
    inner: Any,
    what: str,
    key: Callable[[Any, str], str] = _key,
) -> Callable[[Any, Any], dict[str, Any]]:
    def hook(value: Any, _: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping) or not value:
            raise Invalid(
                f"found {describe(value)}; expected a mapping of {what}"
            )
        errors: list[Exception] = []
        out = {}
        for k, item in value.items():
            # The key and its value are checked apart: a bad name with a
            # bad matcher is two problems, both reported.
            try:
                key(k, what)
            except Invalid as exc:
                errors.append(_at_key(exc, k, inner))
            try:
                out[k] = conv.structure(item, inner)
            except Exception as exc:  # noqa: BLE001 - collected, reported
                errors.append(_at_key(exc, k, inner))
        if errors:
            raise IterableValidationError("mapping", errors, dict)
        return out

    return hook


_WORDS: Final = {
    (s.RuleDoc, "do"): s.ACTIONS,
    (s.RuleDoc, "log"): s.LOG_LEVELS,
    (s.BackoffDoc, "jitter"): s.JITTERS,
    (s.PollDoc, "jitter"): s.JITTERS,
    (s.ServerDelayDoc, "on_exceed"): s.ON_EXCEED,
    (s.AlertDoc, "severity"): s.SEVERITIES,
    (s.WebhookDoc, "min_severity"): s.SEVERITIES,
    (s.IdempotencyDoc, "mint"): s.MINTS,
    (s.PauseDoc, "scope"): s.PAUSE_SCOPES,
    (s.PauseDoc, "then"): s.PAUSE_THEN,
    (s.RateLimitDoc, "seed"): s.RATE_SEEDS,
}

DOC_CLASSES: Final = (
    s.BreakerDefaultsDoc,
    s.BudgetDoc,
    s.RateLimitDoc,
    s.WebhookDoc,
    s.AlertsDoc,
    s.RedactDoc,
    s.BackoffDoc,
    s.RetryDoc,
    s.PollRequestDoc,
    s.PollDoc,
    s.ServerDelayDoc,
    s.DefaultsDoc,
    s.AlertDoc,
    s.BreakerDoc,
    s.PauseDoc,
    s.ConditionDoc,
    s.RuleDoc,
    s.ErrorDoc,
    s.IdempotencyDoc,
    s.PolicyDoc,
)


def keys_of(cls: type) -> list[str]:
    """
    The keys a document may use for *cls*.
    """
    return [s.RENAMED.get(a.name, a.name) for a in attrs.fields(cls)]


def _class_hook(
    conv: cattrs.Converter,
    cls: type,
    **hooks: Callable[[Any, Any], Any],
) -> Callable[[Any, Any], Any]:
    overrides: dict[str, Any] = {}
    for a in attrs.fields(cls):
        kw: dict[str, Any] = {}
        if a.name in s.RENAMED:
            kw["rename"] = s.RENAMED[a.name]
        choices = _WORDS.get((cls, a.name))
        if choices is not None:
            check = _word(a.name, choices)
            kw["struct_hook"] = lambda v, _t, c=check: c(v)
        if a.name in hooks:
            kw["struct_hook"] = hooks[a.name]
        if kw:
            overrides[a.name] = override(**kw)
    inner: Callable[[Any, Any], Any] = make_dict_structure_fn(
        cls, conv, _cattrs_forbid_extra_keys=True, **overrides
    )
    what = f"a mapping with the keys {', '.join(keys_of(cls))}"

    def hook(value: Any, t: Any) -> Any:
        if not isinstance(value, Mapping):
            raise Invalid(f"found {describe(value)}; expected {what}")
        return inner(value, t)

    return hook


def _is_list_of(item: Any) -> Callable[[Any], bool]:
    target = list[item]
    return lambda t: bool(t == target)


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(detailed_validation=True, forbid_extra_keys=True)
    conv.register_structure_hook(str, _strict(str, "a string"))
    conv.register_structure_hook(bool, _strict(bool, "true or false"))
    conv.register_structure_hook(float, _strict(float, "a number"))
    conv.register_structure_hook(int, _strict(int, "a whole number"))
    conv.register_structure_hook(s.Duration, _duration)
    conv.register_structure_hook(s.LimitDuration, _limit_duration)
    conv.register_structure_hook(s.Size, _size)
    conv.register_structure_hook(s.Attempts, _attempts)
    conv.register_structure_hook(s.StatusSet, _status)
    conv.register_structure_hook(s.Methods, _methods)
    conv.register_structure_hook(s.Globs, _globs)
    conv.register_structure_hook(s.Failures, _failures)
    conv.register_structure_hook(s.ErrorName, _error_name)
    conv.register_structure_hook(s.Name, _name)
    conv.register_structure_hook(s.Word, _strict(str, "a word"))
    conv.register_structure_hook(s.HintSource, _hint_source)
    conv.register_structure_hook(s.PauseUntil, _pause_until)
    conv.register_structure_hook(s.HeaderNames, _header_names)
    conv.register_structure_hook(s.ParamNames, _param_names)
    conv.register_structure_hook(s.Patterns, _patterns)
    conv.register_structure_hook(s.ValueMatch, _value_match)
    # The container hooks dispatch at call time, so their order does not
    # matter and recursive conditions work.
    for item in (s.HintSource, s.RuleDoc, s.ConditionDoc):
        conv.register_structure_hook_func(
            _is_list_of(item), _list_of(conv, item)
        )
    conv.register_structure_hook_func(
        lambda t: t == dict[str, s.ValueMatch],
        _dict_of(conv, s.ValueMatch, "names to value matchers"),
    )
    conv.register_structure_hook_func(
        lambda t: t == dict[str, s.ErrorDoc],
        _dict_of(
            conv,
            s.ErrorDoc,
            "error class names to {base: ..., description: ...}",
        ),
    )
    # The generated class hooks look their fields' hooks up once, when they
    # are made: leaves first.
    header_dict = _dict_of(
        conv, s.ValueMatch, "header names to value matchers", _header_key
    )

    def headers(value: Any, t: Any) -> dict[str, Any] | None:
        # A field hook replaces cattrs' own for `X | None`: null stays
        # "not set", as for every other key.
        return None if value is None else header_dict(value, t)

    condition_hooks: dict[str, Callable[[Any, Any], Any]] = {
        "attempt": _attempt_match,
        "headers": headers,
        "request_headers": headers,
    }
    hooks: dict[type, dict[str, Callable[[Any, Any], Any]]] = {
        s.ConditionDoc: condition_hooks,
        s.IdempotencyDoc: {"header": _token_header},
    }
    for cls in DOC_CLASSES:
        extra = hooks.get(cls, {})
        conv.register_structure_hook(cls, _class_hook(conv, cls, **extra))
    return conv


_CONVERTER: cattrs.Converter | None = None


def structure(data: Any, cls: type[T] = s.PolicyDoc) -> T:  # type: ignore[assignment]
    """
    Structure a parsed document (or a part of one, as *cls*); raises
    cattrs' validation errors.
    """
    global _CONVERTER  # noqa: PLW0603 - built once, lazily
    if _CONVERTER is None:
        _CONVERTER = _make_converter()
    return _CONVERTER.structure(data, cls)


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def join_path(path: str, key: str | int) -> str:
    """
    ``$.rules`` + 3 → ``$.rules[3]``; + ``when`` → ``.when``; keys that are
    not identifiers are quoted: ``$.when.body['general.status']``.
    """
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _IDENT.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{key!r}]"


def collect(exc: BaseException, path: str = "$") -> list[tuple[str, str]]:
    """
    Flatten a cattrs validation error into ``(path, message)`` pairs, in
    document order.
    """
    out: list[tuple[str, str]] = []
    if isinstance(exc, ClassValidationError):
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            assert isinstance(note, AttributeValidationNote)  # noqa: S101
            key = s.RENAMED.get(note.name, note.name)
            out.extend(collect(sub, join_path(path, key)))
        for sub in without:
            out.extend(_extra_keys(sub, exc.cl, path))
        return out
    if isinstance(exc, IterableValidationError):
        with_inotes, without = exc.group_exceptions()
        for sub, inote in with_inotes:
            out.extend(collect(sub, join_path(path, inote.index)))
        for sub in without:
            out.extend(collect(sub, path))
        return out
    return _extra_keys(exc, None, path)


def _extra_keys(
    exc: BaseException, cls: type | None, path: str
) -> list[tuple[str, str]]:
    if isinstance(exc, ForbiddenExtraKeysError):
        allowed = keys_of(exc.cl)
        if exc.cl is s.RetryDoc and path.endswith("defaults.retry"):
            # A rule's own deadline and hint ceiling are not offered where
            # the policy-wide ones are spelled otherwise (_load refuses
            # them there).
            allowed = [k for k in allowed if k not in s.RULE_RETRY_KEYS]
        return [
            (
                join_path(path, str(k)),
                (
                    f"unknown key {k!r}; allowed here: {', '.join(allowed)}"
                    f"{suggest(str(k), allowed)}"
                ),
            )
            for k in sorted(exc.extra_fields, key=str)
        ]
    if isinstance(exc, KeyError) and cls is not None:
        key = exc.args[0] if exc.args else "?"
        return [(join_path(path, str(key)), f"missing required key {key!r}")]
    if isinstance(exc, KeyError):
        return [(path, f"missing required key {exc}")]
    if isinstance(exc, Invalid):
        return [(path, str(exc))]
    return [(path, f"{type(exc).__name__}: {exc}")]
