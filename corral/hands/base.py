"""The seam between the brain and the hands.

The brain knows tools only by name and JSON input; it hands them to a `Hands` object and gets back
content blocks. Everything about *where* a tool runs (a plain workspace directory today, a bubblewrap
sandbox or a remote host later) lives behind this interface.
"""

from __future__ import annotations

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

    async def execute(self, name: str, tool_input: dict[str, Any]) -> ToolResult:
        """Run built-in tool `name` with `tool_input`; failures come back as `is_error` results, never raise."""
        ...

    async def close(self) -> None:
        """Stop any processes this session started. The workspace stays."""
        ...


class HandsProvider(Protocol):
    """Makes and forgets per-session `Hands`."""

    def for_session(self, session_id: str) -> Hands:
        """The session's hands (cheap; provisioning is deferred to the first tool call)."""
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
