"""
A loopback server for the adapter contract (tests/test_contract.py): the
scripted server of tests.server, with replies whose bodies arrive in pieces
and slowly, which a Reply (one write of a sized body) cannot send.

A :class:`Drip` is a status and headers, written at once, then its chunks:
the first *immediate* of them at once, each of the others *interval*
seconds after the one before.  A drip is sent chunked (no Content-Length)
unless *sized*.  A plain Reply is served as a drip of one sized chunk
(after its delay); RESET is not served here.

::

    with DripServer() as server:
        server.script(
            "/events",
            [Drip(chunks=(b"data: 1\\n\\n", b"data: 2\\n\\n"), interval=0.4)],
        )

A drip stops early when the client goes away or the server is shut down,
so no handler thread outlives the test by more than one interval.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

import attrs
from tests.server import Recorded, Reply, ScriptedServer

from referee._tools.scripted_server import _Handler


if TYPE_CHECKING:
    from collections.abc import Sequence


__all__ = ["Drip", "DripServer"]


@attrs.frozen
class Drip:
    """
    A reply whose body is written chunk by chunk.
    """

    status: int = 200
    headers: dict[str, str] = attrs.Factory(dict)
    chunks: tuple[bytes, ...] = ()
    interval: float = 0.0
    immediate: int = 1
    sized: bool = False


def _as_drip(reply: Reply) -> Drip:
    payload: Any = reply.body
    headers = dict(reply.headers)
    if not isinstance(payload, bytes | str):
        payload = json.dumps(payload).encode()
        headers.setdefault("Content-Type", "application/json")
    elif isinstance(payload, str):
        payload = payload.encode()
    return Drip(reply.status, headers, (payload,), sized=True)


class _DripHandler(_Handler):
    def _serve(self) -> None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or ""):
            body = self._chunked()
        else:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
        rec = Recorded(
            self.command,
            self.path,
            {k.lower(): v for k, v in self.headers.items()},
            body,
        )
        owner: DripServer = self.server.owner  # type: ignore[assignment]
        reply: Reply | Drip = owner._next(self.path.split("?", 1)[0], rec)
        if isinstance(reply, Reply):
            if reply.delay and owner.stopping.wait(reply.delay):
                return
            reply = _as_drip(reply)
        try:
            self._drip(reply, owner.stopping)
        except ConnectionError:  # the client went away: expected here
            self.close_connection = True

    def _drip(self, drip: Drip, stopping: threading.Event) -> None:
        self.send_response(drip.status)
        for name, value in drip.headers.items():
            self.send_header(name, value)
        if drip.sized:
            total = sum(len(c) for c in drip.chunks)
            self.send_header("Content-Length", str(total))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for n, chunk in enumerate(drip.chunks):
            if n >= drip.immediate and stopping.wait(drip.interval):
                self.close_connection = True
                return
            if drip.sized:
                self.wfile.write(chunk)
            elif chunk:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        if not drip.sized:
            self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815


class DripServer(ScriptedServer):
    """
    The scripted server, serving drips as well as replies; use it as a
    context manager.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stopping = threading.Event()
        self._httpd.RequestHandlerClass = _DripHandler

    def __exit__(self, *args: object) -> None:
        self.stopping.set()
        super().__exit__(*args)

    def script(  # type: ignore[override]
        self, path: str, replies: Sequence[Reply | Drip]
    ) -> None:
        """
        Serve *replies* in order on *path* (the last repeats).
        """
        super().script(path, list(replies))  # type: ignore[arg-type]
