"""Event type names of the wire protocol (spec §8.4)."""

from __future__ import annotations

# Values accepted by `events.list?types[]=` (the SDK's SessionEventType literal: 41 values).
LISTABLE_TYPES = frozenset(
    {
        "user.message",
        "user.interrupt",
        "user.tool_confirmation",
        "user.custom_tool_result",
        "user.tool_result",
        "user.define_outcome",
        "system.message",
        "agent.message",
        "agent.thinking",
        "agent.tool_use",
        "agent.tool_result",
        "agent.mcp_tool_use",
        "agent.mcp_tool_result",
        "agent.custom_tool_use",
        "agent.thread_message_sent",
        "agent.thread_message_received",
        "agent.thread_context_compacted",
        "session.status_running",
        "session.status_idle",
        "session.status_rescheduled",
        "session.status_terminated",
        "session.error",
        "session.updated",
        "session.usage",
        "session.thread_created",
        "session.thread_status_running",
        "session.thread_status_idle",
        "session.thread_status_rescheduled",
        "session.thread_status_terminated",
        "span.model_request_start",
        "span.model_request_end",
        "span.outcome_evaluation_start",
        "span.outcome_evaluation_ongoing",
        "span.outcome_evaluation_end",
        "workflow_run.created",
        "workflow_run.status_running",
        "workflow_run.status_idle",
        "workflow_run.phase_started",
        "workflow_run.phase_ended",
        "workflow_run.status_ended",
        "workflow_run.error",
    }
)

# The event kinds a stream can preview with `event_start`/`event_delta` (`event_deltas[]=`).
PREVIEWABLE_TYPES = frozenset({"agent.message", "agent.thinking"})
