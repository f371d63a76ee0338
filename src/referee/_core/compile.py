"""
From documents to a :class:`Policy`: merge the ``extends`` chain, resolve
every setting against the built-in defaults, compile the conditions and build
the index that lets a status no rule names be accepted after one dict
look-up.

Rule 1: compiling is pure; it reads no file (``_load`` does) and never
raises for a document that ``_load`` validated.
"""

from __future__ import annotations

import math
import types
from itertools import islice, repeat
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar

import attrs
import backoff

from . import schema as s
from .backend import BreakerSettings, BudgetSettings, RateLimitSettings
from .decisions import BreakerSpec, PauseSpec
from .errors import (
    Aborted,
    AuthenticationError,
    BadRequest,
    InsufficientCredits,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServerError,
    declare_error,
    error_class,
)
from .idempotency import IdempotencySettings, implied_rules
from .idempotency import settings as idempotency_settings
from .index import Bucket, Candidates, Index, build_index
from .matchers import CompiledCondition, compile_condition, make_prefilter
from .redact import DEFAULT, Redaction
from .units import round_seconds


if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from .matchers import Predicate


__all__ = [
    "BUILTIN",
    "STATUS_ERRORS",
    "CompiledRule",
    "Policy",
    "PollSettings",
    "RetrySettings",
    "compile_policy",
    "default_error",
    "merge",
]

#: What a policy gets for every key it (and what it extends) leaves out.
BUILTIN: Final = s.DefaultsDoc(
    retry=s.RetryDoc(
        attempts=s.Attempts(3),
        backoff=s.BackoffDoc(
            initial=s.Duration(1.0),
            multiplier=2.0,
            max=s.Duration(30.0),
            jitter=s.Word("full"),
        ),
        unsafe_methods=False,
        delay_from=[
            s.HintSource(("retry-after-ms", "ms")),
            s.HintSource(("Retry-After", "retry-after")),
            s.HintSource(("RateLimit", "ratelimit")),
        ],
    ),
    poll=s.PollDoc(
        initial=s.Duration(2.0),
        multiplier=1.5,
        max=s.Duration(30.0),
        jitter=s.Word("none"),
        deadline=s.LimitDuration(600.0),
        delay_from=[
            s.HintSource(("retry-after-ms", "ms")),
            s.HintSource(("Retry-After", "retry-after")),
        ],
        request=None,
    ),
    deadline=s.LimitDuration(math.inf),
    server_delay=s.ServerDelayDoc(
        max=s.LimitDuration(120.0), on_exceed=s.Word("fail")
    ),
    body_limit=s.Size(1024 * 1024),
)

#: The error an ``abort`` raises when the rule names none.
STATUS_ERRORS: Final[dict[int, type[Aborted]]] = {
    400: BadRequest,
    401: AuthenticationError,
    402: InsufficientCredits,
    403: PermissionDenied,
    404: NotFound,
    429: RateLimited,
}

#: How many delays of a schedule are computed ahead.
SCHEDULE_LENGTH: Final = 64


def default_error(status: int | None) -> type[Aborted]:
    """
    The error for an abort on *status* when the rule names none.
    """
    if status is None:
        return Aborted
    err = STATUS_ERRORS.get(status)
    if err is not None:
        return err
    if 500 <= status <= 599:
        return ServerError
    return Aborted


T = TypeVar("T")
V = TypeVar("V")


def nearest(table: Mapping[str, V], path: str) -> V | None:
    """
    The value *table* holds for *path* (``$.rules[3].when.status``) or for
    its nearest enclosing path, up to ``$``; None when none is there.
    """
    while True:
        found = table.get(path)
        if found is not None:
            return found
        cut = max(path.rfind("."), path.rfind("["))
        if cut <= 0:
            return table.get("$")
        path = path[:cut]


P = ParamSpec("P")
R = TypeVar("R")


def merge(child: T | None, parent: T | None) -> T | None:
    """
    Merge two documents of the same class key by key: the child's keys win;
    nested documents merge in turn; lists replace.
    """
    if child is None:
        return parent
    if parent is None:
        return child
    if not attrs.has(type(child)) or type(child) is s.ValueMatch:
        return child
    changes: dict[str, Any] = {}
    cls: Any = type(child)
    for a in attrs.fields(cls):
        mine, theirs = getattr(child, a.name), getattr(parent, a.name)
        changes[a.name] = merge(mine, theirs)
    merged: T = cls(**changes)
    return merged


