"""
A loopback TCP proxy that adds latency: every chunk it forwards, in either
direction, is written *delay* seconds after it was read, in order.  Put it
in front of a ``redis-server`` and each round trip costs ``2 * delay``
more, as a Redis in another data centre would, without throttling
pipelined or concurrent traffic (chunks in flight overlap).

::

    with LatencyProxy(("127.0.0.1", server.port), delay=0.05) as proxy:
        state = RedisState.from_url(proxy.url)

The proxy runs its own event loop in a daemon thread, so it never shares
(or is slowed by) the loop of the test that uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TYPE_CHECKING, Any, Self


if TYPE_CHECKING:
    from collections.abc import Coroutine


__all__ = ["LatencyProxy"]

#: How long starting or stopping the proxy may take.
TIMEOUT = 5.0

#: The most bytes read in one go; each read is forwarded as one chunk.
CHUNK = 65_536


class LatencyProxy:
    """
    Forwards connections on a free loopback port to *upstream*, each chunk
    *delay* seconds late; use it as a context manager.
    """

    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        self.upstream = upstream
        self.delay = delay
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._main, name="latency-proxy", daemon=True
        )

    @property
    def url(self) -> str:
        """
        The proxied server as a Redis URL.
        """
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(TIMEOUT):
            msg = f"the latency proxy did not start within {TIMEOUT}s"
            raise RuntimeError(msg)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *args: object) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(TIMEOUT)
        if self._thread.is_alive():
            msg = f"the latency proxy did not stop within {TIMEOUT}s"
            raise RuntimeError(msg)

    # On the proxy's own thread from here on.

    def _main(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._accept, "127.0.0.1", 0)
            )
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:  # noqa: BLE001 - re-raised by __enter__
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            for task in self._tasks:
                task.cancel()
            loop.run_until_complete(
                asyncio.gather(*self._tasks, return_exceptions=True)
            )
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            return
        self._spawn(self._pipe(client_r, up_w))
        self._spawn(self._pipe(up_r, client_w))

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """
        Copy *reader* to *writer*, each chunk *delay* late: one task reads
        and stamps the chunks, this one writes them when they are due, so
        chunks in flight overlap and their order is kept.
        """
        loop = asyncio.get_running_loop()
        due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            try:
                while data := await reader.read(CHUNK):
                    due.put_nowait((loop.time() + self.delay, data))
            except OSError:
                pass
            due.put_nowait((loop.time() + self.delay, b""))  # end of stream

        reading = loop.create_task(read())
        try:
            while True:
                at, data = await due.get()
                await asyncio.sleep(max(0.0, at - loop.time()))
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
