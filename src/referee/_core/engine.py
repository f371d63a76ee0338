"""
The decision: one outcome in, one :data:`~referee.Decision` out.

Rule 1: a decision is a pure function of (policy, snapshot, state, now, rng).
Rule 2: this module knows nothing about httpx, requests, aiohttp or
structlog; it never sleeps and never reads the clock.
Rule 3: it never raises on anything a server can send: a body that is not
JSON, a header that does not parse, a template with a missing field all lead
to a decision that says so.

The hot path: the status (or failure word) picks the candidate rules from
the policy's index; when there are none the outcome is accepted after that
one look-up.  Otherwise the candidates' generated function
(:mod:`.codegen`) tries them in order, with their conditions inlined; a
body condition first checks that the raw body contains the bytes it needs,
so a response that cannot match is not parsed at all.  :func:`interpret`
is the same decision without generated code, the reference it is tested
against.
"""

from __future__ import annotations

import math
import random
import re
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urljoin, urlsplit

import attrs

from .compile import default_error
from .decisions import (
    Abort,
    Accept,
    AlertNotice,
    PauseNotice,
    Poll,
    PollRequest,
    Retry,
)
from .errors import Aborted, DeadlineExceeded, RetriesExhausted
from .hints import parse_hint, parse_pause
from .index import try_rules
from .matchers import MISSING, Context, path_getter
from .redact import REDACTED
from .snapshot import IDEMPOTENT_METHODS
from .units import format_duration, round_seconds


if TYPE_CHECKING:
    from .compile import CompiledRule, Policy
    from .decisions import Decision, PauseSpec
    from .snapshot import Snapshot
    from .state import AttemptState


__all__ = [
    "NO_MATCH",
    "decide",
    "host_of",
    "interpret",
    "pause_key",
    "pause_notice",
    "scope_parts",
    "scope_words",
]

NO_MATCH: Final = Accept(rule_id=None, why=("no rule matched",))
_RNG: Final = random.Random()


def decide(
    policy: Policy,
    snap: Snapshot,
    state: AttemptState,
    *,
    now: float,
    rng: random.Random | None = None,
) -> Decision:
    """
    Decide what to do with *snap*, the outcome of attempt ``state.attempt``.

    Args:
        policy: The compiled policy.
        snap: The outcome.
        state: Where the call stands.
        now: The runner's clock, in seconds (the same clock as
            ``state.started``); a Unix time if HTTP-dates and epoch reset
            headers are to be honoured.
        rng: The source of jitter; pass one for reproducible delays.

    Returns:
        An :class:`Accept`, :class:`Retry`, :class:`Poll` or
        :class:`Abort`.  No rule matching is :data:`NO_MATCH`: an accept
        with no rule (for a transport failure: let it propagate).
    """
    found = policy.index.get(snap.key, policy.fallback)  # type: ignore[arg-type]
    if not found:
        return NO_MATCH
    return (
        found.run(policy, snap, state, now, rng or _RNG, _ACTIONS) or NO_MATCH
    )


def interpret(
    policy: Policy,
    snap: Snapshot,
    state: AttemptState,
    *,
    now: float,
    rng: random.Random | None = None,
) -> Decision:
    """
    :func:`decide` without the generated functions: the candidates tried
    one by one (:func:`~referee._core.index.try_rules`).  The reference
    the generated code is tested against; it decides alike, slower.
    """
    rules = policy.candidates(snap.key, snap.method)  # type: ignore[arg-type]
    decided = try_rules(rules, policy, snap, state, now, rng or _RNG, _ACTIONS)
    return decided or NO_MATCH


def pause_notice(
    spec: PauseSpec, snap: Snapshot, now: float
) -> PauseNotice | None:
    """
    The pause *spec* sets on *snap*: until the time its first source that
    parses gives (no later than ``now + spec.max``), or None when no
    header asks for a pause still to come.
    """
    headers = snap.headers
    for lower, fmt, name in spec.sources:
        value = headers.get(lower)
        if value is None:
            continue
        delay = parse_pause(value, fmt, now)
        if delay is None:
            continue  # malformed: the next source may say
        if delay <= 0:
            return None
        source = name
        if delay > spec.max:
            delay, source = spec.max, f"{name} (capped)"
        base = "*" if spec.scope == "policy" else host_of(snap.url)
        scope = pause_key(base, spec.methods)
        return PauseNotice(now + delay, scope, spec.then, source)
    return None


