"""`/v1/agents`: versioned agent configurations (spec §2). The operations are `corral.services.agents`."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse

from corral.api.http import ApiRoute, CreatedAtQuery, Query, decode_cursor, ok, page_response, read_body, read_query
from corral.runtime import runtime_of, workspace_of
from corral.services.agents import AgentCreate, AgentUpdate, AgentVersion
from corral.session.records import AgentRecord, Json


class AgentListQuery(CreatedAtQuery):
    include_archived: bool = False
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    page: str | None = None


class AgentRetrieveQuery(Query):
    version: AgentVersion | None = None


class AgentVersionsQuery(Query):
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    page: str | None = None


def agent_wire(agent: AgentRecord) -> Json:
    return {
        "id": agent.id,
        "type": "agent",
        **agent.body,
        "version": agent.version,
        "created_at": agent.created_at,
        "updated_at": agent.updated_at,
        "archived_at": agent.archived_at,
    }


async def create_agent(request: Request) -> JSONResponse:
    params, _ = await read_body(request, AgentCreate)
    return ok(agent_wire(await runtime_of(request).services.agents.create(workspace_of(request), params)))


async def retrieve_agent(request: Request) -> JSONResponse:
    query = read_query(request, AgentRetrieveQuery)
    agents = runtime_of(request).services.agents
    return ok(agent_wire(await agents.get(workspace_of(request), request.path_params["agent_id"], query.version)))


async def update_agent(request: Request) -> JSONResponse:
    params, _ = await read_body(request, AgentUpdate)
    agents = runtime_of(request).services.agents
    return ok(agent_wire(await agents.update(workspace_of(request), request.path_params["agent_id"], params)))


async def list_agents(request: Request) -> JSONResponse:
    query = read_query(request, AgentListQuery)
    scope = "agents"
    page = await runtime_of(request).services.agents.list_agents(
        workspace_of(request),
        include_archived=query.include_archived,
        created=query.created_bounds(),
        limit=query.limit,
        cursor=decode_cursor(query.page, scope=scope),
    )
    return page_response(page, [agent_wire(agent) for agent in page.items], scope=scope)


async def archive_agent(request: Request) -> JSONResponse:
    agents = runtime_of(request).services.agents
    return ok(agent_wire(await agents.archive(workspace_of(request), request.path_params["agent_id"])))


async def list_agent_versions(request: Request) -> JSONResponse:
    query = read_query(request, AgentVersionsQuery)
    agents = runtime_of(request).services.agents
    agent = await agents.get(workspace_of(request), request.path_params["agent_id"])
    scope = f"agent_versions:{agent.id}"
    page = await agents.list_versions(agent, limit=query.limit, cursor=decode_cursor(query.page, scope=scope))
    return page_response(page, [agent_wire(version) for version in page.items], scope=scope)


routes = [
    ApiRoute("POST", "/v1/agents", create_agent, body=AgentCreate),
    ApiRoute("GET", "/v1/agents", list_agents, query=AgentListQuery),
    ApiRoute("GET", "/v1/agents/{agent_id}", retrieve_agent, query=AgentRetrieveQuery),
    ApiRoute("POST", "/v1/agents/{agent_id}", update_agent, body=AgentUpdate),
    ApiRoute("POST", "/v1/agents/{agent_id}/archive", archive_agent),
    ApiRoute("GET", "/v1/agents/{agent_id}/versions", list_agent_versions, query=AgentVersionsQuery),
]
