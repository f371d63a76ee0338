"""
The policy's index: for every status (or failure word) its candidate
rules, a :class:`Bucket` that decides with them through the function
:mod:`.codegen` generates for it.

Rule 1: a bucket holds the candidates in policy order; its function
decides as :func:`try_rules`, the interpreted matcher, does.
Rule 2: ``not bucket`` is the whole test for "no rule can match": a
bucket is a tuple, so that the runners' fast path costs one ``dict.get``
and a length.

(The rules are typed ``Any`` here: :mod:`.compile` defines them and
imports this module; a type-only import back would be a cycle.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Self

from .codegen import MAX_RULES, Generated, generate
from .matchers import Context


if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


__all__ = [
    "SPLIT_BY_METHOD",
    "Bucket",
    "Candidates",
    "Index",
    "build_index",
    "try_rules",
]

#: A key with more candidates than this is split by method.
SPLIT_BY_METHOD: Final = 4

Candidates = tuple[Any, ...]


# A tuple subclass cannot have non-empty slots: the instance dict holds
# the settings and, once generated, `run`.
class Bucket(tuple[Any, ...]):  # noqa: SLOT001
    """
    The candidates for one status (or failure word): a tuple of rules, in
    order, which also decides with them.

    :meth:`run` generates the bucket's function (:mod:`.codegen`) on the
    first decision and then is that function: ``run(policy, snap, state,
    now, rng, act)`` returns *act*'s decision for the first rule that
    matches, or None.  A bucket split by method dispatches on the
    request's method to the bucket of that method (*by_method*, None for
    the rest).  A bucket is a tuple so that ``not bucket`` (no candidates:
    the runners' fast path) costs what it did.
    """

    # `run`, once generated, sits in the instance dict and shadows the
    # method below.
    body_limit: int
    by_method: dict[str | None, Bucket] | None
    label: str
    needs_body: bool
    reads_events: bool
    only_events: bool

    def __new__(
        cls,
        rules: Sequence[Any],
        body_limit: int,
        label: str,
        by_method: dict[str | None, Bucket] | None = None,
    ) -> Self:
        self = super().__new__(cls, rules)
        self.body_limit = body_limit
        self.label = label
        self.by_method = by_method
        #: Whether a candidate may read the body, whether one opts in to
        #: reading an event stream, and whether every one that reads a
        #: body can match an event stream only (then no other body is
        #: read): what the flow asks before deciding.
        self.needs_body = any(r.needs_body for r in self)
        self.reads_events = any(r.reads_events for r in self)
        self.only_events = all(r.only_events for r in self if r.needs_body)
        return self

    @property
    def rules(self) -> Candidates:
        """
        The candidates as a plain tuple.
        """
        return tuple(self)

    def candidates(self, method: str | None) -> Bucket:
        """
        The candidates for a request with *method* (a bucket: a tuple).
        """
        split = self.by_method
        if split is None:
            return self
        return split.get(method) or split[None]

    def run(
        self,
        policy: Any,
        snap: Any,
        state: Any,
        now: float,
        rng: Any,
        act: Callable[..., Any],
    ) -> Any:
        """
        Decide with these candidates: the first call generates the
        function (a race makes it twice, harmlessly) and keeps it.
        """
        fn = self.generated().fn
        return fn(policy, snap, state, now, rng, act)

    def generated(self) -> Generated:
        """
        The generated function and its source.
        """
        made: Generated | None = self.__dict__.get("_generated")
        if made is not None:
            return made
        split = self.by_method
        if split is not None:
            made = _dispatcher(split, self.label)
        elif len(self) > MAX_RULES:
            made = Generated(_interpreter(tuple(self)), "(interpreted)")
        else:
            made = generate(tuple(self), self.body_limit, self.label)
        self.__dict__["_generated"] = made
        self.__dict__["run"] = made.fn
        return made

    @property
    def source(self) -> str:
        """
        The generated source (for a bucket split by method, each
        method's too), for reading and debugging.
        """
        own = self.generated().source
        if self.by_method is None:
            return own
        subs = [
            f"# method {m!r}\n{b.source}" for m, b in self.by_method.items()
        ]
        return "\n".join([own, *subs])

    def __repr__(self) -> str:
        return f"Bucket({self.label}: {[r.id for r in self]!r})"


def _dispatcher(split: dict[str | None, Bucket], label: str) -> Generated:
    rest = split[None]

    def dispatch(
        policy: Any,
        snap: Any,
        state: Any,
        now: float,
        rng: Any,
        act: Callable[..., Any],
    ) -> Any:
        bucket = split.get(snap.method) or rest
        return bucket.run(policy, snap, state, now, rng, act)

    methods = ", ".join(repr(m) for m in split if m is not None)
    return Generated(
        dispatch,
        f"# {label}: by method ({methods}; None for the rest)",
    )


def _interpreter(rules: Candidates) -> Callable[..., Any]:
    """
    For a list too long to generate: the rules tried one by one, as
    :func:`referee._core.engine.interpret` does.
    """

    def interpret(
        policy: Any,
        snap: Any,
        state: Any,
        now: float,
        rng: Any,
        act: Callable[..., Any],
    ) -> Any:
        return try_rules(rules, policy, snap, state, now, rng, act)

    return interpret


def try_rules(
    rules: Candidates,
    policy: Any,
    snap: Any,
    state: Any,
    now: float,
    rng: Any,
    act: Callable[..., Any],
) -> Any:
    """
    The interpreted matcher: *rules* tried in order, each through its
    needle, prefilter and predicate; *act*'s decision for the first that
    matches, or None.  The generated functions must agree with it.
    """
    ctx: Context | None = None
    escaped = None
    for rule in rules:
        needle = rule.needle
        prefilter = rule.prefilter
        if needle is not None or prefilter is not None:
            body = snap.body
            if body is None:
                if ctx is None:
                    ctx = Context(snap, state, policy.body_limit)
                body = ctx.body()
                if body is None:
                    continue
            if (needle is not None and body.find(needle) < 0) or (
                prefilter is not None and not prefilter(body)
            ):
                # The needles are plain ASCII without quotes, slashes or
                # backslashes: JSON can spell them otherwise only with
                # escapes, so a body with a backslash is never skipped.
                if escaped is None:
                    escaped = body.find(b"\\") >= 0
                if not escaped:
                    continue
        test = rule.when.test
        if test is not None:
            if ctx is None:
                ctx = Context(snap, state, policy.body_limit)
            if not test(ctx):
                continue
        return act(policy, rule, snap, state, ctx, now, rng)
    return None


Index = dict[int | str, Bucket]


def build_index(
    rules: Sequence[Any], body_limit: int = 1 << 20
) -> tuple[Index, Bucket]:
    """
    For every status (or failure word) some rule names, the rules that can
    match it, in order; and the rules that name none, for every other key.

    A key with many candidates gets a second level by method: a dict from
    each method some candidate names to its candidates, with the rules that
    name no method under None for every other method.
    """
    named: set[int | str] = set()
    for r in rules:
        if r.when.keys is not None:
            named |= r.when.keys
    lists: dict[int | str, list[Any]] = {k: [] for k in named}
    fallback: list[Any] = []
    for r in rules:
        keys = r.when.keys
        if keys is None:
            fallback.append(r)
            for lst in lists.values():
                lst.append(r)
        else:
            for k in keys:
                lists[k].append(r)
    index: Index = {}
    for k, lst in lists.items():
        index[k] = (
            _by_method(lst, body_limit, str(k))
            if len(lst) > SPLIT_BY_METHOD
            else Bucket(lst, body_limit, str(k))
        )
    return index, Bucket(fallback, body_limit, "fallback")


def _by_method(rules: Sequence[Any], body_limit: int, label: str) -> Bucket:
    methods: set[str] = set()
    for r in rules:
        if r.when.methods is not None:
            methods |= r.when.methods
    if not methods:
        return Bucket(rules, body_limit, label)
    split: dict[str | None, Bucket] = {
        m: Bucket(
            [
                r
                for r in rules
                if r.when.methods is None or m in r.when.methods
            ],
            body_limit,
            f"{label}_{_ident(m)}",
        )
        for m in methods
    }
    split[None] = Bucket(
        [r for r in rules if r.when.methods is None],
        body_limit,
        f"{label}_rest",
    )
    return Bucket(rules, body_limit, label, split)


def _ident(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)
