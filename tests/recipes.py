"""
The recipes of the SDK pages (docs/sdks/*.md), as the tests run them: a
page's ```python block is compiled and run as it is written, and the names
it defines (the functions that build the SDK's client) are what the tests
call.  So the code a page shows is the code under test.
"""

from __future__ import annotations

from typing import Any

from tests.test_sdk_docs import SDKS, blocks


def recipe(page: str, index: int = 0) -> dict[str, Any]:
    """
    The names the *index*-th Python block of docs/sdks/*page* defines.
    """
    code = blocks(page, "python")[index]
    names: dict[str, Any] = {"__name__": f"docs.sdks.{page}"}
    exec(compile(code, str(SDKS / page), "exec"), names)  # noqa: S102 - the docs' own code
    return names


def policy_block(page: str, name: str) -> str:
    """
    The ```yaml block of docs/sdks/*page* that defines the policy *name*.
    """
    (text,) = (
        b for b in blocks(page, "yaml") if b.startswith(f"policy: {name}\n")
    )
    return text
