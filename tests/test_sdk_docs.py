"""
The SDK pages' code runs: every ```python block of docs/sdks/*.md is run
as it is written, with the SDK pointed at a loopback fake through the
SDK's own environment variables (``OPENAI_BASE_URL`` and the like), and
prints what the fake answered.  Every ```yaml policy block loads.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from tests.contract_servers import Drip, DripServer
from tests.server import Reply

import referee


if TYPE_CHECKING:
    from collections.abc import Iterator


SDKS = Path(__file__).resolve().parent.parent / "docs" / "sdks"
_BLOCK = re.compile(r"^```(python|yaml)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(page: str, kind: str) -> list[str]:
    text = (SDKS / page).read_text(encoding="utf-8")
    return [m.group(2) for m in _BLOCK.finditer(text) if m.group(1) == kind]


def sse(*datas: object, event: str | None = None) -> tuple[bytes, ...]:
    head = f"event: {event}\n" if event else ""
    return tuple(
        f"{head}data: {d if isinstance(d, str) else json.dumps(d)}\n\n".encode()
        for d in datas
    )


@pytest.fixture
def server() -> Iterator[DripServer]:
    with DripServer() as srv:
        yield srv


def run(code: str) -> None:
    exec(compile(code, "<docs>", "exec"), {"__name__": "__docs__"})  # noqa: S102 - the docs' own code


def openai_chunk(text: str) -> dict[str, object]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": 0, "delta": {"content": text}, "finish_reason": None}
        ],
    }


class TestOpenAI:
    @pytest.fixture(autouse=True)
    def env(self, server, monkeypatch):
        pytest.importorskip("openai")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", server.url("/v1"))

    def test_sync(self, server, capsys):
        sync, _ = blocks("openai.md", "python")
        server.script(
            "/v1/chat/completions",
            [
                Reply(
                    200,
                    body={
                        "id": "c",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "m",
                        "choices": [
                            {
                                "index": 0,
                                "message": {
                                    "role": "assistant",
                                    "content": "hello",
                                },
                                "finish_reason": "stop",
                            }
                        ],
                    },
                )
            ],
        )

        run(sync)

        assert "hello\n" == capsys.readouterr().out

    def test_async_stream(self, server, capsys):
        _, streaming = blocks("openai.md", "python")
        chunks = (
            *sse(openai_chunk("hel"), openai_chunk("lo")),
            b"data: [DONE]\n\n",
        )
        server.script(
            "/v1/chat/completions",
            [Drip(200, {"Content-Type": "text/event-stream"}, chunks)],
        )

        run(streaming)

        assert "hello\n" == capsys.readouterr().out


class TestAnthropic:
    def test_stream(self, server, monkeypatch, capsys):
        pytest.importorskip("anthropic")
        from tests.test_sdk_anthropic import STREAM

        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url(""))
        (code,) = blocks("anthropic.md", "python")
        server.script(
            "/v1/messages",
            [
                Drip(
                    200,
                    {"Content-Type": "text/event-stream"},
                    STREAM,
                    immediate=len(STREAM),
                )
            ],
        )

        run(code)

        assert "hello\n" == capsys.readouterr().out


@pytest.mark.parametrize(
    "page", sorted(p.name for p in SDKS.glob("*.md")), ids=str
)
def test_policy_blocks_load(page: str) -> None:
    for text in blocks(page, "yaml"):
        if text.startswith("policy:"):
            referee.load_policy_text(text, source=f"docs/sdks/{page}")


def test_every_python_block_is_run() -> None:
    """
    The tests above run every Python block of the pages they cover: a
    block added to a page fails here until a test runs it.
    """
    ran = {"openai.md": 2, "anthropic.md": 1}

    assert ran == {page: len(blocks(page, "python")) for page in ran}
