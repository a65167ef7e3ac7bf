"""Every Prometheus metric the server exports, and the hooks that feed them (scraped at `/metrics`).

The brain, the hands and the session log call the small functions here (one line each at the place where
the thing happens); nothing else in the code base touches `prometheus_client`. Model, turn and tool hooks
wrap the awaitable they measure, so the same place also opens an OpenTelemetry span when tracing is on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from corral.observability import tracing
from corral.protocol.events import EventType

if TYPE_CHECKING:
    from corral.session.records import EventRecord

T = TypeVar("T")

# No `*_created` series: they double the output and nothing here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Model calls and turns take seconds; tool calls and sandbox starts milliseconds to minutes.
_SLOW_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_FAST_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

TURNS = Counter(
    "corral_turns_total",
    "Agent turns (model loop runs) by how they ended: completed, interrupted or failed.",
    ["outcome"],
)
TURN_SECONDS = Histogram("corral_turn_duration_seconds", "Wall time of an agent turn.", buckets=_SLOW_BUCKETS)
ACTIVE_SESSIONS = Gauge("corral_active_sessions", "Sessions with a turn running on this node.")
MODEL_SECONDS = Histogram(
    "corral_model_request_duration_seconds",
    "Latency of one model request (one attempt; retries are separate requests), by model and outcome.",
    ["model", "outcome"],
    buckets=_SLOW_BUCKETS,
)
TOOL_SECONDS = Histogram(
    "corral_tool_call_duration_seconds",
    "Latency of one built-in tool call run by the server, by tool and outcome (ok, error, interrupted).",
    ["tool", "outcome"],
    buckets=_FAST_BUCKETS,
)
SANDBOX_STARTS = Counter("corral_sandbox_starts_total", "Sandboxed shells started (cold starts).")
SESSION_ERRORS = Counter(
    "corral_session_errors_total",
    "session.error events appended, by error type and retry status.",
    ["type", "retry_status"],
)
QUEUED_EVENTS = Gauge(
    "corral_queued_events",
    "Client events accepted and not yet processed, in sessions no other node holds (read at scrape time).",
)
HTTP_REQUESTS = Counter(
    "corral_http_requests_total", "HTTP requests answered, by method and status.", ["method", "status"]
)
RATE_LIMITED = Counter(
    "corral_rate_limited_total",
    "Requests refused with 429 by a limit at the HTTP edge, by limit (create, other, environments, running_sessions).",
    ["limit"],
)


# --- hooks ---------------------------------------------------------------------------------------------


async def observe_turn(session_id: str, work: Awaitable[T]) -> T:
    """Wraps one turn of a session (the model loop)."""
    started = time.perf_counter()
    outcome = "failed"
    ACTIVE_SESSIONS.inc()
    try:
        with tracing.span("corral.turn", {"corral.session_id": session_id}):
            result = await work
        outcome = "completed"
        return result
    except asyncio.CancelledError:
        outcome = "interrupted"
        raise
    finally:
        ACTIVE_SESSIONS.dec()
        TURNS.labels(outcome).inc()
        TURN_SECONDS.observe(time.perf_counter() - started)


async def observe_model_call(model: str, work: Awaitable[T]) -> T:
    """Wraps one model request."""
    started = time.perf_counter()
    outcome = "error"
    try:
        with tracing.span("corral.model_request", {"gen_ai.request.model": model}):
            result = await work
        outcome = "ok"
        return result
    except asyncio.CancelledError:
        outcome = "interrupted"
        raise
    finally:
        MODEL_SECONDS.labels(model, outcome).observe(time.perf_counter() - started)


async def observe_tool_call(tool: str, work: Awaitable[T]) -> T:
    """Wraps one built-in tool call; a result with `is_error` set counts as an error."""
    started = time.perf_counter()
    outcome = "error"
    try:
        with tracing.span("corral.tool_call", {"corral.tool": tool}) as span:
            result = await work
            if getattr(result, "is_error", False):
                span.set_error("the tool returned an error result")
            else:
                outcome = "ok"
        return result
    except asyncio.CancelledError:
        outcome = "interrupted"
        raise
    finally:
        TOOL_SECONDS.labels(tool, outcome).observe(time.perf_counter() - started)


def sandbox_started() -> None:
    SANDBOX_STARTS.inc()


def events_appended(records: Iterable[EventRecord]) -> None:
    """Counts what the session log appended (errors by type)."""
    for record in records:
        if record.type == EventType.SESSION_ERROR:
            error: dict[str, Any] = record.body.get("error") or {}
            retry = (error.get("retry_status") or {}).get("type", "unknown")
            SESSION_ERRORS.labels(str(error.get("type", "unknown_error")), str(retry)).inc()


def http_answered(method: str, status: int) -> None:
    HTTP_REQUESTS.labels(method, str(status)).inc()


def rate_limited(limit: str) -> None:
    RATE_LIMITED.labels(limit).inc()


def exposition() -> tuple[bytes, str]:
    """The current values in Prometheus' text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
