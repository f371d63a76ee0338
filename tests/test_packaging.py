"""
The public surface: what `import referee` offers, and nothing by accident.
"""

from __future__ import annotations

from importlib import metadata

import referee


EXPECTED_API = [
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
    "RefereeError",
    "Retry",
    "RetriesExhausted",
    "ServerError",
    "Snapshot",
    "add_hook",
    "advance",
    "arun",
    "bundled_names",
    "decide",
    "guard",
    "hooks",
    "load_policy",
    "load_policy_text",
    "register_error",
    "remove_hook",
    "run",
    "watch_policy",
]


class TestPublicAPI:
    def test_all_is_pinned(self):
        """
        The public API is exactly what we documented.
        """
        assert sorted(EXPECTED_API) == sorted(referee.__all__)

    def test_names_resolve(self):
        """
        Every name in __all__ is importable from referee.
        """
        for name in referee.__all__:
            assert getattr(referee, name) is not None

    def test_public_classes_say_referee(self):
        """
        Public classes report referee as their module, as tracebacks show.
        """
        assert "referee" == referee.PolicyError.__module__
        assert "referee" == referee.InsufficientCredits.__module__

    def test_version(self):
        """
        referee.__version__ is the installed distribution's version.
        """
        assert metadata.version("referee") == referee.__version__

    def test_errors_share_one_base(self):
        """
        Everything referee raises derives from RefereeError; run-time
        outcomes from Aborted.
        """
        for cls in (
            referee.AuthenticationError,
            referee.PermissionDenied,
            referee.InsufficientCredits,
            referee.RateLimited,
            referee.BadRequest,
            referee.NotFound,
            referee.JobFailed,
            referee.ServerError,
            referee.RetriesExhausted,
            referee.DeadlineExceeded,
            referee.CircuitOpen,
        ):
            assert issubclass(cls, referee.Aborted)
        assert issubclass(referee.Aborted, referee.RefereeError)
        assert issubclass(referee.PolicyError, referee.RefereeError)

    def test_bundled_policies_ship_in_the_package(self):
        """
        The bundled policies are package data, loadable by name.
        """
        assert {"http-default", "enrow", "experian-phone"} <= set(
            referee.bundled_names()
        )
        for name in referee.bundled_names():
            assert name == referee.load_policy(name).name