def pause_key(base: str, methods: frozenset[str] | None) -> str:
    """
    A pause's scope as the state keeps it: *base* (``*``, or a host),
    then ``|`` and the methods it holds, when it holds some only.
    """
    if methods is None:
        return base
    return f"{base}|{','.join(sorted(methods))}"


def scope_parts(key: str) -> tuple[str, list[str] | None]:
    """
    ``policy`` or the host of a pause's scope, and the methods it holds
    (None: every call).
    """
    base, bar, methods = key.partition("|")
    return (
        "policy" if base == "*" else base,
        methods.split(",") if bar else None,
    )


def scope_words(key: str) -> str:
    """
    A pause's scope in words: ``the policy``, ``host api.example.com``,
    ``the policy's POST calls``.
    """
    base, methods = scope_parts(key)
    where = "the policy" if base == "policy" else f"host {base}"
    if methods is None:
        return where
    return f"{where} ({', '.join(methods)} calls)"


def host_of(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def _act(
    policy: Policy,
    rule: CompiledRule,
    snap: Snapshot,
    state: AttemptState,
    ctx: Context | None,
    now: float,
    rng: random.Random,
) -> Decision:
    decision = _acted(policy, rule, snap, state, ctx, now, rng)
    if rule.pause is not None:
        notice = pause_notice(rule.pause, snap, now)
        if notice is not None:
            return attrs.evolve(decision, pause=notice)
    return decision


def _acted(
    policy: Policy,
    rule: CompiledRule,
    snap: Snapshot,
    state: AttemptState,
    ctx: Context | None,
    now: float,
    rng: random.Random,
) -> Decision:
    action = rule.action
    alert = None
    if rule.alert is not None:
        if ctx is None:
            ctx = Context(snap, state, policy.body_limit)
        alert = _alert(policy, rule, ctx)
    if action == "retry":
        return _retry(policy, rule, snap, state, now, rng, alert)
    if action == "poll":
        return _poll(policy, rule, snap, state, ctx, now, rng, alert)
    if action == "abort":
        err = rule.error or default_error(snap.status)
        return Abort(
            rule.id,
            (_ABORTS, *_what(snap), rule.id, err.__name__),
            err,
            alert,
            rule.breaker,
            rule.log,
        )
    return Accept(
        rule.id,
        (_ACCEPTS, *_what(snap), rule.id),
        alert,
        rule.breaker,
        rule.log,
    )


# The reasons, as format strings over (method, outcome, ...): rendered only
# when read.
_ABORTS: Final = "{0} {1}: rule {2!r} aborts with {3}"
_ACCEPTS: Final = "{0} {1}: rule {2!r} accepts"
_UNSAFE: Final = (
    "{0} {1}: rule {2!r} would retry, but {0} is not idempotent and the "
    "server may have processed it; send an Idempotency-Key header, or set "
    "unsafe_methods: true on the rule if the API documents that this "
    "outcome is not processed"
)
_UNSAFE_POLL: Final = (
    "{0} {1}: rule {2!r} would poll by sending the {0} again, but {0} is "
    "not idempotent and each send may start the work anew; give the rule "
    "a poll request that reads the job's status (poll: {{request: {{url: "
    "...}}}}), or send an Idempotency-Key header"
)
_EXHAUSTED: Final = (
    "{0} {1}: rule {2!r} gave up after its {3} {5} (attempts: {4}, the "
    "first send included)"
)
_SPENT: Final = (
    "{0} {1}: rule {2!r} would retry, but the call's {3} attempts are spent "
    "({4} of its own; {5})"
)
_TOO_LONG: Final = (
    "{0} {1}: {2} asks for a wait of {3}, above {5}server_delay.max {4} "
    "(on_exceed: fail)"
)
_DEADLINE: Final = (
    "{0} {1}: a retry in {2} would overrun the {5} deadline of {3} ({4} left)"
)
_RETRIES: Final = (
    "{0} {1}: rule {2!r} retries in {3!d} (attempt {4} of {5}, delay from {6})"
)
# When other rules retried the call too, the rule's own count is not the
# call's: both are shown.
_RETRIES_OWN: Final = (
    "{0} {1}: rule {2!r} retries in {3!d} (attempt {4}; its own retry {5} "
    "of {6}, delay from {7})"
)
_POLL_DEADLINE: Final = (
    "{0} {1}: the job is still running after {2} of polling, and another "
    "poll would overrun the poll deadline of {3}"
)
_POLLS: Final = (
    "{0} {1}: rule {2!r} polls again in {3!d} (poll {4}, delay from {5})"
)
_POLL_REQUEST: Final = "{0} {1}: {2}"


def _what(snap: Snapshot) -> tuple[str, str]:
    return snap.method, _outcome(snap.status, snap.failure)


#: "got 200", "failed (connect)": made once per status.
_OUTCOMES: dict[Any, str] = {}


def _outcome(status: int | None, failure: str | None) -> str:
    said = _OUTCOMES.get(status if status is not None else failure)
    if said is None:
        said = f"failed ({failure})" if status is None else f"got {status}"
        # Only the statuses HTTP has, and the failure words: bounded.
        if status is None or (type(status) is int and 100 <= status < 1000):
            _OUTCOMES[status if status is not None else failure] = said
    return said


def _unsafe(snap: Snapshot, policy: Policy) -> bool:
    """
    Whether sending *snap*'s request again could do its work twice: the
    gate every re-send passes, retry or poll.
    """
    # RFC 9110 §9.2.2: a request that is not idempotent may have been
    # processed; only a connect failure proves it was not, and an
    # Idempotency-Key lets the server recognise the second send.
    # The key's header is the policy's (``idempotency: {header: ...}``),
    # or the draft's name when the caller sent one themselves.
    idem = policy.idempotency
    return (
        snap.method not in IDEMPOTENT_METHODS
        and snap.failure != "connect"
        and snap.request_headers.get("idempotency-key") is None
        and (
            idem is None
            or snap.request_headers.get(idem.header.lower()) is None
        )
    )


# Delays are kept to the microsecond (the schedules are, from compile):
# what the trail and the log events record is 0.3, not
# 0.30000000000000004.


def _jitter(delay: float, kind: str, rng: random.Random) -> float:
    if kind == "full":
        return round_seconds(rng.uniform(0.0, delay))
    if kind == "equal":
        return round_seconds(delay / 2 + rng.uniform(0.0, delay / 2))
    return delay


def _hint(
    snap: Snapshot, sources: tuple[tuple[str, str, str], ...], now: float
) -> tuple[float, str] | None:
    headers = snap.headers
    for lower, fmt, name in sources:
        value = headers.get(lower)
        if value is None:
            continue
        delay = parse_hint(value, fmt, now)
        if delay is not None and delay >= 0:
            return round_seconds(delay), name
    return None


def _floored(
    delay: float, source: str, floor: float, ceiling: float
) -> tuple[float, str]:
    """
    *delay* raised to the rule's ``delay_min``, and where it came from:
    ``Retry-After 5s, raised to the 1m floor``.

    ``server_delay.max`` bounds the floor too: no wait a response sets
    off, hinted or not, is longer than the policy's ceiling.
    """
    raised = min(floor, ceiling)
    if raised <= delay:
        return delay, source
    said = (
        f"{source} {format_duration(delay)}, raised to the "
        f"{format_duration(raised)} floor"
    )
    if raised < floor:
        said += (
            f" (delay_min {format_duration(floor)}, capped by "
            f"server_delay.max)"
        )
    return raised, said


def _give_up(
    rule: CompiledRule,
    why: tuple[Any, ...],
    error: type[Aborted],
    alert: AlertNotice | None,
) -> Abort:
    return Abort(rule.id, why, error, alert, rule.breaker, rule.log)


def _retry(
    policy: Policy,
    rule: CompiledRule,
    snap: Snapshot,
    state: AttemptState,
    now: float,
    rng: random.Random,
    alert: AlertNotice | None,
) -> Decision:
    settings = rule.retry
    assert settings is not None  # noqa: S101 - retry rules have settings
    if (
        not settings.unsafe_methods
        and snap.method not in IDEMPOTENT_METHODS
        and _unsafe(snap, policy)
    ):
        return _give_up(
            rule,
            (_UNSAFE, *_what(snap), rule.id),
            rule.error or default_error(snap.status),
            alert,
        )
    attempts = settings.attempts
    own = own_retries(state, rule.id)
    if attempts is not None and own >= attempts - 1:
        return _give_up(
            rule,
            (
                _EXHAUSTED,
                *_what(snap),
                rule.id,
                own,
                attempts,
                "retry" if own == 1 else "retries",
            ),
            rule.error or RetriesExhausted,
            alert,
        )
    bound = _call_attempts(policy, attempts)
    if bound is not None and state.attempt >= bound:
        return _give_up(
            rule,
            (
                _SPENT,
                *_what(snap),
                rule.id,
                bound,
                f"{own} retry" if own == 1 else f"{own} retries",
                (
                    f"defaults.retry.attempts: {bound}"
                    if bound == policy.retry.attempts
                    else f"the rule's attempts: {bound}, above "
                    f"defaults.retry.attempts: {policy.retry.attempts}"
                ),
            ),
            rule.error or RetriesExhausted,
            alert,
        )
    hint = (
        _hint(snap, settings.delay_from, now) if settings.delay_from else None
    )
    if hint is not None:
        delay, source = hint
        ceiling = settings.server_delay_max
        mine = ceiling is not None
        if ceiling is None:
            ceiling = policy.server_delay_max
        if delay > ceiling:
            if (settings.on_exceed or policy.on_exceed) == "fail":
                return _give_up(
                    rule,
                    (
                        _TOO_LONG,
                        *_what(snap),
                        source,
                        format_duration(delay),
                        format_duration(ceiling),
                        f"rule {rule.id!r}'s retry." if mine else "",
                    ),
                    rule.error or default_error(snap.status),
                    alert,
                )
            delay = ceiling
            source = f"{source} (capped)"
    else:
        schedule = settings.schedule
        n = state.attempt - 1
        base = schedule[n] if n < len(schedule) else schedule[-1]
        delay = _jitter(base, settings.jitter, rng)
        source = "backoff"
    if delay < settings.delay_min:
        # The floor is capped by the ceiling that applies to this rule.
        delay, source = _floored(
            delay,
            source,
            settings.delay_min,
            settings.server_delay_max
            if settings.server_delay_max is not None
            else policy.server_delay_max,
        )
    # A call that polls is bounded by the poll deadline instead; one that
    # does not, by the rule's deadline when it has one, else the call's.
    if state.poll_started is not None:
        limit = poll_deadline(policy, state)
        whose = "poll's"
    elif settings.deadline is not None:
        limit = settings.deadline
        whose = f"rule {rule.id!r}"
    else:
        limit = policy.deadline
        whose = "call's"
    if limit != math.inf:
        start = (
            state.started if state.poll_started is None else state.poll_started
        )
        left = start + limit - now
        if delay > left:
            return _give_up(
                rule,
                (
                    _DEADLINE,
                    *_what(snap),
                    format_duration(delay),
                    format_duration(limit),
                    format_duration(max(left, 0.0)),
                    whose,
                ),
                DeadlineExceeded,
                alert,
            )
    nxt = state.attempt + 1
    why: tuple[Any, ...] = (
        (
            _RETRIES,
            *_what(snap),
            rule.id,
            delay,
            nxt,
            attempts or "unlimited",
            source,
        )
        if own == state.attempt - 1
        else (
            _RETRIES_OWN,
            *_what(snap),
            rule.id,
            delay,
            nxt,
            own + 1,
            attempts - 1 if attempts else "unlimited",
            source,
        )
    )
    return Retry(
        rule.id,
        why,
        delay,
        nxt,
        source,
        alert,
        rule.breaker,
        rule.log,
    )


def own_retries(state: AttemptState, rule_id: str) -> int:
    """
    How many of the call's retries rule *rule_id* decided: the retry
    records of the trail that name it.

    Retries the trail does not record (a state built by hand, as
    ``referee explain --attempt N`` builds one) are taken to be the rule's,
    so that a bare attempt number means what it always meant.
    """
    mine = total = 0
    for record in state.history:
        if record.action == "retry":
            total += 1
            if record.rule_id == rule_id:
                mine += 1
    return mine + max(state.attempt - 1 - total, 0)


def _call_attempts(policy: Policy, attempts: int | None) -> int | None:
    """
    The most sends a call may make when retried by a rule allowing
    *attempts*: the policy's ``defaults.retry.attempts``, or the rule's own
    when larger (a rule that asks for more extends the call for itself
    only); None for no bound.
    """
    call = policy.retry.attempts
    if call is None or attempts is None:
        return None
    return max(call, attempts)


def call_end(policy: Policy, state: AttemptState) -> float:
    """
    When the time of the call's next send runs out (not polling): the
    call's deadline, or the deadline of the rule whose retry makes that
    send, when it has one of its own.
    """
    deadline = policy.deadline
    if policy.rule_deadlines and state.history:
        last = state.history[-1]
        if last.action == "retry" and last.rule_id is not None:
            deadline = policy.rule_deadlines.get(last.rule_id, deadline)
    return state.started + deadline


def poll_deadline(policy: Policy, state: AttemptState) -> float:
    """
    The poll deadline of the rule that last polled in *state* (``inf``
    when none did).
    """
    for record in reversed(state.history):
        if record.action == "poll" and record.rule_id is not None:
            try:
                poll = policy.rule(record.rule_id).poll
            except KeyError:
                return math.inf
            return math.inf if poll is None else poll.deadline
    return math.inf


_URLS: Final = frozenset({"url", "request.url"})
_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.-]*)\}")


