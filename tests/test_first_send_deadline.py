"""
Regression tests for the soak's httpx-async hang: the deadline bounds a
call's *first* send as a whole, and counts from before it.
"""

from __future__ import annotations

import asyncio
import time

import httpx

import referee
from referee.httpx import AsyncPolicyTransport


POLICY = """\
policy: first-send
extends: http-default
defaults:
  retry:
    attempts: 4
    backoff: {initial: 10ms, multiplier: 2, max: 100ms, jitter: full}
  deadline: 1s
"""


async def _serve(delay: float, status: int) -> tuple[asyncio.Server, str]:
    """A loopback server answering *status* to everything after *delay*."""

    async def handle(reader, writer) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await asyncio.sleep(delay)
                writer.write(
                    b"HTTP/1.1 %d X\r\nContent-Length: 2\r\n\r\n{}" % status
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def _timed(coro) -> tuple[str, float]:
    start = time.monotonic()
    try:
        response = await asyncio.wait_for(coro, 5.0)
        result = f"returned {response.status_code}"
    except TimeoutError:
        result = "hung"
    except referee.RefereeError as exc:
        result = type(exc).__name__
    return result, time.monotonic() - start


class TestFirstSendDeadline:
    def test_first_send_waiting_for_a_pooled_connection_is_cut(self):
        """
        The only pooled connection is taken and the pool has no timeout:
        the first send waits for it, and the 1 s deadline ends the call.
        """

        async def scenario() -> tuple[str, float]:
            server, base = await _serve(0.0, 200)
            transport = AsyncPolicyTransport(
                referee.load_policy_text(POLICY),
                transport=httpx.AsyncHTTPTransport(
                    limits=httpx.Limits(max_connections=1)
                ),
            )
            try:
                async with (
                    httpx.AsyncClient(
                        transport=transport,
                        base_url=base,
                        timeout=httpx.Timeout(0.3, pool=None),
                    ) as client,
                    client.stream("GET", "/held"),
                ):
                    return await _timed(client.get("/x"))
            finally:
                server.close()
                await server.wait_closed()

        result, took = asyncio.run(scenario())

        assert "DeadlineExceeded" == result
        assert took < 1.3

    def test_deadline_counts_from_before_the_first_send(self):
        """
        Every answer is a 503 after 0.4 s: the call ends on its 1 s
        deadline, not 1 s after its first answer.
        """

        async def scenario() -> tuple[str, float]:
            server, base = await _serve(0.4, 503)
            transport = AsyncPolicyTransport(referee.load_policy_text(POLICY))
            try:
                async with httpx.AsyncClient(
                    transport=transport, base_url=base, timeout=2.0
                ) as client:
                    return await _timed(client.get("/x"))
            finally:
                server.close()
                await server.wait_closed()

        result, took = asyncio.run(scenario())

        assert "DeadlineExceeded" == result
        assert took < 1.2
