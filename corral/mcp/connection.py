"""One connection to an MCP server (Streamable HTTP; SSE for URLs ending in `/sse`), and what its failures mean.

Each connection lives in a task of its own, because the SDK's transports are anyio task groups that must be
entered and left by one task; calls from the turn's task go through it. Idle connections close themselves.
Credentials reach the server as `Authorization` headers only; no secret is logged or reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx2

from corral.config import McpSettings
from corral.session.records import Json
from corral.vault.credentials import HttpReply

if TYPE_CHECKING:
    from mcp import Client

log = logging.getLogger("corral.mcp")

MAX_TOOL_PAGES = 20
IDLE_CLOSE_SECONDS = 600.0


class McpFailure(Exception):
    """A server could not be used; the message says why and is safe to show (it holds no secret)."""

    def __init__(self, message: str, *, authentication: bool = False, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.authentication = authentication
        self.retryable = retryable


def mcp_error() -> type[Exception]:
    """The SDK's protocol error class. The `mcp` package takes a second to import, so it is imported only
    when a session first uses an MCP server, never at server start."""
    from mcp.shared.exceptions import MCPError

    return MCPError


def error_message(exc: BaseException) -> str:
    """The message of an MCP protocol error (`MCPError.error.message`), else the exception's text."""
    return str(getattr(getattr(exc, "error", None), "message", None) or exc)[:500]


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def describe_failure(exc: BaseException, statuses: list[int]) -> McpFailure:
    """What went wrong connecting to (or talking to) a server, from the exception and the HTTP statuses seen."""
    if isinstance(exc, McpFailure):
        return exc
    rejected = [status for status in statuses if status in (401, 403)]
    if rejected:
        return McpFailure(
            f"the server rejected the credential (HTTP {rejected[-1]}): attach a vault with a valid credential "
            "for this server URL",
            authentication=True,
        )
    leaves = _leaves(exc)
    for leaf in leaves:
        if isinstance(leaf, httpx2.TimeoutException | TimeoutError):
            return McpFailure("the server did not answer in time", retryable=True)
        if isinstance(leaf, httpx2.ConnectError):
            return McpFailure(f"cannot connect to the server ({leaf})", retryable=True)
        if isinstance(leaf, httpx2.TransportError):
            return McpFailure(f"the connection to the server failed ({type(leaf).__name__})", retryable=True)
    if statuses and statuses[-1] >= 500:
        return McpFailure(f"the server answered HTTP {statuses[-1]}", retryable=True)
    if statuses and statuses[-1] >= 400:
        return McpFailure(f"the server answered HTTP {statuses[-1]}: is this the URL of an MCP endpoint?")
    for leaf in leaves:
        if isinstance(leaf, mcp_error()):
            return McpFailure(f"the server refused the MCP session: {error_message(leaf)}")
    leaf = leaves[0]
    return McpFailure(f"{type(leaf).__name__}: {str(leaf)[:300]}")