def _field(ctx: Context, policy: Policy, rule: CompiledRule, name: str) -> Any:
    snap = ctx.snap
    if name == "status":
        return snap.status if snap.status is not None else snap.failure
    if name == "method":
        return snap.method
    if name in {"request.url", "url"}:
        return snap.url
    if name == "request.path":
        return ctx.url_parts()[1]
    if name == "request.method":
        return snap.method
    if name == "rule":
        return rule.id
    if name == "policy":
        return policy.name
    if name == "failure":
        return snap.failure
    if name.startswith("body."):
        doc = ctx.json()
        if doc is MISSING:
            return MISSING
        return path_getter(name[5:])(doc)
    if name.startswith("header."):
        value = snap.headers.get(name[7:].lower())
        return MISSING if value is None else value
    return MISSING


def _alert(policy: Policy, rule: CompiledRule, ctx: Context) -> AlertNotice:
    spec = rule.alert
    assert spec is not None  # noqa: S101
    if spec.message is None:
        method, outcome = _what(ctx.snap)
        message = f"{policy.name}: {method} {outcome} (rule {rule.id!r})"
    else:
        redaction = policy.redaction

        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            # Alerts travel to chat rooms and inboxes: a secret header,
            # or a body field named like a credential, never renders.
            if name.startswith("header.") and redaction.secret_header(
                name[7:]
            ):
                return REDACTED
            if (
                name.startswith("body.")
                and name.rpartition(".")[2].lower() in redaction.all_params
            ):
                return REDACTED
            value = _field(ctx, policy, rule, name)
            if value is MISSING or value is None:
                return "?"
            return redaction.url(str(value)) if name in _URLS else str(value)

        message = _FIELD.sub(sub, spec.message)
    return AlertNotice(
        kind=spec.kind,
        severity=spec.severity,
        # Values shaped like credentials, wherever they came from.
        message=policy.redaction.text(message),
        key=f"{policy.name}:{spec.kind}",
        dedupe=spec.dedupe,
    )


