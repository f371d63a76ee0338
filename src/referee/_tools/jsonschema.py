"""
A JSON Schema of the policy format, generated from the document model.

The schema is not written by hand: `policy_schema` walks the attrs classes
of ``_schema`` (their fields, resolved type hints and defaults, the
``RENAMED`` keys) and maps each value type to the fragment that describes
what ``_convert`` accepts for it.  Editors use it to complete and check
policy files (the bundled ones name it in a ``yaml-language-server``
comment); ``referee schema`` prints it; ``src/referee/policy.schema.json``
is its output, committed and shipped, and a test keeps it up to date.

Rule 1: the schema accepts every document the loader accepts; where the two
differ, the schema is the looser.  What it cannot say (unique rule ids,
``extends`` chains, templates, regular expressions, settings of another
action) only the loader checks.
"""

from __future__ import annotations

import re
import types
import typing
from typing import TYPE_CHECKING, Any, Final

import attrs

from referee._core import schema as s
from referee._core.errors import registered_errors
from referee._core.hints import FORMATS
from referee._core.snapshot import FAILURES
from referee._files.convert import _OPERATORS, _WORDS


if TYPE_CHECKING:
    from collections.abc import Iterable


__all__ = ["DIALECT", "policy_schema"]

#: JSON Schema draft 2020-12.
DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

_NUMBER_STRING: Final = r"\+?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?"
_DURATION_STRING: Final = (
    rf"^\s*((\d+(\.\d+)?(ms|s|m|h|d))+|{_NUMBER_STRING})\s*$"
)
_HEADER_NAME: Final = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_STATUS_STRING: Final = r"^\s*([1-5]\d\d|[1-5][xX][xX]|\d{3}\s*-\s*\d{3})\s*$"

_SCALAR: Final = {"type": ["string", "number", "boolean", "null"]}
_SCALARS: Final = {"type": "array", "items": _SCALAR, "minItems": 1}


def _one_or_list(item: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [item, {"type": "array", "items": item, "minItems": 1}]}


def _duration() -> dict[str, Any]:
    return {
        "description": "A duration: a number of seconds, or a string "
        "with units such as 250ms, 2s, 10m, 1h, 1d, 1m30s (not negative).",
        "anyOf": [
            {"type": "number", "minimum": 0},
            {"type": "string", "pattern": _DURATION_STRING},
        ],
    }


def _value_match(*, attempt: bool = False) -> dict[str, Any]:
    # The operator mapping: every operator given must hold; 'equals' and
    # 'in' exclude each other.
    plain = {"type": "integer"} if attempt else _SCALAR
    ops: dict[str, Any] = {
        "exists": {
            "description": "true: the value is present; false: it is absent.",
            "type": "boolean",
        },
        "equals": {"description": "The value equals this.", **plain},
        "in": {
            "description": "The value equals one of these.",
            "type": "array",
            "items": plain,
        },
        "contains": {
            "description": "A substring of a string value, or a member of "
            "a list value.",
            **_SCALAR,
        },
        "matches": {
            "type": "string",
            "description": "An RE2 regular expression, searched for in "
            "the value (no lookaround, no backreferences).",
        },
        "gt": {"description": "The value is above this.", "type": "number"},
        "gte": {
            "description": "The value is this or above.",
            "type": "number",
        },
        "lt": {"description": "The value is below this.", "type": "number"},
        "lte": {
            "description": "The value is this or below.",
            "type": "number",
        },
    }
    if attempt:
        del ops["contains"], ops["matches"]
    assert set(ops) <= set(_OPERATORS)  # noqa: S101 - kept in step
    mapping = {
        "type": "object",
        "properties": ops,
        "additionalProperties": False,
        "minProperties": 1,
        "not": {"required": ["equals", "in"]},
    }
    if attempt:
        return {
            "description": "An attempt number (1 is the first send), a "
            "list of them, or comparisons such as {gte: 3}.",
            "anyOf": [
                plain,
                {"type": "array", "items": plain, "minItems": 1},
                mapping,
            ],
        }
    return {
        "description": "A value (equal to it), a list of values (equal "
        "to one), or a mapping of operators: "
        f"{', '.join(_OPERATORS)}.",
        "anyOf": [_SCALAR, _SCALARS, mapping],
    }


