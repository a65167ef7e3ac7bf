"""Connections from the brain to agents' MCP servers (Streamable HTTP; SSE for URLs ending in `/sse`).

`McpHub` (one per server process) keeps each session's connections open between turns in a `SessionMcp`. At
the start of a turn the harness calls `prepare`: every MCP server the agent declares is connected (or its
cached connection reused, unless its URL or credential changed), its tools are listed, and the enabled ones
come back as `McpTool`s named for the model (`corral.mcp.names`). A server that cannot be reached is retried
with backoff, reported through `report` as an `mcp_connection_failed_error` (`retrying` while attempts remain,
then `exhausted`), and the turn goes on without it; a rejected credential (HTTP 401/403) is reported as
`mcp_authentication_failed_error` at once, after one token refresh where the credential has a refresh token.

Each connection lives in a task of its own, because the SDK's transports are anyio task groups that must be
entered and left by one task; calls from the turn's task go through it. Idle connections close themselves.
Credentials reach the server as `Authorization` headers only; no secret is logged or reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx2

from corral.config import McpSettings
from corral.hands.builtin.toolset import BUILTIN_TOOLS
from corral.mcp.names import model_tool_name
from corral.session.records import Json
from corral.vault.credentials import McpCredential, VaultAccess

if TYPE_CHECKING:
    from mcp import Client

log = logging.getLogger("corral.mcp")

MAX_RESULT_TEXT = 100 * 1024
MAX_TOOL_PAGES = 20
IDLE_CLOSE_SECONDS = 600.0
MAX_IDLE_SESSIONS = 1000
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

# Appends a `session.error` with this `error` object to the session's log.
Report = Callable[[Json], Awaitable[None]]


@dataclass(frozen=True)
class McpTool:
    server: str
    name: str  # the MCP tool's own name
    model_name: str
    description: str
    input_schema: Json

    def definition(self) -> Json:
        return {"name": self.model_name, "description": self.description, "input_schema": self.input_schema}


class McpFailure(Exception):
    """A server could not be used; the message says why and is safe to show (it holds no secret)."""

    def __init__(self, message: str, *, authentication: bool = False, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.authentication = authentication
        self.retryable = retryable


def _mcp_error() -> type[Exception]:
    """The SDK's protocol error class. The `mcp` package takes a second to import, so it is imported only
    when a session first uses an MCP server, never at server start."""
    from mcp.shared.exceptions import MCPError

    return MCPError


def _error_message(exc: BaseException) -> str:
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
        if isinstance(leaf, _mcp_error()):
            return McpFailure(f"the server refused the MCP session: {_error_message(leaf)}")
    leaf = leaves[0]
    return McpFailure(f"{type(leaf).__name__}: {str(leaf)[:300]}")


def result_content(result: Any) -> list[Json]:
    """An MCP `CallToolResult`'s content as the blocks of `agent.mcp_tool_result.content`."""
    blocks: list[Json] = []
    for item in result.content or []:
        data = item.model_dump(mode="json", by_alias=True, exclude_none=True)
        kind = data.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": data.get("text", "")})
        elif kind == "image" and data.get("mimeType") in IMAGE_TYPES:
            source = {"type": "base64", "media_type": data["mimeType"], "data": data.get("data", "")}
            blocks.append({"type": "image", "source": source})
        elif kind == "resource":
            resource = data.get("resource") or {}
            if "text" in resource:
                blocks.append({"type": "text", "text": str(resource["text"])})
            else:
                blocks.append({"type": "text", "text": f"[binary resource {resource.get('uri', '')} omitted]"})
        elif kind == "resource_link":
            blocks.append({"type": "text", "text": f"[resource {data.get('uri', '')}]"})
        else:
            blocks.append({"type": "text", "text": f"[{kind} content omitted]"})
    if not blocks and result.structured_content is not None:
        blocks.append({"type": "text", "text": json.dumps(result.structured_content)})
    budget = MAX_RESULT_TEXT
    for block in blocks:
        if block["type"] == "text":
            if len(block["text"]) > budget:
                block["text"] = block["text"][:budget] + "\n[output truncated]"
            budget = max(0, budget - len(block["text"]))
    return blocks


def error_result(message: str) -> Json:
    return {"content": [{"type": "text", "text": message}], "is_error": True}


def _session_error(kind: str, server: str, message: str, retry_status: str) -> Json:
    return {"type": kind, "mcp_server_name": server, "message": message, "retry_status": {"type": retry_status}}


