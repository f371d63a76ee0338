"""
Static checks: policies that load but are probably not what their author
meant.

Rule 1: a check never raises on a policy that loaded; everything it finds is
a :class:`~referee.Problem` of severity ``warning``.
Rule 2: warnings point at the file and the rule that wrote the setting, not
at the policy that inherited it: a rule of ``http-default`` is reported in
``http-default``, as ``$.rules[N]`` of that file.

What is checked:

- rules that can never match: conditions no outcome satisfies, and rules
  fully shadowed by an earlier rule of the same file;
- rules that hide inherited rules entirely (a ``when``-less catch-all, a
  ``5xx`` rule above ``http-default``'s ``server-unavailable``): reported
  on the hiding rule, naming the rules it hides;
- retries without a bound (``attempts: unlimited`` and no ``deadline``), and
  polls without one (``poll.deadline: none``);
- retries of unsafe methods (``unsafe_methods: true``) without a description
  saying why that is safe;
- polls that can match POST or PATCH and would send that request again (no
  ``poll.request``): the engine refuses them unless the request carries an
  Idempotency-Key;
- server hints honoured without a ceiling (``server_delay: {max: none}``);
- backoffs whose ``max`` is below their ``initial``;
- delay floors (``retry.delay_min``) above ``server_delay.max``, which
  caps them, or at least as long as the call's ``deadline``, which no
  retry of the rule could then fit in.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

from referee._core.errors import Problem
from referee._core.snapshot import IDEMPOTENT_METHODS
from referee._core.units import format_duration
from referee._files.convert import join_path


if TYPE_CHECKING:
    from collections.abc import Iterator

    from referee._core.compile import CompiledRule, Policy


__all__ = ["check_policy"]

_WARNING: Final = "warning"


class _Where:
    """
    Which file (and line) wrote a rule or a default: every compiled rule
    knows its source and its path there, and the policy keeps each YAML
    source's line map.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def group(self, rule: CompiledRule) -> str:
        """
        What "the same file" means for shadowing.
        """
        return rule.source

    def at_rule(
        self, rule: CompiledRule, message: str, *keys: str | int
    ) -> Problem:
        path = rule.path
        for key in keys:
            path = join_path(path, key)
        line = self.policy.line_of(rule.source, path)
        return Problem(rule.source, line, path, message, _WARNING)

    def at_default(self, message: str, *keys: str) -> Problem:
        """
        A warning about ``defaults.<keys>``, in the first file that sets it.
        """
        path = "$.defaults"
        for key in keys:
            path = join_path(path, key)
        for source in self.policy.sources:
            if path in self.policy.lines.get(source, {}):
                line = self.policy.line_of(source, path)
                return Problem(source, line, path, message, _WARNING)
        # JSON and TOML sources have no line maps: name the first source.
        return Problem(self.policy.sources[0], None, path, message, _WARNING)


def check_policy(policy: Policy) -> list[Problem]:
    """
    Warnings about *policy*: settings that are legal but probably wrong.

    Returns:
        Problems of severity ``warning``, rule by rule in policy order, then
        the policy-wide ones.
    """
    where = _Where(policy)
    out: list[Problem] = []
    for i, rule in enumerate(policy.rules):
        out.extend(_never_matches(where, policy.rules[:i], rule))
        out.extend(_hides(where, rule, policy.rules[i + 1 :]))
        out.extend(_unbounded(where, policy, rule))
        out.extend(_unsafe(where, rule))
        out.extend(_unsafe_poll(where, rule))
        out.extend(_backoff(where, rule))
        out.extend(_floor(where, policy, rule))
        out.extend(_endless_pause(where, rule))
    out.extend(_defaults(where, policy))
    out.extend(_server_delay(where, policy))
    return out


def _never_matches(
    where: _Where, earlier: tuple[CompiledRule, ...], rule: CompiledRule
) -> Iterator[Problem]:
    keys = rule.when.keys
    if keys is not None and not keys:
        yield where.at_rule(
            rule,
            f"rule {rule.id!r} can never match: no status or transport "
            f"failure satisfies all of its conditions (a status together "
            f"with a failure, or status lists that do not overlap)",
            "when",
        )
        return
    group = where.group(rule)
    for prev in earlier:
        if where.group(prev) == group and _catches(prev, rule):
            yield where.at_rule(
                rule,
                f"rule {rule.id!r} can never match: {prev.id!r} above "
                f"already catches every outcome it could; move it up or "
                f"narrow {prev.id!r}",
            )
            return


def _catches(prev: CompiledRule, rule: CompiledRule) -> bool:
    """
    Whether *prev*, above *rule*, catches every outcome *rule* could
    match: it has no condition but the statuses and failures it takes
    (none: all of them), and they include all of *rule*'s.
    """
    if prev.when.test is not None:
        return False
    keys, prev_keys = rule.when.keys, prev.when.keys
    return prev_keys is None or (keys is not None and keys <= prev_keys)


