"""
The policy file as written: attrs classes that mirror the document.

Every field that a file may leave out is None here, so that a policy and the
policy it extends can be merged key by key before anything is resolved
against the built-in defaults (that happens in ``_compile``).  The loader
(``_load``) structures parsed documents into these classes with cattrs and
the value types below; nothing here reads files.
"""

from __future__ import annotations

from typing import Any, NewType

import attrs


__all__ = [
    "ACTIONS",
    "JITTERS",
    "LOG_LEVELS",
    "MINTS",
    "ON_EXCEED",
    "PAUSE_SCOPES",
    "PAUSE_THEN",
    "RATE_SEEDS",
    "RENAMED",
    "RULE_RETRY_KEYS",
    "SEVERITIES",
    "AlertDoc",
    "AlertsDoc",
    "Attempts",
    "BackoffDoc",
    "BreakerDefaultsDoc",
    "BreakerDoc",
    "BudgetDoc",
    "ConditionDoc",
    "DefaultsDoc",
    "Duration",
    "ErrorName",
    "Failures",
    "Globs",
    "HeaderNames",
    "HintSource",
    "IdempotencyDoc",
    "LimitDuration",
    "Methods",
    "Name",
    "ParamNames",
    "Patterns",
    "PauseDoc",
    "PauseUntil",
    "PolicyDoc",
    "PollDoc",
    "PollRequestDoc",
    "RateLimitDoc",
    "RedactDoc",
    "RetryDoc",
    "RuleDoc",
    "ServerDelayDoc",
    "Size",
    "StatusSet",
    "WebhookDoc",
    "Word",
]

ACTIONS = ("accept", "retry", "poll", "abort")
PAUSE_SCOPES = ("policy", "host")
PAUSE_THEN = ("wait", "fail")
JITTERS = ("full", "equal", "none")
ON_EXCEED = ("cap", "fail")
SEVERITIES = ("info", "warning", "error", "critical")
LOG_LEVELS = ("debug", "info", "warning", "error")
MINTS = ("uuid4",)
RATE_SEEDS = ("ratelimit-policy",)

#: Seconds, from a number or a string with units (``250ms``, ``1m30s``).
Duration = NewType("Duration", float)
#: A duration, or ``none`` for no limit (stored as infinity).
LimitDuration = NewType("LimitDuration", float)
#: Bytes, from a number or a string with units (``64KiB``).
Size = NewType("Size", int)
#: ``attempts``: an integer >= 1, or ``unlimited`` (stored as 0).
Attempts = NewType("Attempts", int)
#: A set of status codes, from ``429``, ``"5xx"``, ``"500-599"`` or a list.
StatusSet = NewType("StatusSet", frozenset[int])
#: Upper-cased method names, from one name or a list.
Methods = NewType("Methods", frozenset[str])
#: Glob patterns, from one pattern or a list.
Globs = NewType("Globs", tuple[str, ...])
#: Transport failure words, from one word or a list.
Failures = NewType("Failures", frozenset[str])
#: An error class name: built-in, registered, or declared under ``errors:``
#: (resolved by the loader, per policy, along the ``extends`` chain).
ErrorName = NewType("ErrorName", str)
#: A policy or rule name.
Name = NewType("Name", str)
#: One word out of a closed set; which set depends on the field.
Word = NewType("Word", str)
#: ``(header name, format)`` from ``"X-RateLimit-Reset:epoch"``.
HintSource = NewType("HintSource", tuple[str, str])
#: Where a pause's end comes from: ``hint`` (Retry-After, retry-after-ms,
#: an exhausted RateLimit), a header with a format
#: (``X-RateLimit-Reset:epoch`` or ``{header: ..., format: ...}``), or a
#: list of those, tried in order.
PauseUntil = NewType("PauseUntil", tuple[tuple[str, str], ...])
#: Header names, from one name or a list.
HeaderNames = NewType("HeaderNames", tuple[str, ...])
#: Query parameter names, from one name or a list.
ParamNames = NewType("ParamNames", tuple[str, ...])
#: Regular expressions that compile, from one or a list.
Patterns = NewType("Patterns", tuple[str, ...])


@attrs.frozen
class ValueMatch:
    """
    A value matcher: every operator given must hold.

    A scalar in the file becomes ``one_of=(scalar,)``; a list becomes
    ``one_of=tuple(list)``; a mapping gives the operators by name.
    """

    one_of: tuple[Any, ...] | None = None
    exists: bool | None = None
    contains: Any = None
    has_contains: bool = False
    matches: str | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None


@attrs.frozen
class BackoffDoc:
    initial: Duration | None = None
    multiplier: float | None = None
    max: Duration | None = None
    jitter: Word | None = None


