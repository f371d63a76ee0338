"""
The public surface: what `import referee` offers, and nothing by accident.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

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
    "Redaction",
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


class TestOneLibraryEnough:
    @pytest.mark.parametrize(
        ("module", "other", "lib"),
        [
            ("referee.httpx2", "httpx", "httpx2"),
            ("referee.httpx", "httpx2", "httpx"),
        ],
        ids=["httpx2-without-httpx", "httpx-without-httpx2"],
    )
    def test_adapter_needs_only_its_library(self, module, other, lib):
        """
        referee.httpx2 works with httpx absent, referee.httpx with httpx2
        absent (a user may have only one): in a fresh interpreter where
        importing the other library fails, the module imports, its
        transport builds its default inner transport, and the other
        library was never imported.
        """
        code = (
            "import sys\n"
            f"sys.modules[{other!r}] = None  # import {other} fails\n"
            f"import {lib}, {module} as m, referee\n"
            "t = m.PolicyTransport(referee.load_policy('http-default'))\n"
            "a = m.AsyncPolicyTransport(referee.load_policy('http-default'))\n"
            f"assert isinstance(t.transport, {lib}.HTTPTransport)\n"
            f"assert isinstance(a.transport, {lib}.AsyncHTTPTransport)\n"
            f"print(sys.modules[{other!r}])\n"
        )
        proc = subprocess.run(  # noqa: S603 - our own interpreter
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

        assert 0 == proc.returncode, proc.stderr
        assert "None" == proc.stdout.strip()


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """
    A wheel of this checkout, built as pip builds it for an install.
    """
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(  # noqa: S603 - our own interpreter, our own tree
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(out),
            str(ROOT),
        ],
        check=True,
        timeout=240,
    )
    (found,) = out.glob("referee-*.whl")
    return found


class TestWheel:
    def test_ships_every_bundled_policy(self, wheel):
        """
        The wheel carries policies/ (kept at the top of the repository) as
        referee/policies, with the package's typing marker and schema.
        """
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
        shipped = {
            n.removeprefix("referee/policies/")
            for n in names
            if n.startswith("referee/policies/")
        }

        assert {p.name for p in (ROOT / "policies").glob("*.yaml")} == shipped
        assert {"referee/py.typed", "referee/policy.schema.json"} <= names

    def test_loads_a_policy_by_name_once_installed(self, wheel, tmp_path):
        """
        Installed from the wheel (not this checkout), load_policy("enrow")
        finds the bundled policy.
        """
        site = tmp_path / "site"
        subprocess.run(  # noqa: S603 - our own interpreter
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                str(site),
                str(wheel),
            ],
            check=True,
            timeout=120,
        )
        code = (
            "import referee\n"
            "print(referee.__file__)\n"
            "print(referee.load_policy('enrow').name)\n"
        )
        proc = subprocess.run(  # noqa: S603 - our own interpreter
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(site)},
            cwd=tmp_path,
        )
        where, name = proc.stdout.split()

        assert Path(where).is_relative_to(site)
        assert "enrow" == name

    def test_pytest_plugin_entry_point(self, wheel, tmp_path):
        """
        The wheel declares the pytest plugin under pytest11; installed,
        pytest loads it unasked and its fixtures serve a test.
        """
        site = tmp_path / "site"
        subprocess.run(  # noqa: S603 - our own interpreter
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                str(site),
                str(wheel),
            ],
            check=True,
            timeout=120,
        )
        (dist,) = metadata.distributions(path=[str(site)])
        (ep,) = dist.entry_points.select(group="pytest11")
        (tmp_path / "test_inner.py").write_text(
            "def test_fixtures(referee_no_sleep, referee_alerts,"
            " referee_server):\n"
            "    assert [] == referee_no_sleep.delays\n"
            "    assert [] == referee_alerts.alerts\n"
            "    assert referee_server.url('/').startswith('http://127.')\n"
        )
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(site)},
            cwd=tmp_path,
        )

        assert ("referee", "referee.pytest_plugin") == (ep.name, ep.value)
        assert 0 == proc.returncode, proc.stdout + proc.stderr
        assert "1 passed" in proc.stdout
