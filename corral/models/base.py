"""What the brain asks of a model, and what it gets back, independent of the provider.

Conversation content uses the Anthropic Messages shapes (text, image, document, tool_use, tool_result
blocks); providers for other APIs translate at their edge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Json = dict[str, Any]

# Called with (index among this response's text blocks, text fragment) as the model streams.
TextSink = Callable[[int, str], None]

ErrorKind = Literal["rate_limited", "overloaded", "server", "connection", "auth", "missing_credential", "invalid"]


@dataclass(frozen=True)
class ModelRequest:
    model: str
    system: str | None
    messages: list[Json]
    tools: list[Json]
    max_tokens: int


@dataclass(frozen=True)
class ModelUsage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    def to_wire(self) -> Json:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
        }


@dataclass(frozen=True)
class ModelResponse:
    """The finished assistant turn: `content` holds text and tool_use blocks in the order the model gave them."""

    content: list[Json]
    stop_reason: str | None
    usage: ModelUsage = field(default_factory=ModelUsage)


class ModelError(Exception):
    """A failed model call, classified so the brain can decide between retrying and giving up."""

    RETRYABLE: frozenset[str] = frozenset({"rate_limited", "overloaded", "server", "connection"})

    def __init__(self, kind: ErrorKind, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.kind in self.RETRYABLE

    @property
    def session_error_type(self) -> str:
        """The `session.error` variant this failure surfaces as."""
        if self.kind == "rate_limited":
            return "model_rate_limited_error"
        if self.kind == "overloaded":
            return "model_overloaded_error"
        return "model_request_failed_error"


def classify_status(status: int) -> ErrorKind:
    if status == 429:
        return "rate_limited"
    if status == 529:
        return "overloaded"
    if status in (401, 403):
        return "auth"
    if status >= 500 or status == 408:
        return "server"
    return "invalid"


class ModelProvider(Protocol):
    async def complete(self, request: ModelRequest, on_text: TextSink | None = None) -> ModelResponse:
        """Run one model request, streaming text fragments to `on_text`; raise `ModelError` on failure."""
        ...

    async def close(self) -> None: ...
