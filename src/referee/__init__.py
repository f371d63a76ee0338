"""
referee: declarative error policies for HTTP API clients.

A policy file says, for one API, what every outcome of a call means —
accept, retry, poll or abort — and referee enforces it.
"""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING, Any

from ._core.compile import CompiledRule, Policy
from ._core.decisions import (
    Abort,
    Accept,
    AlertNotice,
    BreakerSpec,
    Decision,
    Poll,
    PollRequest,
    Retry,
)
from ._core.engine import decide
from ._core.errors import (
    Aborted,
    AuthenticationError,
    BadRequest,
    CircuitOpen,
    DeadlineExceeded,
    InsufficientCredits,
    JobFailed,
    NotFound,
    NotReplayable,
    PermissionDenied,
    PolicyError,
    Problem,
    RateLimited,
    RefereeError,
    RetriesExhausted,
    ServerError,
    register_error,
)
from ._core.redact import Redaction
from ._core.snapshot import FAILURES, IDEMPOTENT_METHODS, Snapshot
from ._core.state import AttemptRecord, AttemptState, CallOutcome, advance
from ._run.memory import MemoryState


if TYPE_CHECKING:
    from ._files.load import bundled_names, load_policy, load_policy_text
    from ._files.watch import PolicyWatcher, watch_policy
    from ._run.alerts import Alert, flush_alerts
    from ._run.generic import arun, guard, run
    from ._run.hooks import (
        BreakerEvent,
        DecisionEvent,
        DecisionHook,
        add_hook,
        hooks,
        remove_hook,
    )
    from ._run.stateio import flush_state


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
    "BreakerEvent",
    "BreakerSpec",
    "CallOutcome",
    "CircuitOpen",
    "CompiledRule",
    "DeadlineExceeded",
    "Decision",
    "DecisionEvent",
    "DecisionHook",
    "InsufficientCredits",
    "JobFailed",
    "MemoryState",
    "NotFound",
    "NotReplayable",
    "PermissionDenied",
    "Policy",
    "PolicyError",
    "PolicyWatcher",
    "Poll",
    "PollRequest",
    "Problem",
    "RateLimited",
    "Redaction",
    "RefereeError",
    "RetriesExhausted",
    "Retry",
    "ServerError",
    "Snapshot",
    "add_hook",
    "advance",
    "arun",
    "bundled_names",
    "decide",
    "flush_alerts",
    "flush_state",
    "guard",
    "hooks",
    "load_policy",
    "load_policy_text",
    "register_error",
    "remove_hook",
    "run",
    "watch_policy",
]


# Public names say where users import them from (as httpx does): tracebacks
# read referee.PolicyError, not referee._core.errors.PolicyError.
for _name in __all__:
    _obj = globals().get(_name)
    if isinstance(_obj, type) or callable(_obj):
        with suppress(AttributeError, TypeError):
            _obj.__module__ = "referee"
del _name, _obj


# The loader (yaml, cattrs), the runners and structlog load on first use,
# so that importing the pure core imports none of them.
_LAZY = {
    "BreakerEvent": "_run.hooks",
    "DecisionEvent": "_run.hooks",
    "DecisionHook": "_run.hooks",
    "add_hook": "_run.hooks",
    "hooks": "_run.hooks",
    "remove_hook": "_run.hooks",
    "bundled_names": "_files.load",
    "load_policy": "_files.load",
    "load_policy_text": "_files.load",
    "run": "_run.generic",
    "arun": "_run.generic",
    "guard": "_run.generic",
    "Alert": "_run.alerts",
    "flush_alerts": "_run.alerts",
    "flush_state": "_run.stateio",
    "PolicyWatcher": "_files.watch",
    "watch_policy": "_files.watch",
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