@attrs.frozen
class RetryDoc:
    attempts: Attempts | None = None
    backoff: BackoffDoc | None = None
    unsafe_methods: bool | None = None
    delay_from: list[HintSource] | None = None
    # On a rule only (the loader refuses them under defaults.retry, whose
    # policy-wide spellings are defaults.deadline and
    # defaults.server_delay): this rule's deadline and hint ceiling.
    deadline: LimitDuration | None = None
    server_delay: ServerDelayDoc | None = None
    delay_min: Duration | None = None


@attrs.frozen
class PollRequestDoc:
    method: str | None = None
    url: str | None = None


@attrs.frozen
class PollDoc:
    initial: Duration | None = None
    multiplier: float | None = None
    max: Duration | None = None
    jitter: Word | None = None
    deadline: LimitDuration | None = None
    delay_from: list[HintSource] | None = None
    request: PollRequestDoc | None = None


@attrs.frozen
class ServerDelayDoc:
    max: LimitDuration | None = None
    on_exceed: Word | None = None


@attrs.frozen
class BreakerDefaultsDoc:
    failure_ratio: float | None = None
    window: Duration | None = None
    min_calls: int | None = None
    open_for: Duration | None = None


@attrs.frozen
class BudgetDoc:
    tokens: float | None = None
    refill: float | None = None


@attrs.frozen
class RateLimitDoc:
    requests: int
    per: Duration
    methods: Methods | None = None
    by_path: bool | None = None
    seed: Word | None = None


@attrs.frozen
class DefaultsDoc:
    retry: RetryDoc | None = None
    poll: PollDoc | None = None
    deadline: LimitDuration | None = None
    server_delay: ServerDelayDoc | None = None
    body_limit: Size | None = None
    breaker: BreakerDefaultsDoc | None = None
    budget: BudgetDoc | None = None
    rate_limit: RateLimitDoc | None = None


@attrs.frozen
class WebhookDoc:
    url: str
    min_severity: Word | None = None
    timeout: Duration | None = None


@attrs.frozen
class AlertsDoc:
    webhook: WebhookDoc | None = None


@attrs.frozen
class RedactDoc:
    query: ParamNames | None = None
    headers: HeaderNames | None = None
    patterns: Patterns | None = None


@attrs.frozen
class AlertDoc:
    kind: Name
    severity: Word | None = None
    dedupe: Duration | None = None
    message: str | None = None


@attrs.frozen
class BreakerDoc:
    name: Name
    open_for: Duration
    methods: Methods | None = None


@attrs.frozen
class PauseDoc:
    """
    ``pause:`` on a rule: hold later calls in *scope* until the time a
    response header gives; they wait (``then: wait``) or fail fast
    (``then: fail``).
    """

    until: PauseUntil
    scope: Word | None = None
    then: Word | None = None
    max: Duration | None = None
    methods: Methods | None = None


@attrs.frozen
class ConditionDoc:
    status: StatusSet | None = None
    method: Methods | None = None
    host: Globs | None = None
    path: Globs | None = None
    headers: dict[str, ValueMatch] | None = None
    request_headers: dict[str, ValueMatch] | None = None
    body: dict[str, ValueMatch] | None = None
    failure: Failures | None = None
    attempt: ValueMatch | None = None
    any: list[ConditionDoc] | None = None
    all: list[ConditionDoc] | None = None
    not_: ConditionDoc | None = None


@attrs.frozen
class RuleDoc:
    do: Word
    id: Name | None = None
    description: str | None = None
    when: ConditionDoc | None = None
    error: ErrorName | None = None
    retry: RetryDoc | None = None
    poll: PollDoc | None = None
    alert: AlertDoc | None = None
    breaker: BreakerDoc | None = None
    pause: PauseDoc | None = None
    log: Word | None = None


@attrs.frozen
class ErrorDoc:
    """
    One entry of ``errors:``: an error class the file declares.
    """

    base: ErrorName
    description: str | None = None


@attrs.frozen
class IdempotencyDoc:
    """
    ``idempotency:``: an idempotency key minted for each call of the
    methods given (draft-ietf-httpapi-idempotency-key-header-07).
    """

    header: str | None = None
    mint: Word | None = None
    methods: Methods | None = None


@attrs.frozen
class PolicyDoc:
    policy: Name
    description: str | None = None
    extends: str | None = None
    defaults: DefaultsDoc | None = None
    idempotency: IdempotencyDoc | None = None
    alerts: AlertsDoc | None = None
    redact: RedactDoc | None = None
    errors: dict[str, ErrorDoc] = attrs.Factory(dict)
    rules: list[RuleDoc] = attrs.Factory(list)


#: The keys of ``retry:`` that only a rule may set.
RULE_RETRY_KEYS = frozenset({"deadline", "server_delay"})

#: Fields whose key in the file differs from the attribute's name.
RENAMED = {"not_": "not"}
