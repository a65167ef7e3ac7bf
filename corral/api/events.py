"""`/v1/sessions/{id}/events`: list the log, send events, stream live events over SSE (spec §8, §1.7)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse

from corral.api.edge import ensure_session_capacity
from corral.api.event_params import EventParam, to_new_event
from corral.api.http import (
    ApiRoute,
    CreatedAtQuery,
    Order,
    Query,
    decode_cursor,
    ok,
    page_response,
    read_body,
    read_query,
)
from corral.api.schemas import Strict
from corral.api.sessions import ensure_writable, load_session
from corral.errors import InvalidRequest
from corral.runtime import runtime_of
from corral.session.budget import over_budget
from corral.session.event_types import LISTABLE_TYPES, PREVIEWABLE_TYPES
from corral.session.fanout import Frame
from corral.session.records import NewEvent
from corral.session.store import Store

if TYPE_CHECKING:
    ListableType = str
    PreviewableType = str
else:  # the literals are built from the sets so that the two cannot drift apart
    ListableType = Literal[tuple(sorted(LISTABLE_TYPES))]
    PreviewableType = Literal[tuple(sorted(PREVIEWABLE_TYPES))]


class SendEvents(Strict):
    events: Annotated[list[EventParam], Field(min_length=1, max_length=100)]


class EventListQuery(CreatedAtQuery):
    """`created_at[...]` bounds compare with the events' `processed_at` (spec §8.1)."""

    types: list[ListableType] = []
    order: Order = "asc"
    limit: Annotated[int, Field(ge=1, le=1000)] = 1000
    page: str | None = None


class EventStreamQuery(Query):
    event_deltas: Annotated[list[PreviewableType], Field(max_length=100)] = []


async def list_events(request: Request) -> JSONResponse:
    query = read_query(request, EventListQuery)
    session = await load_session(request, request.path_params["session_id"])
    scope = f"events:{session.id}:{query.order}"
    page = await runtime_of(request).store.list_events(
        session.id,
        types=list(query.types),
        processed=query.created_bounds(),
        order=query.order,
        limit=query.limit,
        cursor=decode_cursor(query.page, scope=scope),
    )
    return page_response(page, [event.to_wire() for event in page.items], scope=scope)


async def send_events(request: Request) -> JSONResponse:
    params, _ = await read_body(request, SendEvents)
    runtime = runtime_of(request)
    session = await load_session(request, request.path_params["session_id"])
    ensure_writable(session)
    # Validate every event before storing any: a batch is accepted whole or not at all.
    events = [to_new_event(param) for param in params.events]
    for event in events:
        await _check_answer(runtime.store, session.id, event)
    if any(event.type == "user.message" for event in events) and over_budget(
        runtime.settings.prices, session.body, session.usage
    ):
        raise InvalidRequest(
            f"session {session.id} is paused at its budget; raise or remove the budget (sessions.update) "
            "before sending messages (tool results, confirmations and interrupts are still accepted)"
        )
    await ensure_session_capacity(runtime, session, any(event.type == "user.message" for event in events))
    # Custom tool results are processed on receipt (the spec's echo has processed_at set); the rest queue
    # for the brain, which processes them in order.
    answers = [event for event in events if event.type == "user.custom_tool_result"]
    queued = [event for event in events if event.type != "user.custom_tool_result"]
    stored = (await runtime.log.append(session.id, *answers) if answers else []) + (
        await runtime.log.enqueue(session.id, queued) if queued else []
    )
    by_id = {record.id: record for record in stored}
    records = [by_id[event.id] for event in events]
    runtime.brain.wake(session.id)
    if any(event.type == "user.interrupt" for event in events):
        runtime.brain.interrupt(session.id)
    return ok({"data": [record.to_wire() for record in records]})


async def _check_answer(store: Store, session_id: str, event: NewEvent) -> None:
    """A tool result or confirmation must answer a call of this session that asked for one."""
    if event.type == "user.custom_tool_result":
        call_id = event.body["custom_tool_use_id"]
        call = await store.find_event(session_id, call_id)
        if call is None or call.type != "agent.custom_tool_use":
            raise InvalidRequest(f"custom_tool_use_id {call_id} is not an agent.custom_tool_use event of this session")
    elif event.type == "user.tool_confirmation":
        call_id = event.body["tool_use_id"]
        call = await store.find_event(session_id, call_id)
        if call is None or call.type not in ("agent.tool_use", "agent.mcp_tool_use"):
            raise InvalidRequest(f"tool_use_id {call_id} is not a tool use event of this session")
        if call.body.get("evaluated_permission") != "ask":
            raise InvalidRequest(f"tool use {call_id} did not ask for confirmation; there is nothing to confirm")
        if event.body.get("deny_message") and event.body["result"] != "deny":
            raise InvalidRequest("deny_message is only allowed with result 'deny'")


async def stream_events(request: Request) -> EventSourceResponse:
    runtime = runtime_of(request)
    query = read_query(request, EventStreamQuery)
    session = await load_session(request, request.path_params["session_id"])
    deltas = query.event_deltas
    after_event = request.headers.get("last-event-id") or None
    try:
        subscription = await runtime.log.open_stream(session.id, frozenset(deltas), after_event)
    except LookupError:
        raise InvalidRequest(f"Last-Event-ID {after_event} is not an event of session {session.id}") from None
    return EventSourceResponse(
        _sse(runtime.log.frames(subscription)),
        ping=runtime.settings.sse_ping_seconds,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _sse(frames: AsyncIterator[Frame]) -> AsyncIterator[ServerSentEvent]:
    async for frame in frames:
        # `id:` lets standard SSE clients resume with Last-Event-ID; the SDK ignores it.
        yield ServerSentEvent(data=frame.data, event=frame.event, id=frame.event_id)


routes = [
    ApiRoute("GET", "/v1/sessions/{session_id}/events", list_events, query=EventListQuery),
    ApiRoute("POST", "/v1/sessions/{session_id}/events", send_events, body=SendEvents),
    ApiRoute("GET", "/v1/sessions/{session_id}/events/stream", stream_events, query=EventStreamQuery, streams=True),
]