def _toolset_for(tools: list[Json], server: str) -> Json | None:
    return next((t for t in tools if t.get("type") == "mcp_toolset" and t["mcp_server_name"] == server), None)


def tool_config(toolset: Json, tool: str) -> Json:
    """The resolved config of one MCP tool: its own entry in `configs`, else the toolset's default."""
    entry: Json | None = next((entry for entry in toolset["configs"] if entry["name"] == tool), None)
    default: Json = toolset["default_config"]
    return entry if entry is not None else default


class _Connection:
    """One MCP session, held open by a task of its own until closed or idle for IDLE_CLOSE_SECONDS."""

    def __init__(self, server: str, url: str, headers: dict[str, str], settings: McpSettings, key: str) -> None:
        self.server = server
        self.url = url
        self.key = key
        self.statuses: list[int] = []
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


@dataclass
class _Credentialed:
    headers: dict[str, str]
    credential: McpCredential | None


class SessionMcp:
    """One session's MCP connections and the tools they offered this turn."""

    def __init__(self, hub: McpHub, session_id: str) -> None:
        self._hub = hub
        self.session_id = session_id
        self._connections: dict[str, _Connection] = {}
        self._credentials: dict[str, McpCredential | None] = {}
        self.tools: dict[str, McpTool] = {}  # by model name

    async def _credential(self, url: str, workspace_id: str, vault_ids: list[str]) -> _Credentialed:
        vault = self._hub.vault
        if vault is None or not vault_ids:
            return _Credentialed({}, None)
        credential = await vault.mcp_credential(workspace_id, vault_ids, url)
        return _Credentialed(credential.headers if credential else {}, credential)

    async def _connect(
        self, server: Json, workspace_id: str, vault_ids: list[str], given: McpCredential | None = None
    ) -> _Connection:
        name, url = server["name"], server["url"]
        if given is not None:
            credentialed = _Credentialed(given.headers, given)
        else:
            credentialed = await self._credential(url, workspace_id, vault_ids)
        self._credentials[name] = credentialed.credential
        key = hashlib.sha256(json.dumps([url, credentialed.headers], sort_keys=True).encode()).hexdigest()
        existing = self._connections.get(name)
        if existing is not None and existing.alive and existing.key == key:
            return existing
        if existing is not None:
            await self._drop(name)
        connection = _Connection(name, url, credentialed.headers, self._hub.settings, key)
        self._connections[name] = connection
        try:
            await connection.open()
        except BaseException:
            self._connections.pop(name, None)
            raise
        return connection

    async def _drop(self, name: str) -> None:
        connection = self._connections.pop(name, None)
        if connection is not None:
            await connection.close()

    async def _refreshed(self, name: str, workspace_id: str) -> McpCredential | None:
        """A fresh token for the server's `mcp_oauth` credential after the server rejected the old one."""
        credential = self._credentials.get(name)
        vault = self._hub.vault
        if credential is None or vault is None or not credential.can_refresh:
            return None
        return await vault.refresh_rejected(workspace_id, credential)

    async def prepare(self, agent: Json, *, workspace_id: str, vault_ids: list[str], report: Report) -> list[McpTool]:
        """Connect the agent's MCP servers and return this turn's enabled tools (see the module docstring)."""
        reserved = {tool["name"] for tool in agent["tools"] if tool.get("type") == "custom"} | set(BUILTIN_TOOLS)
        offered: dict[str, McpTool] = {}
        declared = {server["name"] for server in agent.get("mcp_servers") or []}
        for name in list(self._connections):
            if name not in declared:
                await self._drop(name)
        for server in agent.get("mcp_servers") or []:
            toolset = _toolset_for(agent["tools"], server["name"])
            if toolset is None:
                continue
            if not toolset["default_config"]["enabled"] and not any(e["enabled"] for e in toolset["configs"]):
                continue
            listed = await self._list(server, workspace_id, vault_ids, report)
            for tool in listed:
                if not tool_config(toolset, tool.name)["enabled"]:
                    continue
                if tool.model_name in reserved or tool.model_name in offered:
                    log.warning(
                        "session %s: MCP tool %s of %s is not offered: its name %s is taken",
                        self.session_id,
                        tool.name,
                        tool.server,
                        tool.model_name,
                    )
                    continue
                offered[tool.model_name] = tool
        self.tools = offered
        return list(offered.values())

    async def _list(self, server: Json, workspace_id: str, vault_ids: list[str], report: Report) -> list[McpTool]:
        name = server["name"]
        attempt = 0
        given: McpCredential | None = None
        refreshed = False
        while True:
            connection: _Connection | None = None
            try:
                connection = await self._connect(server, workspace_id, vault_ids, given)
                raw_tools = await connection.list_tools()
            except Exception as exc:
                problem = describe_failure(exc, connection.statuses if connection else [])
            else:
                return [self._tool(name, tool) for tool in raw_tools]
            await self._drop(name)
            if problem.authentication:
                if not refreshed:
                    refreshed = True
                    given = await self._refreshed(name, workspace_id)
                    if given is not None:
                        continue
                message = f"MCP server '{name}' rejected Corral's request: {problem.message}"
                await report(_session_error("mcp_authentication_failed_error", name, message, "exhausted"))
                return []
            if problem.retryable and attempt < self._hub.settings.connect_retries:
                attempt += 1
                message = f"MCP server '{name}' at {server['url']} is unavailable: {problem.message}; retrying"
                await report(_session_error("mcp_connection_failed_error", name, message, "retrying"))
                await asyncio.sleep(self._hub.settings.retry_delay * 2 ** (attempt - 1))
                continue
            message = (
                f"MCP server '{name}' at {server['url']} is unavailable: {problem.message}; this turn goes on "
                "without its tools"
            )
            await report(_session_error("mcp_connection_failed_error", name, message, "exhausted"))
            return []

    @staticmethod
    def _tool(server: str, tool: Any) -> McpTool:
        schema = tool.input_schema if isinstance(tool.input_schema, dict) else {}
        if schema.get("type") != "object":
            schema = {"type": "object", "properties": {}}
        return McpTool(
            server=server,
            name=tool.name,
            model_name=model_tool_name(server, tool.name),
            description=tool.description or tool.title or f"The {tool.name} tool of MCP server {server}.",
            input_schema=schema,
        )

    async def call(self, server: Json, tool: str, arguments: Json, *, workspace_id: str, vault_ids: list[str]) -> Json:
        """Run one tool; every failure is an `is_error` result, never an exception (except cancellation)."""
        name = server["name"]
        given: McpCredential | None = None
        for attempt in (1, 2):
            connection: _Connection | None = None
            try:
                connection = await self._connect(server, workspace_id, vault_ids, given)
                result = await connection.call(tool, arguments)
            except _mcp_error() as exc:
                return error_result(f"MCP server '{name}' refused the call to {tool}: {_error_message(exc)}")
            except TimeoutError:
                await self._drop(name)
                return error_result(f"MCP server '{name}' did not answer the call to {tool} in time")
            except Exception as exc:
                failure = describe_failure(exc, connection.statuses if connection else [])
                await self._drop(name)
                if failure.authentication and attempt == 1:
                    given = await self._refreshed(name, workspace_id)
                    if given is not None:
                        continue
                return error_result(f"MCP server '{name}' is unavailable: {failure.message}")
            return {"content": result_content(result), "is_error": bool(result.is_error)}
        raise AssertionError("unreachable")

    @property
    def connected(self) -> bool:
        """True while any connection is open or opening."""
        return any(connection.alive or not connection.opened for connection in self._connections.values())

    async def close(self) -> None:
        for name in list(self._connections):
            await self._drop(name)


class McpHub:
    """Every session's MCP connections in this process."""

    def __init__(self, settings: McpSettings, vault: VaultAccess | None) -> None:
        self.settings = settings
        self.vault = vault
        self._sessions: dict[str, SessionMcp] = {}

    def session(self, session_id: str) -> SessionMcp:
        found = self._sessions.get(session_id)
        if found is None:
            if len(self._sessions) >= MAX_IDLE_SESSIONS:
                # Forget sessions with no open connection (idle ones close themselves); they cost nothing to remake.
                for other_id, other in list(self._sessions.items()):
                    if not other.connected:
                        del self._sessions[other_id]
            found = self._sessions[session_id] = SessionMcp(self, session_id)
        return found

    async def release(self, session_id: str) -> None:
        """Close a session's connections (the session was deleted, archived, or moved to another brain)."""
        found = self._sessions.pop(session_id, None)
        if found is not None:
            await found.close()

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(session.close() for session in sessions), return_exceptions=True)
