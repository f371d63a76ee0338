"""
End to end on loopback, as paired runs: in every round each contender
sends a batch of *batch* GETs to the same keep-alive server, back to back
(the order rotating from round to round), and the round's ratio is
referee's batch time over the contender's.  The median of those ratios,
with its interquartile range, is the figure.

The asynchronous clients run on one event loop, started once per round:
the batches are timed inside it, so starting the loop is not counted.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from typing import TYPE_CHECKING, Any

import referee

from ._server import serve
from ._stats import ratio_figures


if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


class Unavailable(Exception):
    """
    A comparison that cannot run here (its adapter is not installed).
    """


#: The GETs each contender sends per round.
BATCH = 20
#: The policy the referee contenders run under: its 200s need their body
#: checked, the costlier case.
POLICY = "enrow"


def _summary(
    times: dict[str, list[float]], batch: int
) -> dict[str, dict[str, Any]]:
    first = next(iter(times))
    out: dict[str, dict[str, Any]] = {}
    for name, ts in times.items():
        per = [t / batch for t in ts]
        entry: dict[str, Any] = {
            "median_ns": statistics.median(per) * 1e9,
            "spread_ns": [min(per) * 1e9, max(per) * 1e9],
            "ratio": None,
            "ratio_q1": None,
            "ratio_q3": None,
        }
        if name != first:
            ratios = [a / b for a, b in zip(times[first], ts, strict=True)]
            entry |= ratio_figures(ratios)
        out[name] = entry
    return out


def _rotated(names: list[str], n: int) -> list[str]:
    k = n % len(names)
    return names[k:] + names[:k]


def paired_sync(
    contenders: dict[str, Callable[[], Any]], rounds: int, batch: int
) -> dict[str, dict[str, Any]]:
    """
    Time *batch* calls of each contender per round, interleaved.
    """
    for fn in contenders.values():  # warm up: connections, caches
        for _ in range(batch):
            fn()
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for name in _rotated(names, r):
                fn = contenders[name]
                started = time.perf_counter()
                for _ in range(batch):
                    fn()
                times[name].append(time.perf_counter() - started)
    finally:
        if gc_was:
            gc.enable()
    return _summary(times, batch)


def paired_async(
    contenders: dict[str, Callable[[], Awaitable[Any]]],
    rounds: int,
    batch: int,
    loop: asyncio.AbstractEventLoop,
) -> dict[str, dict[str, Any]]:
    """
    As :func:`paired_sync` for coroutine functions, on *loop*, run once
    per round.
    """
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}

    async def one_round(r: int, record: bool) -> None:
        for name in _rotated(names, r):
            fn = contenders[name]
            started = time.perf_counter()
            for _ in range(batch):
                await fn()
            if record:
                times[name].append(time.perf_counter() - started)

    loop.run_until_complete(one_round(0, record=False))
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            loop.run_until_complete(one_round(r, record=True))
    finally:
        if gc_was:
            gc.enable()
    return _summary(times, batch)


def httpx_sync(rounds: int, body: bytes) -> dict[str, dict[str, Any]]:
    import httpx
    from httpx_retries import Retry, RetryTransport

    from referee.httpx import PolicyTransport

    url, httpd = serve(body)
    clients = {
        f"httpx.Client + referee ({POLICY})": httpx.Client(
            transport=PolicyTransport(referee.load_policy(POLICY))
        ),
        "bare httpx.Client": httpx.Client(),
        "httpx.Client + httpx-retries": httpx.Client(
            transport=RetryTransport(retry=Retry(total=3))
        ),
    }
    try:
        return paired_sync(
            {
                name: (lambda c=client: c.get(url).content)
                for name, client in clients.items()
            },
            rounds,
            BATCH,
        )
    finally:
        for client in clients.values():
            client.close()
        httpd.shutdown()


def httpx_async(rounds: int, body: bytes) -> dict[str, dict[str, Any]]:
    import httpx
    from httpx_retries import Retry, RetryTransport

    from referee.httpx import AsyncPolicyTransport

    url, httpd = serve(body)
    loop = asyncio.new_event_loop()
    clients = {
        f"httpx.AsyncClient + referee ({POLICY})": httpx.AsyncClient(
            transport=AsyncPolicyTransport(referee.load_policy(POLICY))
        ),
        "bare httpx.AsyncClient": httpx.AsyncClient(),
        "httpx.AsyncClient + httpx-retries": httpx.AsyncClient(
            transport=RetryTransport(retry=Retry(total=3))
        ),
    }

    return _async_gets(clients, url, rounds, loop, httpd)


def _async_gets(
    clients: dict[str, Any],
    url: str,
    rounds: int,
    loop: asyncio.AbstractEventLoop,
    httpd: Any,
) -> dict[str, dict[str, Any]]:
    """
    GET *url* with each of the asyncio *clients* (httpx's or httpx2's) in
    paired rounds on *loop*; then close them, the loop and the server.
    """

    def get(client: Any) -> Callable[[], Awaitable[Any]]:
        async def call() -> bytes:
            return (await client.get(url)).content

        return call

    try:
        return paired_async(
            {name: get(client) for name, client in clients.items()},
            rounds,
            BATCH,
            loop,
        )
    finally:
        for client in clients.values():
            loop.run_until_complete(client.aclose())
        loop.close()
        httpd.shutdown()


def httpx2_sync(rounds: int, body: bytes) -> dict[str, dict[str, Any]]:
    """
    httpx2 (what the openai and anthropic SDKs are built on) beside the
    bare httpx2 client and bare httpx: the same transports' API, its own
    classes.
    """
    try:
        import httpx2

        from referee.httpx2 import PolicyTransport
    except ImportError as exc:
        msg = f"httpx2 or referee.httpx2 is not importable here ({exc})"
        raise Unavailable(msg) from None
    import httpx

    url, httpd = serve(body)
    clients: dict[str, Any] = {
        f"httpx2.Client + referee ({POLICY})": httpx2.Client(
            transport=PolicyTransport(referee.load_policy(POLICY))
        ),
        "bare httpx2.Client": httpx2.Client(),
        "bare httpx.Client": httpx.Client(),
    }
    try:
        return paired_sync(
            {
                name: (lambda c=client: c.get(url).content)
                for name, client in clients.items()
            },
            rounds,
            BATCH,
        )
    finally:
        for client in clients.values():
            client.close()
        httpd.shutdown()


def httpx2_async(rounds: int, body: bytes) -> dict[str, dict[str, Any]]:
    try:
        import httpx2

        from referee.httpx2 import AsyncPolicyTransport
    except ImportError as exc:
        msg = f"httpx2 or referee.httpx2 is not importable here ({exc})"
        raise Unavailable(msg) from None

    url, httpd = serve(body)
    loop = asyncio.new_event_loop()
    clients = {
        f"httpx2.AsyncClient + referee ({POLICY})": httpx2.AsyncClient(
            transport=AsyncPolicyTransport(referee.load_policy(POLICY))
        ),
        "bare httpx2.AsyncClient": httpx2.AsyncClient(),
    }

    return _async_gets(clients, url, rounds, loop, httpd)


def requests_(rounds: int, body: bytes) -> dict[str, dict[str, Any]]:
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util import Retry

    from referee.requests import PolicyAdapter

    url, httpd = serve(body)

    def session(adapter: HTTPAdapter | None) -> requests.Session:
        s = requests.Session()
        if adapter is not None:
            s.mount("http://", adapter)
        return s

    sessions = {
        f"requests + referee ({POLICY})": session(
            PolicyAdapter(referee.load_policy(POLICY))
        ),
        "bare requests.Session": session(None),
        "requests + HTTPAdapter(max_retries=Retry(3))": session(
            HTTPAdapter(
                max_retries=Retry(
                    total=3, status_forcelist=[429, 500, 502, 503, 504]
                )
            )
        ),
    }
    try:
        return paired_sync(
            {
                name: (lambda s=s: s.get(url).content)
                for name, s in sessions.items()
            },
            rounds,
            BATCH,
        )
    finally:
        for s in sessions.values():
            s.close()
        httpd.shutdown()


def aiohttp_(rounds: int, body: bytes) -> dict[str, dict[str, Any]]:
    import aiohttp
    from aiohttp_retry import ExponentialRetry, RetryClient

    from referee.aiohttp import PolicyMiddleware

    url, httpd = serve(body)
    loop = asyncio.new_event_loop()

    async def make() -> dict[str, Any]:
        return {
            f"aiohttp + referee ({POLICY})": aiohttp.ClientSession(
                middlewares=(PolicyMiddleware(referee.load_policy(POLICY)),)
            ),
            "bare aiohttp.ClientSession": aiohttp.ClientSession(),
            "aiohttp_retry.RetryClient": RetryClient(
                retry_options=ExponentialRetry(attempts=3)
            ),
        }

    sessions = loop.run_until_complete(make())

    def get(session: Any) -> Callable[[], Awaitable[Any]]:
        async def call() -> bytes:
            async with session.get(url) as response:
                data: bytes = await response.read()
                return data

        return call

    try:
        return paired_async(
            {name: get(s) for name, s in sessions.items()},
            rounds,
            BATCH,
            loop,
        )
    finally:
        for s in sessions.values():
            loop.run_until_complete(s.close())
        loop.close()
        httpd.shutdown()


#: (key, title, runner): the end-to-end comparisons, one per client.
E2E: list[tuple[str, str, Callable[[int, bytes], dict[str, Any]]]] = [
    ("e2e_httpx", "httpx (sync)", httpx_sync),
    ("e2e_httpx_async", "httpx (async)", httpx_async),
    ("e2e_httpx2", "httpx2 (sync)", httpx2_sync),
    ("e2e_httpx2_async", "httpx2 (async)", httpx2_async),
    ("e2e_requests", "requests", requests_),
    ("e2e_aiohttp", "aiohttp", aiohttp_),
]
