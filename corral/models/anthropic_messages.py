"""Provider for the Anthropic Messages API, through the official `anthropic` SDK (streaming)."""

from __future__ import annotations

from typing import Any

import anthropic

from corral.models.base import ModelError, ModelRequest, ModelResponse, ModelUsage, TextSink, classify_status


def _error_from(exc: anthropic.APIError, base_url: str) -> ModelError:
    if isinstance(exc, anthropic.APIConnectionError):
        return ModelError("connection", f"could not reach the model API at {base_url}: {exc}")
    if isinstance(exc, anthropic.APIStatusError):
        body: dict[str, Any] = exc.body if isinstance(exc.body, dict) else {}
        error: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else {}
        kind = classify_status(exc.status_code)
        if exc.status_code == 200 or error.get("type") == "overloaded_error":
            # An error frame in the middle of a stream arrives with the stream's status (200).
            kind = "overloaded" if error.get("type") == "overloaded_error" else "server"
        detail = error.get("message") or str(exc)
        return ModelError(kind, f"model API error {exc.status_code}: {detail}", status=exc.status_code)
    return ModelError("server", f"model API error: {exc}")


class AnthropicMessagesProvider:
    def __init__(self, base_url: str, api_key: str, timeout: float) -> None:
        self.base_url = base_url
        # The brain owns retries (it reports each one as a session.error), so the SDK makes one attempt.
        self._client = anthropic.AsyncAnthropic(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout)

    async def close(self) -> None:
        await self._client.close()

    async def complete(self, request: ModelRequest, on_text: TextSink | None = None) -> ModelResponse:
        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": request.messages,
        }
        if request.system:
            params["system"] = request.system
        if request.tools:
            params["tools"] = request.tools
        text_index_of_block: dict[int, int] = {}
        try:
            async with self._client.messages.stream(**params) as stream:
                async for event in stream:
                    if on_text is None or event.type != "content_block_delta" or event.delta.type != "text_delta":
                        continue
                    text_index = text_index_of_block.setdefault(event.index, len(text_index_of_block))
                    on_text(text_index, event.delta.text)
                message = await stream.get_final_message()
        except anthropic.APIError as exc:
            raise _error_from(exc, self.base_url) from exc
        content: list[dict[str, Any]] = []
        for block in message.content:
            if block.type == "text":
                content.append({"type": "text", "text": block.text})
            elif block.type == "tool_use":
                content.append({"type": "tool_use", "id": block.id, "name": block.name, "input": block.input})
        usage = message.usage
        return ModelResponse(
            content=content,
            stop_reason=message.stop_reason,
            usage=ModelUsage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_creation_input_tokens=usage.cache_creation_input_tokens or 0,
                cache_read_input_tokens=usage.cache_read_input_tokens or 0,
            ),
        )
