"""
Everything referee raises.

The tree::

    RefereeError                base of everything referee raises
    ├── PolicyError             a policy file is wrong (load time)
    └── Aborted                 the policy made an outcome an error (run time)
        ├── AuthenticationError 401 and the like: wrong credentials
        ├── PermissionDenied    403 and the like: valid, but not allowed
        ├── InsufficientCredits 402, quota or balance exhausted
        ├── RateLimited         429 that is not (or no longer) retried
        ├── BadRequest          400 and the like: the request is wrong
        ├── NotFound            404, unknown ids
        ├── JobFailed           an asynchronous job reports failure
        ├── ServerError         5xx that is not (or no longer) retried
        ├── RetriesExhausted    a retry rule ran out of attempts
        ├── DeadlineExceeded    waiting would overrun a deadline
        ├── CircuitOpen         a breaker is open: nothing was sent
        └── NotReplayable       a re-send was wanted, but the request's
                                body was a stream that has been consumed

A policy names its errors by class name (``error: InsufficientCredits``); a
policy file never imports code.  Applications add their own classes with
:func:`register_error` before loading the policies that name them; a policy
file declares its own under ``errors:`` (:func:`declare_error` makes the
class).  A declared class belongs to the policy that declares it, never to
this registry: two policies may each declare their own ``CardError``.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Final

import attrs


if TYPE_CHECKING:
    from collections.abc import Sequence


__all__ = [
    "BUILTIN_ERRORS",
    "Aborted",
    "AuthenticationError",
    "BadRequest",
    "CircuitOpen",
    "DeadlineExceeded",
    "InsufficientCredits",
    "JobFailed",
    "NotFound",
    "NotReplayable",
    "PermissionDenied",
    "PolicyError",
    "Problem",
    "RateLimited",
    "RefereeError",
    "RetriesExhausted",
    "ServerError",
    "declare_error",
    "error_class",
    "register_error",
    "registered_errors",
]


class RefereeError(Exception):
    """
    Base of everything referee raises.
    """


@attrs.frozen
class Problem:
    """
    One thing wrong (or suspicious) in a policy file.

    Attributes:
        file: The file's path or bundled name (``<string>`` when loaded from
            a string).
        line: The 1-based line, where the format gives one.
        path: Where inside the document: ``$.rules[3].when.status``.
        message: What was found, what is allowed, and a suggestion where one
            can be made.
        severity: ``error`` or ``warning``.
    """

    file: str
    line: int | None
    path: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"


class PolicyError(RefereeError):
    """
    A policy file is wrong.

    Every problem found is reported at once; :attr:`problems` holds them in
    document order, and the message lists them one per line as
    ``file:line: path: message``.
    """

    problems: tuple[Problem, ...]

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        n = len(self.problems)
        head = "1 problem" if n == 1 else f"{n} problems"
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{head} in policy:\n{lines}")


class Aborted(RefereeError):
    """
    The policy turned the outcome of a call into an error.

    Attributes:
        rule_id: The rule that decided (None when no rule did, as for a
            breaker that was already open).
        status: The last HTTP status, or None after a transport failure.
        failure: The last transport failure (``connect``, ``timeout``,
            ``read``, ``protocol``), or None.
        response: The last response, in the HTTP client's own type, where
            there was one.
        trail: The attempts of the call, oldest first.
        reason: Why the call was aborted, in words.
        body: The last response's body, up to the policy's body limit, or
            None (no response, or a body that was not read: an event
            stream, or one the deadline left no time to read).
        detail: The API's own error message, found in *body*
            (``error.message``, ``message``, ``detail`` and the like), cut
            to a line; None when the body has none.  It ends the
            exception's text.
        resume_at: For a call a pause the API asked for stopped before it
            sent (``RateLimited`` with ``then: fail``, or
            ``DeadlineExceeded`` when the wait would overrun the
            deadline): when the pause ends, in Unix seconds; else None.
    """

    rule_id: str | None
    status: int | None
    failure: str | None
    response: Any
    trail: tuple[Any, ...]
    reason: str
    body: bytes | None
    detail: str | None
    resume_at: float | None

    def __init__(
        self,
        reason: str,
        *,
        rule_id: str | None = None,
        status: int | None = None,
        failure: str | None = None,
        response: Any = None,
        trail: Sequence[Any] = (),
        body: bytes | None = None,
        detail: str | None = None,
        resume_at: float | None = None,
    ) -> None:
        self.reason = reason
        self.resume_at = resume_at
        self.rule_id = rule_id
        self.status = status
        self.failure = failure
        self.response = response
        self.trail = tuple(trail)
        self.body = body
        self.detail = detail
        what = failure if status is None else str(status)
        if rule_id is not None and what is not None:
            text = f"{reason} (rule {rule_id!r}, last: {what})"
        elif rule_id is not None:
            text = f"{reason} (rule {rule_id!r})"
        else:
            text = reason
        if detail:
            text = f"{text}; the API said: {detail}"
        super().__init__(text)


class AuthenticationError(Aborted):
    """
    The credentials are missing or wrong (401).
    """


class PermissionDenied(Aborted):
    """
    The credentials are valid but not allowed to do this (403).
    """


class InsufficientCredits(Aborted):
    """
    The account has run out of credits or quota (402, and API-specific forms).
    """


class RateLimited(Aborted):
    """
    The API keeps refusing for rate reasons (429) and the policy gave up.
    """


class BadRequest(Aborted):
    """
    The request itself is wrong (400 and the like): retrying cannot help.
    """


class NotFound(Aborted):
    """
    The resource or job id is unknown (404, or the API's equivalent).
    """


class JobFailed(Aborted):
    """
    An asynchronous job reports that it failed.
    """


class ServerError(Aborted):
    """
    The server failed (5xx) and the policy does not, or no longer, retry.
    """


class RetriesExhausted(Aborted):
    """
    A retry rule ran out of attempts.
    """


class DeadlineExceeded(Aborted):
    """
    Waiting any longer would overrun the call's or the poll's deadline.
    """


class CircuitOpen(Aborted):
    """
    A breaker is open: the call failed fast and nothing was sent.
    """


class NotReplayable(Aborted):
    """
    A rule wanted the request sent again, but its body cannot be: a
    generator or an iterator that the first send consumed.  Bytes, strings
    and seekable files (rewound) can always be re-sent.
    """


BUILTIN_ERRORS: Final[tuple[type[Aborted], ...]] = (
    Aborted,
    AuthenticationError,
    PermissionDenied,
    InsufficientCredits,
    RateLimited,
    BadRequest,
    NotFound,
    JobFailed,
    ServerError,
    RetriesExhausted,
    DeadlineExceeded,
    CircuitOpen,
    NotReplayable,
)

_REGISTRY: dict[str, type[Aborted]] = {c.__name__: c for c in BUILTIN_ERRORS}


def register_error(cls: type[Aborted], name: str | None = None) -> None:
    """
    Let policies name *cls* in ``error:``.

    Args:
        cls: A subclass of :class:`Aborted`.
        name: The name policies use; the class's own name by default.

    Raises:
        TypeError: *cls* is not a subclass of :class:`Aborted`.
        ValueError: The name is taken by another class.
    """
    candidate: object = cls  # callers without a type checker pass anything
    if not (isinstance(candidate, type) and issubclass(candidate, Aborted)):
        msg = (
            f"register_error() takes a subclass of referee.Aborted, "
            f"got {cls!r}"
        )
        raise TypeError(msg)
    key = cls.__name__ if name is None else name
    taken = _REGISTRY.get(key)
    if taken is not None and taken is not cls:
        msg = (
            f"the error name {key!r} is already registered for "
            f"{taken.__module__}.{taken.__qualname__}; pass name= to "
            f"register {cls.__qualname__} under another name"
        )
        raise ValueError(msg)
    _REGISTRY[key] = cls


def error_class(name: str) -> type[Aborted] | None:
    """
    The error class policies call *name*, or None.
    """
    return _REGISTRY.get(name)


def registered_errors() -> list[str]:
    """
    The names policies may use in ``error:``, sorted.
    """
    return sorted(_REGISTRY)


#: Declared classes, by where and how they were declared: loading the same
#: declaration again (a second load, a live reload) gives the same class,
#: so an ``except`` written against the first load still catches.
_DECLARED: weakref.WeakValueDictionary[
    tuple[str, str, str, type[Aborted], str | None], type[Aborted]
] = weakref.WeakValueDictionary()


def declare_error(
    name: str,
    base: type[Aborted],
    *,
    policy: str,
    source: str,
    description: str | None = None,
) -> type[Aborted]:
    """
    The error class a policy file declares under ``errors:``.

    The class is a subclass of *base*, named *name*, documented by
    *description*; it is not registered: only the policy that declares it
    (and the policies that extend that one) can name it.

    Args:
        name: The class name (the loader has checked it).
        base: The class it extends.
        policy: The declaring policy's name (the class's ``policy``).
        source: The declaring file (or bundled name).
        description: What the error means, for its docstring.
    """
    key = (source, policy, name, base, description)
    found = _DECLARED.get(key)
    if found is not None:
        return found
    cls = type(
        name,
        (base,),
        {
            "__doc__": description or f"{name}, declared by policy {policy}.",
            "__module__": "referee.declared",
            "__qualname__": name,
            "policy": policy,
        },
    )
    _DECLARED[key] = cls
    return cls