@attrs.frozen
class RetrySettings:
    """
    A retry rule's resolved settings.

    Attributes:
        attempts: The most sends, the first included; None for unlimited.
            On a rule, the first send and the retries *this rule* decided
            (see ``engine._retry``); on the policy, the bound on the
            call's sends.
        schedule: The backoff delays before jitter: retry *n* (1-based)
            waits ``schedule[min(n, len) - 1]``.
        jitter: ``full``, ``equal`` or ``none``.
        unsafe_methods: Whether non-idempotent methods may be retried.
        delay_from: ``(lower-case header, format, header as written)``
            server hints, in order.
        initial, multiplier, max: The backoff parameters, for display.
        delay_min: The floor of every delay, hint or backoff (0: none);
            ``server_delay.max`` caps the floor in turn.
    """

    attempts: int | None
    schedule: tuple[float, ...]
    jitter: str
    unsafe_methods: bool
    delay_from: tuple[tuple[str, str, str], ...]
    initial: float
    multiplier: float
    max: float
    #: The rule's own deadline, from the call's first send (None: the
    #: policy's); it bounds this rule's sleeps and the re-sends they make.
    deadline: float | None = None
    #: The rule's own ceiling on server hints (None: the policy's).
    server_delay_max: float | None = None
    #: ``cap`` or ``fail`` for this rule's hints (None: the policy's).
    on_exceed: str | None = None
    delay_min: float = 0.0


@attrs.frozen
class PollSettings:
    """
    A poll rule's resolved settings; *schedule* as for retries.
    """

    schedule: tuple[float, ...]
    jitter: str
    deadline: float
    delay_from: tuple[tuple[str, str, str], ...]
    request_method: str | None
    request_url: str | None
    initial: float
    multiplier: float
    max: float


@attrs.frozen
class WebhookSettings:
    """
    The webhook sink a policy file configures: the environment variable
    that holds the URL, the lowest severity sent, the timeout.
    """

    env: str
    min_severity: str
    timeout: float


@attrs.frozen
class AlertSettings:
    """
    A rule's resolved alert.
    """

    kind: str
    severity: str
    dedupe: float | None
    message: str | None


@attrs.frozen
class CompiledRule:
    """
    One rule, ready to decide.

    Attributes:
        id: The rule's name.
        index: Its position in the policy, counting from 0, the extended
            policies' rules included.
        origin: The policy (name) that wrote it.
        source: The file (or bundled name) that wrote it.
        path: Where in that file: ``$.rules[3]``.
        action: ``accept``, ``retry``, ``poll`` or ``abort``.
        when: The compiled condition.
        needs_body: Whether deciding with this rule may read the body (a
            body condition, or a template with ``{body...}``): the flow
            reads it beforehand only then.
        needle: Bytes the raw body must contain for the rule to match
            (None: no such bytes).
        prefilter: A test of the raw body that is False when the body
            conditions cannot hold (None: no such test).
        error: The error named by ``error:``, or None.
        retry: Resolved retry settings (``retry`` rules only).
        poll: Resolved poll settings (``poll`` rules only).
        alert: The alert it raises, or None.
        breaker: The breaker it opens, or None.
        pause: The pause it sets, or None.
        log: The log level it asks for, or None.
        doc: The rule as written.
    """

    id: str
    index: int
    origin: str
    source: str
    path: str
    action: str
    when: CompiledCondition = attrs.field(eq=False, repr=False)
    needs_body: bool
    needle: bytes | None = attrs.field(eq=False, repr=False)
    #: Whether the rule opts in to reading an event stream: its condition
    #: names ``content-type: text/event-stream`` beside its body
    #: condition, which then looks at the stream's first event.
    reads_events: bool = attrs.field(default=False, kw_only=True)
    #: Whether the rule can match an event stream only (its content-type
    #: condition admits nothing else): no other response's body is read
    #: for it.
    only_events: bool = attrs.field(default=False, kw_only=True)
    prefilter: Callable[[bytes], bool] | None = attrs.field(
        eq=False, repr=False
    )
    error: type[Aborted] | None
    retry: RetrySettings | None
    poll: PollSettings | None
    alert: AlertSettings | None
    breaker: BreakerSpec | None
    log: str | None
    description: str | None
    pause: PauseSpec | None = attrs.field(default=None, kw_only=True)
    doc: s.RuleDoc = attrs.field(eq=False, repr=False)

    @property
    def test(self) -> Predicate | None:
        return self.when.test


