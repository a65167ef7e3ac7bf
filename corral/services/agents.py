"""Agents: versioned agent configurations (spec §2), created, changed and archived.

The request models are the operations' typed inputs (the API validates bodies with them); what is stored is
the resolved form, with every default filled in, which is also what responses show.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from corral.clock import now_rfc3339
from corral.errors import Conflict, InvalidRequest, NotFound
from corral.hands.builtin.toolset import BUILTIN_TOOLS, TOOLSET_TYPE, resolve_toolset
from corral.ids import new_id
from corral.services.schemas import Metadata, MetadataPatch, PermissionPolicy, Strict, patch_metadata
from corral.session.records import AgentRecord, Json, Page, TimeBounds
from corral.session.store import Store

EffortLevel = Literal["low", "medium", "high", "xhigh", "max"]
DEFAULT_EFFORT = "high"
# The stores keep versions in 32-bit integer columns; no agent gets anywhere near.
AgentVersion = Annotated[int, Field(ge=1, le=2**31 - 1)]


class EffortObject(Strict):
    type: EffortLevel


class ModelConfigParam(Strict):
    id: Annotated[str, Field(min_length=1, max_length=256)]
    effort: EffortLevel | EffortObject | None = None
    inference_geo: str | None = None
    speed: Literal["standard", "fast"] | None = None


class ToolsetDefaultConfig(Strict):
    enabled: bool | None = None
    permission_policy: PermissionPolicy | None = None


class BuiltinToolConfig(Strict):
    name: Literal["bash", "read", "write", "edit", "glob", "grep", "web_fetch", "web_search"]
    type: Literal["bash", "read", "write", "edit", "glob", "grep", "web_fetch", "web_search"] | None = None
    enabled: bool | None = None
    permission_policy: PermissionPolicy | None = None
    allowed_domains: Annotated[list[str], Field(min_length=1, max_length=64)] | None = None
    blocked_domains: Annotated[list[str], Field(min_length=1, max_length=64)] | None = None
    max_content_tokens: Annotated[int, Field(ge=1)] | None = None
    url_sources: Any = None
    user_location: dict[str, Any] | None = None


class AgentToolsetParam(Strict):
    type: Literal["agent_toolset_20260401"]
    default_config: ToolsetDefaultConfig | None = None
    configs: list[BuiltinToolConfig] | None = None


class McpToolConfig(Strict):
    name: Annotated[str, Field(min_length=1, max_length=128)]
    enabled: bool | None = None
    permission_policy: PermissionPolicy | None = None


class McpToolsetParam(Strict):
    type: Literal["mcp_toolset"]
    mcp_server_name: Annotated[str, Field(min_length=1, max_length=255)]
    default_config: ToolsetDefaultConfig | None = None
    configs: list[McpToolConfig] | None = None


class InputSchema(Strict):
    model_config = Strict.model_config | {"extra": "allow"}
    type: Literal["object"]
    properties: dict[str, Any] | None = None
    required: list[str] | None = None


class CustomToolParam(Strict):
    type: Literal["custom"]
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")]
    description: Annotated[str, Field(min_length=1)]
    input_schema: InputSchema


ToolParam = Annotated[AgentToolsetParam | McpToolsetParam | CustomToolParam, Field(discriminator="type")]


class McpServerParam(Strict):
    type: Literal["url"]
    name: Annotated[str, Field(min_length=1, max_length=255)]
    url: Annotated[str, Field(min_length=1)]


class ServiceAccount(Strict):
    type: Literal["service_account"]


class AwsRole(Strict):
    type: Literal["aws_role"]
    role_arn: Annotated[str, Field(min_length=1, max_length=2048)]


ExecutionIdentity = Annotated[ServiceAccount | AwsRole, Field(discriminator="type")]


class AgentFields(Strict):
    description: Annotated[str, Field(max_length=2048)] | None = None
    system: Annotated[str, Field(max_length=100_000)] | None = None
    tools: Annotated[list[ToolParam], Field(max_length=256)] | None = None
    mcp_servers: Annotated[list[McpServerParam], Field(max_length=20)] | None = None
    skills: list[Any] | None = None
    multiagent: dict[str, Any] | None = None
    execution_identity: ExecutionIdentity | None = None


class AgentCreate(AgentFields):
    name: Annotated[str, Field(min_length=1, max_length=256)]
    model: Annotated[str, Field(min_length=1, max_length=256)] | ModelConfigParam
    metadata: Metadata | None = None


class AgentUpdate(AgentFields):
    name: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    model: Annotated[str, Field(min_length=1, max_length=256)] | ModelConfigParam | None = None
    version: AgentVersion | None = None
    metadata: MetadataPatch | None = None


# --- resolution of request forms into stored (response) forms ---------------------------------------


def resolve_model(model: str | ModelConfigParam) -> Json:
    if isinstance(model, str):
        return {"id": model, "effort": {"type": DEFAULT_EFFORT}, "inference_geo": None, "speed": "standard"}
    effort = model.effort
    level = effort.type if isinstance(effort, EffortObject) else effort or DEFAULT_EFFORT
    return {
        "id": model.id,
        "effort": {"type": level},
        "inference_geo": model.inference_geo,
        "speed": model.speed or "standard",
    }


def _resolve_mcp_toolset(param: McpToolsetParam) -> Json:
    default = param.default_config or ToolsetDefaultConfig()
    default_enabled = True if default.enabled is None else default.enabled
    default_policy = default.permission_policy.model_dump() if default.permission_policy else {"type": "always_ask"}
    return {
        "type": "mcp_toolset",
        "mcp_server_name": param.mcp_server_name,
        "default_config": {"enabled": default_enabled, "permission_policy": default_policy},
        "configs": [
            {
                "name": entry.name,
                "enabled": default_enabled if entry.enabled is None else entry.enabled,
                "permission_policy": entry.permission_policy.model_dump()
                if entry.permission_policy
                else default_policy,
            }
            for entry in param.configs or []
        ],
    }


def resolve_tools(tools: list[ToolParam] | None) -> list[Json]:
    resolved: list[Json] = []
    for tool in tools or []:
        if isinstance(tool, AgentToolsetParam):
            names = [entry.name for entry in tool.configs or []]
            duplicates = sorted({name for name in names if names.count(name) > 1})
            if duplicates:
                raise InvalidRequest(f"tools: the toolset configures {', '.join(duplicates)} more than once")
            for entry in tool.configs or []:
                if entry.type is not None and entry.type != entry.name:
                    raise InvalidRequest(f"tools: config '{entry.name}' has type '{entry.type}'; they must match")
                if entry.allowed_domains and entry.blocked_domains:
                    raise InvalidRequest(f"tools: '{entry.name}' takes allowed_domains or blocked_domains, not both")
            resolved.append(resolve_toolset(tool.model_dump(exclude_none=True)))
        elif isinstance(tool, McpToolsetParam):
            resolved.append(_resolve_mcp_toolset(tool))
        else:
            resolved.append(tool.model_dump(exclude_none=True))
    return resolved


def check_tools(tools: list[Json], mcp_servers: list[Json]) -> None:
    """Cross-field rules: one built-in toolset, unique tool names, MCP toolsets and servers matched one to one."""
    if sum(1 for tool in tools if tool["type"] == TOOLSET_TYPE) > 1:
        raise InvalidRequest(f"tools: at most one {TOOLSET_TYPE} toolset is allowed")
    custom = [tool["name"] for tool in tools if tool["type"] == "custom"]
    for name in custom:
        if custom.count(name) > 1:
            raise InvalidRequest(f"tools: two custom tools are named '{name}'", error_code="tool_name_conflict")
        if name in BUILTIN_TOOLS and any(tool["type"] == TOOLSET_TYPE for tool in tools):
            raise InvalidRequest(
                f"tools: custom tool '{name}' clashes with the built-in tool of that name",
                error_code="tool_name_conflict",
            )
    server_names = [server["name"] for server in mcp_servers]
    for name in server_names:
        if server_names.count(name) > 1:
            raise InvalidRequest(f"mcp_servers: two servers are named '{name}'")
    referenced = [tool["mcp_server_name"] for tool in tools if tool["type"] == "mcp_toolset"]
    for name in referenced:
        if name not in server_names:
            raise InvalidRequest(f"tools: mcp_toolset refers to '{name}', which is not in mcp_servers")
        if referenced.count(name) > 1:
            raise InvalidRequest(f"tools: more than one mcp_toolset refers to '{name}'")
    for name in server_names:
        if name not in referenced:
            raise InvalidRequest(f"mcp_servers: '{name}' is not used by any mcp_toolset in tools")


def _reject_unsupported(fields: AgentFields) -> None:
    if fields.skills:
        raise InvalidRequest("skills are not supported by this server yet; omit 'skills'")
    if fields.multiagent:
        raise InvalidRequest("multiagent rosters are not supported by this server yet; omit 'multiagent'")


def snapshot_of(agent: AgentRecord) -> Json:
    """The agent as a session carries it: config at one version, without metadata or timestamps."""
    body = {key: value for key, value in agent.body.items() if key != "metadata"}
    return {"id": agent.id, "type": "agent", **body, "version": agent.version}


class Agents:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def get(self, workspace_id: str, agent_id: str, version: int | None = None) -> AgentRecord:
        agent = await self._store.get_agent(workspace_id, agent_id, version)
        if agent is None:
            detail = f" at version {version}" if version is not None else ""
            raise NotFound(f"agent {agent_id}{detail} not found")
        return agent

    async def create(self, workspace_id: str, params: AgentCreate) -> AgentRecord:
        _reject_unsupported(params)
        tools = resolve_tools(params.tools)
        mcp_servers = [server.model_dump() for server in params.mcp_servers or []]
        check_tools(tools, mcp_servers)
        body: Json = {
            "name": params.name,
            "description": params.description or None,
            "system": params.system or None,
            "model": resolve_model(params.model),
            "tools": tools,
            "mcp_servers": mcp_servers,
            "skills": [],
            "multiagent": None,
            "execution_identity": (params.execution_identity or ServiceAccount(type="service_account")).model_dump(),
            "metadata": params.metadata or {},
        }
        now = now_rfc3339()
        agent = AgentRecord(new_id("agent"), workspace_id, 1, body, now, now)
        await self._store.insert_agent(agent)
        return agent

    async def update(self, workspace_id: str, agent_id: str, params: AgentUpdate) -> AgentRecord:
        """A new version with the fields `params` sets (null clears where allowed); unchanged: the current one."""
        given = params.model_fields_set  # what the body named, null or not (an omitted field is left alone)
        current = await self.get(workspace_id, agent_id)
        if current.archived_at is not None:
            raise Conflict(f"agent {current.id} is archived and can no longer be changed")
        if params.version is not None and params.version != current.version:
            raise Conflict(
                f"agent {current.id} is at version {current.version}, not {params.version}; "
                "retrieve it and apply your change to the latest version"
            )
        _reject_unsupported(params)
        body = dict(current.body)
        for field in ("name", "model"):
            if field in given and getattr(params, field) is None:
                raise InvalidRequest(f"{field} cannot be cleared")
        if params.name is not None:
            body["name"] = params.name
        if params.model is not None:
            model = resolve_model(params.model)
            if not isinstance(params.model, ModelConfigParam) or params.model.effort is None:
                model["effort"] = current.body["model"]["effort"]  # omitted on update: unchanged
            body["model"] = model
        for field in ("description", "system"):
            if field in given:
                body[field] = getattr(params, field) or None
        if "tools" in given:
            body["tools"] = resolve_tools(params.tools)
        if "mcp_servers" in given:
            body["mcp_servers"] = [server.model_dump() for server in params.mcp_servers or []]
        if "execution_identity" in given:
            identity = params.execution_identity or ServiceAccount(type="service_account")
            body["execution_identity"] = identity.model_dump()
        if "metadata" in given:
            body["metadata"] = patch_metadata(current.body.get("metadata", {}), params.metadata)
        check_tools(body["tools"], body["mcp_servers"])
        if body == current.body:
            return current
        updated = AgentRecord(
            current.id, current.workspace_id, current.version + 1, body, current.created_at, now_rfc3339()
        )
        if not await self._store.add_agent_version(updated, current.version):
            raise Conflict(f"agent {current.id} was changed by another request; retrieve it and try again")
        return updated

    async def list_agents(
        self, workspace_id: str, *, include_archived: bool, created: TimeBounds, limit: int, cursor: Json | None
    ) -> Page:
        return await self._store.list_agents(
            workspace_id, include_archived=include_archived, created=created, limit=limit, cursor=cursor
        )

    async def archive(self, workspace_id: str, agent_id: str) -> AgentRecord:
        agent = await self.get(workspace_id, agent_id)
        await self._store.archive_agent(agent.workspace_id, agent.id, now_rfc3339())
        return await self.get(workspace_id, agent.id)

    async def list_versions(self, agent: AgentRecord, *, limit: int, cursor: Json | None) -> Page:
        return await self._store.list_agent_versions(agent.workspace_id, agent.id, limit=limit, cursor=cursor)
