"""`/v1/environments`: sandbox templates (spec §4). The operations are `corral.services.environments`."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse

from corral.api.http import ApiRoute, Query, decode_cursor, ok, page_response, read_body, read_query
from corral.runtime import runtime_of, workspace_of
from corral.services.environments import EnvironmentCreate, EnvironmentUpdate
from corral.session.records import EnvironmentRecord, Json


class EnvironmentListQuery(Query):
    include_archived: bool = False
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    page: str | None = None


def environment_wire(environment: EnvironmentRecord) -> Json:
    return {
        "id": environment.id,
        "type": "environment",
        **environment.body,
        "name": environment.name,
        "created_at": environment.created_at,
        "updated_at": environment.updated_at,
        "archived_at": environment.archived_at,
    }


async def create_environment(request: Request) -> JSONResponse:
    params, _ = await read_body(request, EnvironmentCreate)
    environments = runtime_of(request).services.environments
    return ok(environment_wire(await environments.create(workspace_of(request), params)))


async def retrieve_environment(request: Request) -> JSONResponse:
    environments = runtime_of(request).services.environments
    return ok(environment_wire(await environments.get(workspace_of(request), request.path_params["environment_id"])))


async def update_environment(request: Request) -> JSONResponse:
    params, _ = await read_body(request, EnvironmentUpdate)
    environments = runtime_of(request).services.environments
    environment_id = request.path_params["environment_id"]
    return ok(environment_wire(await environments.update(workspace_of(request), environment_id, params)))


async def list_environments(request: Request) -> JSONResponse:
    query = read_query(request, EnvironmentListQuery)
    scope = "environments"
    page = await runtime_of(request).services.environments.list_environments(
        workspace_of(request),
        include_archived=query.include_archived,
        limit=query.limit,
        cursor=decode_cursor(query.page, scope=scope),
    )
    return page_response(page, [environment_wire(env) for env in page.items], scope=scope)


async def delete_environment(request: Request) -> JSONResponse:
    environments = runtime_of(request).services.environments
    environment = await environments.delete(workspace_of(request), request.path_params["environment_id"])
    return ok({"id": environment.id, "type": "environment_deleted"})


async def archive_environment(request: Request) -> JSONResponse:
    environments = runtime_of(request).services.environments
    return ok(
        environment_wire(await environments.archive(workspace_of(request), request.path_params["environment_id"]))
    )


routes = [
    ApiRoute("POST", "/v1/environments", create_environment, body=EnvironmentCreate),
    ApiRoute("GET", "/v1/environments", list_environments, query=EnvironmentListQuery),
    ApiRoute("GET", "/v1/environments/{environment_id}", retrieve_environment),
    ApiRoute("POST", "/v1/environments/{environment_id}", update_environment, body=EnvironmentUpdate),
    ApiRoute("DELETE", "/v1/environments/{environment_id}", delete_environment),
    ApiRoute("POST", "/v1/environments/{environment_id}/archive", archive_environment),
]
