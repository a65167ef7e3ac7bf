"""Trying a credential against an MCP server outside any session (for `mcp_oauth_validate`).

The probe opens an MCP session (`initialize`), lists the server's tools (`tools/list`) and closes it: the same
steps a session's first turn takes, so a credential that passes here works there. It never retries: the
caller reports what happened at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.config import McpSettings
from corral.mcp.connection import Connection, describe_failure
from corral.vault.credentials import HttpReply


@dataclass(frozen=True)
class McpProbe:
    """How a probe went: `ok`, or the MCP method that failed, whether the server rejected the credential
    (HTTP 401/403), and the HTTP error response it got, if any (none after a timeout or a connection error)."""

    ok: bool
    failed_method: str | None = None
    rejected: bool = False
    reply: HttpReply | None = None


async def probe_mcp_server(url: str, headers: dict[str, str], settings: McpSettings) -> McpProbe:
    connection = Connection("credential-validation", url, headers, settings, key="", keep_error_response=True)
    method = "initialize"
    try:
        await connection.open()
        method = "tools/list"
        await connection.list_tools()
    except Exception as exc:
        failure = describe_failure(exc, connection.statuses)
        return McpProbe(False, method, failure.authentication, connection.error_response)
    finally:
        await connection.close()
    return McpProbe(True)
