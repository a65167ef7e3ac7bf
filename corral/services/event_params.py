"""The events a client may send (spec §8.2), validated, and turned into log entries."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from corral.errors import InvalidRequest
from corral.ids import new_id
from corral.protocol.events import EventType
from corral.services.schemas import Strict, TextBlock, ToolResultBlock, UserContentBlock
from corral.session.records import NewEvent


class UserMessage(Strict):
    type: Literal["user.message"]
    content: Annotated[list[UserContentBlock], Field(min_length=1)]


class UserInterrupt(Strict):
    type: Literal["user.interrupt"]
    session_thread_id: str | None = None


class UserToolConfirmation(Strict):
    type: Literal["user.tool_confirmation"]
    tool_use_id: Annotated[str, Field(min_length=1)]
    result: Literal["allow", "deny"]
    deny_message: str | None = None


class UserCustomToolResult(Strict):
    type: Literal["user.custom_tool_result"]
    custom_tool_use_id: Annotated[str, Field(min_length=1)]
    content: list[ToolResultBlock] | None = None
    is_error: bool | None = None


class UserToolResult(Strict):
    type: Literal["user.tool_result"]
    tool_use_id: Annotated[str, Field(min_length=1)]
    content: list[ToolResultBlock] | None = None
    is_error: bool | None = None


class RubricText(Strict):
    type: Literal["text"]
    content: Annotated[str, Field(max_length=262_144)]


class RubricFile(Strict):
    type: Literal["file"]
    file_id: str


class UserDefineOutcome(Strict):
    type: Literal["user.define_outcome"]
    description: str
    rubric: Annotated[RubricText | RubricFile, Field(discriminator="type")]
    max_iterations: Annotated[int, Field(ge=1, le=20)] | None = None


class SystemMessage(Strict):
    type: Literal["system.message"]
    content: Annotated[list[TextBlock], Field(min_length=1, max_length=1000)]


EventParam = Annotated[
    UserMessage
    | UserInterrupt
    | UserToolConfirmation
    | UserCustomToolResult
    | UserToolResult
    | UserDefineOutcome
    | SystemMessage,
    Field(discriminator="type"),
]
InitialEventParam = Annotated[UserMessage | UserDefineOutcome, Field(discriminator="type")]

# What the brain can act on today; the other event types are validated but refused with a clear message.
SUPPORTED_TYPES = frozenset(
    {
        EventType.USER_MESSAGE.value,
        EventType.USER_INTERRUPT.value,
        EventType.USER_CUSTOM_TOOL_RESULT.value,
        EventType.USER_TOOL_CONFIRMATION.value,
    }
)


def to_new_event(param: Strict) -> NewEvent:
    """The log entry for a sent event (refusing types this server cannot act on yet)."""
    event_type = str(getattr(param, "type", ""))
    if event_type not in SUPPORTED_TYPES:
        raise InvalidRequest(
            f"event type '{event_type}' is not supported by this server yet; "
            f"supported: {', '.join(sorted(SUPPORTED_TYPES))}"
        )
    body = param.model_dump(exclude={"type"}, exclude_none=True)
    return NewEvent(id=new_id("sevt"), type=event_type, body=body)