def _poll(
    policy: Policy,
    rule: CompiledRule,
    snap: Snapshot,
    state: AttemptState,
    ctx: Context | None,
    now: float,
    rng: random.Random,
    alert: AlertNotice | None,
) -> Decision:
    settings = rule.poll
    assert settings is not None  # noqa: S101 - poll rules have settings
    # _hint, inline: a poll is decided on every answer of a running job.
    source = None
    headers = snap.headers
    for lower, fmt, name in settings.delay_from:
        value = headers.get(lower)
        if value is not None:
            hinted = parse_hint(value, fmt, now)
            if hinted is not None and hinted >= 0:
                delay, source = round_seconds(hinted), name
                if delay > policy.server_delay_max:
                    delay = policy.server_delay_max
                    source = f"{source} (capped)"
                break
    if source is None:
        n = state.polls
        schedule = settings.schedule
        base = schedule[n] if n < len(schedule) else schedule[-1]
        jitter = settings.jitter
        delay = base if jitter == "none" else _jitter(base, jitter, rng)
        source = "schedule"
    started = now if state.poll_started is None else state.poll_started
    if now + delay > started + settings.deadline:
        return _give_up(
            rule,
            (
                _POLL_DEADLINE,
                *_what(snap),
                format_duration(now - started),
                format_duration(settings.deadline),
            ),
            rule.error or DeadlineExceeded,
            alert,
        )
    request = None
    if settings.request_url is not None or settings.request_method is not None:
        if ctx is None:
            ctx = Context(snap, state, policy.body_limit)
        built = _poll_request(policy, rule, ctx, settings)
        if isinstance(built, str):
            return _give_up(
                rule,
                (_POLL_REQUEST, *_what(snap), built),
                rule.error or default_error(None),
                alert,
            )
        request = built
    # A poll that sends the request as it was is a re-send like a retry:
    # a POST that started a job would start another at every poll.  One
    # that builds another request (a GET of the job's status, the 202's
    # Location) may go.
    if (
        snap.method not in IDEMPOTENT_METHODS
        and (
            request is None
            or (request.method == snap.method and request.url == snap.url)
        )
        and _unsafe(snap, policy)
    ):
        return _give_up(
            rule,
            (_UNSAFE_POLL, *_what(snap), rule.id),
            rule.error or default_error(snap.status),
            alert,
        )
    return Poll(
        rule.id,
        (
            _POLLS,
            snap.method,
            _OUTCOMES.get(snap.status) or _outcome(snap.status, snap.failure),
            rule.id,
            delay,
            state.polls + 1,
            source,
        ),
        delay,
        state.polls + 1,
        request,
        source,
        alert,
        rule.breaker,
        rule.log,
    )


