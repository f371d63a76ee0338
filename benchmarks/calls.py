"""
Python calls per request, end to end on loopback, counted with cProfile:
each client bare and with referee (``enrow``, whose 200s have their body
checked).  Unlike a time, the count does not depend on the machine's load,
so it shows what a change to the fast path removes::

    python -m benchmarks.calls            # the table
    python -m benchmarks.calls aiohttp    # and where aiohttp's extra are

A coroutine's frame is counted once per resumption: a frame between the
event loop and the socket counts as often as the request suspends.
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import sys
from typing import TYPE_CHECKING, Any

import referee

from . import cases
from ._server import serve


if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

#: Requests counted per client (after 20 to warm up).
N = 200

Make = "Callable[[], Awaitable[tuple[Callable[[], Awaitable[Any]], Any]]]"


def _stats(profile: cProfile.Profile) -> dict[tuple[str, int, str], int]:
    stats: dict[Any, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    return {key: value[1] for key, value in stats.items()}


def _sync(fn: Callable[[], Any]) -> dict[tuple[str, int, str], int]:
    for _ in range(20):
        fn()
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(N):
        fn()
    profile.disable()
    return _stats(profile)


def _async(make: Make) -> dict[tuple[str, int, str], int]:
    async def run() -> cProfile.Profile:
        fn, close = await make()
        for _ in range(20):
            await fn()
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(N):
            await fn()
        profile.disable()
        await close()
        return profile

    return _stats(asyncio.run(run()))


def count(url: str) -> dict[str, tuple[dict[Any, int], dict[Any, int]]]:
    """
    The call counts of each client, bare and with referee.
    """
    import aiohttp
    import httpx
    import requests

    from referee.aiohttp import PolicyMiddleware
    from referee.httpx import AsyncPolicyTransport, PolicyTransport
    from referee.requests import PolicyAdapter

    policy = referee.load_policy("enrow")

    def httpx_get(transport: Any) -> Callable[[], Any]:
        client = (
            httpx.Client(transport=transport) if transport else httpx.Client()
        )
        return lambda: client.get(url).content

    def httpx_async(transport: Any) -> Make:
        async def make() -> tuple[Callable[[], Awaitable[Any]], Any]:
            client = (
                httpx.AsyncClient(transport=transport)
                if transport
                else httpx.AsyncClient()
            )

            async def get() -> bytes:
                return (await client.get(url)).content

            return get, client.aclose

        return make

    def requests_get(adapter: Any) -> Callable[[], Any]:
        session = requests.Session()
        if adapter is not None:
            session.mount("http://", adapter)
        return lambda: session.get(url).content

    def aiohttp_get(middleware: Any) -> Make:
        async def make() -> tuple[Callable[[], Awaitable[Any]], Any]:
            session = aiohttp.ClientSession(
                middlewares=(middleware,) if middleware else ()
            )

            async def get() -> bytes:
                async with session.get(url) as response:
                    data: bytes = await response.read()
                    return data

            return get, session.close

        return make

    return {
        "httpx": (
            _sync(httpx_get(None)),
            _sync(httpx_get(PolicyTransport(policy))),
        ),
        "httpx async": (
            _async(httpx_async(None)),
            _async(httpx_async(AsyncPolicyTransport(policy))),
        ),
        "requests": (
            _sync(requests_get(None)),
            _sync(requests_get(PolicyAdapter(policy))),
        ),
        "aiohttp": (
            _async(aiohttp_get(None)),
            _async(aiohttp_get(PolicyMiddleware(policy))),
        ),
    }


def main(argv: list[str]) -> None:
    url, httpd = serve(cases.ENROW_VALID)
    try:
        counts = count(url)
    finally:
        httpd.shutdown()
    print("| client | bare | with referee | added |")
    print("|---|---:|---:|---:|")
    for name, (bare, ours) in counts.items():
        b, r = sum(bare.values()) / N, sum(ours.values()) / N
        print(f"| {name} | {b:,.0f} | {r:,.0f} | {r - b:+.0f} |")
    for name in argv:
        bare, ours = counts[name]
        rows = []
        for key in bare.keys() | ours.keys():
            added = (ours.get(key, 0) - bare.get(key, 0)) / N
            if abs(added) >= 0.5:
                rows.append((added, f"{key[0]}:{key[1]} {key[2]}"))
        print(f"\n{name}: calls added (removed) per request")
        for added, where in sorted(rows, reverse=True):
            print(f"{added:+6.1f} {where}")


if __name__ == "__main__":
    main(sys.argv[1:])