def _hides(
    where: _Where, rule: CompiledRule, later: tuple[CompiledRule, ...]
) -> Iterator[Problem]:
    """
    A rule that hides rules of another file (those it extends) entirely:
    a child's catch-all silently turns the parent's rules off.  Replacing
    a rule by giving it the same id is the way to say so.
    """
    group = where.group(rule)
    hidden = [
        r
        for r in later
        if where.group(r) != group
        and (r.when.keys is None or r.when.keys)  # never-matching: reported
        and _catches(rule, r)
    ]
    if not hidden:
        return
    by_source: dict[str, list[str]] = {}
    for r in hidden:
        by_source.setdefault(r.source, []).append(repr(r.id))
    named = "; ".join(
        f"{', '.join(ids)} of {source}" for source, ids in by_source.items()
    )
    what = "rule" if len(hidden) == 1 else "rules"
    yield where.at_rule(
        rule,
        f"rule {rule.id!r} hides the inherited {what} {named}: it catches "
        f"every outcome {'it' if len(hidden) == 1 else 'they'} could "
        f"match, so {'it' if len(hidden) == 1 else 'they'} never "
        f"{'applies' if len(hidden) == 1 else 'apply'}; narrow its when, or "
        f"give it the id of the rule it replaces",
    )


def _unbounded(
    where: _Where, policy: Policy, rule: CompiledRule
) -> Iterator[Problem]:
    retry = rule.retry
    # The rule's own deadline, when it has one, is what bounds it.
    deadline = (
        policy.deadline
        if retry is None or retry.deadline is None
        else retry.deadline
    )
    if retry is not None and retry.attempts is None and math.isinf(deadline):
        own = (
            rule.doc.retry is not None and rule.doc.retry.attempts is not None
        )
        whose = (
            "the policy has no deadline"
            if retry.deadline is None
            else "its own deadline is none"
        )
        yield where.at_rule(
            rule,
            f"rule {rule.id!r} retries without a bound: attempts is "
            f"unlimited and {whose}, so one call may "
            f"retry forever; set attempts, or a deadline in defaults",
            *(("retry", "attempts") if own else ()),
        )
    if (
        retry is not None
        and retry.delay_from
        and retry.server_delay_max is not None
        and math.isinf(retry.server_delay_max)
    ):
        yield where.at_rule(
            rule,
            f"rule {rule.id!r} honours server hints without a ceiling "
            f"(retry: {{server_delay: {{max: none}}}}): a server can make "
            f"a client sleep for a day; give it a max",
            "retry",
            "server_delay",
            "max",
        )
    if rule.poll is not None and math.isinf(rule.poll.deadline):
        own = rule.doc.poll is not None and rule.doc.poll.deadline is not None
        yield where.at_rule(
            rule,
            f"rule {rule.id!r} polls without a bound: its poll deadline is "
            f"none, so a job that never finishes is polled forever; set "
            f"poll.deadline",
            *(("poll", "deadline") if own else ()),
        )


def _only_safe(rule: CompiledRule) -> bool:
    """
    Whether the rule can only match outcomes that a retry never re-sends
    unsafely: idempotent methods, or connect failures.
    """
    when = rule.doc.when
    if (
        when is not None
        and when.method is not None
        and set(when.method) <= IDEMPOTENT_METHODS
    ):
        return True
    keys = rule.when.keys
    return keys is not None and keys <= {"connect"}


def _unsafe(where: _Where, rule: CompiledRule) -> Iterator[Problem]:
    retry = rule.retry
    if retry is None or not retry.unsafe_methods:
        return
    if (rule.description or "").strip() or _only_safe(rule):
        return
    yield where.at_rule(
        rule,
        f"rule {rule.id!r} retries POST/PATCH (unsafe_methods: true) "
        f"without a description saying why that is safe; a retried paid "
        f"call can spend credits twice",
        *(("retry", "unsafe_methods") if _sets_unsafe(rule) else ()),
    )


def _sets_unsafe(rule: CompiledRule) -> bool:
    return rule.doc.retry is not None and bool(rule.doc.retry.unsafe_methods)


#: The poll request URLs that mean "the request's own URL".
_SAME_URL: Final = frozenset({None, "{request.url}", "{url}"})


def _unsafe_poll(where: _Where, rule: CompiledRule) -> Iterator[Problem]:
    poll = rule.poll
    if poll is None or _only_safe(rule):
        return
    if poll.request_url not in _SAME_URL or (
        poll.request_method is not None
        and poll.request_method in IDEMPOTENT_METHODS
    ):
        return
    yield where.at_rule(
        rule,
        f"rule {rule.id!r} polls by sending the request again, and it can "
        f"match POST or PATCH: such a poll is refused (the call aborts) "
        f"unless the request carries an Idempotency-Key, since each send "
        f"may start the work anew; add method: GET to its when, or a poll "
        f"request that reads the job's status (poll: {{request: {{url: "
        f"...}}}})",
        *(("when",) if rule.doc.when is not None else ()),
    )


