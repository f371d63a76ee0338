"""
The chaos soak (soak/), at CI size: every invariant holds over 600 calls.

Each session draws a fresh seed (tests/conftest.py prints it in the header
and the summary; every failure message names it); ``REFEREE_SOAK_SEED=N``
replays seed N.  The full run is ``python -m soak --calls 10000`` (see
soak/README.md).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

import referee
from referee.httpx import AsyncPolicyTransport


ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import soak  # noqa: E402
from soak.server import FAULTS, FaultServer, serve  # noqa: E402


CALLS = 600


@pytest.fixture(scope="module")
def report(soak_seed: int) -> dict[str, Any]:
    print(f"soak seed: {soak_seed}")  # noqa: T201 - shown with a failure
    return soak.run(seed=soak_seed, calls=CALLS)


def _why(report: dict[str, Any], detail: object = None) -> str:
    """
    A failure message that names the seed, so the run can be replayed.
    """
    seed = report["seed"]
    text = (
        f"soak seed {seed} (replay: REFEREE_SOAK_SEED={seed}, or python -m "
        f"soak --seed {seed} --calls {report['calls']})"
    )
    return text if detail is None else f"{text}: {detail}"


class TestSoak:
    @pytest.mark.parametrize(
        "check",
        [
            "every call ended",
            "no foreign exception",
            "attempts <= 4",
            "no duplicate execution",
            "no fd leak",
            "memory growth <= 64 MiB",
        ],
        ids=lambda c: c.replace(" ", "-"),
    )
    def test_invariant_holds(self, report, check):
        """The named invariant holds over the whole run."""
        assert True is report["checks"][check], _why(
            report, report["violations"]
        )

    def test_no_overrun(self, report):
        """No call outlives its deadline by more than one timeout + margin."""
        overrun = [k for k in report["checks"] if k.startswith("overrun")]

        assert [True] == [report["checks"][k] for k in overrun], _why(
            report, f"max overrun {report['max_overrun_seconds']}s"
        )

    def test_all_ok(self, report):
        """The report's verdict is ok and lists no violation."""
        assert (True, []) == (report["ok"], report["violations"]), _why(
            report, report["checks"]
        )

    def test_every_call_ends(self, report):
        """Every call is counted once among the outcomes."""
        assert CALLS == sum(report["outcomes"].values()), _why(
            report, report["outcomes"]
        )

    def test_figures(self, report):
        """Duplicates, hangs and fd leaks are zero, attempts in the bound."""
        assert (0, 0, 0) == (
            report["duplicate_executions"],
            report["hangs"],
            report["fd_leaks"],
        ), _why(report, report["violations"])
        assert report["max_attempts"] <= report["attempts_bound"], _why(report)

    @pytest.mark.parametrize("kind", [*FAULTS, "402"], ids=str)
    def test_fault_injected(self, report, kind):
        """Each fault kind is injected at least once."""
        assert report["faults"].get(kind, 0) >= 1, _why(
            report, report["faults"]
        )

    def test_some_calls_succeed(self, report):
        """The faults leave most calls ending well."""
        assert report["outcomes"].get("ok", 0) > CALLS // 2, _why(
            report, report["outcomes"]
        )


class TestMain:
    def test_writes_json_and_exits_zero(self, tmp_path, capsys):
        """main() prints the table, writes the JSON and returns 0."""
        out = tmp_path / "soak.json"

        code = soak.main(["--calls", "60", "--seed", "1", "--json", str(out)])

        assert 0 == code
        assert "invariants" in capsys.readouterr().out
        assert out.read_text().startswith("{")


class TestAbortedResponseReleasesConnection:
    def test_pool_connection_returns_after_abort(self):
        """A 402 abort gives its connection back: the next call gets one."""

        async def scenario() -> int:
            listener = await serve(
                FaultServer(0, credits=0, dry=10**6, faults={})
            )
            port = listener.sockets[0].getsockname()[1]
            transport = AsyncPolicyTransport(
                referee.load_policy_text(soak.POLICY),
                transport=httpx.AsyncHTTPTransport(
                    limits=httpx.Limits(max_connections=1)
                ),
            )
            base = f"http://127.0.0.1:{port}"
            held = []
            try:
                async with httpx.AsyncClient(
                    transport=transport, base_url=base, timeout=1.0
                ) as client:
                    try:
                        await client.post("/orders", content=b"{}")
                    except referee.InsufficientCredits as exc:
                        held.append(exc)  # the caller keeps the error
                    response = await client.get("/items/1")
                    return response.status_code
            finally:
                listener.close()
                await listener.wait_closed()

        assert 200 == asyncio.run(scenario())
