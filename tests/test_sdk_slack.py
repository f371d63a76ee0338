"""
slack_sdk's AsyncWebClient (3.x) on referee, built as docs/sdks/slack.md
says, with the policy that page writes — the page's own code and YAML are
what run here (tests.recipes) — against a loopback fake of the Web API
that counts what it was sent.  slack_sdk's retry handlers are left at
their default (one retry of aiohttp's connection errors).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from tests.recipes import policy_block, recipe
from tests.server import RESET, Reply, ScriptedServer


slack_sdk = pytest.importorskip("slack_sdk")
aiohttp = pytest.importorskip("aiohttp")

from slack_sdk.errors import SlackApiError  # noqa: E402
from slack_sdk.web.async_client import AsyncWebClient  # noqa: E402

import referee  # noqa: E402
from referee.testing import AlertCollector, no_sleep  # noqa: E402


if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator


POST = "/api/chat.postMessage"

POSTED = {"ok": True, "channel": "C1", "ts": "1700000000.000100"}
RATE_LIMITED = {"ok": False, "error": "ratelimited"}


def refused(code: str) -> dict[str, Any]:
    return {"ok": False, "error": code}


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


@pytest.fixture
def alerts() -> AlertCollector:
    return AlertCollector()


@pytest.fixture
def policy(alerts: AlertCollector) -> referee.Policy:
    return referee.load_policy_text(
        policy_block("slack.md", "slack"),
        source="docs/sdks/slack.md",
        alert_sinks=[alerts],
    )


def drive(
    server: ScriptedServer,
    policy: referee.Policy,
    calls: Callable[[AsyncWebClient], Awaitable[Any]],
) -> Any:
    """
    Run *calls* with a client the page's slack_client builds, on a new
    loop, and close its session after.
    """

    async def main() -> Any:
        client = recipe("slack.md", 0)["slack_client"](
            "xoxb-test", policy, server.url("/api/")
        )
        try:
            return await calls(client)
        finally:
            await client.session.close()

    return asyncio.run(main())


def post(client: AsyncWebClient) -> Awaitable[Any]:
    return client.chat_postMessage(channel="C1", text="hi")


class TestPost:
    def test_success(self, server, policy):
        """
        A message is posted: one send, slack_sdk's response.
        """
        server.script(POST, [Reply(200, body=POSTED)])

        got = drive(server, policy, post)

        assert POSTED["ts"] == got["ts"]
        assert 1 == server.count(POST)
        assert (
            "Bearer xoxb-test" == server.requests[0].headers["authorization"]
        )

    def test_rate_limit_with_retry_after_is_retried_by_the_policy(
        self, server, policy
    ):
        """
        A 429 with Retry-After: retried after the hinted delay (a POST:
        the limited request was not run), two sends, the response.
        """
        server.script(
            POST,
            [
                Reply(429, {"Retry-After": "7"}, RATE_LIMITED),
                Reply(200, body=POSTED),
            ],
        )

        with no_sleep() as slept:
            got = drive(server, policy, post)

        assert POSTED["ts"] == got["ts"]
        assert 2 == server.count(POST)
        assert [7.0] == slept.delays

    def test_ratelimited_in_a_200_body_is_retried(self, server, policy):
        """
        ``ok: false, error: ratelimited`` in a 200 is the same rule.
        """
        server.script(
            POST,
            [
                Reply(200, {"Retry-After": "2"}, RATE_LIMITED),
                Reply(200, body=POSTED),
            ],
        )

        with no_sleep() as slept:
            got = drive(server, policy, post)

        assert POSTED["ts"] == got["ts"]
        assert [2.0] == slept.delays

    def test_rate_limit_forever_costs_the_policys_attempts(
        self, server, policy
    ):
        """
        A 429 that never ends: the policy's three sends, then
        slack_sdk's SlackApiError with Slack's code.
        """
        server.script(POST, [Reply(429, {"Retry-After": "1"}, RATE_LIMITED)])

        with no_sleep() as slept, pytest.raises(SlackApiError) as caught:
            drive(server, policy, post)

        assert 3 == server.count(POST)
        assert [1.0, 1.0] == slept.delays
        assert 429 == caught.value.response.status_code
        assert "ratelimited" == caught.value.response["error"]

    def test_another_error_code_is_slacks_own(self, server, policy):
        """
        An ``ok: false`` no rule names reaches slack_sdk, which raises its
        SlackApiError: one send.
        """
        server.script(POST, [Reply(200, body=refused("channel_not_found"))])

        with pytest.raises(SlackApiError) as caught:
            drive(server, policy, post)

        assert 1 == server.count(POST)
        assert "channel_not_found" == caught.value.response["error"]

    def test_missing_scope_is_permission_denied(self, server, policy, alerts):
        """
        missing_scope: referee's PermissionDenied, one send, one alert.
        """
        server.script(POST, [Reply(200, body=refused("missing_scope"))])

        with pytest.raises(referee.PermissionDenied):
            drive(server, policy, post)

        assert 1 == server.count(POST)
        assert ["config"] == [a.kind for a in alerts.alerts]


class TestTokenRefused:
    @pytest.mark.parametrize(
        "code", ["invalid_auth", "account_inactive", "token_revoked"]
    )
    def test_one_send_one_alert(self, server, policy, alerts, code):
        """
        A refused token, as a 200 with ``ok: false``: referee's
        AuthenticationError with Slack's code (slack_sdk lets it through
        as it is), one send, exactly one critical config alert naming the
        code.
        """
        server.script(POST, [Reply(200, body=refused(code))])

        with pytest.raises(referee.AuthenticationError) as caught:
            drive(server, policy, post)

        assert 1 == server.count(POST)
        assert code == caught.value.detail
        (alert,) = alerts.alerts
        assert ("config", "critical") == (alert.kind, alert.severity)
        assert code in alert.message

    def test_the_breaker_then_stops_calls_with_nothing_sent(
        self, server, policy, alerts
    ):
        """
        After the refusal, the token breaker stops the next calls with
        nothing sent, as referee's CircuitOpen; slack_sdk's retry handler
        does not retry it.
        """
        server.script(POST, [Reply(200, body=refused("invalid_auth"))])

        async def calls(client: AsyncWebClient) -> list[type[BaseException]]:
            raised = []
            for _ in range(3):
                try:
                    await post(client)
                except referee.RefereeError as exc:
                    raised.append(type(exc))
            return raised

        raised = drive(server, policy, calls)

        assert [
            referee.AuthenticationError,
            referee.CircuitOpen,
            referee.CircuitOpen,
        ] == raised
        assert 1 == server.count(POST)
        assert 1 == len(alerts.alerts)


class TestDroppedConnection:
    def test_bare_slack_sdk_posts_again(self, server):
        """
        The premise of the page's first caveat: slack_sdk alone, with its
        default retry handler, re-sends a POST whose connection dropped
        after it was sent.
        """
        server.script(POST, [RESET])

        async def main() -> None:
            client = AsyncWebClient("xoxb-test", base_url=server.url("/api/"))
            await post(client)

        with pytest.raises(aiohttp.ServerDisconnectedError):
            asyncio.run(main())

        assert 2 == server.settled_count(POST, 2)

    def test_under_the_policy_it_is_sent_once(self, server, policy):
        """
        Under the policy, the POST is not re-sent (it may have been
        posted), and what referee raises is not one of the errors
        slack_sdk's handler retries: one send, referee's Aborted chained
        to aiohttp's error.
        """
        server.script(POST, [RESET])

        with no_sleep(), pytest.raises(referee.Aborted) as caught:
            drive(server, policy, post)

        assert 1 == server.settled_count(POST, 2, wait=0.3)
        assert isinstance(caught.value.__cause__, aiohttp.ClientError)


class TestTheLoop:
    def test_other_tasks_run_during_referees_wait(self, server, policy):
        """
        A 429 with Retry-After: 1, waited for real, with a ticker task on
        the same loop: the ticker kept ticking through the wait, and the
        message was posted after it.
        """
        server.script(
            POST,
            [
                Reply(429, {"Retry-After": "1"}, RATE_LIMITED),
                Reply(200, body=POSTED),
            ],
        )

        async def calls(client: AsyncWebClient) -> tuple[Any, int]:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            tick = asyncio.create_task(ticker())
            try:
                got = await post(client)
            finally:
                tick.cancel()
            return got, ticks

        got, ticks = drive(server, policy, calls)

        assert POSTED["ts"] == got["ts"]
        assert 2 == server.count(POST)
        assert ticks >= 20  # 1 s of waiting, 10 ms ticks


class TestThePage:
    def test_the_usage_example_runs(
        self, server, monkeypatch, tmp_path, capsys
    ):
        """
        The page's ``main()``, with the policy saved as slack.yaml in the
        working directory and the recipe's default base URL pointed at
        the fake: the message's timestamp is printed.
        """
        (tmp_path / "slack.yaml").write_text(
            policy_block("slack.md", "slack"), encoding="utf-8"
        )
        monkeypatch.chdir(tmp_path)
        names = recipe("slack.md", 0)
        monkeypatch.setattr(
            names["slack_client"], "__defaults__", (server.url("/api/"),)
        )
        server.script(POST, [Reply(200, body=POSTED)])

        asyncio.run(names["main"]())

        assert f"{POSTED['ts']}\n" == capsys.readouterr().out

    def test_every_block_is_under_test(self):
        """
        The page has one policy and one Python block, both run above; a
        block added to the page fails here until a test runs it.
        """
        from tests.test_sdk_docs import blocks

        assert 1 == len(blocks("slack.md", "python"))
        assert 1 == len(blocks("slack.md", "yaml"))