def _backoff(where: _Where, rule: CompiledRule) -> Iterator[Problem]:
    # Only rules that set initial or max themselves: the defaults are
    # checked once, in _defaults.
    if rule.retry is not None:
        b = rule.doc.retry.backoff if rule.doc.retry is not None else None
        own = b is not None and (b.initial is not None or b.max is not None)
        if own and rule.retry.max < rule.retry.initial:
            yield where.at_rule(
                rule,
                _backoff_msg(
                    f"rule {rule.id!r}", rule.retry.initial, rule.retry.max
                ),
                "retry",
                "backoff",
            )
    if rule.poll is not None:
        p = rule.doc.poll
        own = p is not None and (p.initial is not None or p.max is not None)
        if own and rule.poll.max < rule.poll.initial:
            yield where.at_rule(
                rule,
                _backoff_msg(
                    f"rule {rule.id!r}'s poll",
                    rule.poll.initial,
                    rule.poll.max,
                ),
                "poll",
            )


def _backoff_msg(what: str, initial: float, cap: float) -> str:
    return (
        f"{what} has a backoff max ({format_duration(cap)}) below its "
        f"initial delay ({format_duration(initial)}): every delay is "
        f"{format_duration(cap)}; raise max or lower initial"
    )


def _defaults(where: _Where, policy: Policy) -> Iterator[Problem]:
    if policy.retry.max < policy.retry.initial:
        yield where.at_default(
            _backoff_msg(
                "defaults.retry", policy.retry.initial, policy.retry.max
            ),
            "retry",
            "backoff",
        )
    if policy.poll.max < policy.poll.initial:
        yield where.at_default(
            _backoff_msg(
                "defaults.poll", policy.poll.initial, policy.poll.max
            ),
            "poll",
        )


def _floor(
    where: _Where, policy: Policy, rule: CompiledRule
) -> Iterator[Problem]:
    retry = rule.retry
    if retry is None or not retry.delay_min:
        return
    own = rule.doc.retry is not None and rule.doc.retry.delay_min is not None
    keys = ("retry", "delay_min") if own else ()
    floor = format_duration(retry.delay_min)
    # The rule's own ceiling and deadline, where it sets them.
    ceiling = (
        retry.server_delay_max
        if retry.server_delay_max is not None
        else policy.server_delay_max
    )
    deadline = (
        retry.deadline if retry.deadline is not None else policy.deadline
    )
    whose = "call's" if retry.deadline is None else "rule's"
    if retry.delay_min > ceiling:
        yield where.at_rule(
            rule,
            f"rule {rule.id!r} waits at least {floor} (delay_min), above "
            f"server_delay.max {format_duration(ceiling)}, "
            f"which caps it; lower delay_min or raise server_delay.max",
            *keys,
        )
    elif retry.delay_min >= deadline:
        yield where.at_rule(
            rule,
            f"rule {rule.id!r} waits at least {floor} (delay_min), and "
            f"no such wait fits in the {whose} deadline of "
            f"{format_duration(deadline)} once the first send has "
            f"taken any time; lower delay_min or lengthen the deadline",
            *keys,
        )


def _endless_pause(where: _Where, rule: CompiledRule) -> Iterator[Problem]:
    """
    A pause with no ceiling: a header can hold every call for a day.
    """
    if rule.pause is None or not math.isinf(rule.pause.max):
        return
    yield where.at_rule(
        rule,
        f"rule {rule.id!r}'s pause has no ceiling (server_delay: {{max: "
        f"none}}, and no pause.max): a server can hold every call for a "
        f"day; set pause.max (1h covers an hourly quota)",
        "pause",
    )


def _server_delay(where: _Where, policy: Policy) -> Iterator[Problem]:
    if not math.isinf(policy.server_delay_max):
        return
    # A rule with a ceiling of its own is not bound by the policy's.
    honouring = [
        r.id
        for r in policy.rules
        if (
            r.retry is not None
            and r.retry.delay_from
            and r.retry.server_delay_max is None
        )
        or (r.poll is not None and r.poll.delay_from)
    ]
    if not honouring:
        return
    names = ", ".join(repr(n) for n in honouring[:3])
    if len(honouring) > 3:
        names += f" and {len(honouring) - 3} more"
    who = (
        f"rule {names} honours"
        if len(honouring) == 1
        else f"rules {names} honour"
    )
    yield where.at_default(
        f"server hints have no ceiling (server_delay: {{max: none}}) and "
        f"{who} them: a server can make a client sleep for a day; set "
        f"server_delay.max (120s is the default)",
        "server_delay",
        "max",
    )
