"""The model's view of a session, rebuilt from the log: events in, Messages-API turns out.

Tool calls keep their event ids as `tool_use_id`s, so the context depends on nothing but the log and any
brain on any node rebuilds the same conversation.
"""

from __future__ import annotations

from typing import Any

from corral.mcp.names import model_tool_name
from corral.protocol.events import EventType
from corral.session.records import EventRecord

Json = dict[str, Any]

# The event types that carry conversation (everything else is status, spans and bookkeeping).
CONVERSATION_TYPES = (
    EventType.USER_MESSAGE,
    EventType.AGENT_MESSAGE,
    EventType.AGENT_TOOL_USE,
    EventType.AGENT_CUSTOM_TOOL_USE,
    EventType.AGENT_TOOL_RESULT,
    EventType.USER_CUSTOM_TOOL_RESULT,
    EventType.AGENT_MCP_TOOL_USE,
    EventType.AGENT_MCP_TOOL_RESULT,
)


def _tool_result_block(tool_use_id: str, body: Json) -> Json:
    block: Json = {"type": "tool_result", "tool_use_id": tool_use_id, "content": body.get("content") or []}
    if body.get("is_error"):
        block["is_error"] = True
    return block


class ConversationBuilder:
    """Accumulates conversation events (in log order) into alternating user/assistant messages."""

    def __init__(self) -> None:
        self._messages: list[Json] = []

    def _add(self, role: str, blocks: list[Json]) -> None:
        if not blocks:
            return
        if self._messages and self._messages[-1]["role"] == role:
            self._messages[-1]["content"].extend(blocks)
        else:
            self._messages.append({"role": role, "content": list(blocks)})

    def add(self, event: EventRecord) -> None:
        body = event.body
        if event.type == EventType.USER_MESSAGE:
            self._add("user", list(body["content"]))
        elif event.type == EventType.AGENT_MESSAGE:
            self._add("assistant", [block for block in body["content"] if block.get("type") == "text"])
        elif event.type in (EventType.AGENT_TOOL_USE, EventType.AGENT_CUSTOM_TOOL_USE):
            self._add(
                "assistant",
                [{"type": "tool_use", "id": event.id, "name": body["name"], "input": body["input"]}],
            )
        elif event.type == EventType.AGENT_TOOL_RESULT:
            self._add("user", [_tool_result_block(body["tool_use_id"], body)])
        elif event.type == EventType.USER_CUSTOM_TOOL_RESULT:
            self._add("user", [_tool_result_block(body["custom_tool_use_id"], body)])
        elif event.type == EventType.AGENT_MCP_TOOL_USE:
            name = model_tool_name(body["mcp_server_name"], body["name"])
            self._add("assistant", [{"type": "tool_use", "id": event.id, "name": name, "input": body["input"]}])
        elif event.type == EventType.AGENT_MCP_TOOL_RESULT:
            self._add("user", [_tool_result_block(body["mcp_tool_use_id"], body)])

    def messages(self) -> list[Json]:
        """The turns to send; tool results lead any user message that also carries new text."""
        ordered = []
        for message in self._messages:
            if message["role"] == "user":
                results = [block for block in message["content"] if block["type"] == "tool_result"]
                others = [block for block in message["content"] if block["type"] != "tool_result"]
                message = {"role": "user", "content": results + others}
            ordered.append(message)
        return ordered

    @property
    def awaits_reply(self) -> bool:
        """True when the last turn is the user's (a message or tool results the model has not answered)."""
        return bool(self._messages) and self._messages[-1]["role"] == "user"
