"""
A loopback HTTP server for the end-to-end comparisons: every request gets
the same small JSON 200, over keep-alive connections.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without it, each keep-alive request waits ~40 ms on a delayed ACK.
    disable_nagle_algorithm = True
    body = b""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


def serve(body: bytes) -> tuple[str, ThreadingHTTPServer]:
    """
    Start the server in a daemon thread; its URL and the server (to
    shut down).
    """
    handler = type("Handler", (_Handler,), {"body": body})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    port = httpd.server_address[1]
    return f"http://127.0.0.1:{port}/email/find/single?id=1", httpd
