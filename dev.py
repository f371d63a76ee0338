#!/usr/bin/env python3
"""
Set up and run referee from a fresh clone, with nothing but Python 3.

    python3 dev.py test        # lint, type-check and run the test suite
    python3 dev.py docs        # regenerate the generated parts of docs/
    python3 dev.py explain ... # run the referee CLI (any subcommand)
    python3 dev.py bench ...   # run the benchmarks

The first run makes ``.venv`` and installs referee (editable) with its
development dependencies and the vendor SDKs its recipes are tested with
(the `sdks` group); later runs reuse it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path


ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".referee-installed"


def _run(*cmd: str | Path) -> int:
    return subprocess.call([str(c) for c in cmd], cwd=ROOT)


def _setup() -> None:
    py = BIN / "python"
    if not py.exists():
        print("dev.py: creating .venv", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    spec = ROOT / "pyproject.toml"
    if STAMP.exists() and STAMP.stat().st_mtime >= spec.stat().st_mtime:
        return
    print("dev.py: installing referee and its development tools", flush=True)
    quiet = "-q"
    if _run(py, "-m", "pip", "install", quiet, "--upgrade", "pip") != 0:
        sys.exit("dev.py: could not upgrade pip")
    if (
        _run(
            py,
            "-m",
            "pip",
            "install",
            quiet,
            "-e",
            ".[httpx,httpx2,requests,aiohttp,redis]",
            "--group",
            "dev",
            "--group",
            "sdks",
        )
        != 0
    ):
        sys.exit("dev.py: could not install referee")
    STAMP.touch()


def _test(args: list[str]) -> int:
    # Material for MkDocs prints a banner about MkDocs 2.0 on every build.
    os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")
    with tempfile.TemporaryDirectory(prefix="referee-site-") as site:
        steps: list[tuple[str, list[str | Path]]] = [
            ("ruff check", [BIN / "ruff", "check", "."]),
            ("ruff format", [BIN / "ruff", "format", "--check", "."]),
            ("mypy --strict", [BIN / "mypy"]),
            # The layers of DESIGN.md §3 ([tool.importlinter]).
            ("lint-imports", [BIN / "lint-imports"]),
            ("pytest", [BIN / "pytest", *args]),
            # The docs site, warnings as errors (broken links included).
            (
                "mkdocs build --strict",
                [BIN / "mkdocs", "build", "--strict", "--site-dir", site],
            ),
        ]
        for name, cmd in steps:
            print(f"dev.py: {name}", flush=True)
            code = _run(*cmd)
            if code != 0:
                print(f"dev.py: {name} failed (exit {code})", flush=True)
                return code
    return 0


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    command, args = sys.argv[1], sys.argv[2:]
    _setup()
    if command == "test":
        return _test(args)
    if command == "docs":
        # docs/reference.md, docs/policies.md and docs/changelog.md: the
        # regions between their markers (referee._tools.docs).
        return _run(BIN / "python", "-m", "referee._tools.docs", *args)
    if command == "bench":
        return _run(BIN / "python", "-m", "benchmarks", *args)
    return _run(BIN / "referee", command, *args)


if __name__ == "__main__":
    raise SystemExit(main())
