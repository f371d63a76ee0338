"""
referee: declarative error policies for HTTP API clients.

A policy file says, for one API, what every outcome of a call means —
accept, retry, poll or abort — and referee enforces it.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from ._compile import CompiledRule, Policy
from ._decisions import (
    Abort,
    Accept,
    AlertNotice,
    BreakerSpec,
    Decision,
    Poll,
    PollRequest,
    Retry,
)
from ._engine import decide
from ._errors import (
    Aborted,
    AuthenticationError,
    BadRequest,
    CircuitOpen,
    DeadlineExceeded,
    InsufficientCredits,
    JobFailed,
    NotFound,
    PermissionDenied,
    PolicyError,
    Problem,
    RateLimited,
    RefereeError,
    RetriesExhausted,
    ServerError,
    register_error,
)
from ._load import bundled_names, load_policy, load_policy_text
from ._snapshot import FAILURES, IDEMPOTENT_METHODS, Snapshot
from ._state import AttemptRecord, AttemptState, advance


__all__ = [
    "FAILURES",
    "IDEMPOTENT_METHODS",
    "Abort",
    "Aborted",
    "Accept",
    "AlertNotice",
    "AttemptRecord",
    "AttemptState",
    "AuthenticationError",
    "BadRequest",
    "BreakerSpec",
    "CircuitOpen",
    "CompiledRule",
    "DeadlineExceeded",
    "Decision",
    "InsufficientCredits",
    "JobFailed",
    "NotFound",
    "PermissionDenied",
    "Policy",
    "PolicyError",
    "Poll",
    "PollRequest",
    "Problem",
    "RateLimited",
    "RefereeError",
    "RetriesExhausted",
    "Retry",
    "ServerError",
    "Snapshot",
    "advance",
    "bundled_names",
    "decide",
    "load_policy",
    "load_policy_text",
    "register_error",
]


# Public names say where users import them from (as httpx does): tracebacks
# read referee.PolicyError, not referee._errors.PolicyError.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) or callable(_obj):
        with suppress(AttributeError, TypeError):
            _obj.__module__ = "referee"
del _name, _obj


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version

        return version("referee")
    msg = f"module 'referee' has no attribute {name!r}"
    raise AttributeError(msg)
