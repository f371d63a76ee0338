"""
The anthropic SDK (2.x, on httpx2) on referee, with its retry settings
untouched (``max_retries=2``): the policy is the only retry layer.

The client is built as the SDK guide says — ``anthropic.Anthropic(
http_client=httpx2.Client(transport=PolicyTransport(policy, sdk=True)))``
— against a loopback fake of the Messages API that counts what it was
sent.  The policy is the bundled ``anthropic``.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import pytest
from tests.contract_servers import Drip, DripServer
from tests.server import Reply


anthropic = pytest.importorskip("anthropic")
httpx2 = pytest.importorskip("httpx2")

import referee  # noqa: E402
from referee.httpx2 import OUTCOME_EXTENSION, PolicyTransport  # noqa: E402
from referee.testing import AlertCollector, no_sleep  # noqa: E402


if TYPE_CHECKING:
    from collections.abc import Iterator


MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-test",
    "content": [{"type": "text", "text": "hello"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 1, "output_tokens": 1},
}


def error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


OVERLOADED = error("overloaded_error", "Overloaded")
RATE_LIMITED = error("rate_limit_error", "Number of requests has exceeded")
NO_CREDIT = error(
    "invalid_request_error",
    "Your credit balance is too low to access the Anthropic API. "
    "Please go to Plans & Billing to upgrade or purchase credits.",
)

SSE = {"Content-Type": "text/event-stream"}


def event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


STREAM = (
    event(
        "message_start",
        {"type": "message_start", "message": {**MESSAGE, "content": []}},
    ),
    event(
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        },
    ),
    event(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "hel"},
        },
    ),
    event(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "lo"},
        },
    ),
    event("content_block_stop", {"type": "content_block_stop", "index": 0}),
    event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 2},
        },
    ),
    event("message_stop", {"type": "message_stop"}),
)

#: What Anthropic sends when the model is overloaded after the stream has
#: begun with a 200: an error event.
STREAM_OVERLOADED = (event("error", OVERLOADED),)

ASK: dict[str, Any] = {
    "model": "claude-test",
    "max_tokens": 16,
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
    return referee.load_policy("anthropic", alert_sinks=[alerts])


def client(
    server: DripServer, policy: referee.Policy | None
) -> anthropic.Anthropic:
    transport = (
        PolicyTransport(policy, sdk=True)
        if policy is not None
        else httpx2.HTTPTransport()
    )
    return anthropic.Anthropic(
        api_key="sk-ant-test",
        base_url=server.url(""),
        http_client=httpx2.Client(transport=transport),
    )


def sent(server: DripServer) -> int:
    return server.count("/v1/messages")


class TestMessages:
    def test_success(self, server, policy):
        server.script("/v1/messages", [Reply(200, body=MESSAGE)])

        with client(server, policy) as sdk:
            got = sdk.messages.create(**ASK)

        assert "hello" == got.content[0].text
        assert 1 == sent(server)

    def test_rate_limit_with_retry_after_is_retried_by_the_policy(
        self, server, policy
    ):
        server.script(
            "/v1/messages",
            [
                Reply(429, {"retry-after": "2"}, RATE_LIMITED),
                Reply(200, body=MESSAGE),
            ],
        )

        with no_sleep() as slept, client(server, policy) as sdk:
            got = sdk.messages.create(**ASK)

        assert "hello" == got.content[0].text
        assert 2 == sent(server)
        assert [2.0] == slept.delays

    def test_overloaded_forever_costs_the_policys_attempts(
        self, server, policy
    ):
        """
        529 overloaded_error, every time: the policy's attempts and no
        more (the SDK's two retries are not added); the caller gets the
        SDK's own OverloadedError with the API's body, never "Connection
        error.".
        """
        server.script("/v1/messages", [Reply(529, body=OVERLOADED)])
        attempts = policy.retry.attempts

        with (
            no_sleep(),
            client(server, policy) as sdk,
            pytest.raises(anthropic.APIStatusError) as caught,
        ):
            sdk.messages.create(**ASK)

        assert attempts == sent(server)
        assert 529 == caught.value.status_code
        assert "Overloaded" in str(caught.value)
        outcome = caught.value.response.extensions[OUTCOME_EXTENSION]
        assert isinstance(outcome.error, referee.Aborted)

    def test_credit_balance_too_low(self, server, policy, alerts):
        """
        The 400 that says the credit balance is too low: one send, the
        SDK's BadRequestError with the API's message, referee's
        InsufficientCredits attached, one top-up alert.
        """
        server.script("/v1/messages", [Reply(400, body=NO_CREDIT)])

        with (
            client(server, policy) as sdk,
            pytest.raises(anthropic.BadRequestError) as caught,
        ):
            sdk.messages.create(**ASK)

        assert 1 == sent(server)
        assert "credit balance is too low" in str(caught.value)
        outcome = caught.value.response.extensions[OUTCOME_EXTENSION]
        assert isinstance(outcome.error, referee.InsufficientCredits)
        assert ["topup"] == [a.kind for a in alerts.alerts]

    def test_a_breaker_that_stops_a_call_sends_nothing(self, server, alerts):
        """
        A call an open breaker stops sends nothing, and neither do the
        SDK's two retries of it: anthropic wraps what the transport raises
        in APIConnectionError and retries it, and referee answers those
        retries with the same CircuitOpen.  The caller finds referee's
        error as the cause.
        """
        policy = referee.load_policy(
            "anthropic",
            alert_sinks=[alerts],
        )
        server.script("/v1/messages", [Reply(400, body=NO_CREDIT)])

        with client(server, policy) as sdk:
            with pytest.raises(anthropic.BadRequestError):
                sdk.messages.create(**ASK)  # opens the credits breaker
            with pytest.raises(anthropic.APIConnectionError) as caught:
                sdk.messages.create(**ASK)

        assert 1 == sent(server)
        assert isinstance(caught.value.__cause__, referee.CircuitOpen)


class TestStream:
    def first_text(
        self, server: DripServer, policy: referee.Policy | None
    ) -> tuple[float, str]:
        with client(server, policy) as sdk:
            start = time.monotonic()
            first = None
            texts = []
            with sdk.messages.stream(**ASK) as stream:
                for text in stream.text_stream:
                    if first is None:
                        first = time.monotonic() - start
                    texts.append(text)
        assert first is not None
        return first, "".join(texts)

    def test_first_text_is_not_held_back(self, server, policy):
        """
        messages.stream(): the first text arrives within 0.1 s of when it
        reaches the bare SDK, though the policy looks at the stream's first
        event (for an error event) before handing it over.
        """
        server.script(
            "/v1/messages", [Drip(200, SSE, STREAM, interval=0.3, immediate=3)]
        )

        bare, _ = self.first_text(server, None)
        guarded, text = self.first_text(server, policy)

        assert "hello" == text
        assert guarded < bare + 0.1, (
            f"first text after {guarded:.2f} s under referee, "
            f"{bare:.2f} s bare"
        )

    def test_overloaded_error_event_in_a_200_is_retried(self, server, policy):
        """
        A 200 event stream whose first event is an overloaded_error: the
        policy retries it (nothing has reached the caller yet), and the
        second stream is read whole.
        """
        server.script(
            "/v1/messages",
            [
                Drip(200, SSE, STREAM_OVERLOADED),
                Drip(200, SSE, STREAM, immediate=len(STREAM)),
            ],
        )

        with (
            no_sleep(),
            client(server, policy) as sdk,
            sdk.messages.stream(**ASK) as stream,
        ):
            text = "".join(stream.text_stream)

        assert "hello" == text
        assert 2 == sent(server)

    def test_overloaded_error_event_forever(self, server, policy):
        """
        Every stream starts with an overloaded_error: the policy's
        attempts, then the last stream goes to the SDK, which raises its
        own status error with the event's body when it reads it.
        """
        server.script("/v1/messages", [Drip(200, SSE, STREAM_OVERLOADED)])
        attempts = policy.retry.attempts

        with (
            no_sleep(),
            client(server, policy) as sdk,
            pytest.raises(anthropic.APIStatusError) as caught,
            sdk.messages.stream(**ASK) as stream,
        ):
            "".join(stream.text_stream)

        assert attempts == sent(server)
        assert "overloaded_error" in str(caught.value)
