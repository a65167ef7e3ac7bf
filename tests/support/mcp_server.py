"""A real MCP server for tests, built with the `mcp` SDK and served by uvicorn on 127.0.0.1 in a thread.

Endpoints (one server, one port):

* `/mcp` — Streamable HTTP, open to anyone.
* `/guarded/mcp` — the same server, but only for `Authorization: Bearer <token>` with a token in `tokens`;
  anything else gets 401.
* `/sse` (+ `/messages/`) — the same tools over the older SSE transport, open.
* `/oauth/token` — an OAuth 2.0 token endpoint: the `refresh_token` grant with `refresh_token` trades it for
  `refreshed_token`, which `/guarded/mcp` then accepts.

Tools: `add(a, b)`, `echo(text)`, `fail(reason)` (always an error result), `wait(seconds)` (a call that is
still running when a test cuts it). Every request's `Authorization` header and every tool call are recorded,
so tests can check what reached the server.

Run standalone with `python -m tests.support.mcp_server --port 8402`.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import socket
import threading
import time
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send


class McpTestServer:
    def __init__(self, *, token: str | None = None, refresh_token: str | None = None) -> None:
        self.tokens: set[str] = {token or f"tok-{secrets.token_hex(8)}"}
        self.token = next(iter(self.tokens))
        self.refresh_token = refresh_token or f"refresh-{secrets.token_hex(8)}"
        self.refreshed_token = f"fresh-{secrets.token_hex(8)}"
        self._lock = threading.Lock()
        self._authorizations: list[str] = []
        self._calls: list[tuple[str, dict[str, Any]]] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.port = 0

        mcp = MCPServer("corral-test", log_level="WARNING")

        @mcp.tool()
        def add(a: int, b: int) -> str:
            """Add two integers."""
            self._record_call("add", {"a": a, "b": b})
            return str(a + b)

        @mcp.tool()
        def echo(text: str) -> str:
            """Say the text back."""
            self._record_call("echo", {"text": text})
            return text

        @mcp.tool()
        def fail(reason: str) -> str:
            """Always fails with the reason."""
            self._record_call("fail", {"reason": reason})
            raise ToolError(reason)

        @mcp.tool()
        async def wait(seconds: float) -> str:
            """Wait that many seconds, then say so."""
            self._record_call("wait", {"seconds": seconds})
            await asyncio.sleep(seconds)
            return f"waited {seconds}s"

        self._streamable = mcp.streamable_http_app()
        self._sse = mcp.sse_app()

    # --- what tests look at ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def guarded_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/guarded/mcp"

    @property
    def sse_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/sse"

    @property
    def token_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/oauth/token"

    @property
    def authorizations(self) -> list[str]:
        with self._lock:
            return list(self._authorizations)

    @property
    def calls(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return list(self._calls)

    def reset(self) -> None:
        with self._lock:
            self._authorizations.clear()
            self._calls.clear()

    def _record_call(self, name: str, arguments: dict[str, Any]) -> None:
        with self._lock:
            self._calls.append((name, arguments))

    # --- the ASGI app ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._streamable(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        authorization = headers.get("authorization", "")
        with self._lock:
            self._authorizations.append(authorization)
        path: str = scope["path"]
        if path == "/oauth/token":
            await self._token(scope, receive, send)
        elif path.startswith("/guarded/"):
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or token not in self.tokens:
                response = JSONResponse({"error": "invalid_token"}, status_code=401)
                response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
                await response(scope, receive, send)
                return
            inner = path.removeprefix("/guarded")
            await self._streamable({**scope, "path": inner, "raw_path": inner.encode()}, receive, send)
        elif path.startswith(("/sse", "/messages")):
            await self._sse(scope, receive, send)
        else:
            await self._streamable(scope, receive, send)

    async def _token(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        form = {key: values[0] for key, values in parse_qs(body.decode()).items()}
        if form.get("grant_type") != "refresh_token" or form.get("refresh_token") != self.refresh_token:
            await JSONResponse({"error": "invalid_grant"}, status_code=400)(scope, receive, send)
            return
        self.tokens.add(self.refreshed_token)
        payload = {"access_token": self.refreshed_token, "token_type": "Bearer", "expires_in": 3600}
        await JSONResponse(payload)(scope, receive, send)

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> McpTestServer:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self._socket = sock
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(self, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="mcp-test-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the MCP test server failed to start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> McpTestServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8402)
    args = parser.parse_args(argv)
    server = McpTestServer()
    print(f"token for /guarded/mcp: {server.token}")
    config = uvicorn.Config(server, host="127.0.0.1", port=args.port, lifespan="on")
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
