"""A small HTTP server in the test process that stands in for "the internet" (this machine has none).

Routes are a dict from path to a response; every request is recorded, so a test can also assert that a
refused request never arrived. `resolver` maps test host names to addresses for `AddressPolicy`.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from corral.hands.net.policy import Resolver


@dataclass
class Response:
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


class LocalWeb:
    def __init__(self, routes: dict[str, Response]) -> None:
        self.routes = routes
        self.requests: list[Request] = []
        web = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._answer(b"")

            def do_POST(self) -> None:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    self._answer(self._read_chunked())
                else:
                    self._answer(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def _read_chunked(self) -> bytes:
                body = b""
                while size := int(self.rfile.readline().split(b";", 1)[0], 16):
                    body += self.rfile.read(size)
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b""):
                    pass  # trailer fields
                return body

            def _answer(self, body: bytes) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                web.requests.append(Request(self.command, self.path, headers, body))
                response = web.routes.get(self.path.split("?", 1)[0], Response(b"not found\n", status=404))
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(response.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])

    @property
    def address(self) -> str:
        """The exact `address:port` to allow with CORRAL_EGRESS_ALLOW_ADDRESSES."""
        return f"127.0.0.1:{self.port}"

    def paths(self) -> list[str]:
        return [request.path for request in self.requests]

    @contextmanager
    def running(self) -> Iterator[LocalWeb]:
        thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(timeout=5)


def static_resolver(names: dict[str, str]) -> Resolver:
    """A resolver for `AddressPolicy` that knows only `names` (host -> address); others do not resolve."""

    async def resolve(host: str, port: int) -> list[str]:
        if host in names:
            return [names[host]]
        raise OSError(f"test resolver: unknown host {host}")

    return resolve