def _value_types(errors: list[str]) -> dict[Any, tuple[str, dict[str, Any]]]:
    """
    The custom value types: their name in ``$defs`` and their fragment.
    """
    name = {
        "type": "string",
        "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
        "description": "A name of letters, digits, '-', '_', '.' and ':', "
        "starting with a letter or digit.",
    }
    methods = _one_or_list({"type": "string", "pattern": r"^[A-Za-z]+$"})
    globs = _one_or_list({"type": "string", "minLength": 1})
    failures = _one_or_list({"enum": sorted(FAILURES)})
    status_one = {
        "anyOf": [
            {"type": "integer", "minimum": 100, "maximum": 599},
            {"type": "string", "pattern": _STATUS_STRING},
        ]
    }
    formats = "|".join(re.escape(f) for f in sorted(FORMATS))
    return {
        s.Duration: ("Duration", _duration()),
        s.LimitDuration: (
            "LimitDuration",
            {
                "description": "A duration, or 'none' for no limit.",
                "anyOf": [{"$ref": "#/$defs/Duration"}, {"const": "none"}],
            },
        ),
        s.Size: (
            "Size",
            {
                "description": "A size: a number of bytes, or a string such "
                "as 64KiB, 1MiB, 500kB.",
                "anyOf": [
                    {"type": "integer", "minimum": 0},
                    {
                        "type": "string",
                        "pattern": r"^\s*\d+(\.\d+)?\s*"
                        r"(B|kB|KB|KiB|MB|MiB|GB|GiB)?\s*$",
                    },
                ],
            },
        ),
        s.Attempts: (
            "Attempts",
            {
                "description": "The most sends, the first included: a "
                "whole number >= 1, or 'unlimited'.",
                "anyOf": [
                    {"type": "integer", "minimum": 1},
                    {"const": "unlimited"},
                ],
            },
        ),
        s.StatusSet: (
            "StatusSet",
            {
                "description": "A status code from 100 to 599 (429), a "
                "class ('5xx'), a range ('500-599'), or a list of those.",
                **_one_or_list(status_one),
            },
        ),
        s.Methods: (
            "Methods",
            {"description": "An HTTP method name, or a list.", **methods},
        ),
        s.Globs: (
            "Globs",
            {"description": "A glob pattern, or a list.", **globs},
        ),
        s.Failures: (
            "Failures",
            {
                "description": "A transport failure word, or a list.",
                **failures,
            },
        ),
        s.ErrorName: (
            "ErrorName",
            {
                "description": "An error class: a built-in one (listed "
                "here, for completion), one declared under errors: in "
                "this file or a policy it extends, or one registered "
                "with referee.register_error.",
                "anyOf": [
                    {"enum": errors},
                    {"type": "string", "minLength": 1},
                ],
            },
        ),
        s.Name: ("Name", name),
        s.HintSource: (
            "HintSource",
            {
                "description": "A header name, optionally with a format: "
                f"'X-RateLimit-Reset:epoch'; the formats: "
                f"{', '.join(sorted(FORMATS))}.",
                "type": "string",
                "pattern": rf"^([^:]*[^:\s][^:]*:?\s*|\s*{_HEADER_NAME}\s*:\s*"
                rf"({formats})\s*)$",
            },
        ),
        s.PauseUntil: (
            "PauseUntil",
            {
                "description": "Where the pause's end comes from: 'hint' "
                "(Retry-After, retry-after-ms, an exhausted RateLimit "
                "field), a header with a format ('X-RateLimit-Reset:epoch' "
                "or {header: ..., format: ...}), or a list of those, tried "
                "in order.",
                **_one_or_list(
                    {
                        "anyOf": [
                            {"const": "hint"},
                            {"$ref": "#/$defs/HintSource"},
                            {
                                "type": "object",
                                "properties": {
                                    "header": {
                                        "description": "The response "
                                        "header that gives the pause's "
                                        "end.",
                                        "type": "string",
                                        "pattern": f"^{_HEADER_NAME}$",
                                    },
                                    "format": {
                                        "description": "How the header "
                                        "gives it: an epoch time, a delta "
                                        "in seconds, a duration, and so "
                                        "on (as in delay_from).",
                                        "enum": sorted(FORMATS),
                                    },
                                },
                                "required": ["header"],
                                "additionalProperties": False,
                            },
                        ]
                    }
                ),
            },
        ),
        s.ValueMatch: ("ValueMatch", _value_match()),
        s.HeaderNames: (
            "HeaderNames",
            {
                "description": "A header name, or a list.",
                **_one_or_list(
                    {"type": "string", "pattern": f"^{_HEADER_NAME}$"}
                ),
            },
        ),
        s.ParamNames: (
            "ParamNames",
            {
                "description": "A query parameter name, or a list.",
                **_one_or_list(
                    {"type": "string", "pattern": r"^[^\s=&;#?]+$"}
                ),
            },
        ),
        s.Patterns: (
            "Patterns",
            {
                "description": "A regular expression (Python syntax), or "
                "a list.",
                **_one_or_list({"type": "string", "minLength": 1}),
            },
        ),
    }


