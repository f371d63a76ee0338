"""
A loopback HTTP/1.1 server that injects a seeded mix of faults.

It is a bare :mod:`asyncio` protocol rather than a framework so that it can
misbehave exactly: close a connection before or after reading a request,
promise a body and send half of it, or answer after the client has given
up.  Run it with ``python -m soak.server --seed 1 --credits 200``; it
prints ``listening on PORT`` and serves until stdin closes or it is killed.

Every request carries ``X-Request-Id``.  The fault of one arrival is drawn
from ``random.Random(f"{seed}:{request id}:{n}")``, *n* counting the
arrivals of that id, so a call meets the same faults whatever the
interleaving of the others (only the credit counter depends on order).

What counts as **processed** (executed: a POST spends its work and a
credit):

============================== ============ ================================
fault                          processed?   why
============================== ============ ================================
none (2xx answer)              yes          the normal case
``429`` (any hint)             no           the API documents it
``502``, ``503``               no           refused before the work started
``500``, ``504``               yes          the work ran, then failed
reset before reading           no           closed on the request head
reset after reading            yes          the body was read and executed
slow (after the client timeout) yes         executed, then answered late
truncated body                 yes          a 200 cut short
malformed JSON                 yes          a 200 whose body is not JSON
``402`` (no credit left)       yes          counted, to be strict
============================== ============ ================================

A POST without ``Idempotency-Key`` that is processed increments
``executions[request id]``; the soak checks that none exceeds one.

``GET /_stats`` answers the counters as JSON (never a fault).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import sys
from typing import Any, Final


__all__ = ["FAULTS", "FaultServer", "main"]

#: Each fault kind and its share of arrivals; the rest are answered well.
FAULTS: Final[dict[str, float]] = {
    "429": 0.03,
    "429-retry-after": 0.02,
    "429-retry-after-ms": 0.02,
    "500": 0.02,
    "502": 0.02,
    "503": 0.02,
    "504": 0.02,
    "reset-before-read": 0.02,
    "reset-after-read": 0.02,
    "slow": 0.015,
    "truncated": 0.02,
    "malformed": 0.02,
}

#: Faults after which the request counts as executed.
PROCESSED: Final = frozenset(
    {
        None,
        "500",
        "504",
        "reset-after-read",
        "slow",
        "truncated",
        "malformed",
        "402",
    }
)

_REASONS: Final = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    402: "Payment Required",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class _Request:
    __slots__ = ("body", "headers", "method", "path")

    def __init__(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body


class FaultServer:
    """
    The server's state: its fault mix, credits and counters.

    Args:
        seed: Seeds every fault decision.
        credits: POSTs executed before the account runs dry; ``dry`` POSTs
            are then answered 402 and the credits are topped up again.
        slow: How long a slow answer waits (more than the client's timeout).
        max_job: The most ``running`` answers a job gives before ``done``.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        credits: int = 200,  # noqa: A002 - the API's word
        dry: int = 3,
        slow: float = 0.6,
        max_job: int = 8,
        faults: dict[str, float] | None = None,
    ) -> None:
        self.seed = seed
        self.credits = credits
        self.refill = credits
        self.dry = dry
        self.dry_left = dry
        self.slow = slow
        self.max_job = max_job
        self.faults = list((faults or FAULTS).items())
        self.arrivals: collections.Counter[str] = collections.Counter()
        self.running: collections.Counter[str] = collections.Counter()
        self.executions: collections.Counter[str] = collections.Counter()
        self.keyed_executions: collections.Counter[str] = collections.Counter()
        self.injected: collections.Counter[str] = collections.Counter()
        self.requests = 0

    def stats(self) -> dict[str, Any]:
        """
        The counters, as ``GET /_stats`` answers them.
        """
        attempts = {
            rid: n - self.running[rid] for rid, n in self.arrivals.items()
        }
        return {
            "requests": self.requests,
            "faults": dict(self.injected),
            "executions": dict(self.executions),
            "keyed_executions": dict(self.keyed_executions),
            "attempts": attempts,
        }

    def choose(self, rid: str) -> tuple[str | None, random.Random]:
        """
        The fault for this arrival of *rid* (None: answer well).
        """
        n = self.arrivals[rid]
        self.arrivals[rid] = n + 1
        rng = random.Random(f"{self.seed}:{rid}:{n}")
        draw = rng.random()
        for kind, share in self.faults:
            if draw < share:
                return kind, rng
            draw -= share
        return None, rng

    def spend(self) -> bool:
        """
        Spend one credit; False when the account is dry (answer 402).
        """
        if self.credits > 0:
            self.credits -= 1
            return True
        self.dry_left -= 1
        if self.dry_left <= 0:
            self.credits = self.refill
            self.dry_left = self.dry
        return False

    def execute(self, request: _Request, rid: str) -> None:
        if request.method != "POST":
            return
        if "idempotency-key" in request.headers:
            self.keyed_executions[rid] += 1
        else:
            self.executions[rid] += 1

    def answer(
        self, request: _Request, rid: str, rng: random.Random
    ) -> tuple[int, dict[str, str], bytes]:
        """
        The well-behaved answer (after the work is done).
        """
        if request.path.startswith("/jobs/"):
            length = random.Random(f"{self.seed}:job:{rid}").randint(
                0, self.max_job
            )
            if self.running[rid] < length:
                self.running[rid] += 1
                return 202, {}, b'{"state":"running"}'
            return 200, {}, b'{"state":"done"}'
        if request.method == "POST":
            return (
                201,
                {},
                b'{"id":%d,"state":"created"}' % rng.randint(1, 10**6),
            )
        return 200, {}, b'{"id":1,"name":"item"}'


