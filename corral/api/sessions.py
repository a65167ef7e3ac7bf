"""`/v1/sessions`: running instances of an agent in an environment (spec §6). The operations are
`corral.services.sessions`."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse

from corral.api.http import ApiRoute, CreatedAtQuery, Order, decode_cursor, ok, page_response, read_body, read_query
from corral.clock import now, parse_rfc3339
from corral.errors import InvalidRequest
from corral.pricing import ModelPrice
from corral.runtime import runtime_of, workspace_of
from corral.services.agents import AgentVersion
from corral.services.sessions import SessionCreate, Sessions, SessionStatus, SessionUpdate
from corral.session.budget import list_cost
from corral.session.records import Json, SessionRecord
from corral.session.state import SessionState, active_seconds_now


class SessionListQuery(CreatedAtQuery):
    agent_id: str | None = None
    agent_version: AgentVersion | None = None
    statuses: list[SessionStatus] = []
    include_archived: bool = False
    order: Order = "desc"
    limit: Annotated[int, Field(ge=1, le=1000)] = 20
    page: str | None = None


def session_wire(session: SessionRecord, prices: list[ModelPrice]) -> Json:
    moment = now()
    state = SessionState(session.status, session.usage, session.active_seconds, session.running_since)
    active = round(active_seconds_now(state, moment), 6)
    duration = round(max(0.0, (moment - parse_rfc3339(session.created_at)).total_seconds()), 6)
    return {
        "id": session.id,
        "type": "session",
        "status": session.status,
        "title": session.body.get("title"),
        "agent": session.body["agent"],
        "environment_id": session.environment_id,
        "resources": [],
        "vault_ids": list(session.body.get("vault_ids") or []),
        "metadata": session.body.get("metadata", {}),
        "budget": session.body.get("budget"),
        "usage": _usage(session, active, prices),
        "stats": {"active_seconds": active, "duration_seconds": duration},
        "outcome_evaluations": [],
        "deployment_id": None,
        "created_at": session.created_at,
        "updated_at": session.updated_at,
        "archived_at": session.archived_at,
    }


def _usage(session: SessionRecord, active: float, prices: list[ModelPrice]) -> Json:
    usage = {**session.usage, "active_seconds": active}
    cost = list_cost(prices, session.body, session.usage)
    if cost is not None:
        usage["list_cost"] = cost
    return usage


def _sessions(request: Request) -> Sessions:
    return runtime_of(request).services.sessions


def _wire(request: Request, session: SessionRecord) -> JSONResponse:
    return ok(session_wire(session, runtime_of(request).settings.prices))


async def create_session(request: Request) -> JSONResponse:
    params, _ = await read_body(request, SessionCreate)
    return _wire(request, await _sessions(request).create(workspace_of(request), params))


async def retrieve_session(request: Request) -> JSONResponse:
    return _wire(request, await _sessions(request).get(workspace_of(request), request.path_params["session_id"]))


async def update_session(request: Request) -> JSONResponse:
    params, _ = await read_body(request, SessionUpdate)
    session_id = request.path_params["session_id"]
    return _wire(request, await _sessions(request).update(workspace_of(request), session_id, params))


async def list_sessions(request: Request) -> JSONResponse:
    query = read_query(request, SessionListQuery)
    if query.agent_version is not None and query.agent_id is None:
        raise InvalidRequest("agent_version can only be used together with agent_id")
    for unsupported in ("deployment_id", "memory_store_id"):
        if request.query_params.get(unsupported):
            raise InvalidRequest(f"filtering by {unsupported} is not supported by this server yet")
    scope = f"sessions:{query.order}"
    page = await _sessions(request).list_sessions(
        workspace_of(request),
        agent_id=query.agent_id,
        agent_version=query.agent_version,
        statuses=list(query.statuses),
        include_archived=query.include_archived,
        created=query.created_bounds(),
        order=query.order,
        limit=query.limit,
        cursor=decode_cursor(query.page, scope=scope),
    )
    prices = runtime_of(request).settings.prices
    return page_response(page, [session_wire(s, prices) for s in page.items], scope=scope, with_prev=True)


async def archive_session(request: Request) -> JSONResponse:
    return _wire(request, await _sessions(request).archive(workspace_of(request), request.path_params["session_id"]))


async def delete_session(request: Request) -> JSONResponse:
    session = await _sessions(request).delete(workspace_of(request), request.path_params["session_id"])
    return ok({"id": session.id, "type": "session_deleted"})


routes = [
    ApiRoute("POST", "/v1/sessions", create_session, body=SessionCreate),
    ApiRoute("GET", "/v1/sessions", list_sessions, query=SessionListQuery),
    ApiRoute("GET", "/v1/sessions/{session_id}", retrieve_session),
    ApiRoute("POST", "/v1/sessions/{session_id}", update_session, body=SessionUpdate),
    ApiRoute("DELETE", "/v1/sessions/{session_id}", delete_session),
    ApiRoute("POST", "/v1/sessions/{session_id}/archive", archive_session),
]