#: Bounds the loader checks after structuring (``_load._validate``).
_BOUNDS: Final[dict[tuple[type, str], dict[str, Any]]] = {
    (s.BackoffDoc, "multiplier"): {"minimum": 1},
    (s.PollDoc, "multiplier"): {"minimum": 1},
    (s.BreakerDefaultsDoc, "failure_ratio"): {
        "exclusiveMinimum": 0,
        "maximum": 1,
    },
    (s.BreakerDefaultsDoc, "min_calls"): {"minimum": 1},
    (s.BudgetDoc, "tokens"): {"exclusiveMinimum": 0},
    (s.BudgetDoc, "refill"): {"minimum": 0},
    (s.RateLimitDoc, "requests"): {"minimum": 1},
    (s.WebhookDoc, "url"): {
        "pattern": r"^\s*\$\{[A-Za-z_][A-Za-z0-9_]*\}\s*$",
    },
}

#: Field descriptions, from docs/policy-language.md.
_DOCS: Final[dict[tuple[type, str], str]] = {
    (s.PolicyDoc, "policy"): "The policy's name.",
    (s.PolicyDoc, "description"): "Free text, shown by referee explain.",
    (s.PolicyDoc, "extends"): "A bundled policy name (http-default) or a "
    "path relative to this file; its rules come after this file's.",
    (s.PolicyDoc, "defaults"): "Settings for every rule.",
    (s.PolicyDoc, "alerts"): "Where alerts go besides the log.",
    (s.PolicyDoc, "redact"): "More secrets to mask in logs, errors, "
    "alerts and trails, besides the built-in ones.",
    (s.RedactDoc, "query"): "Query parameters whose values are masked in "
    "URLs (any case).",
    (s.RedactDoc, "headers"): "Headers whose values never render, also in "
    "alert templates (any case).",
    (s.RedactDoc, "patterns"): "Regular expressions for values masked "
    "wherever referee renders text.",
    (s.PolicyDoc, "errors"): "Error classes this policy declares, by "
    "CamelCase name: each extends its base (catch it as the base, or as "
    "referee.Aborted); rules name them in error:, and "
    "policy.errors[name] is the class.",
    (s.ErrorDoc, "base"): "The class it extends: a built-in error, one "
    "declared here or in a policy this one extends, or a registered one.",
    (s.ErrorDoc, "description"): "What the error means (the class's "
    "docstring).",
    (s.PolicyDoc, "rules"): "Tried in order; the first match wins.",
    (s.PolicyDoc, "idempotency"): "Mint an idempotency key for each call "
    "of the methods given (draft-ietf-httpapi-idempotency-key-header-07): "
    "the same key on every attempt, a new one per call; a key the caller "
    "set is kept. Implies the rules idempotency-conflict (409: retry) and "
    "idempotency-mismatch (422: abort).",
    (s.IdempotencyDoc, "header"): "The header the key is sent in "
    "(default: Idempotency-Key).",
    (s.IdempotencyDoc, "mint"): "How a key is made: uuid4 (the default).",
    (s.IdempotencyDoc, "methods"): "The methods whose calls get a key "
    "(default: [POST, PATCH]).",
    (s.RuleDoc, "id"): "The rule's name, unique in its file.",
    (s.RuleDoc, "description"): "Free text.",
    (s.RuleDoc, "when"): "The conditions, all of which must hold (none: "
    "every outcome).",
    (s.RuleDoc, "do"): "The action.",
    (s.RuleDoc, "error"): "The error an abort raises, or a retry when it "
    "runs out, or a poll when its deadline passes.",
    (s.RuleDoc, "retry"): "Overrides of defaults.retry (do: retry only).",
    (s.RuleDoc, "poll"): "Overrides of defaults.poll (do: poll only).",
    (s.RuleDoc, "alert"): "Raise an alert when the rule fires.",
    (s.RuleDoc, "breaker"): "Open a named breaker when the rule fires.",
    (s.RuleDoc, "pause"): "Hold later calls until the time a response "
    "header gives (on any action, a 200's accept included).",
    (s.RuleDoc, "log"): "The log level of the decision event.",
    (s.PauseDoc, "until"): "The headers the pause's end comes from.",
    (s.PauseDoc, "scope"): "policy: every call of the policy; host: calls "
    "to the response's host (default: policy).",
    (s.PauseDoc, "then"): "wait: later calls wait for the end (never past "
    "their deadline); fail: they raise RateLimited without sending "
    "(default: wait).",
    (s.PauseDoc, "methods"): "The calls the pause holds (default: every "
    "call).",
    (s.PauseDoc, "max"): "The longest pause a header may set; a later "
    "time is cut to it (default: defaults.server_delay.max).",
    (s.ConditionDoc, "status"): "The response's status is one of these.",
    (s.ConditionDoc, "method"): "The request's method is one of these.",
    (s.ConditionDoc, "host"): "The request's host matches a glob.",
    (s.ConditionDoc, "path"): "The request's path matches a glob.",
    (s.ConditionDoc, "headers"): "Each named response header matches "
    "(names are case-insensitive).",
    (s.ConditionDoc, "request_headers"): "Each named header of the request "
    "sent matches (names are case-insensitive).",
    (s.ConditionDoc, "body"): "The JSON body has each dotted path and the "
    "value matches.",
    (s.ConditionDoc, "failure"): "The attempt failed in transport.",
    (s.ConditionDoc, "attempt"): "The attempt being decided (1 is the "
    "first send).",
    (s.ConditionDoc, "any"): "At least one condition holds.",
    (s.ConditionDoc, "all"): "Every condition holds.",
    (s.ConditionDoc, "not_"): "The condition does not hold.",
    (s.DefaultsDoc, "deadline"): "The longest a call may spend retrying, "
    "from its first send (default: none).",
    (s.DefaultsDoc, "body_limit"): "Larger bodies are not parsed (default: "
    "1MiB).",
    (s.DefaultsDoc, "breaker"): "The failure-ratio breaker (off unless "
    "present).",
    (s.DefaultsDoc, "budget"): "The retry budget (off unless present).",
    (s.DefaultsDoc, "rate_limit"): "Client-side pacing (off unless present).",
    (s.RetryDoc, "attempts"): "The most sends, the first included "
    "(default: 3). On a rule: the first send and the retries this rule "
    "decided; in defaults, also the bound on every call's sends.",
    (s.RetryDoc, "deadline"): "On a rule only: this rule's deadline, from "
    "the call's first send, in place of defaults.deadline for its retries "
    "and the re-sends they make (none: no limit).",
    (s.RetryDoc, "server_delay"): "On a rule only: this rule's ceiling on "
    "server hints, in place of defaults.server_delay (merged key by key).",
    (s.RetryDoc, "unsafe_methods"): "Whether methods that are not "
    "idempotent may be retried (default: false).",
    (s.RetryDoc, "delay_from"): "The server hints to honour, in order.",
    (s.RetryDoc, "delay_min"): "The shortest retry delay: a server hint "
    "or backoff delay below it is raised to it (default: none).",
    (s.BackoffDoc, "initial"): "The first retry's delay (default: 1s).",
    (s.BackoffDoc, "multiplier"): "Each delay is the previous one times "
    "this (default: 2).",
    (s.BackoffDoc, "max"): "No delay exceeds this (default: 30s).",
    (s.BackoffDoc, "jitter"): "full, equal or none (default: full).",
    (s.PollDoc, "initial"): "The first poll's delay (default: 2s).",
    (s.PollDoc, "multiplier"): "Growth of the poll delay (default: 1.5).",
    (s.PollDoc, "max"): "The largest poll delay (default: 30s).",
    (s.PollDoc, "jitter"): "full, equal or none (default: none).",
    (s.PollDoc, "deadline"): "How long a call may poll, from its first "
    "poll (default: 10m).",
    (s.PollDoc, "delay_from"): "Server hints for the poll delay.",
    (s.PollDoc, "request"): "Templates for the poll request (default: "
    "re-send the same request).",
    (s.ServerDelayDoc, "max"): "The longest delay a server hint may impose "
    "(default: 120s).",
    (s.ServerDelayDoc, "on_exceed"): "fail: a longer hint aborts; cap: wait "
    "max instead (default: fail).",
    (s.AlertDoc, "kind"): "What the alert is about (topup, config, ...): "
    "alerts are de-duplicated by policy and kind.",
    (s.AlertDoc, "severity"): "info, warning, error or critical (default: "
    "warning).",
    (s.AlertDoc, "dedupe"): "At most one alert of this kind per window.",
    (s.AlertDoc, "message"): "A template such as '{status}: {body.message}'.",
    (s.BreakerDoc, "methods"): "The calls the open breaker stops "
    "(default: every call).",
    (s.WebhookDoc, "url"): "An environment variable reference: "
    "'${SLACK_WEBHOOK_URL}'.",
    (s.WebhookDoc, "min_severity"): "Alerts less severe are not posted "
    "(default: warning).",
    (s.WebhookDoc, "timeout"): "How long one post may take (default: 5s).",
    (s.AlertsDoc, "webhook"): "Post each alert as Slack-compatible JSON to "
    "a URL read from the environment.",
    (s.BreakerDoc, "name"): "The breaker's name: rules that name the same "
    "breaker share it.",
    (s.BreakerDoc, "open_for"): "How long the breaker stays open.",
    (s.BreakerDefaultsDoc, "failure_ratio"): "The share of failed outcomes "
    "in the window that opens it: above 0, at most 1 (default: 0.5).",
    (s.BreakerDefaultsDoc, "window"): "The sliding window outcomes are "
    "counted over (default: 30s).",
    (s.BreakerDefaultsDoc, "min_calls"): "The fewest outcomes in the window "
    "before the ratio is acted on (default: 20).",
    (s.BreakerDefaultsDoc, "open_for"): "How long it stays open before it "
    "lets one probe through (default: 30s).",
    (s.BudgetDoc, "tokens"): "The size of the bucket, per policy and host; "
    "retries are allowed while more than half is left (default: 10).",
    (s.BudgetDoc, "refill"): "The tokens each success gives back (default: "
    "0.1).",
    (s.RateLimitDoc, "requests"): "The most sends per window (required).",
    (s.RateLimitDoc, "per"): "The length of the window (required).",
    (s.RateLimitDoc, "methods"): "The methods paced (default: every method).",
    (s.RateLimitDoc, "by_path"): "true: a separate limit for each request "
    "path; false: one for the whole policy (default: false).",
    (s.RateLimitDoc, "seed"): "ratelimit-policy: a response's "
    "RateLimit-Policy field tightens its bucket's pace to the strictest "
    "quota it declares, for two of its windows after the last response "
    "that declared it; requests/per stays the "
    "ceiling (default: off).",
    (s.DefaultsDoc, "retry"): "The retry settings of every retry rule: "
    "attempts, backoff, unsafe_methods, delay_from, delay_min.",
    (s.DefaultsDoc, "poll"): "The poll schedule of every poll rule.",
    (s.DefaultsDoc, "server_delay"): "The ceiling on delays that server "
    "hints impose.",
    (s.RetryDoc, "backoff"): "The delay schedule when no server hint applies.",
    (s.PollRequestDoc, "method"): "The poll's method (default: GET when url "
    "is given, else the request's own).",
    (s.PollRequestDoc, "url"): "A template over {request.url}, "
    "{request.path}, {body.<path>} and {header.<Name>}; a relative URL is "
    "resolved against the request's.",
}


