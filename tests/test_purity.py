"""
The core is sans-I/O: it imports no HTTP client or logging library, never
reads the clock or sleeps, and decides the same way twice.
"""

import ast
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

import referee


SRC = Path(referee.__file__).parent

#: Every module of the core: the purity rules hold for each one.
CORE_FILES = sorted(
    p.name for p in (SRC / "_core").glob("*.py") if p.name != "__init__.py"
)
CORE_IMPORTS = [f"referee._core.{name[:-3]}" for name in CORE_FILES]

#: What the core must not pull in: HTTP clients, their transports and
#: socket layers, and the logging library the edge uses.
FORBIDDEN = [
    "aiohttp",
    "anyio",
    "h11",
    "h2",
    "http.client",
    "httpcore",
    "httpcore2",
    "httpx",
    "httpx2",
    "requests",
    "structlog",
    "trio",
    "urllib3",
    "yaml",
    "cattrs",
    "redis",
]

#: Calls that read the clock or sleep, as dotted names.
CLOCK = {
    "time.time",
    "time.time_ns",
    "time.sleep",
    "time.monotonic",
    "time.monotonic_ns",
    "time.perf_counter",
    "time.perf_counter_ns",
    "time.process_time",
    "datetime.now",
    "datetime.utcnow",
    "datetime.today",
    "date.today",
    "datetime.datetime.now",
    "datetime.datetime.utcnow",
    "datetime.date.today",
    "asyncio.sleep",
}


def _dotted(node):
    """
    ``a.b.c`` for an attribute chain on a name, else None.
    """
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _clock_uses(source):
    """
    The clock and sleep calls a module's code names (not its docstrings).
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            name = _dotted(node)
            if name in CLOCK:
                found.append(f"line {node.lineno}: {name}")
        elif isinstance(node, ast.ImportFrom) and node.module in {
            "time",
            "datetime",
            "asyncio",
        }:
            found.extend(
                f"line {node.lineno}: from {node.module} import {alias.name}"
                for alias in node.names
                if f"{node.module}.{alias.name}" in CLOCK
            )
    return found


class TestImports:
    def test_core_imports_no_http_or_logging(self):
        """
        The core modules import no HTTP client, transport or structlog.
        """
        code = (
            "import json, sys\n"
            f"for m in {CORE_IMPORTS!r}:\n"
            "    __import__(m)\n"
            f"print(json.dumps(sorted(m for m in {FORBIDDEN!r} "
            "if m in sys.modules)))\n"
        )
        proc = subprocess.run(  # noqa: S603 - our own interpreter
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

        assert [] == json.loads(proc.stdout)

    def test_forbidden_names_are_detected(self):
        """
        The check above would notice a forbidden module (it is not vacuous).
        """
        code = (
            "import json, sys, http.client\n"
            f"print(json.dumps(sorted(m for m in {FORBIDDEN!r} "
            "if m in sys.modules)))\n"
        )
        proc = subprocess.run(  # noqa: S603 - our own interpreter
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

        assert ["http.client"] == json.loads(proc.stdout)


class TestNoClock:
    @pytest.mark.parametrize("name", CORE_FILES, ids=CORE_FILES)
    def test_no_clock_in_source(self, name):
        """
        The core module neither reads the clock nor sleeps.
        """
        source = (SRC / "_core" / name).read_text(encoding="utf-8")

        assert [] == _clock_uses(source)

    @pytest.mark.parametrize(
        "source",
        [
            "import time\ntime.sleep(1)\n",
            "from time import monotonic\n",
            "import datetime\ndatetime.datetime.now()\n",
            "from datetime import datetime\ndatetime.now()\n",
        ],
        ids=[
            "time.sleep",
            "from-time",
            "datetime.datetime.now",
            "datetime.now",
        ],
    )
    def test_scanner_finds_clock_calls(self, source):
        """
        The scanner is not vacuous: it finds each kind of clock call.
        """
        assert _clock_uses(source)

    def test_decide_never_touches_the_clock(self, monkeypatch):
        """
        decide runs with every clock and sleep function booby-trapped.
        """

        def trap(*args, **kwargs):
            msg = "the core read the clock"
            raise AssertionError(msg)

        for fn in ("time", "time_ns", "monotonic", "perf_counter", "sleep"):
            monkeypatch.setattr(time, fn, trap)
        decisions = [
            referee.decide(
                policy, snap, state, now=1.7e9, rng=random.Random(0)
            )
            for policy in POLICIES
            for snap in SNAPSHOTS
            for state in STATES
        ]

        assert len(POLICIES) * len(SNAPSHOTS) * len(STATES) == len(decisions)


POLICIES = [referee.load_policy(name) for name in referee.bundled_names()]

SNAPSHOTS = [
    referee.Snapshot.response(200),
    referee.Snapshot.response(
        200,
        body=b'{"qualification": "ongoing", "general": {"status": "ongoing"}}',
    ),
    referee.Snapshot.response(202, body=b'{"qualification": "ongoing"}'),
    referee.Snapshot.response(402, body=b'{"reason": "Insufficient credits"}'),
    referee.Snapshot.response(429),
    referee.Snapshot.response(429, headers={"Retry-After": "3"}),
    referee.Snapshot.response(
        429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}
    ),
    referee.Snapshot.response(429, headers={"RateLimit": '"d";r=0;t=4'}),
    referee.Snapshot.response(503, method="POST"),
    referee.Snapshot.response(503, body=b"\xff not json"),
    referee.Snapshot.failed("connect", method="POST"),
    referee.Snapshot.failed("timeout"),
]

STATES = [
    referee.AttemptState(started=1.7e9),
    referee.AttemptState(attempt=2, started=1.7e9 - 10),
    referee.AttemptState(polls=3, started=1.7e9 - 60, poll_started=1.7e9 - 30),
]


class TestDeterminism:
    @pytest.mark.parametrize(
        "policy", POLICIES, ids=[p.name for p in POLICIES]
    )
    def test_same_inputs_same_decision(self, policy):
        """
        Equal inputs and seeds give equal decisions.
        """
        for snap in SNAPSHOTS:
            for state in STATES:
                first = referee.decide(
                    policy, snap, state, now=1.7e9, rng=random.Random(42)
                )
                second = referee.decide(
                    policy, snap, state, now=1.7e9, rng=random.Random(42)
                )

                assert first == second
                assert first.reason == second.reason

    def test_jitter_comes_from_the_rng(self):
        """
        With full jitter, the delay depends on the seed and nothing else.
        """
        policy = referee.load_policy("http-default")
        snap = referee.Snapshot.response(503)
        state = referee.AttemptState(attempt=2)
        delays = {
            seed: {
                referee.decide(
                    policy, snap, state, now=0.0, rng=random.Random(seed)
                ).delay
                for _ in range(3)
            }
            for seed in range(5)
        }

        assert all(len(d) == 1 for d in delays.values())
        assert len({d.pop() for d in delays.values()}) > 1

    def test_inputs_are_not_changed(self):
        """
        decide leaves the snapshot and the state as they were.
        """
        policy = referee.load_policy("http-default")
        for snap in SNAPSHOTS:
            for state in STATES:
                before = (repr(snap), repr(state))
                referee.decide(
                    policy, snap, state, now=1.7e9, rng=random.Random(1)
                )

                assert before == (repr(snap), repr(state))
