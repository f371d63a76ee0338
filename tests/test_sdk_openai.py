"""
The openai SDK (3.x) on referee, with its retry settings untouched
(``max_retries=2``): the policy is the only retry layer.

Each test builds the client as the SDK guide says — ``openai.OpenAI(
http_client=httpx2.Client(transport=PolicyTransport(policy, sdk=True)))``
— and points it at a loopback fake of the API (tests.contract_servers),
which counts what it was sent.  The policy is the bundled ``openai``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import pytest
from tests.contract_servers import Drip, DripServer
from tests.server import Reply


openai = pytest.importorskip("openai")
httpx2 = pytest.importorskip("httpx2")

import referee  # noqa: E402
from referee.httpx2 import (  # noqa: E402
    OUTCOME_EXTENSION,
    AsyncPolicyTransport,
    PolicyTransport,
)
from referee.testing import AlertCollector, no_sleep  # noqa: E402


if TYPE_CHECKING:
    from collections.abc import Iterator


COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "gpt-test",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hello"},
            "finish_reason": "stop",
        }
    ],
}

RATE_LIMITED = {
    "error": {
        "message": "Rate limit reached for requests",
        "type": "requests",
        "code": "rate_limit_exceeded",
    }
}

NO_QUOTA = {
    "error": {
        "message": "You exceeded your current quota.",
        "type": "insufficient_quota",
        "code": "insufficient_quota",
    }
}

SSE = {"Content-Type": "text/event-stream"}


def chunk(text: str) -> bytes:
    data = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "gpt-test",
        "choices": [
            {"index": 0, "delta": {"content": text}, "finish_reason": None}
        ],
    }
    return b"data: " + json.dumps(data).encode() + b"\n\n"


STREAM = (chunk("a"), chunk("b"), chunk("c"), b"data: [DONE]\n\n")

ASK: dict[str, Any] = {
    "model": "gpt-test",
    "messages": [{"role": "user", "content": "hi"}],
}


@pytest.fixture
def server() -> Iterator[DripServer]:
    with DripServer() as srv:
        yield srv


@pytest.fixture
def alerts() -> AlertCollector:
    return AlertCollector()


@pytest.fixture
def policy(alerts: AlertCollector) -> referee.Policy:
    return referee.load_policy("openai", alert_sinks=[alerts])


def client(server: DripServer, policy: referee.Policy | None) -> openai.OpenAI:
    transport = (
        PolicyTransport(policy, sdk=True)
        if policy is not None
        else httpx2.HTTPTransport()
    )
    return openai.OpenAI(
        api_key="sk-test",
        base_url=server.url("/v1"),
        http_client=httpx2.Client(transport=transport),
    )


def sent(server: DripServer) -> int:
    return server.count("/v1/chat/completions")


class TestSync:
    def test_success(self, server, policy):
        """
        A plain completion: one send, the SDK's parsed answer.
        """
        server.script("/v1/chat/completions", [Reply(200, body=COMPLETION)])

        with client(server, policy) as sdk:
            got = sdk.chat.completions.create(**ASK)

        assert "hello" == got.choices[0].message.content
        assert 1 == sent(server)

    def test_rate_limit_with_a_hint_is_retried_by_the_policy(
        self, server, policy
    ):
        """
        A 429 with retry-after-ms is retried after the hinted delay (by
        referee, not the SDK), and the call succeeds: two sends.
        """
        server.script(
            "/v1/chat/completions",
            [
                Reply(429, {"retry-after-ms": "250"}, RATE_LIMITED),
                Reply(200, body=COMPLETION),
            ],
        )

        with no_sleep() as slept, client(server, policy) as sdk:
            got = sdk.chat.completions.create(**ASK)

        assert "hello" == got.choices[0].message.content
        assert 2 == sent(server)
        assert [0.25] == slept.delays

    def test_rate_limit_forever_costs_the_policys_attempts(
        self, server, policy
    ):
        """
        A 429 that never ends costs exactly the policy's three attempts
        (not 3 x 3 with the SDK's own two retries); the caller gets the
        SDK's own RateLimitError carrying the API's body, and referee's
        error rides on its response.
        """
        server.script(
            "/v1/chat/completions",
            [Reply(429, {"retry-after": "1"}, RATE_LIMITED)],
        )

        with (
            no_sleep(),
            client(server, policy) as sdk,
            pytest.raises(openai.RateLimitError) as caught,
        ):
            sdk.chat.completions.create(**ASK)

        assert 3 == sent(server)
        assert "rate_limit_exceeded" == caught.value.code
        outcome = caught.value.response.extensions[OUTCOME_EXTENSION]
        assert isinstance(outcome.error, referee.Aborted)
        assert 3 == len(outcome.trail)

    def test_quota_exhausted_is_one_send_and_one_alert(
        self, server, policy, alerts
    ):
        """
        insufficient_quota: one send, no retry by anyone, a typed error
        (the SDK's RateLimitError with code insufficient_quota; referee's
        InsufficientCredits attached), one top-up alert — and the credits
        breaker then stops the next POST with nothing sent, as referee's
        own CircuitOpen (openai lets it through as it is).
        """
        server.script("/v1/chat/completions", [Reply(429, body=NO_QUOTA)])

        with client(server, policy) as sdk:
            with pytest.raises(openai.RateLimitError) as caught:
                sdk.chat.completions.create(**ASK)
            with pytest.raises(referee.CircuitOpen):
                sdk.chat.completions.create(**ASK)

        assert 1 == sent(server)
        assert "insufficient_quota" == caught.value.code
        outcome = caught.value.response.extensions[OUTCOME_EXTENSION]
        assert isinstance(outcome.error, referee.InsufficientCredits)
        assert ["topup"] == [a.kind for a in alerts.alerts]

    def test_server_error_on_post_costs_the_policys_attempts(
        self, server, policy
    ):
        """
        A 500 that does not end, on a POST: retried by the policy, as
        OpenAI's error guide says ("retry your request after a brief
        wait"), three sends in all — the SDK adds none of its own; the
        caller gets the SDK's InternalServerError with the API's body.
        """
        server.script(
            "/v1/chat/completions",
            [Reply(500, body={"error": {"message": "boom"}})],
        )

        with (
            no_sleep(),
            client(server, policy) as sdk,
            pytest.raises(openai.InternalServerError) as caught,
        ):
            sdk.chat.completions.create(**ASK)

        assert 3 == sent(server)
        assert "boom" in str(caught.value)

    def test_a_dropped_connection_is_not_resent_by_the_sdk(
        self, server, policy
    ):
        """
        A POST whose connection drops after the request went out is not
        re-sent by the policy (it may have been processed), and the SDK's
        own retries of it are answered without sending: one send.
        """
        from tests.server import RESET

        server.script("/v1/chat/completions", [RESET])

        with (
            no_sleep(),
            client(server, policy) as sdk,
            pytest.raises(Exception) as caught,
        ):
            sdk.chat.completions.create(**ASK)

        assert 1 == sent(server)
        chain = []
        exc: BaseException | None = caught.value
        while exc is not None:
            chain.append(exc)
            exc = exc.__cause__
        assert any(
            isinstance(e, referee.RefereeError | httpx2.TransportError)
            for e in chain
        ), chain


class TestStream:
    def first_chunk(
        self, server: DripServer, policy: referee.Policy | None
    ) -> tuple[float, list[str]]:
        with client(server, policy) as sdk:
            start = time.monotonic()
            stream = sdk.chat.completions.create(**ASK, stream=True)
            texts = []
            first = None
            for event in stream:
                if first is None:
                    first = time.monotonic() - start
                texts.append(event.choices[0].delta.content)
        assert first is not None
        return first, texts

    def test_first_chunk_is_not_held_back(self, server, policy):
        """
        A streamed completion reaches the caller chunk by chunk: the first
        within 0.1 s of when it reaches the bare SDK, not when the stream
        ends (1.2 s later).
        """
        server.script(
            "/v1/chat/completions",
            [Drip(200, SSE, STREAM, interval=0.4)],
        )

        bare, _ = self.first_chunk(server, None)
        guarded, texts = self.first_chunk(server, policy)

        assert ["a", "b", "c"] == texts
        assert guarded < bare + 0.1, (
            f"first chunk after {guarded:.2f} s under referee, "
            f"{bare:.2f} s bare"
        )


class TestAsync:
    def test_rate_limit_forever_with_other_tasks_running(self, server, policy):
        """
        The async client, with a ticker task on the same loop: a 429 that
        never ends costs the policy's three attempts, after real (short)
        waits during which the ticker kept ticking.
        """
        server.script(
            "/v1/chat/completions",
            [Reply(429, {"retry-after-ms": "100"}, RATE_LIMITED)],
        )

        async def main() -> int:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            tick = asyncio.create_task(ticker())
            sdk = openai.AsyncOpenAI(
                api_key="sk-test",
                base_url=server.url("/v1"),
                http_client=httpx2.AsyncClient(
                    transport=AsyncPolicyTransport(policy, sdk=True)
                ),
            )
            try:
                with pytest.raises(openai.RateLimitError):
                    await sdk.chat.completions.create(**ASK)
            finally:
                await sdk.close()
                tick.cancel()
            return ticks

        ticks = asyncio.run(main())

        assert 3 == sent(server)
        assert ticks >= 10  # 0.2 s of waits, 10 ms ticks