@attrs.frozen(eq=False)
class Policy:
    """
    A compiled policy: what ``referee.load_policy`` returns and
    ``referee.decide`` reads.

    Attributes:
        name: The policy's name.
        description: Its description.
        sources: The files (or bundled names) it was loaded from, the
            extending one first.
        rules: Its rules, the extended policies' last.
        deadline: The call deadline in seconds (``inf``: none).
        server_delay_max: The longest server hint honoured (``inf``: none).
        on_exceed: ``cap`` or ``fail``.
        body_limit: The largest body parsed, in bytes.
        retry: The default retry settings.
        poll: The default poll settings.
        doc: The merged document.
        lines: For each source, path → line (0 where the format gives
            no lines: JSON and TOML).
        errors: The error classes the policy's files declare under
            ``errors:`` (its own and those of the policies it extends), by
            name: ``except policy.errors["CardError"]``.  Read-only.
    """

    name: str
    description: str | None
    sources: tuple[str, ...]
    rules: tuple[CompiledRule, ...]
    deadline: float
    server_delay_max: float
    on_exceed: str
    body_limit: int
    retry: RetrySettings
    poll: PollSettings
    doc: s.PolicyDoc = attrs.field(repr=False)
    index: Index = attrs.field(repr=False)
    fallback: Bucket = attrs.field(repr=False)

    def candidates(
        self, key: int | str, method: str | None = None
    ) -> Candidates:
        """
        The rules that can match an outcome with this status (or failure
        word) and method, in order.  Empty: the outcome is accepted as it
        is, and an adapter need not build a snapshot at all.
        """
        return self.index.get(key, self.fallback).candidates(method)

    def bucket(self, key: int | str, method: str | None = None) -> Bucket:
        """
        As :meth:`candidates`, with what the bucket knows of them
        (``needs_body``, ``reads_events``).
        """
        found = self.index.get(key, self.fallback)
        split = found.by_method  # candidates(), inline: once per response
        return found if split is None else (split.get(method) or split[None])

    def generated_source(self) -> str:
        """
        The source of the functions the policy decides with, one per
        status (or failure word) and one for the rest: what
        :func:`referee.decide` runs, for reading and debugging.
        """
        out = [f"# policy {self.name!r}"]
        for key, bucket in self.index.items():
            out.append(f"# --- {key!r}: {[r.id for r in bucket]}")
            out.append(bucket.source)
        out.append(f"# --- any other: {[r.id for r in self.fallback]}")
        out.append(self.fallback.source)
        return "\n".join(out)

    lines: Mapping[str, Mapping[str, int]] = attrs.field(
        factory=dict, repr=False
    )
    errors: Mapping[str, type[Aborted]] = attrs.field(
        factory=lambda: types.MappingProxyType({}), repr=False
    )
    breaker: BreakerSettings | None = None
    budget: BudgetSettings | None = None
    rate_limit: RateLimitSettings | None = None
    webhook: WebhookSettings | None = None
    #: What the runners use across calls (the state backend, the alert
    #: dispatcher); attached by the loader, None for a bare compiled policy.
    runtime: Any = attrs.field(default=None, eq=False, repr=False)
    #: Whether any rule opens a breaker, or a ratio breaker is set: when
    #: not, the runners skip the breaker check before each send.
    breakers: bool = False
    #: Whether a first-try success must be reported to the state backend
    #: (a ratio breaker counts it, a budget is refunded): the runners skip
    #: the call on their fast path when not.
    settles: bool = False
    #: Whether no send is ever admitted and no success settled (no
    #: breaker, rate limit, ratio breaker or budget): the runners' fast
    #: path then needs not even the request's method.
    quiet: bool = False
    #: The scopes rules pause, each once, in a fixed order: (``policy`` or
    #: ``host``, the methods held or None for every call); a send is
    #: checked against the pauses of those that hold its method (none: no
    #: check).
    pause_scopes: tuple[tuple[str, frozenset[str] | None], ...] = ()
    #: For each named breaker, the methods it stops (None: every call).
    breaker_scopes: Mapping[str, frozenset[str] | None] = attrs.field(
        factory=dict, repr=False
    )
    #: Per request method, whether a send needs admission and the breakers
    #: it skips (``referee._core.flow``): derived from the fields above,
    #: filled on first use.
    by_method: dict[str, tuple[bool, frozenset[str]]] = attrs.field(
        factory=dict, repr=False
    )
    #: The rules with a deadline of their own (``retry: {deadline: ...}``),
    #: by id: what bounds the re-send a retry of theirs makes.
    rule_deadlines: Mapping[str, float] = attrs.field(factory=dict, repr=False)
    #: What is masked wherever this policy's calls render text: the
    #: built-in secrets, the ``redact:`` of the policy and of those it
    #: extends, and what ``load_policy(..., redact=...)`` adds.
    redaction: Redaction = attrs.field(default=DEFAULT, repr=False)
    #: ``idempotency:``: which calls get a minted key, in which header
    #: (None: none do).
    idempotency: IdempotencySettings | None = None

    def line_of(self, source: str, path: str) -> int | None:
        """
        The line of *path* in *source* (YAML only), or of its nearest
        enclosing node; None where the format gives no lines.
        """
        table = self.lines.get(source)
        if not table:
            return None
        return nearest(table, path) or None  # 0: a JSON or TOML source

    @property
    def current(self) -> Policy:
        """
        This policy: what a :class:`~referee.PolicyWatcher` answers with
        its newest policy, so that the runners take either.
        """
        return self

    def rule(self, rule_id: str) -> CompiledRule:
        """
        The rule named *rule_id*.

        Raises:
            KeyError: No such rule.
        """
        for r in self.rules:
            if r.id == rule_id:
                return r
        msg = f"policy {self.name!r} has no rule {rule_id!r}"
        raise KeyError(msg)


