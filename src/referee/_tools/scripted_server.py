"""
A scripted HTTP server on a loopback port: a fake API for tests of clients
(public as ``referee.testing.ScriptedServer``, and the ``referee_server``
fixture of the pytest plugin).  Standard library and attrs only.

Each path has a script: a list of replies served in order (the last one
repeats).  A reply is a status with headers and a body, optionally after a
delay, or ``RESET`` (the connection is dropped without an answer, after the
request was read).  Every request is recorded: method, path (with query),
headers and body, and the connections opened are counted, so tests can
assert that nothing leaked and nothing was sent twice.

::

    with ScriptedServer() as server:
        server.script(
            "/jobs", [Reply(503, {"Retry-After": "0"}), Reply(200, body=b"ok")]
        )
        httpx.get(server.url("/jobs"))
        assert 2 == len(server.requests)
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import attrs


__all__ = ["RESET", "Recorded", "Reply", "ScriptedServer"]


@attrs.frozen
class Reply:
    """
    One scripted answer.  *body* may be bytes, str, or anything JSON can
    encode (then Content-Type is application/json).  *delay* (seconds) is
    waited, for real, before the answer.
    """

    status: int = 200
    headers: dict[str, str] = attrs.Factory(dict)
    body: Any = b""
    delay: float = 0.0


#: Drop the connection after reading the request: a read failure for the
#: client.
RESET = Reply(status=0)


@attrs.frozen
class Recorded:
    """
    One request the server received: the path keeps its query; header
    names are lower-case.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Keep-alive requests would wait ~40 ms on delayed ACKs otherwise.
    disable_nagle_algorithm = True

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def _serve(self) -> None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or ""):
            body = self._chunked()
        else:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
        path_only = self.path.split("?", 1)[0]
        rec = Recorded(
            self.command,
            self.path,
            {k.lower(): v for k, v in self.headers.items()},
            body,
        )
        reply = self.server.owner._next(path_only, rec)  # noqa: SLF001
        if reply.delay:
            time.sleep(reply.delay)
        if reply.status == 0:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        payload = reply.body
        headers = dict(reply.headers)
        if not isinstance(payload, bytes | str):
            payload = json.dumps(payload).encode()
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(payload, str):
            payload = payload.encode()
        self.send_response(reply.status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    # http.server dispatches on these names.
    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int(
                self.rfile.readline().split(b";")[0].strip() or b"0", 16
            )
            if size == 0:
                self.rfile.readline()  # the blank line after the last chunk
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve  # noqa: N815


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: ScriptedServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A reply written after the client gave up is expected in tests of
        # timeouts; anything else is still reported.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        with self.owner._lock:  # noqa: SLF001
            self.owner.connections += 1
        return conn, addr


class ScriptedServer:
    """
    The server; use it as a context manager.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Reply]] = {}
        self._served: dict[str, int] = {}
        self.requests: list[Recorded] = []
        self.connections = 0
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.01},
            daemon=True,
        )

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *args: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, replies: list[Reply]) -> None:
        """
        Serve *replies* in order on *path* (the last repeats).
        """
        with self._lock:
            self._scripts[path] = list(replies)
            self._served[path] = 0

    def _next(self, path: str, rec: Recorded) -> Reply:
        with self._lock:
            self.requests.append(rec)
            replies = self._scripts.get(path)
            if not replies:
                return Reply(404, body={"message": f"no script for {path}"})
            n = self._served[path]
            self._served[path] = n + 1
            return replies[min(n, len(replies) - 1)]

    def count(self, path: str) -> int:
        """
        How many requests *path* has received.
        """
        with self._lock:
            return sum(
                1 for r in self.requests if r.path.split("?")[0] == path
            )

    def settled_count(
        self, path: str, at_least: int, wait: float = 2.0
    ) -> int:
        """
        :meth:`count`, once it has reached *at_least* or *wait* seconds
        have passed: a client that gave up (a timeout) may return before
        the server has read the request it sent.
        """
        deadline = time.monotonic() + wait
        while (found := self.count(path)) < at_least:
            if time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        return found
