"""The seam between the brain and the hands.

The brain knows tools only by name and JSON input; it hands them to a `Hands` object and gets back
content blocks. Everything about *where* a tool runs (a plain workspace directory today, a bubblewrap
sandbox or a remote host later) lives behind this interface.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

ContentBlock = dict[str, Any]


@dataclass(frozen=True)
class ToolResult:
    """What a tool returns: content blocks as they appear in `agent.tool_result.content`."""

    content: list[ContentBlock] = field(default_factory=list)
    is_error: bool = False

    @classmethod
    def text(cls, text: str, *, is_error: bool = False) -> ToolResult:
        return cls(content=[{"type": "text", "text": text}], is_error=is_error)

    @classmethod
    def error(cls, message: str) -> ToolResult:
        return cls.text(message, is_error=True)


class Hands(Protocol):
    """One session's tool executor. Created lazily; nothing runs until the first `execute`."""

    async def execute(self, name: str, tool_input: dict[str, Any], config: dict[str, Any] | None = None) -> ToolResult:
        """Run built-in tool `name` with `tool_input`; failures come back as `is_error` results, never raise.

        `config` is the agent's resolved config entry for the tool (web tools read their domain lists and
        limits from it).
        """
        ...

    async def close(self) -> None:
        """Stop any processes this session started. The workspace stays."""
        ...


class HandsProvider(Protocol):
    """Makes and forgets per-session `Hands`."""

    # The built-in tools these hands can run; the brain offers the model no others.
    tool_names: frozenset[str]

    def for_session(
        self, session_id: str, environment: dict[str, Any] | None = None, mcp_hosts: Iterable[str] = ()
    ) -> Hands:
        """The session's hands (cheap; provisioning is deferred to the first tool call).

        `environment` is the resolved `config` of the session's environment (networking, packages); it
        applies when the session's sandbox is provisioned. `mcp_hosts` are the hosts of the agent's MCP
        servers (`net.policy.mcp_server_hosts`), reachable from the sandbox under `allow_mcp_servers`.
        """
        ...

    async def release(self, session_id: str) -> None:
        """Stop the session's processes, keep its workspace (archive)."""
        ...

    async def destroy(self, session_id: str) -> None:
        """Stop the session's processes and delete its workspace (delete)."""
        ...

    async def close(self) -> None:
        """Stop every session's processes (server shutdown)."""
        ...