def _poll_request(
    policy: Policy, rule: CompiledRule, ctx: Context, settings: Any
) -> PollRequest | str:
    """
    The poll request, or why it cannot be built.
    """
    snap = ctx.snap
    shown = policy.redaction.url  # the reasons name URLs: no credentials
    if _origin(snap.url) is None:
        return (
            f"rule {rule.id!r} cannot build its poll request: the request's "
            f"URL {shown(snap.url)!r} is not a URL"
        )
    template = settings.request_url or "{request.url}"
    missing: list[str] = []

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        value = _field(ctx, policy, rule, name)
        if value is MISSING or value is None:
            missing.append(name)
            return ""
        text = str(value)
        # Values from the body go into the URL as data, never as structure.
        return quote(text, safe="") if name.startswith("body.") else text

    url = _FIELD.sub(sub, template)
    if missing:
        return (
            f"rule {rule.id!r} cannot build its poll request: the response "
            f"has no {', '.join(missing)}"
        )
    try:
        url = urljoin(snap.url, url)
    except ValueError:
        return (
            f"rule {rule.id!r} cannot build its poll request: "
            f"{shown(url)!r} is not a URL"
        )
    if not _same_origin(snap.url, url):
        return (
            f"rule {rule.id!r} refuses to poll {_origin_of(url)}: it is not "
            f"the origin of the request ({_origin_of(snap.url)}), and "
            f"credentials are never sent to another origin"
        )
    # A poll of another URL reads a job's status: GET, unless the rule says
    # otherwise (RFC 9110: a 202's Location is fetched with GET).  Without
    # a URL template, the same request is sent again.
    method = settings.request_method or (
        "GET" if settings.request_url is not None else snap.method
    )
    return PollRequest(method=method, url=url)


_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int | None] | None:
    try:
        split = urlsplit(url)
        port = split.port or _DEFAULT_PORTS.get(split.scheme.lower())
    except ValueError:
        return None
    return (split.scheme.lower(), (split.hostname or "").lower(), port)


def _origin_of(url: str) -> str:
    o = _origin(url)
    if o is None:
        return "an unparsable URL"
    return f"{o[0]}://{o[1]}:{o[2]}"


def _same_origin(a: str, b: str) -> bool:
    oa, ob = _origin(a), _origin(b)
    return oa is not None and oa == ob


class _Actions:
    """
    What the candidates' functions call on a match: :func:`_act`, and,
    for a rule without an alert, the poll and retry it would dispatch to,
    one call fewer.
    """

    __slots__ = ()
    __call__ = staticmethod(_act)
    poll = staticmethod(_poll)
    retry = staticmethod(_retry)


_ACTIONS: Final = _Actions()
