"""Session state derived from the log: status, usage and active time follow from the events appended.

The storage adapters apply `reduce` inside the same transaction as the append, so the cached state on the
session row can never disagree with its log.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from corral.clock import parse_rfc3339
from corral.protocol.events import EventType

USAGE_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens")


def empty_usage() -> dict[str, Any]:
    return {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
    }


@dataclass(frozen=True)
class SessionState:
    status: str = "idle"
    usage: dict[str, Any] = field(default_factory=empty_usage)
    active_seconds: float = 0.0
    running_since: str | None = None


_STATUS_BY_EVENT: dict[str, str] = {
    EventType.SESSION_STATUS_RUNNING: "running",
    EventType.SESSION_STATUS_IDLE: "idle",
    EventType.SESSION_STATUS_RESCHEDULED: "rescheduling",
    EventType.SESSION_STATUS_TERMINATED: "terminated",
}


# The only event types `reduce` looks at: any other event leaves the state as it was, whatever it was.
STATE_EVENT_TYPES = frozenset({*_STATUS_BY_EVENT, EventType.SPAN_MODEL_REQUEST_END})


def _seconds_between(start: str, end: str) -> float:
    return max(0.0, (parse_rfc3339(end) - parse_rfc3339(start)).total_seconds())


def reduce(state: SessionState, event_type: str, body: dict[str, Any], processed_at: str) -> SessionState:
    """The state after one more processed event."""
    status = _STATUS_BY_EVENT.get(event_type)
    if status is not None:
        if status == "running":
            return replace(state, status=status, running_since=state.running_since or processed_at)
        active = state.active_seconds
        if state.running_since is not None:
            active += _seconds_between(state.running_since, processed_at)
        return replace(state, status=status, active_seconds=active, running_since=None)
    if event_type == EventType.SPAN_MODEL_REQUEST_END:
        model_usage = body.get("model_usage") or {}
        usage = {**state.usage, "cache_creation": dict(state.usage["cache_creation"])}
        for name in USAGE_TOKEN_FIELDS:
            usage[name] = usage.get(name, 0) + int(model_usage.get(name, 0) or 0)
        usage["cache_creation"]["ephemeral_5m_input_tokens"] += int(
            model_usage.get("cache_creation_input_tokens", 0) or 0
        )
        return replace(state, usage=usage)
    return state


def active_seconds_now(state: SessionState, now: datetime) -> float:
    """Active time including the turn in progress, for session objects read mid-turn."""
    if state.running_since is None:
        return state.active_seconds
    return state.active_seconds + max(0.0, (now - parse_rfc3339(state.running_since)).total_seconds())
