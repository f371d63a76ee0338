"""
referee: declarative error policies for HTTP API clients.

A policy file says, for one API, what every outcome of a call means —
accept, retry, poll or abort — and referee enforces it.
"""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING, Any

from ._compile import CompiledRule, Policy
from ._decisions import (
    Abort,
    Accept,
    AlertNotice,
    BreakerSpec,
    CallOutcome,
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
from ._memory import MemoryState


if TYPE_CHECKING:
    from ._alerts import Alert
    from ._generic import arun, guard, run
    from ._watch import PolicyWatcher, watch_policy
from ._snapshot import FAILURES, IDEMPOTENT_METHODS, Snapshot
from ._state import AttemptRecord, AttemptState, advance


__all__ = [
    "FAILURES",
    "IDEMPOTENT_METHODS",
    "Abort",
    "Aborted",
    "Accept",
    "Alert",
    "AlertNotice",
    "AttemptRecord",
    "AttemptState",
    "AuthenticationError",
    "BadRequest",
    "BreakerSpec",
    "CallOutcome",
    "CircuitOpen",
    "CompiledRule",
    "DeadlineExceeded",
    "Decision",
    "InsufficientCredits",
    "JobFailed",
    "MemoryState",
    "NotFound",
    "PermissionDenied",
    "Policy",
    "PolicyError",
    "PolicyWatcher",
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
    "arun",
    "bundled_names",
    "decide",
    "guard",
    "load_policy",
    "load_policy_text",
    "register_error",
    "run",
    "watch_policy",
]


# Public names say where users import them from (as httpx does): tracebacks
# read referee.PolicyError, not referee._errors.PolicyError.
for _name in __all__:
    _obj = globals().get(_name)
    if isinstance(_obj, type) or callable(_obj):
        with suppress(AttributeError, TypeError):
            _obj.__module__ = "referee"
del _name, _obj


# The drivers (and structlog) load on first use, so that importing the pure
# core imports no logging or HTTP library.
_LAZY = {
    "run": "_generic",
    "arun": "_generic",
    "guard": "_generic",
    "Alert": "_alerts",
    "PolicyWatcher": "_watch",
    "watch_policy": "_watch",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(f"referee.{_LAZY[name]}"), name)
        value.__module__ = "referee"
        globals()[name] = value
        return value
    if name == "__version__":
        from importlib.metadata import version

        return version("referee")
    msg = f"module 'referee' has no attribute {name!r}"
    raise AttributeError(msg)