def _schedule(
    initial: float, multiplier: float, cap: float
) -> tuple[float, ...]:
    # The shapes are the backoff package's generators; the first next()
    # primes them (backoff 2.x yields None first).
    gen = (
        backoff.constant(interval=repeat(initial))
        if multiplier == 1
        else backoff.expo(base=multiplier, factor=initial, max_value=cap)
    )
    next(gen)
    out: list[float] = []
    for value in islice(gen, SCHEDULE_LENGTH):
        # To the microsecond: 0.1 * 3 is a delay of 0.3, not
        # 0.30000000000000004.
        delay = min(float(value), cap)
        out.append(round_seconds(delay))
        if delay >= cap:
            break
    return tuple(out)


def _sources(
    hints: Sequence[tuple[str, str]] | None,
) -> tuple[tuple[str, str, str], ...]:
    # Snapshots' header mappings answer for lower-case names.
    return tuple((name.lower(), fmt, name) for name, fmt in hints or ())


def _retry_settings(doc: s.RetryDoc) -> RetrySettings:
    b = doc.backoff
    sd = doc.server_delay
    assert b is not None  # noqa: S101 - BUILTIN fills every key
    assert b.initial is not None  # noqa: S101
    assert b.multiplier is not None  # noqa: S101
    assert b.max is not None  # noqa: S101
    return RetrySettings(
        attempts=doc.attempts or None,
        schedule=_schedule(b.initial, b.multiplier, b.max),
        jitter=b.jitter or "full",
        unsafe_methods=bool(doc.unsafe_methods),
        delay_from=_sources(doc.delay_from),
        initial=b.initial,
        multiplier=b.multiplier,
        max=b.max,
        deadline=doc.deadline,
        server_delay_max=sd.max if sd is not None else None,
        on_exceed=sd.on_exceed if sd is not None else None,
        delay_min=doc.delay_min or 0.0,
    )


