"""Event types of the wire protocol (spec §8.4), the event records, and the events the server itself emits.

Every event type string lives here once, as an `EventType` member. A member is a `str` (a `StrEnum`), so it
compares, hashes and serialises exactly as its value: records and wire output carry the same bytes as before.
The constructors below are the only way the server builds its own events, so each event's body keys are
written in one place; the test `tests/unit/test_protocol_events.py` holds them to the SDK's event models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from corral.ids import new_id

Json = dict[str, Any]


class EventType(StrEnum):
    USER_MESSAGE = "user.message"
    USER_INTERRUPT = "user.interrupt"
    USER_TOOL_CONFIRMATION = "user.tool_confirmation"
    USER_CUSTOM_TOOL_RESULT = "user.custom_tool_result"
    USER_TOOL_RESULT = "user.tool_result"
    USER_DEFINE_OUTCOME = "user.define_outcome"
    SYSTEM_MESSAGE = "system.message"
    AGENT_MESSAGE = "agent.message"
    AGENT_THINKING = "agent.thinking"
    AGENT_TOOL_USE = "agent.tool_use"
    AGENT_TOOL_RESULT = "agent.tool_result"
    AGENT_MCP_TOOL_USE = "agent.mcp_tool_use"
    AGENT_MCP_TOOL_RESULT = "agent.mcp_tool_result"
    AGENT_CUSTOM_TOOL_USE = "agent.custom_tool_use"
    AGENT_THREAD_MESSAGE_SENT = "agent.thread_message_sent"
    AGENT_THREAD_MESSAGE_RECEIVED = "agent.thread_message_received"
    AGENT_THREAD_CONTEXT_COMPACTED = "agent.thread_context_compacted"
    SESSION_STATUS_RUNNING = "session.status_running"
    SESSION_STATUS_IDLE = "session.status_idle"
    SESSION_STATUS_RESCHEDULED = "session.status_rescheduled"
    SESSION_STATUS_TERMINATED = "session.status_terminated"
    SESSION_ERROR = "session.error"
    SESSION_UPDATED = "session.updated"
    SESSION_USAGE = "session.usage"
    SESSION_THREAD_CREATED = "session.thread_created"
    SESSION_THREAD_STATUS_RUNNING = "session.thread_status_running"
    SESSION_THREAD_STATUS_IDLE = "session.thread_status_idle"
    SESSION_THREAD_STATUS_RESCHEDULED = "session.thread_status_rescheduled"
    SESSION_THREAD_STATUS_TERMINATED = "session.thread_status_terminated"
    SPAN_MODEL_REQUEST_START = "span.model_request_start"
    SPAN_MODEL_REQUEST_END = "span.model_request_end"
    SPAN_OUTCOME_EVALUATION_START = "span.outcome_evaluation_start"
    SPAN_OUTCOME_EVALUATION_ONGOING = "span.outcome_evaluation_ongoing"
    SPAN_OUTCOME_EVALUATION_END = "span.outcome_evaluation_end"
    WORKFLOW_RUN_CREATED = "workflow_run.created"
    WORKFLOW_RUN_STATUS_RUNNING = "workflow_run.status_running"
    WORKFLOW_RUN_STATUS_IDLE = "workflow_run.status_idle"
    WORKFLOW_RUN_PHASE_STARTED = "workflow_run.phase_started"
    WORKFLOW_RUN_PHASE_ENDED = "workflow_run.phase_ended"
    WORKFLOW_RUN_STATUS_ENDED = "workflow_run.status_ended"
    WORKFLOW_RUN_ERROR = "workflow_run.error"
    # Only ever a stream's last frame: the session's log is gone, so it is never stored nor listed.
    SESSION_DELETED = "session.deleted"


# Values accepted by `events.list?types[]=` (the SDK's SessionEventType literal: 41 values).
LISTABLE_TYPES = frozenset(event_type.value for event_type in EventType if event_type != EventType.SESSION_DELETED)

# The event kinds a stream can preview with `event_start`/`event_delta` (`event_deltas[]=`).
PREVIEWABLE_TYPES = frozenset({EventType.AGENT_MESSAGE.value, EventType.AGENT_THINKING.value})

# The tool calls an agent makes, and the events that answer them, as the brain and the conversation read them.
TOOL_CALL_TYPES = (EventType.AGENT_TOOL_USE, EventType.AGENT_CUSTOM_TOOL_USE, EventType.AGENT_MCP_TOOL_USE)


@dataclass(frozen=True)
class EventRecord:
    """A persisted event. `position` is its place in the session's processed order (None while queued)."""

    id: str
    session_id: str
    type: str
    body: Json
    position: int | None
    processed_at: str | None

    def to_wire(self) -> Json:
        return {"type": self.type, "id": self.id, **self.body, "processed_at": self.processed_at}


