"""Environments: the sandbox templates sessions run in (spec §4), created, changed, archived and deleted."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from corral.clock import now_rfc3339
from corral.errors import Conflict, InvalidRequest, NotFound
from corral.ids import new_id
from corral.services.schemas import Metadata, MetadataPatch, Strict, patch_metadata
from corral.session.records import EnvironmentRecord, Json, Page
from corral.session.store import Store

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


def _name_taken(name: str) -> Conflict:
    return Conflict(f"an environment named '{name}' already exists in this workspace; choose another name")


class Environments:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def get(self, workspace_id: str, environment_id: str) -> EnvironmentRecord:
        environment = await self._store.get_environment(workspace_id, environment_id)
        if environment is None:
            raise NotFound(f"environment {environment_id} not found", error_code="environment_not_found")
        return environment

    async def create(self, workspace_id: str, params: EnvironmentCreate) -> EnvironmentRecord:
        now = now_rfc3339()
        body: Json = {
            "description": params.description or None,
            "config": resolve_config(params.config),
            "metadata": params.metadata or {},
            "scope": params.scope or "organization",
        }
        environment = EnvironmentRecord(new_id("env"), workspace_id, params.name, body, now, now)
        if not await self._store.insert_environment(environment):
            raise _name_taken(params.name)
        return environment

    async def update(self, workspace_id: str, environment_id: str, params: EnvironmentUpdate) -> EnvironmentRecord:
        given = params.model_fields_set  # what the body named, null or not (an omitted field is left alone)
        current = await self.get(workspace_id, environment_id)
        if current.archived_at is not None:
            raise InvalidRequest(
                f"environment {current.id} is archived and can no longer be changed",
                error_code="environment_archived",
            )
        if "name" in given and params.name is None:
            raise InvalidRequest("name cannot be cleared")
        body = dict(current.body)
        if params.config is not None:
            if params.config.type != current.body["config"]["type"]:
                raise InvalidRequest(
                    f"config.type cannot change from '{current.body['config']['type']}' to '{params.config.type}'",
                    error_code="invalid_config_type_change",
                )
            body["config"] = resolve_config(params.config, current.body["config"])
        if "description" in given:
            body["description"] = params.description or None
        if "scope" in given:
            body["scope"] = params.scope or "organization"
        if "metadata" in given:
            body["metadata"] = patch_metadata(current.body.get("metadata", {}), params.metadata, empty_deletes=True)
        name = params.name or current.name
        if body == current.body and name == current.name:
            return current
        updated = EnvironmentRecord(current.id, current.workspace_id, name, body, current.created_at, now_rfc3339())
        if not await self._store.update_environment(updated):
            raise _name_taken(name)
        return updated

    async def list_environments(
        self, workspace_id: str, *, include_archived: bool, limit: int, cursor: Json | None
    ) -> Page:
        return await self._store.list_environments(
            workspace_id, include_archived=include_archived, limit=limit, cursor=cursor
        )

    async def delete(self, workspace_id: str, environment_id: str) -> EnvironmentRecord:
        environment = await self.get(workspace_id, environment_id)
        await self._store.delete_environment(environment.workspace_id, environment.id)
        return environment

    async def archive(self, workspace_id: str, environment_id: str) -> EnvironmentRecord:
        environment = await self.get(workspace_id, environment_id)
        await self._store.archive_environment(environment.workspace_id, environment.id, now_rfc3339())
        return await self.get(workspace_id, environment.id)
