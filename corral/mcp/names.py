"""The names MCP tools have for the model: `<server>__<tool>`, so they never clash with built-in or custom tools.

The name is a function of the server and tool names alone, so the conversation rebuilt from the log names
past calls exactly as the model saw them. Names that are not plain `[A-Za-z0-9_-]` (or too long, or whose server
name has `__` in it, which would make the split ambiguous) get a short hash of the exact pair instead.
"""

from __future__ import annotations

import hashlib
import re

MAX_MODEL_TOOL_NAME = 64  # the stricter of the providers' limits (OpenAI 64, Anthropic 128)
_PLAIN = re.compile(r"^[A-Za-z0-9_-]+$")
_NOT_PLAIN = re.compile(r"[^A-Za-z0-9_-]")


def model_tool_name(server: str, tool: str) -> str:
    plain = f"{server}__{tool}"
    if "__" not in server and _PLAIN.match(plain) and len(plain) <= MAX_MODEL_TOOL_NAME:
        return plain
    digest = hashlib.sha256(f"{server}\0{tool}".encode()).hexdigest()[:8]
    return f"{_NOT_PLAIN.sub('_', plain)[: MAX_MODEL_TOOL_NAME - 9]}_{digest}"