@dataclass(frozen=True)
class NewEvent:
    """An event to append: its id is allocated by the caller so previews can name it before it exists."""

    id: str
    type: str
    body: Json = field(default_factory=dict)


def new_event(event_type: str, **body: object) -> NewEvent:
    """A processed-on-append event with a fresh `sevt_` id (its type stored as the plain string)."""
    return NewEvent(id=new_id("sevt"), type=str(event_type), body=dict(body))


# --- the events the server emits ------------------------------------------------------------------------


def status_running() -> NewEvent:
    return new_event(EventType.SESSION_STATUS_RUNNING)


def status_rescheduled() -> NewEvent:
    return new_event(EventType.SESSION_STATUS_RESCHEDULED)


def status_idle(stop_reason: Json) -> NewEvent:
    return new_event(EventType.SESSION_STATUS_IDLE, stop_reason=stop_reason, stop_details=None)


def session_error(error: Json) -> NewEvent:
    return new_event(EventType.SESSION_ERROR, error=error)


def session_usage(usage: Json, budget: Json | None = None) -> NewEvent:
    """The session's cumulative usage; `budget` is echoed only when the session has one."""
    return new_event(EventType.SESSION_USAGE, usage=usage, **({} if budget is None else {"budget": budget}))


def session_updated(changed: Json) -> NewEvent:
    """The fields an update changed, as the session now has them."""
    return new_event(EventType.SESSION_UPDATED, **changed)


def session_deleted_frame(processed_at: str) -> Json:
    """The transient last frame of a deleted session's streams (never stored: its log is gone)."""
    return {"type": EventType.SESSION_DELETED.value, "id": new_id("sevt"), "processed_at": processed_at}


def agent_message(content: list[Json], message_id: str | None = None) -> NewEvent:
    """The model's text; `message_id` is the id its previews already announced, if any."""
    return NewEvent(id=message_id or new_id("sevt"), type=EventType.AGENT_MESSAGE.value, body={"content": content})


def tool_use(name: str, tool_input: Any, permission: str, evaluation: Json | None = None) -> NewEvent:
    """A built-in tool call with its evaluated permission (a denied call has no `evaluation`)."""
    extra = {} if evaluation is None else {"evaluation": evaluation}
    return new_event(EventType.AGENT_TOOL_USE, name=name, input=tool_input, evaluated_permission=permission, **extra)


def custom_tool_use(name: str, tool_input: Any) -> NewEvent:
    return new_event(EventType.AGENT_CUSTOM_TOOL_USE, name=name, input=tool_input)


def mcp_tool_use(name: str, server: str, tool_input: Any, permission: str, evaluation: Json) -> NewEvent:
    return new_event(
        EventType.AGENT_MCP_TOOL_USE,
        name=name,
        mcp_server_name=server,
        input=tool_input,
        evaluated_permission=permission,
        evaluation=evaluation,
    )


def tool_result(call_id: str, result: Json) -> NewEvent:
    return new_event(EventType.AGENT_TOOL_RESULT, tool_use_id=call_id, **result)


def mcp_tool_result(call_id: str, result: Json) -> NewEvent:
    return new_event(EventType.AGENT_MCP_TOOL_RESULT, mcp_tool_use_id=call_id, **result)


def model_request_start() -> NewEvent:
    return new_event(EventType.SPAN_MODEL_REQUEST_START)


def model_request_end(start_id: str, *, is_error: bool, model_usage: Json) -> NewEvent:
    return new_event(
        EventType.SPAN_MODEL_REQUEST_END, model_request_start_id=start_id, is_error=is_error, model_usage=model_usage
    )