def _poll_settings(doc: s.PollDoc) -> PollSettings:
    assert doc.initial is not None  # noqa: S101 - BUILTIN fills every key
    assert doc.multiplier is not None  # noqa: S101
    assert doc.max is not None  # noqa: S101
    assert doc.deadline is not None  # noqa: S101
    req = doc.request
    return PollSettings(
        schedule=_schedule(doc.initial, doc.multiplier, doc.max),
        jitter=doc.jitter or "none",
        deadline=doc.deadline,
        delay_from=_sources(doc.delay_from),
        request_method=(req.method.upper() if req and req.method else None),
        request_url=req.url if req else None,
        initial=doc.initial,
        multiplier=doc.multiplier,
        max=doc.max,
    )


def _scopes(
    rules: Sequence[CompiledRule],
) -> dict[str, frozenset[str] | None]:
    scopes: dict[str, frozenset[str] | None] = {}
    for r in rules:
        spec = r.breaker
        if spec is None:
            continue
        if spec.name in scopes:
            known = scopes[spec.name]
            scopes[spec.name] = (
                None
                if known is None or spec.methods is None
                else known | spec.methods
            )
        else:
            scopes[spec.name] = spec.methods
    return scopes


def _uses_body(cond: s.ConditionDoc | None) -> bool:
    if cond is None:
        return False
    if cond.body is not None:
        return True
    subs = [*(cond.any or ()), *(cond.all or ())]
    if cond.not_ is not None:
        subs.append(cond.not_)
    return any(_uses_body(c) for c in subs)


def _content_type(
    cond: s.ConditionDoc | None, test: Callable[[s.ValueMatch], bool]
) -> bool:
    """
    Whether a ``content-type`` condition of *cond* (or of a condition all
    of whose parts must hold) passes *test*.
    """
    if cond is None:
        return False
    for name, vm in (cond.headers or {}).items():
        if name.lower() == "content-type" and test(vm):
            return True
    return any(_content_type(c, test) for c in cond.all or ())


def _names_event_stream(vm: s.ValueMatch) -> bool:
    """
    Whether *vm* asks for ``text/event-stream``: the opt-in to reading a
    stream.
    """
    said = [*(vm.one_of or ()), vm.contains, vm.matches]
    return any(isinstance(v, str) and "event-stream" in v for v in said)


def _only_event_stream(vm: s.ValueMatch) -> bool:
    """
    Whether *vm* admits an event stream only: it must contain
    ``event-stream``, or be one of values that all do.  (A pattern is not
    taken to exclude anything.)
    """
    if isinstance(vm.contains, str) and "event-stream" in vm.contains:
        return True
    values = vm.one_of or ()
    return bool(values) and all(
        isinstance(v, str) and "event-stream" in v for v in values
    )


def _needs_body(rule: s.RuleDoc) -> bool:
    message = rule.alert.message if rule.alert else None
    return _uses_body(rule.when) or bool(message and "{body." in message)


def _compile_rule(
    rd: s.RuleDoc,
    *,
    rid: str,
    index: int,
    origin: str,
    src: str,
    path: str,
    resolved: s.DefaultsDoc,
    scope: Mapping[str, type[Aborted]],
) -> CompiledRule:
    assert resolved.retry is not None  # noqa: S101
    assert resolved.poll is not None  # noqa: S101
    retry = (
        _retry_settings(merge(rd.retry, resolved.retry))  # type: ignore[arg-type]
        if rd.do == "retry"
        else None
    )
    poll = (
        _poll_settings(merge(rd.poll, resolved.poll))  # type: ignore[arg-type]
        if rd.do == "poll"
        else None
    )
    alert = (
        AlertSettings(
            kind=rd.alert.kind,
            severity=rd.alert.severity or "warning",
            dedupe=rd.alert.dedupe,
            message=rd.alert.message,
        )
        if rd.alert is not None
        else None
    )
    breaker = (
        BreakerSpec(rd.breaker.name, rd.breaker.open_for, rd.breaker.methods)
        if rd.breaker is not None
        else None
    )
    pause = None
    if rd.pause is not None:
        p = rd.pause
        assert resolved.server_delay is not None  # noqa: S101
        ceiling = resolved.server_delay.max if p.max is None else p.max
        assert ceiling is not None  # noqa: S101 - BUILTIN fills it
        pause = PauseSpec(
            _sources(p.until),
            p.scope or "policy",
            p.then or "wait",
            ceiling,
            p.methods,
        )
    when = compile_condition(rd.when)
    needle, prefilter = make_prefilter(when.needles)
    return CompiledRule(
        id=rid,
        index=index,
        origin=origin,
        source=src,
        path=path,
        action=rd.do,
        when=when,
        reads_events=_content_type(rd.when, _names_event_stream),
        only_events=_content_type(rd.when, _only_event_stream),
        needs_body=_needs_body(rd)
        or bool(
            poll is not None
            and poll.request_url
            and "{body." in poll.request_url
        ),
        needle=needle,
        prefilter=prefilter,
        error=_error(rd.error, scope) if rd.error else None,
        retry=retry,
        poll=poll,
        alert=alert,
        breaker=breaker,
        pause=pause,
        log=rd.log,
        description=rd.description,
        doc=rd,
    )


