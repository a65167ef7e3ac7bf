"""`/v1/sessions/{id}/events`: list the log, send events, stream live events over SSE (spec §8, §1.7).

The operations are `corral.services.events`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse

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
from corral.protocol.events import LISTABLE_TYPES, PREVIEWABLE_TYPES
from corral.runtime import runtime_of, workspace_of
from corral.services.events import SendEvents
from corral.session.fanout import Frame

if TYPE_CHECKING:
    ListableType = str
    PreviewableType = str
else:  # the literals are built from the sets so that the two cannot drift apart
    ListableType = Literal[tuple(sorted(LISTABLE_TYPES))]
    PreviewableType = Literal[tuple(sorted(PREVIEWABLE_TYPES))]


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
    services = runtime_of(request).services
    session = await services.sessions.get(workspace_of(request), request.path_params["session_id"])
    scope = f"events:{session.id}:{query.order}"
    page = await services.events.list_events(
        session,
        types=list(query.types),
        processed=query.created_bounds(),
        order=query.order,
        limit=query.limit,
        cursor=decode_cursor(query.page, scope=scope),
    )
    return page_response(page, [event.to_wire() for event in page.items], scope=scope)


async def send_events(request: Request) -> JSONResponse:
    params, _ = await read_body(request, SendEvents)
    events = runtime_of(request).services.events
    records = await events.send(workspace_of(request), request.path_params["session_id"], params)
    return ok({"data": [record.to_wire() for record in records]})


async def stream_events(request: Request) -> EventSourceResponse:
    runtime = runtime_of(request)
    query = read_query(request, EventStreamQuery)
    frames = await runtime.services.events.open_stream(
        workspace_of(request),
        request.path_params["session_id"],
        frozenset(query.event_deltas),
        request.headers.get("last-event-id") or None,
    )
    return EventSourceResponse(
        _sse(frames),
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
