"""
A retry does not outlive the call's deadline: httpx's timeouts shrink to
what is left of it.
"""

from __future__ import annotations

import httpx
import pytest
from tests.server import Reply, ScriptedServer

import referee
from referee.httpx import PolicyTransport


POLICY = """
policy: bounded
defaults:
  deadline: 1s
  retry: {attempts: 5, backoff: {initial: 10ms, jitter: none}}
rules:
  - {id: flaky, when: {status: 503}, do: retry}
  - {id: slow, when: {failure: timeout}, do: retry}
"""


class TestDeadlineBoundsRetries:
    def test_a_slow_retry_is_cut_at_the_deadline(self):
        """
        The second attempt's reply would come after the deadline: its read
        timeout is what is left of the call, so the call gives up instead
        of returning the late 200.
        """
        policy = referee.load_policy_text(POLICY)
        with ScriptedServer() as server:
            server.script(
                "/x", [Reply(503), Reply(200, body="late", delay=2.5)]
            )
            with (
                httpx.Client(
                    transport=PolicyTransport(policy), timeout=10.0
                ) as client,
                pytest.raises(referee.Aborted) as info,
            ):
                client.get(server.url("/x"))

        assert [503, None] == [r.status for r in info.value.trail[:2]]
        assert "timeout" == info.value.trail[1].failure

    def test_the_callers_timeouts_are_kept(self):
        """
        The client's own timeouts are kept aside on the request: each retry
        shrinks them afresh, never below what the deadline leaves.
        """
        policy = referee.load_policy_text(POLICY)
        seen: list[dict[str, float]] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(dict(request.extensions.get("timeout", {})))
            return httpx.Response(503 if len(seen) < 3 else 200)

        transport = PolicyTransport(policy, httpx.MockTransport(handler))
        with httpx.Client(transport=transport, timeout=0.5) as client:
            client.get("http://api.test/x")

        assert 0.5 == seen[0]["read"]
        assert all(0 < t["read"] <= 0.5 for t in seen[1:])