def compile_policy(
    chain: Sequence[tuple[str, s.PolicyDoc]],
) -> Policy:
    """
    Compile a policy from its ``extends`` chain: ``(source, document)``
    pairs, the extending document first.
    """
    defaults: s.DefaultsDoc | None = None
    for _src, doc in reversed(chain):
        defaults = merge(doc.defaults, defaults)
    resolved = merge(defaults, BUILTIN)
    assert resolved is not None  # noqa: S101
    assert resolved.retry is not None  # noqa: S101
    assert resolved.poll is not None  # noqa: S101
    assert resolved.server_delay is not None  # noqa: S101
    head = chain[0][1]

    rules: list[CompiledRule] = []
    # A rule with the id of an inherited rule replaces it: the child's
    # version is the one that runs, and ids stay unique in the policy.
    # Rules without an id are rule-N in their file; an extended policy's
    # are prefixed with its name (http-default/rule-2), so that default ids
    # never replace anything by accident.
    taken: set[str] = set()
    scopes = _declared_errors(chain)
    idem_doc: s.IdempotencyDoc | None = None
    for _src, doc in reversed(chain):
        idem_doc = merge(doc.idempotency, idem_doc)
    idem = idempotency_settings(idem_doc) if idem_doc is not None else None
    if idem is not None:
        # The rules draft-07 implies, ahead of the files' own (they match
        # only requests that carried the key); a rule of the same id in
        # any of the files replaces one.
        own = {rd.id for _src, doc in chain for rd in doc.rules if rd.id}
        for rd in implied_rules(idem):
            assert rd.id is not None  # noqa: S101
            if rd.id in own:
                continue
            rules.append(
                _compile_rule(
                    rd,
                    rid=rd.id,
                    index=len(rules),
                    origin=head.policy,
                    src=chain[0][0],
                    path="$.idempotency",
                    resolved=resolved,
                    scope=scopes[0],
                )
            )
    for depth, (src, doc) in enumerate(chain):
        scope = scopes[depth]
        prefix = "" if depth == 0 else f"{doc.policy}/"
        ids = [
            rd.id or f"{prefix}rule-{i + 1}" for i, rd in enumerate(doc.rules)
        ]
        for i, rd in enumerate(doc.rules):
            rid = ids[i]
            if rid in taken:
                continue
            rules.append(
                _compile_rule(
                    rd,
                    rid=rid,
                    index=len(rules),
                    origin=doc.policy,
                    src=src,
                    path=f"$.rules[{i}]",
                    resolved=resolved,
                    scope=scope,
                )
            )
        taken.update(ids)

    assert resolved.body_limit is not None  # noqa: S101
    index, fallback = build_index(rules, resolved.body_limit)
    assert resolved.deadline is not None  # noqa: S101
    assert resolved.server_delay.max is not None  # noqa: S101
    assert resolved.body_limit is not None  # noqa: S101
    merged_doc = attrs.evolve(
        head,
        defaults=defaults,
        rules=[r.doc for r in rules],
        extends=head.extends,
    )
    d = resolved
    ratio_breaker = None
    if d.breaker is not None:
        b = d.breaker
        ratio_breaker = BreakerSettings(
            failure_ratio=0.5 if b.failure_ratio is None else b.failure_ratio,
            window=30.0 if b.window is None else b.window,
            min_calls=20 if b.min_calls is None else b.min_calls,
            open_for=30.0 if b.open_for is None else b.open_for,
        )
    budget = None
    if d.budget is not None:
        budget = BudgetSettings(
            tokens=10.0 if d.budget.tokens is None else d.budget.tokens,
            refill=0.1 if d.budget.refill is None else d.budget.refill,
        )
    rate_limit = None
    if d.rate_limit is not None:
        rate_limit = RateLimitSettings(
            requests=d.rate_limit.requests,
            per=d.rate_limit.per,
            methods=d.rate_limit.methods,
            by_path=bool(d.rate_limit.by_path),
            seed=d.rate_limit.seed is not None,
        )
    redaction = DEFAULT
    for _src, doc in chain:
        r = doc.redact
        if r is not None:
            redaction |= Redaction(
                query=r.query or (),
                headers=r.headers or (),
                patterns=r.patterns or (),
            )
    webhook = None
    for _src, doc in chain:
        hook = doc.alerts.webhook if doc.alerts else None
        if hook is not None:
            webhook = WebhookSettings(
                env=hook.url.strip()[2:-1],
                min_severity=hook.min_severity or "warning",
                timeout=hook.timeout or 5.0,
            )
            break
    return Policy(
        redaction=redaction,
        breaker=ratio_breaker,
        budget=budget,
        rate_limit=rate_limit,
        webhook=webhook,
        breakers=ratio_breaker is not None or any(r.breaker for r in rules),
        breaker_scopes=_scopes(rules),
        pause_scopes=tuple(
            sorted(
                {(r.pause.scope, r.pause.methods) for r in rules if r.pause},
                key=lambda s: (s[0], sorted(s[1] or ())),
            )
        ),
        rule_deadlines={
            r.id: r.retry.deadline
            for r in rules
            if r.retry is not None and r.retry.deadline is not None
        },
        settles=ratio_breaker is not None or budget is not None,
        quiet=(
            ratio_breaker is None
            and budget is None
            and rate_limit is None
            and not any(r.breaker or r.pause for r in rules)
        ),
        name=head.policy,
        description=head.description,
        sources=tuple(src for src, _doc in chain),
        rules=tuple(rules),
        deadline=resolved.deadline,
        server_delay_max=resolved.server_delay.max,
        on_exceed=resolved.server_delay.on_exceed or "fail",
        body_limit=resolved.body_limit,
        retry=_retry_settings(resolved.retry),
        poll=_poll_settings(resolved.poll),
        doc=merged_doc,
        index=index,
        fallback=fallback,
        errors=types.MappingProxyType(scopes[0]),
        idempotency=idem,
    )


