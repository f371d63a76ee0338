"""
referee around any transport: urllib3's PoolManager over real sockets, and a
vendor SDK whose methods raise exceptions carrying a status code.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import urllib3
from tests.server import Reply, ScriptedServer

import referee
from referee import Snapshot
from referee.testing import no_sleep


POLICY = referee.load_policy_text(
    """
policy: sdk
defaults:
  retry: {attempts: 3, backoff: {initial: 1s, jitter: none}}
rules:
  - {id: credits, when: {status: 402}, do: abort, error: InsufficientCredits}
  - {id: busy, when: {status: [429, 503]}, do: retry, retry: {unsafe_methods: true}}
  - id: running
    when: {body: {status: running}}
    do: poll
    poll: {initial: 1s, multiplier: 1, request: {url: "{request.url}?job={body.job}"}}
"""
)


def urllib3_snapshot(url: str) -> Any:
    def snapshot(outcome: Any) -> Snapshot | None:
        if isinstance(outcome, urllib3.exceptions.NewConnectionError):
            return Snapshot.failed("connect", url=url)
        if isinstance(outcome, BaseException):
            return None
        return Snapshot.response(
            outcome.status,
            method="GET",
            url=url,
            headers=dict(outcome.headers),
            body=outcome.data,
        )

    return snapshot


class TestUrllib3:
    def test_retries_over_a_pool_manager(self):
        """
        A PoolManager request runs under a policy: 503 then 200.
        """
        with ScriptedServer() as server, no_sleep() as slept:
            server.script(
                "/x",
                [Reply(503, {"Retry-After": "2"}), Reply(200, body="done")],
            )
            pool = urllib3.PoolManager(retries=False)
            url = server.url("/x")

            resp = referee.run(
                POLICY,
                lambda: pool.request("GET", url),
                urllib3_snapshot(url),
            )

        assert (200, b"done") == (resp.status, resp.data)
        assert [2.0] == slept.delays
        assert 2 == server.count("/x")

    def test_poll_request_is_passed_to_send(self):
        """
        A poll that builds its own request hands it to send.
        """
        with ScriptedServer() as server, no_sleep():
            server.script(
                "/jobs",
                [
                    Reply(200, body={"status": "running", "job": "7"}),
                    Reply(200, body={"status": "done"}),
                ],
            )
            pool = urllib3.PoolManager(retries=False)
            url = server.url("/jobs")
            sent = []

            def send(poll: referee.PollRequest | None = None) -> Any:
                target = url if poll is None else poll.url
                sent.append(target)
                return pool.request("GET", target)

            resp = referee.run(POLICY, send, urllib3_snapshot(url))

        assert {"status": "done"} == json.loads(resp.data)
        assert [url, f"{url}?job=7"] == sent


class VendorError(Exception):
    """
    What a vendor SDK raises: a status and the decoded error body.
    """

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


def sdk_snapshot(outcome: Any) -> Snapshot | None:
    if isinstance(outcome, VendorError):
        return Snapshot.response(
            outcome.status,
            method="POST",
            url="sdk://vendor/find",
            body=json.dumps(outcome.body),
        )
    if isinstance(outcome, BaseException):
        return None
    return Snapshot.response(200, method="POST", url="sdk://vendor/find")


class FakeSDK:
    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)
        self.calls = 0

    def find(self, name: str) -> dict[str, Any]:
        self.calls += 1
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return {"name": name, **step}


class TestGuard:
    def test_sdk_errors_are_retried_then_succeed(self):
        """
        An SDK exception carrying 429 is retried; the result comes back.
        """
        sdk = FakeSDK([VendorError(429, {}), {"email": "a@b.c"}])
        find = referee.guard(POLICY, sdk_snapshot)(sdk.find)

        with no_sleep():
            result = find("Ada")

        assert {"name": "Ada", "email": "a@b.c"} == result
        assert 2 == sdk.calls

    def test_sdk_error_becomes_a_typed_error(self):
        """
        An SDK exception the policy aborts on becomes the policy's error,
        chained to it.
        """
        original = VendorError(402, {"message": "no credits"})
        find = referee.guard(POLICY, sdk_snapshot)(FakeSDK([original]).find)

        with pytest.raises(referee.InsufficientCredits) as info:
            find("Ada")

        assert original is info.value.__cause__
        assert 402 == info.value.status

    def test_unhandled_exception_propagates_untouched(self):
        """
        An exception the snapshot function declines is not retried.
        """
        boom = KeyError("bug in the caller")
        sdk = FakeSDK([boom])

        with pytest.raises(KeyError) as info:
            referee.run(POLICY, lambda: sdk.find("x"), sdk_snapshot)

        assert boom is info.value
        assert 1 == sdk.calls

    def test_accepted_sdk_error_is_reraised(self):
        """
        An SDK error no rule matches is raised as the SDK raised it.
        """
        err = VendorError(418, {})

        with pytest.raises(VendorError) as info:
            referee.run(POLICY, lambda: FakeSDK([err]).find("x"), sdk_snapshot)

        assert err is info.value

    def test_async_run(self):
        """
        arun runs a coroutine-returning send under the policy.
        """
        sdk = FakeSDK([VendorError(503, {}), {"ok": True}])

        async def send() -> dict[str, Any]:
            return sdk.find("Ada")

        with no_sleep() as slept:
            result = asyncio.run(referee.arun(POLICY, send, sdk_snapshot))

        assert {"name": "Ada", "ok": True} == result
        assert [1.0] == slept.delays

    def test_results_must_have_snapshots(self):
        """
        A snapshot function that returns None for a result is a mistake
        the error explains.
        """
        with pytest.raises(
            TypeError, match=r"must return a referee\.Snapshot"
        ):
            referee.run(POLICY, lambda: 1, lambda _: None)