def _title(cls: type) -> str:
    # BreakerDefaultsDoc -> "Breaker defaults"
    words = re.findall(r"[A-Z][a-z]*", cls.__name__.removesuffix("Doc"))
    return " ".join([words[0], *(w.lower() for w in words[1:])])


class _Builder:
    def __init__(self, errors: list[str]) -> None:
        self.values = _value_types(errors)
        self.defs: dict[str, Any] = {}

    def ref(self, name: str) -> dict[str, Any]:
        return {"$ref": f"#/$defs/{name}"}

    def fragment(self, tp: Any, cls: type, field: str) -> dict[str, Any]:
        """
        The schema of one field's type.
        """
        args = typing.get_args(tp)
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            # X | None: None, written or left out, means "not set".
            (inner,) = (a for a in args if a is not type(None))
            return _nullable(self.fragment(inner, cls, field))
        if tp is s.Word:
            return {"enum": list(_WORDS[cls, field])}
        if cls is s.IdempotencyDoc and field == "header":
            return {"type": "string", "pattern": f"^{_HEADER_NAME}$"}
        if cls is s.ConditionDoc and field == "attempt":
            return _value_match(attempt=True)
        if cls is s.ConditionDoc and field in ("headers", "request_headers"):
            return {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": f"^{_HEADER_NAME}$"},
                "additionalProperties": self.fragment(s.ValueMatch, cls, ""),
            }
        if tp in self.values:
            name, frag = self.values[tp]
            self.defs.setdefault(name, frag)
            if tp is s.LimitDuration:
                self.defs.setdefault(*self.values[s.Duration])
            return self.ref(name)
        if attrs.has(tp):
            return self.ref(self.object(tp))
        origin = typing.get_origin(tp)
        if origin is list:
            return {"type": "array", "items": self.fragment(args[0], cls, "")}
        if origin is dict:
            names = (
                {"type": "string", "pattern": r"^[A-Z][A-Za-z0-9]*$"}
                if args[1] is s.ErrorDoc
                else {"type": "string", "minLength": 1}
            )
            value = self.fragment(args[1], cls, "")
            if args[1] is s.ErrorDoc:
                value = {
                    "description": "An error class, by its name: a "
                    "CamelCase Python identifier, not a built-in error's.",
                    **value,
                }
            return {
                "type": "object",
                "minProperties": 1,
                "propertyNames": names,
                "additionalProperties": value,
            }
        simple = {str: "string", bool: "boolean", float: "number"}
        if tp in simple:
            return {"type": simple[tp]}
        if tp is int:
            return {"type": "integer"}
        msg = f"no JSON Schema for {tp!r} ({cls.__name__}.{field})"
        raise TypeError(msg)

    def object(self, cls: type) -> str:
        """
        Add *cls* to ``$defs`` (once) and return its name there.
        """
        name = cls.__name__
        if name not in self.defs:
            self.defs[name] = {}  # a placeholder: conditions recurse
            self.defs[name] = self.body(cls)
        return name

    def body(self, cls: type) -> dict[str, Any]:
        hints = typing.get_type_hints(cls, vars(s))
        props: dict[str, Any] = {}
        required: list[str] = []
        for a in attrs.fields(cls):
            key = s.RENAMED.get(a.name, a.name)
            frag = self.fragment(hints[a.name], cls, a.name)
            # Bounds sit beside the type; they ignore a null.
            frag = {**frag, **_BOUNDS.get((cls, a.name), {})}
            doc = _DOCS.get((cls, a.name))
            props[key] = {"description": doc, **frag} if doc else frag
            if a.default is attrs.NOTHING:
                required.append(key)
        out: dict[str, Any] = {
            "title": _title(cls),
            "type": "object",
            "properties": props,
            "additionalProperties": False,
        }
        if required:
            out["required"] = required
        return out


def _nullable(frag: dict[str, Any]) -> dict[str, Any]:
    if set(frag) == {"type"} and isinstance(frag["type"], str):
        return {"type": [frag["type"], "null"]}
    if set(frag) == {"enum"}:
        return {"enum": [*frag["enum"], None]}
    return {"anyOf": [frag, {"type": "null"}]}


def policy_schema(errors: Iterable[str] | None = None) -> dict[str, Any]:
    """
    The JSON Schema (draft 2020-12) of a policy document.

    Args:
        errors: The names ``error:`` may take; by default the errors
            registered now (the built-in ones, and any registered with
            :func:`referee.register_error`).
    """
    b = _Builder(sorted(registered_errors() if errors is None else errors))
    root = b.body(s.PolicyDoc)
    b.defs.pop(s.PolicyDoc.__name__, None)
    return {
        "$schema": DIALECT,
        "title": "referee policy",
        "description": "An error policy for an HTTP API: ordered rules "
        "that accept, retry, poll or abort each outcome of a call.  "
        "Generated from referee's document model by `referee schema`.",
        **{k: v for k, v in root.items() if k != "title"},
        "$defs": dict(sorted(b.defs.items())),
    }
