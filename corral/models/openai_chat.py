"""Provider for OpenAI-compatible chat completions (vLLM, Ollama, llama.cpp, gateways), via the `openai` SDK.

Conversation content arrives in Anthropic shapes; this module translates requests to chat messages and
function tools, and streamed replies back to text and tool_use blocks.
"""

from __future__ import annotations

import json
from typing import Any

import openai

from corral.models.base import (
    Json,
    ModelError,
    ModelRequest,
    ModelResponse,
    ModelUsage,
    TextSink,
    classify_status,
)


def _text_of(blocks: Any) -> str:
    if isinstance(blocks, str):
        return blocks
    return "\n".join(block.get("text", "") for block in blocks or [] if block.get("type") == "text")


def _user_part(block: Json) -> Json | None:
    if block["type"] == "text":
        return {"type": "text", "text": block["text"]}
    source = block.get("source") or {}
    if block["type"] == "image":
        if source.get("type") == "base64":
            return {
                "type": "image_url",
                "image_url": {"url": f"data:{source['media_type']};base64,{source['data']}"},
            }
        if source.get("type") == "url":
            return {"type": "image_url", "image_url": {"url": source["url"]}}
    if block["type"] == "document" and source.get("type") == "text":
        return {"type": "text", "text": source.get("data", "")}
    return None


def to_chat_messages(system: str | None, messages: list[Json]) -> list[Json]:
    """Anthropic-shaped turns as chat-completion messages (tool results become `role: tool` messages)."""
    chat: list[Json] = [{"role": "system", "content": system}] if system else []
    for message in messages:
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if message["role"] == "assistant":
            text = _text_of(blocks)
            calls = [
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {"name": block["name"], "arguments": json.dumps(block["input"])},
                }
                for block in blocks
                if block["type"] == "tool_use"
            ]
            entry: Json = {"role": "assistant", "content": text or None}
            if calls:
                entry["tool_calls"] = calls
            chat.append(entry)
            continue
        parts: list[Json] = []
        for block in blocks:
            if block["type"] == "tool_result":
                text = _text_of(block.get("content"))
                chat.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text})
            else:
                part = _user_part(block)
                if part is not None:
                    parts.append(part)
        if parts:
            chat.append({"role": "user", "content": parts})
    return chat


def to_chat_tools(tools: list[Json]) -> list[Json]:
    return [
        {
            "type": "function",
            "function": {
                "name": tool["name"],
                "description": tool.get("description", ""),
                "parameters": tool.get("input_schema", {"type": "object"}),
            },
        }
        for tool in tools
    ]


def _error_from(exc: openai.APIError, base_url: str) -> ModelError:
    if isinstance(exc, openai.APIConnectionError):
        return ModelError("connection", f"could not reach the model API at {base_url}: {exc}")
    if isinstance(exc, openai.APIStatusError):
        return ModelError(
            classify_status(exc.status_code),
            f"model API error {exc.status_code}: {exc.message}",
            status=exc.status_code,
        )
    return ModelError("server", f"model API error: {exc}")


class OpenAIChatProvider:
    def __init__(self, base_url: str, api_key: str, timeout: float) -> None:
        self.base_url = base_url
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout)

    async def close(self) -> None:
        await self._client.close()

    async def complete(self, request: ModelRequest, on_text: TextSink | None = None) -> ModelResponse:
        params: dict[str, Any] = {
            "model": request.model,
            "messages": to_chat_messages(request.system, request.messages),
            "max_tokens": request.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            params["tools"] = to_chat_tools(request.tools)
        text: list[str] = []
        calls: dict[int, Json] = {}
        finish_reason: str | None = None
        usage = ModelUsage()
        try:
            stream = await self._client.chat.completions.create(**params)
            async for chunk in stream:
                if chunk.usage is not None:
                    cached = getattr(chunk.usage.prompt_tokens_details, "cached_tokens", None) or 0
                    usage = ModelUsage(
                        input_tokens=chunk.usage.prompt_tokens,
                        output_tokens=chunk.usage.completion_tokens,
                        cache_read_input_tokens=cached,
                    )
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                finish_reason = choice.finish_reason or finish_reason
                delta = choice.delta
                if delta.content:
                    text.append(delta.content)
                    if on_text is not None:
                        on_text(0, delta.content)
                for call in delta.tool_calls or []:
                    entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                    entry["id"] = call.id or entry["id"]
                    if call.function is not None:
                        entry["name"] += call.function.name or ""
                        entry["arguments"] += call.function.arguments or ""
        except openai.APIError as exc:
            raise _error_from(exc, self.base_url) from exc
        content: list[Json] = [{"type": "text", "text": "".join(text)}] if text else []
        for index in sorted(calls):
            call = calls[index]
            try:
                arguments = json.loads(call["arguments"] or "{}")
            except json.JSONDecodeError:
                arguments = {"_unparsed_arguments": call["arguments"]}
            content.append({"type": "tool_use", "id": call["id"], "name": call["name"], "input": arguments})
        stop_reason = {"tool_calls": "tool_use", "length": "max_tokens"}.get(finish_reason or "", "end_turn")
        if calls:
            stop_reason = "tool_use"
        return ModelResponse(content=content, stop_reason=stop_reason, usage=usage)
