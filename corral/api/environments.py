"""`/v1/environments`: sandbox templates (spec §4)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse

from corral.api.http import ApiRoute, Query, decode_cursor, ok, page_response, read_body, read_query
from corral.api.schemas import Metadata, MetadataPatch, Strict, patch_metadata
from corral.clock import now_rfc3339
from corral.errors import Conflict, InvalidRequest, NotFound
from corral.ids import new_id
from corral.runtime import runtime_of, workspace_of
from corral.session.records import EnvironmentRecord, Json

PACKAGE_MANAGERS = ("apt", "cargo", "gem", "go", "npm", "pip")


class Unrestricted(Strict):
    type: Literal["unrestricted"]


class Limited(Strict):
    type: Literal["limited"]
    allowed_hosts: list[Annotated[str, Field(min_length=1, max_length=253)]] | None = None
    allow_mcp_servers: bool | None = None
    allow_package_managers: bool | None = None


Networking = Annotated[Unrestricted | Limited, Field(discriminator="type")]


class Packages(Strict):
    type: Literal["packages"] | None = None
    apt: list[str] | None = None
    cargo: list[str] | None = None
    gem: list[str] | None = None
    go: list[str] | None = None
    npm: list[str] | None = None
    pip: list[str] | None = None


class CloudConfig(Strict):
    type: Literal["cloud"]
    networking: Networking | None = None
    packages: Packages | None = None


class SelfHostedConfig(Strict):
    type: Literal["self_hosted"]


Config = Annotated[CloudConfig | SelfHostedConfig, Field(discriminator="type")]


class EnvironmentCreate(Strict):
    name: Annotated[str, Field(min_length=1, max_length=256)]
    config: Config | None = None
    description: Annotated[str, Field(max_length=2048)] | None = None
    metadata: Metadata | None = None
    scope: Literal["organization", "account"] | None = None


class EnvironmentUpdate(Strict):
    name: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    config: Config | None = None
    description: Annotated[str, Field(max_length=2048)] | None = None
    # null or "" deletes a key (spec §1.4)
    metadata: MetadataPatch | None = None
    scope: Literal["organization", "account"] | None = None


class EnvironmentListQuery(Query):
    include_archived: bool = False
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    page: str | None = None


DEFAULT_NETWORKING: Json = {
    "type": "limited",
    "allowed_hosts": [],
    "allow_mcp_servers": False,
    "allow_package_managers": False,
}


def _resolve_networking(networking: Unrestricted | Limited | None, current: Json | None) -> Json:
    if networking is None:
        return current or dict(DEFAULT_NETWORKING)
    if isinstance(networking, Unrestricted):
        return {"type": "unrestricted"}
    return {
        "type": "limited",
        "allowed_hosts": list(networking.allowed_hosts or []),
        "allow_mcp_servers": bool(networking.allow_mcp_servers),
        "allow_package_managers": bool(networking.allow_package_managers),
    }


def _resolve_packages(packages: Packages | None, current: Json | None) -> Json:
    if packages is None:
        return current or {"type": "packages", **{manager: [] for manager in PACKAGE_MANAGERS}}
    return {
        "type": "packages",
        **{manager: list(getattr(packages, manager) or []) for manager in PACKAGE_MANAGERS},
    }


def resolve_config(config: CloudConfig | SelfHostedConfig | None, current: Json | None = None) -> Json:
    """The fully populated config; on update, omitted cloud fields keep their stored values."""
    if config is None:
        config = CloudConfig(type="cloud") if current is None else None
        if config is None:
            assert current is not None
            return current
    if isinstance(config, SelfHostedConfig):
        return {"type": "self_hosted"}
    cloud_current = current if current and current.get("type") == "cloud" else {}
    networking = _resolve_networking(config.networking, cloud_current.get("networking"))
    packages = _resolve_packages(config.packages, cloud_current.get("packages"))
    wants_packages = any(packages[manager] for manager in PACKAGE_MANAGERS)
    if networking["type"] == "limited" and wants_packages and not networking["allow_package_managers"]:
        raise InvalidRequest(
            "config.networking.allow_package_managers must be true when config.packages lists packages "
            "under limited networking"
        )
    return {"type": "cloud", "networking": networking, "packages": packages}


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


async def load_environment(request: Request, environment_id: str) -> EnvironmentRecord:
    environment = await runtime_of(request).store.get_environment(workspace_of(request), environment_id)
    if environment is None:
        raise NotFound(f"environment {environment_id} not found", error_code="environment_not_found")
    return environment


def _name_taken(name: str) -> Conflict:
    return Conflict(f"an environment named '{name}' already exists in this workspace; choose another name")


async def create_environment(request: Request) -> JSONResponse:
    params, _ = await read_body(request, EnvironmentCreate)
    now = now_rfc3339()
    body: Json = {
        "description": params.description or None,
        "config": resolve_config(params.config),
        "metadata": params.metadata or {},
        "scope": params.scope or "organization",
    }
    environment = EnvironmentRecord(new_id("env"), workspace_of(request), params.name, body, now, now)
    if not await runtime_of(request).store.insert_environment(environment):
        raise _name_taken(params.name)
    return ok(environment_wire(environment))


async def retrieve_environment(request: Request) -> JSONResponse:
    return ok(environment_wire(await load_environment(request, request.path_params["environment_id"])))


async def update_environment(request: Request) -> JSONResponse:
    params, raw = await read_body(request, EnvironmentUpdate)
    current = await load_environment(request, request.path_params["environment_id"])
    if current.archived_at is not None:
        raise InvalidRequest(
            f"environment {current.id} is archived and can no longer be changed",
            error_code="environment_archived",
        )
    if "name" in raw and raw["name"] is None:
        raise InvalidRequest("name cannot be cleared")
    body = dict(current.body)
    if params.config is not None:
        if params.config.type != current.body["config"]["type"]:
            raise InvalidRequest(
                f"config.type cannot change from '{current.body['config']['type']}' to '{params.config.type}'",
                error_code="invalid_config_type_change",
            )
        body["config"] = resolve_config(params.config, current.body["config"])
    if "description" in raw:
        body["description"] = params.description or None
    if "scope" in raw:
        body["scope"] = params.scope or "organization"
    if "metadata" in raw:
        body["metadata"] = patch_metadata(current.body.get("metadata", {}), params.metadata, empty_deletes=True)
    name = params.name or current.name
    if body == current.body and name == current.name:
        return ok(environment_wire(current))
    updated = EnvironmentRecord(current.id, current.workspace_id, name, body, current.created_at, now_rfc3339())
    if not await runtime_of(request).store.update_environment(updated):
        raise _name_taken(name)
    return ok(environment_wire(updated))


async def list_environments(request: Request) -> JSONResponse:
    query = read_query(request, EnvironmentListQuery)
    scope = "environments"
    page = await runtime_of(request).store.list_environments(
        workspace_of(request),
        include_archived=query.include_archived,
        limit=query.limit,
        cursor=decode_cursor(query.page, scope=scope),
    )
    return page_response(page, [environment_wire(env) for env in page.items], scope=scope)


async def delete_environment(request: Request) -> JSONResponse:
    environment = await load_environment(request, request.path_params["environment_id"])
    await runtime_of(request).store.delete_environment(environment.workspace_id, environment.id)
    return ok({"id": environment.id, "type": "environment_deleted"})


async def archive_environment(request: Request) -> JSONResponse:
    environment = await load_environment(request, request.path_params["environment_id"])
    await runtime_of(request).store.archive_environment(environment.workspace_id, environment.id, now_rfc3339())
    return ok(environment_wire(await load_environment(request, environment.id)))


routes = [
    ApiRoute("POST", "/v1/environments", create_environment, body=EnvironmentCreate),
    ApiRoute("GET", "/v1/environments", list_environments, query=EnvironmentListQuery),
    ApiRoute("GET", "/v1/environments/{environment_id}", retrieve_environment),
    ApiRoute("POST", "/v1/environments/{environment_id}", update_environment, body=EnvironmentUpdate),
    ApiRoute("DELETE", "/v1/environments/{environment_id}", delete_environment),
    ApiRoute("POST", "/v1/environments/{environment_id}/archive", archive_environment),
]
