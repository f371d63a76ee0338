"""
The policies in the docs load: every YAML block of the tutorial and the
cookbook that is a policy document; and the cookbook's `referee simulate`
samples of the bundled vendor policies print what the command prints.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import referee
import referee.cli


DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ("cookbook.md", "tutorial.md")
_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def policy_blocks() -> list[tuple[str, str]]:
    """
    ``(id, text)`` of each ```yaml block of the pages that starts with
    ``policy:``.
    """
    found = []
    for page in PAGES:
        text = (DOCS / page).read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            block = match.group(1)
            if block.startswith("policy:"):
                line = text.count("\n", 0, match.start()) + 2
                found.append((f"{page}:{line}", block))
    return found


BLOCKS = policy_blocks()


class TestDocPolicies:
    def test_pages_have_policies(self):
        """
        Both pages hold policy blocks, so the test below tests something.
        """
        pages = {block_id.split(":")[0] for block_id, _ in BLOCKS}

        assert set(PAGES) == pages

    @pytest.mark.parametrize(
        "text", [t for _, t in BLOCKS], ids=[i for i, _ in BLOCKS]
    )
    def test_policy_loads(self, text):
        """
        The block loads as a policy, with rules of its own.
        """
        policy = referee.load_policy_text(text, source="docs")

        assert policy.rules
        assert text.split()[1] == policy.name


#: A script block of the cookbook: its first line names its file.
_SCRIPT = re.compile(r"^# ([\w.-]+\.yaml): ")
_SAMPLE = re.compile(
    r"^```console\n\$ (referee simulate [^\n]*)\n(.*?)^```",
    re.MULTILINE | re.DOTALL,
)
COOKBOOK = (DOCS / "cookbook.md").read_text(encoding="utf-8")
SAMPLES = _SAMPLE.findall(COOKBOOK)


class TestCookbookSimulations:
    def test_there_are_samples(self):
        """
        The cookbook shows the anthropic, stripe and github policies at
        work, so the test below tests something.
        """
        policies = {shlex.split(command)[2] for command, _ in SAMPLES}

        assert {"anthropic", "stripe", "github"} <= policies

    @pytest.mark.parametrize(
        ("command", "output"),
        SAMPLES,
        ids=[shlex.split(c)[2] for c, _ in SAMPLES],
    )
    def test_sample_is_what_it_prints(
        self, command, output, capsys, tmp_path, monkeypatch
    ):
        """
        The command, run on the scripts the cookbook shows, prints the
        sample exactly.
        """
        for block in _BLOCK.findall(COOKBOOK):
            name = _SCRIPT.match(block)
            if name is not None:
                (tmp_path / name.group(1)).write_text(block, encoding="utf-8")
        monkeypatch.chdir(tmp_path)

        code = referee.cli.main(shlex.split(command)[1:])

        assert (0, output) == (code, capsys.readouterr().out)