class Connection:
    """One MCP session, held open by a task of its own until closed or idle for IDLE_CLOSE_SECONDS."""

    def __init__(
        self,
        server: str,
        url: str,
        headers: dict[str, str],
        settings: McpSettings,
        key: str,
        *,
        keep_error_response: bool = False,
    ) -> None:
        self.server = server
        self.url = url
        self.key = key
        self.statuses: list[int] = []
        # The first HTTP error response, body and all, when asked to keep it (a credential validation reports it).
        self.error_response: HttpReply | None = None
        self._keep_error_response = keep_error_response
        self._headers = headers
        self._settings = settings
        self._client: Client | None = None
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Retrieve the outcome even if nobody waits for it any more (an open that timed out).
        self._ready.add_done_callback(lambda future: future.cancelled() or future.exception())
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._calls = 0
        self._last_used = time.monotonic()

    @property
    def alive(self) -> bool:
        return self._client is not None and self._task is not None and not self._task.done()

    @property
    def opened(self) -> bool:
        """True once the handshake has finished, whether it succeeded or not."""
        return self._ready.done()

    async def _saw(self, response: httpx2.Response) -> None:
        self.statuses.append(response.status_code)
        if self._keep_error_response and response.status_code >= 400 and self.error_response is None:
            body = await response.aread()
            self.error_response = HttpReply(response.status_code, response.headers.get("content-type", ""), body)

    def _transport(self) -> tuple[AbstractAsyncContextManager[Any], httpx2.AsyncClient | None, str]:
        from mcp.client.sse import sse_client
        from mcp.client.streamable_http import streamable_http_client

        timeout = httpx2.Timeout(self._settings.connect_timeout, read=self._settings.call_timeout)
        hooks = {"response": [self._saw]}
        if urlsplit(self.url).path.rstrip("/").endswith("/sse"):

            def factory(
                headers: dict[str, str] | None = None,
                timeout: httpx2.Timeout | None = None,
                auth: httpx2.Auth | None = None,
            ) -> httpx2.AsyncClient:
                return httpx2.AsyncClient(headers=headers, timeout=timeout, auth=auth, event_hooks=hooks)

            transport = sse_client(
                self.url,
                headers=self._headers,
                timeout=self._settings.connect_timeout,
                sse_read_timeout=self._settings.call_timeout,
                httpx_client_factory=factory,
            )
            return transport, None, "legacy"
        http = httpx2.AsyncClient(headers=self._headers, timeout=timeout, event_hooks=hooks)
        return streamable_http_client(self.url, http_client=http), http, "auto"

    async def _hold(self) -> None:
        from mcp import Client

        try:
            transport, http, mode = self._transport()
            try:
                async with Client(transport, mode=mode, cache=None) as client:
                    self._client = client
                    if not self._ready.done():
                        self._ready.set_result(None)
                    await self._stay_open()
            finally:
                if http is not None:
                    await http.aclose()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failure = describe_failure(exc, self.statuses)
            if not self._ready.done():
                self._ready.set_exception(failure)
            else:
                log.info("MCP server %s: the connection ended: %s", self.server, failure.message)
        finally:
            self._client = None
            if not self._ready.done():
                self._ready.cancel()

    async def _stay_open(self) -> None:
        while not self._closing.is_set():
            idle = time.monotonic() - self._last_used
            if self._calls == 0 and idle >= IDLE_CLOSE_SECONDS:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=max(1.0, IDLE_CLOSE_SECONDS - idle))

    async def open(self) -> None:
        self._task = asyncio.create_task(self._hold(), name=f"mcp:{self.server}")
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self._settings.connect_timeout)
        except TimeoutError:
            self._task.cancel()
            raise McpFailure("the server did not complete the MCP handshake in time", retryable=True) from None
        except asyncio.CancelledError:
            self._task.cancel()
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the turn itself is being cancelled (an interrupt)
            raise McpFailure("the connection closed during the handshake", retryable=True) from None

    def _client_or_fail(self) -> Client:
        if self._client is None or not self.alive:
            raise McpFailure("the connection to the server closed", retryable=True)
        self._last_used = time.monotonic()
        return self._client

    async def list_tools(self) -> list[Any]:
        client = self._client_or_fail()
        tools: list[Any] = []
        cursor: str | None = None
        for _ in range(MAX_TOOL_PAGES):
            page = await asyncio.wait_for(client.list_tools(cursor=cursor), self._settings.connect_timeout)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    async def call(self, tool: str, arguments: Json) -> Any:
        client = self._client_or_fail()
        self._calls += 1
        try:
            timeout = self._settings.call_timeout
            return await asyncio.wait_for(client.call_tool(tool, arguments, read_timeout_seconds=timeout), timeout)
        finally:
            self._calls -= 1
            self._last_used = time.monotonic()

    async def close(self) -> None:
        self._closing.set()
        task = self._task
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), 5.0)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
