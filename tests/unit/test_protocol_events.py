"""The events the server emits are events of the wire protocol, as the official SDK models them."""

from __future__ import annotations

from typing import get_args

import pytest
from anthropic import BaseModel
from anthropic.types.beta.sessions.beta_managed_agents_session_event_type import BetaManagedAgentsSessionEventType
from anthropic.types.beta.sessions.beta_managed_agents_stream_session_events import (
    BetaManagedAgentsStreamSessionEvents,
)

from corral.brain.tools import error_result, evaluate_policy
from corral.clock import now_rfc3339
from corral.models.base import ModelResponse
from corral.protocol import events
from corral.protocol.events import LISTABLE_TYPES, EventRecord, EventType, Json, NewEvent
from tests.support.sdk_shapes import unknown_fields

# The SDK's model of each event a stream can carry, by its `type`.
SDK_EVENT_MODELS: dict[str, type[BaseModel]] = {
    get_args(model.model_fields["type"].annotation)[0]: model
    for model in get_args(get_args(BetaManagedAgentsStreamSessionEvents)[0])
}

TEXT = [{"type": "text", "text": "done"}]
NO_USAGE = ModelResponse([], None).usage.to_wire()

# One of each event the server builds itself, with the bodies it gives them.
SERVER_EVENTS: dict[str, NewEvent] = {
    "status running": events.status_running(),
    "status rescheduled": events.status_rescheduled(),
    "status idle, end of turn": events.status_idle({"type": "end_turn"}),
    "status idle, retries exhausted": events.status_idle({"type": "retries_exhausted"}),
    "status idle, requires action": events.status_idle({"type": "requires_action", "event_ids": ["sevt_1"]}),
    "error": events.session_error(
        {"type": "model_overloaded_error", "message": "overloaded", "retry_status": {"type": "retrying"}}
    ),
    "error, tool call limit": events.session_error(
        {"type": "tool_use_limit_reached_error", "message": "too many", "retry_status": {"type": "exhausted"}}
    ),
    "usage": events.session_usage(
        {
            "input_tokens": 3,
            "output_tokens": 5,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
        }
    ),
    "updated": events.session_updated({"title": "renamed"}),
    "agent message": events.agent_message(TEXT),
    "built-in call, allowed": events.tool_use("bash", {"command": "ls"}, *evaluate_policy("always_allow")),
    "built-in call, asking": events.tool_use("bash", {"command": "ls"}, *evaluate_policy("auto")),
    "built-in call, denied": events.tool_use("bash", {"command": "ls"}, "deny"),
    "custom call": events.custom_tool_use("lookup", {"q": "x"}),
    "MCP call": events.mcp_tool_use("search", "docs", {"q": "x"}, *evaluate_policy("always_ask")),
    "built-in result": events.tool_result("sevt_1", {"content": TEXT, "is_error": False}),
    "built-in result, failed": events.tool_result("sevt_1", error_result("no such file")),
    "MCP result": events.mcp_tool_result("sevt_1", {"content": TEXT, "is_error": False}),
    "model request start": events.model_request_start(),
    "model request end": events.model_request_end("sevt_1", is_error=False, model_usage=NO_USAGE),
}


def served(event: NewEvent) -> Json:
    """The event as a stream or a listing serves it."""
    record = EventRecord(event.id, "sesn_1", event.type, event.body, position=1, processed_at=now_rfc3339())
    return record.to_wire()


def test_every_event_type_is_one_the_sdk_streams() -> None:
    assert {str(event_type) for event_type in EventType} <= set(SDK_EVENT_MODELS)


def test_listable_types_are_the_sdks_session_event_types() -> None:
    assert set(get_args(BetaManagedAgentsSessionEventType)) == LISTABLE_TYPES


def test_event_types_are_stored_as_plain_strings() -> None:
    assert type(events.status_running().type) is str


def test_a_deleted_sessions_last_frame_is_the_sdks_session_deleted_event() -> None:
    frame = events.session_deleted_frame(now_rfc3339())
    model = SDK_EVENT_MODELS[frame["type"]]
    assert unknown_fields(model.model_validate(frame)) == []


@pytest.mark.parametrize("event", SERVER_EVENTS.values(), ids=SERVER_EVENTS.keys())
def test_each_event_the_server_emits_validates_against_the_sdk_model_with_no_unknown_field(event: NewEvent) -> None:
    model = SDK_EVENT_MODELS[event.type]
    assert unknown_fields(model.model_validate(served(event))) == []
