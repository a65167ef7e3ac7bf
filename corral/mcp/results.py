"""An MCP tool call's result as the content blocks of `agent.mcp_tool_result` (text kept to a bound)."""

from __future__ import annotations

import json
from typing import Any

from corral.session.records import Json

MAX_RESULT_TEXT = 100 * 1024
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


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
