"""
The policies in the docs load: every YAML block of the tutorial and the
cookbook that is a policy document.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import referee


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
