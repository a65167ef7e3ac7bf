"""Connections from the brain to agents' MCP servers (Streamable HTTP; SSE for URLs ending in `/sse`).

`McpHub` (one per server process) keeps each session's connections open between turns in a `SessionMcp`. At
the start of a turn the harness calls `prepare`: every MCP server the agent declares is connected (or its
cached connection reused, unless its URL or credential changed), its tools are listed, and the enabled ones
come back as `McpTool`s named for the model (`corral.mcp.names`). A server that cannot be reached is retried
with backoff, reported through `report` as an `mcp_connection_failed_error` (`retrying` while attempts remain,
then `exhausted`), and the turn goes on without it; a rejected credential (HTTP 401/403) is reported as
`mcp_authentication_failed_error` at once, after one token refresh where the credential has a refresh token.

The connections themselves, and what their failures mean, are in `connection.py`; turning a call's result into
content blocks is in `results.py`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from corral.config import McpSettings
from corral.hands.builtin.toolset import BUILTIN_TOOLS
from corral.mcp.connection import Connection, describe_failure, error_message, mcp_error
from corral.mcp.names import model_tool_name
from corral.mcp.results import error_result, result_content
from corral.session.records import Json
from corral.vault.credentials import McpCredential, VaultAccess

log = logging.getLogger("corral.mcp")

MAX_IDLE_SESSIONS = 1000


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


def _session_error(kind: str, server: str, message: str, retry_status: str) -> Json:
    return {"type": kind, "mcp_server_name": server, "message": message, "retry_status": {"type": retry_status}}


def _toolset_for(tools: list[Json], server: str) -> Json | None:
    return next((t for t in tools if t.get("type") == "mcp_toolset" and t["mcp_server_name"] == server), None)


def tool_config(toolset: Json, tool: str) -> Json:
    """The resolved config of one MCP tool: its own entry in `configs`, else the toolset's default."""
    entry: Json | None = next((entry for entry in toolset["configs"] if entry["name"] == tool), None)
    default: Json = toolset["default_config"]
    return entry if entry is not None else default


@dataclass
class _Credentialed:
    headers: dict[str, str]
    credential: McpCredential | None


class SessionMcp:
    """One session's MCP connections and the tools they offered this turn."""

    def __init__(self, hub: McpHub, session_id: str) -> None:
        self._hub = hub
        self.session_id = session_id
        self._connections: dict[str, Connection] = {}
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
    ) -> Connection:
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
        connection = Connection(name, url, credentialed.headers, self._hub.settings, key)
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
            connection: Connection | None = None
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
            connection: Connection | None = None
            try:
                connection = await self._connect(server, workspace_id, vault_ids, given)
                result = await connection.call(tool, arguments)
            except mcp_error() as exc:
                return error_result(f"MCP server '{name}' refused the call to {tool}: {error_message(exc)}")
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