def _encode(status: int, headers: dict[str, str], body: bytes) -> bytes:
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    head.append("Content-Type: application/json")
    if "Content-Length" not in headers:
        head.append(f"Content-Length: {len(body)}")
    head.extend(f"{k}: {v}" for k, v in headers.items())
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class _Connection(asyncio.Protocol):
    def __init__(self, server: FaultServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.queue: asyncio.Queue[_Request | None] = asyncio.Queue()
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101
        self.transport = transport
        self.task = asyncio.get_running_loop().create_task(self._serve())

    def connection_lost(self, exc: Exception | None) -> None:
        self.queue.put_nowait(None)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            self.queue.put_nowait(_Request(method, path, headers, body))

    async def _serve(self) -> None:
        transport = self.transport
        assert transport is not None  # noqa: S101
        while True:
            request = await self.queue.get()
            if request is None or transport.is_closing():
                return
            await self._handle(transport, request)

    async def _handle(
        self, transport: asyncio.Transport, request: _Request
    ) -> None:
        server = self.server
        if request.path == "/_stats":
            body = json.dumps(server.stats()).encode()
            transport.write(_encode(200, {}, body))
            return
        server.requests += 1
        rid = request.headers.get("x-request-id", "")
        kind, rng = server.choose(rid)
        if (
            request.method == "POST"
            and kind in PROCESSED
            and not server.spend()
        ):
            kind = "402"
        if kind is not None:
            server.injected[kind] += 1
        if kind in PROCESSED:
            server.execute(request, rid)
        if kind is None:
            transport.write(_encode(*server.answer(request, rid, rng)))
        elif kind in {"reset-before-read", "reset-after-read"}:
            transport.abort()
        elif kind == "402":
            transport.write(_encode(402, {}, b'{"error":"no credits"}'))
        elif kind.startswith("429"):
            headers = {}
            if kind == "429-retry-after":
                headers["Retry-After"] = str(rng.randint(0, 1))
            elif kind == "429-retry-after-ms":
                headers["retry-after-ms"] = str(rng.randint(0, 200))
            transport.write(_encode(429, headers, b'{"error":"slow down"}'))
        elif kind == "slow":
            await asyncio.sleep(server.slow)
            if not transport.is_closing():
                transport.write(_encode(*server.answer(request, rid, rng)))
        elif kind == "truncated":
            body = b'{"id":1,"name":"a truncated item"}'
            transport.write(
                _encode(200, {"Content-Length": str(len(body))}, body[:10])
            )
            transport.close()
        elif kind == "malformed":
            transport.write(_encode(200, {}, b'{"id":1,"name":"it'))
        else:
            transport.write(_encode(int(kind), {}, b'{"error":"server"}'))


async def serve(
    server: FaultServer, host: str = "127.0.0.1", port: int = 0
) -> asyncio.Server:
    """
    Start serving *server* on *host*:*port* (0: any free port).
    """
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: _Connection(server), host, port, backlog=1024
    )


async def _main(args: argparse.Namespace) -> None:
    fault_server = FaultServer(args.seed, credits=args.credits, slow=args.slow)
    listener = await serve(fault_server, port=args.port)
    port = listener.sockets[0].getsockname()[1]
    sys.stdout.write(f"listening on {port}\n")
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    # Serve until stdin closes: the parent's end of the pipe going away
    # (even when it dies) stops the server.
    await loop.run_in_executor(None, sys.stdin.read)
    listener.close()
    await listener.wait_closed()


def main(argv: list[str] | None = None) -> None:
    """
    ``python -m soak.server [--seed N] [--credits N] [--port N]``.
    """
    parser = argparse.ArgumentParser(prog="python -m soak.server")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--credits", type=int, default=200)
    parser.add_argument("--slow", type=float, default=0.6)
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
