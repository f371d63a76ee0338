"""
One scripted server, one policy, the six adapters (httpx and httpx2 sync
and async, requests, aiohttp): identical trails.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import httpx
import httpx2
import pytest
import requests
from tests.server import RESET, Reply, ScriptedServer

import referee
import referee.httpx2
from referee.aiohttp import PolicyMiddleware
from referee.httpx import AsyncPolicyTransport, PolicyTransport
from referee.requests import PolicyAdapter
from referee.testing import no_sleep


POLICY = referee.load_policy_text(
    """
policy: parity
defaults:
  retry: {attempts: 6, backoff: {initial: 1s, multiplier: 2, jitter: none}}
  poll: {initial: 2s, multiplier: 1, deadline: 1m}
rules:
  - {id: hung-up, when: {failure: read}, do: retry}
  - {id: slow-down, when: {status: 429}, do: retry}
  - {id: flaky, when: {status: [500, 503]}, do: retry}
  - {id: running, when: {body: {state: running}}, do: poll}
  - {id: broken, when: {body: {state: failed}}, do: abort, error: JobFailed}
"""
)

SCRIPT = [
    Reply(503, {"Retry-After": "3"}),
    RESET,
    Reply(429),
    Reply(202, body={"state": "running"}),
    Reply(200, body={"state": "running"}),
    Reply(500),
]
FINAL_OK = Reply(200, body={"state": "done", "answer": 42})
FINAL_FAILED = Reply(200, body={"state": "failed"})


def via_httpx(url: str) -> Any:
    with httpx.Client(transport=PolicyTransport(POLICY)) as client:
        return client.get(url, headers={"x-api-key": "k"}).json()


def via_httpx_async(url: str) -> Any:
    async def main() -> Any:
        transport = AsyncPolicyTransport(POLICY)
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get(url, headers={"x-api-key": "k"})
            return response.json()

    return asyncio.run(main())


def via_httpx2(url: str) -> Any:
    transport = referee.httpx2.PolicyTransport(POLICY)
    with httpx2.Client(transport=transport) as client:
        return client.get(url, headers={"x-api-key": "k"}).json()


def via_httpx2_async(url: str) -> Any:
    async def main() -> Any:
        transport = referee.httpx2.AsyncPolicyTransport(POLICY)
        async with httpx2.AsyncClient(transport=transport) as client:
            response = await client.get(url, headers={"x-api-key": "k"})
            return response.json()

    return asyncio.run(main())


def via_requests(url: str) -> Any:
    with requests.Session() as session:
        session.mount("http://", PolicyAdapter(POLICY))
        return session.get(url, headers={"x-api-key": "k"}, timeout=5).json()


def via_aiohttp(url: str) -> Any:
    async def main() -> Any:
        async with (
            aiohttp.ClientSession(
                middlewares=[PolicyMiddleware(POLICY)]
            ) as session,
            session.get(url, headers={"x-api-key": "k"}) as response,
        ):
            return await response.json()

    return asyncio.run(main())


ADAPTERS = {
    "httpx": via_httpx,
    "httpx-async": via_httpx_async,
    "httpx2": via_httpx2,
    "httpx2-async": via_httpx2_async,
    "requests": via_requests,
    "aiohttp": via_aiohttp,
}


def _trail(
    records: tuple[referee.AttemptRecord, ...],
) -> list[tuple[Any, ...]]:
    return [
        (r.status, r.failure, r.rule_id, r.action, r.delay) for r in records
    ]


def _run(
    adapter: str, final: Reply
) -> tuple[Any, list[Any], list[float], int]:
    with ScriptedServer() as server, no_sleep() as slept:
        server.script("/job", [*SCRIPT, final])
        try:
            result: Any = ADAPTERS[adapter](server.url("/job"))
        except referee.Aborted as exc:
            result = (type(exc).__name__, exc.rule_id, _trail(exc.trail))
        return result, slept.delays, len(server.requests)


class TestParity:
    @pytest.mark.parametrize(
        "final", [FINAL_OK, FINAL_FAILED], ids=["ok", "failed"]
    )
    def test_every_adapter_decides_alike(self, final):
        """
        Every adapter meets the same outcomes, sleeps the same delays and
        ends the same way.
        """
        results = {name: _run(name, final) for name in ADAPTERS}

        first = results["httpx"]
        for name, got in results.items():
            assert first == got, name

    def test_the_trail_is_the_expected_one(self):
        """
        The shared trail is the one the policy prescribes.
        """
        result, delays, sent = _run("httpx", FINAL_FAILED)

        assert (
            "JobFailed",
            "broken",
            [
                (503, None, "flaky", "retry", 3.0),
                (None, "read", "hung-up", "retry", 2.0),
                (429, None, "slow-down", "retry", 4.0),
                (202, None, "running", "poll", 2.0),
                (200, None, "running", "poll", 2.0),
                (500, None, "flaky", "retry", 8.0),
                (200, None, "broken", "abort", None),
            ],
        ) == result
        assert [3.0, 2.0, 4.0, 2.0, 2.0, 8.0] == delays
        assert 7 == sent