def _declared_errors(
    chain: Sequence[tuple[str, s.PolicyDoc]],
) -> list[dict[str, type[Aborted]]]:
    """
    For each document of *chain*, the classes declared in it and in the
    policies it extends: a parent's rules never see what a child declares.
    """
    scopes: list[dict[str, type[Aborted]]] = []
    scope: dict[str, type[Aborted]] = {}
    for src, doc in reversed(chain):
        scope = dict(scope)
        todo = dict(doc.errors)
        # Bases first: a declaration may name one declared below it.  The
        # loader has ruled out cycles and unknown names; what is left
        # unresolved is dropped rather than looped on.
        while todo:
            progress = False
            for name, ed in list(todo.items()):
                base = _error(ed.base, scope) if ed.base not in todo else None
                if base is None:
                    continue
                scope[name] = declare_error(
                    name,
                    base,
                    policy=doc.policy,
                    source=src,
                    description=ed.description,
                )
                del todo[name]
                progress = True
            if not progress:
                break
        scopes.append(scope)
    scopes.reverse()
    return scopes


def _error(
    name: str, scope: Mapping[str, type[Aborted]]
) -> type[Aborted] | None:
    """
    The class *name* means in a policy: declared there, else built in or
    registered.
    """
    return scope.get(name) or error_class(name)
