"""`/v1/sessions`: running instances of an agent in an environment (spec §6)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse

from corral.api.agents import (
    AgentVersion,
    McpServerParam,
    ModelConfigParam,
    ToolParam,
    check_tools,
    load_agent,
    resolve_model,
    resolve_tools,
    snapshot_of,
)
from corral.api.edge import ensure_session_capacity
from corral.api.environments import load_environment
from corral.api.event_params import InitialEventParam, to_new_event
from corral.api.http import ApiRoute, CreatedAtQuery, Order, decode_cursor, ok, page_response, read_body, read_query
from corral.api.schemas import Metadata, MetadataPatch, Strict, patch_metadata
from corral.api.vaults import load_vault
from corral.clock import now, now_rfc3339, parse_rfc3339
from corral.errors import Conflict, InvalidRequest, NotFound
from corral.ids import new_id
from corral.models.pricing import ModelPrice, price_for
from corral.runtime import runtime_of, workspace_of
from corral.session.budget import budget_cents, list_cost
from corral.session.log import new_event
from corral.session.records import Json, SessionRecord
from corral.session.state import SessionState, active_seconds_now, empty_usage

SessionStatus = Literal["rescheduling", "running", "idle", "terminated"]


class AgentReference(Strict):
    type: Literal["agent"]
    id: Annotated[str, Field(min_length=1)]
    version: AgentVersion | None = None


class AgentWithOverrides(Strict):
    type: Literal["agent_with_overrides"]
    id: Annotated[str, Field(min_length=1)]
    version: AgentVersion | None = None
    model: Annotated[str, Field(min_length=1)] | ModelConfigParam | None = None
    system: Annotated[str, Field(max_length=100_000)] | None = None
    tools: Annotated[list[ToolParam], Field(max_length=256)] | None = None
    mcp_servers: Annotated[list[McpServerParam], Field(max_length=20)] | None = None
    skills: list[Any] | None = None


class MaxListCost(Strict):
    amount: Annotated[str, Field(pattern=r"^[0-9]{1,15}$")]
    currency: Literal["USD"]


class BudgetParam(Strict):
    type: Literal["limit"]
    max_list_cost: MaxListCost


class SessionCreate(Strict):
    agent: (
        Annotated[str, Field(min_length=1)]
        | Annotated[AgentReference | AgentWithOverrides, Field(discriminator="type")]
    )
    environment_id: Annotated[str, Field(min_length=1)]
    title: Annotated[str, Field(max_length=1024)] | None = None
    metadata: Metadata | None = None
    resources: list[Any] | None = None
    vault_ids: Annotated[list[Annotated[str, Field(min_length=1, max_length=128)]], Field(max_length=20)] | None = None
    initial_events: Annotated[list[InitialEventParam], Field(max_length=50)] | None = None
    budget: BudgetParam | None = None


class SessionAgentUpdate(Strict):
    tools: Annotated[list[ToolParam], Field(max_length=256)] | None = None
    mcp_servers: Annotated[list[McpServerParam], Field(max_length=20)] | None = None


class SessionUpdate(Strict):
    title: Annotated[str, Field(max_length=1024)] | None = None
    metadata: MetadataPatch | None = None
    agent: SessionAgentUpdate | None = None
    budget: BudgetParam | None = None
    vault_ids: list[str] | None = None  # fixed at creation: only null is accepted


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


async def load_session(request: Request, session_id: str) -> SessionRecord:
    session = await runtime_of(request).store.get_session(workspace_of(request), session_id)
    if session is None:
        raise NotFound(f"session {session_id} not found")
    return session


def ensure_writable(session: SessionRecord) -> None:
    if session.archived_at is not None:
        raise Conflict(f"session {session.id} is archived and read-only")
    if session.status == "terminated":
        raise Conflict(f"session {session.id} is terminated and accepts no more events")


def _apply_overrides(snapshot: Json, overrides: AgentWithOverrides, raw: Json) -> Json:
    if overrides.skills:
        raise InvalidRequest("agent.skills overrides are not supported by this server yet")
    if overrides.model is not None:
        snapshot["model"] = resolve_model(overrides.model)
    if "system" in raw:
        snapshot["system"] = overrides.system or None
    if "tools" in raw:
        snapshot["tools"] = resolve_tools(overrides.tools)
    if "mcp_servers" in raw:
        snapshot["mcp_servers"] = [server.model_dump() for server in overrides.mcp_servers or []]
    check_tools(snapshot["tools"], snapshot["mcp_servers"])
    return snapshot


def _reject_unsupported(params: SessionCreate) -> None:
    if params.resources:
        raise InvalidRequest("session resources are not supported by this server yet; omit 'resources'")


def _budget(budget: BudgetParam | None, prices: list[ModelPrice], snapshot: Json) -> Json | None:
    """The budget of a session whose agent is `snapshot` (None: no budget)."""
    if budget is None:
        return None
    if price_for(prices, snapshot["model"]["id"]) is None:
        raise InvalidRequest(
            f"model '{snapshot['model']['id']}' has no list price on this server, so a budget cannot be measured; "
            "configure one with --model-prices",
            error_code="model_not_budgetable",
        )
    return budget.model_dump()


def _updated_budget(session: SessionRecord, update: BudgetParam | None, prices: list[ModelPrice]) -> Json | None:
    """A budget update: replace (never below what is spent) or remove; never add one after creation."""
    if session.body.get("budget") is None and update is not None:
        raise InvalidRequest("a budget can only be set when the session is created", error_code="budget_create_only")
    budget = _budget(update, prices, session.body["agent"])
    if budget is not None:
        spent = list_cost(prices, session.body, session.usage)
        if (
            spent is not None
            and budget_cents(budget) is not None
            and int(spent["amount"]) >= (budget_cents(budget) or 0)
        ):
            raise InvalidRequest(
                f"the new budget must be above what the session has spent ({spent['amount']} US cents)",
                error_code="budget_not_raised",
            )
    return budget


async def _check_vaults(request: Request, vault_ids: list[str]) -> list[str]:
    """The vaults a new session attaches: each must exist in the caller's workspace and be live."""
    if len(set(vault_ids)) != len(vault_ids):
        raise InvalidRequest("vault_ids lists the same vault more than once")
    for vault_id in vault_ids:
        vault = await load_vault(request, vault_id)
        if vault.archived_at is not None:
            raise InvalidRequest(f"vault {vault_id} is archived; new sessions cannot use it")
    return list(vault_ids)


async def create_session(request: Request) -> JSONResponse:
    params, raw = await read_body(request, SessionCreate)
    _reject_unsupported(params)
    runtime = runtime_of(request)
    reference = params.agent
    agent_id = reference if isinstance(reference, str) else reference.id
    version = None if isinstance(reference, str) else reference.version
    agent = await load_agent(request, agent_id, version)
    if agent.archived_at is not None:
        raise InvalidRequest(f"agent {agent.id} is archived; new sessions cannot use it")
    environment = await load_environment(request, params.environment_id)
    if environment.archived_at is not None:
        raise InvalidRequest(f"environment {environment.id} is archived; new sessions cannot use it")
    vault_ids = await _check_vaults(request, params.vault_ids or [])
    snapshot = snapshot_of(agent)
    if isinstance(reference, AgentWithOverrides):
        snapshot = _apply_overrides(snapshot, reference, raw["agent"])
    initial = [to_new_event(event) for event in params.initial_events or []]
    timestamp = now_rfc3339()
    session = SessionRecord(
        id=new_id("sesn"),
        workspace_id=agent.workspace_id,
        agent_id=agent.id,
        agent_version=agent.version,
        environment_id=environment.id,
        body={
            "title": params.title,
            "metadata": params.metadata or {},
            "agent": snapshot,
            "vault_ids": vault_ids,
            "budget": _budget(params.budget, runtime.settings.prices, snapshot),
        },
        status="idle",
        usage=empty_usage(),
        active_seconds=0.0,
        running_since=None,
        created_at=timestamp,
        updated_at=timestamp,
    )
    await ensure_session_capacity(runtime, session, any(event.type == "user.message" for event in initial))
    await runtime.store.insert_session(session)
    if initial:
        await runtime.log.enqueue(session.id, initial)
        runtime.brain.wake(session.id)
    return ok(session_wire(session, runtime.settings.prices))


async def retrieve_session(request: Request) -> JSONResponse:
    session = await load_session(request, request.path_params["session_id"])
    return ok(session_wire(session, runtime_of(request).settings.prices))


async def update_session(request: Request) -> JSONResponse:
    params, raw = await read_body(request, SessionUpdate)
    runtime = runtime_of(request)
    session = await load_session(request, request.path_params["session_id"])
    if session.archived_at is not None:
        raise Conflict(f"session {session.id} is archived and read-only")
    if params.vault_ids is not None:
        raise InvalidRequest("vault_ids cannot be changed after a session is created")
    body = dict(session.body)
    changed: Json = {}
    if "budget" in raw:
        budget = _updated_budget(session, params.budget, runtime.settings.prices)
        if budget != body.get("budget"):
            body["budget"] = changed["budget"] = budget
    if "title" in raw and params.title != body.get("title"):
        body["title"] = changed["title"] = params.title
    if "metadata" in raw:
        metadata = patch_metadata(body.get("metadata", {}), params.metadata)
        if metadata != body.get("metadata", {}):
            body["metadata"] = changed["metadata"] = metadata
    if params.agent is not None:
        # The log decides (not whether a brain task is still winding down after its idle), so a client that
        # acts on `session.status_idle` is never refused.
        if session.status in ("running", "rescheduling"):
            raise Conflict(f"session {session.id} is running; interrupt it before changing its agent")
        agent = dict(body["agent"])
        agent_raw = raw["agent"] or {}
        if "tools" in agent_raw:
            agent["tools"] = resolve_tools(params.agent.tools)
        if "mcp_servers" in agent_raw:
            agent["mcp_servers"] = [server.model_dump() for server in params.agent.mcp_servers or []]
        check_tools(agent["tools"], agent["mcp_servers"])
        if agent != body["agent"]:
            body["agent"] = changed["agent"] = agent
    if changed:
        await runtime.store.update_session_body(session.id, body, now_rfc3339())
        await runtime.log.append(session.id, new_event("session.updated", **changed))
        if "budget" in changed:
            runtime.brain.wake(session.id)  # a raised or removed budget resumes a session paused at it
    return ok(session_wire(await load_session(request, session.id), runtime.settings.prices))


async def list_sessions(request: Request) -> JSONResponse:
    query = read_query(request, SessionListQuery)
    if query.agent_version is not None and query.agent_id is None:
        raise InvalidRequest("agent_version can only be used together with agent_id")
    for unsupported in ("deployment_id", "memory_store_id"):
        if request.query_params.get(unsupported):
            raise InvalidRequest(f"filtering by {unsupported} is not supported by this server yet")
    scope = f"sessions:{query.order}"
    page = await runtime_of(request).store.list_sessions(
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
    return page_response(
        page, [session_wire(s, runtime_of(request).settings.prices) for s in page.items], scope=scope, with_prev=True
    )


async def archive_session(request: Request) -> JSONResponse:
    runtime = runtime_of(request)
    session = await load_session(request, request.path_params["session_id"])
    if session.archived_at is None:
        if session.status in ("running", "rescheduling"):
            raise Conflict(f"session {session.id} is running; interrupt it or wait for it to idle, then archive")
        await runtime.store.archive_session(session.id, now_rfc3339())
        await runtime.hands.release(session.id)
    return ok(session_wire(await load_session(request, session.id), runtime.settings.prices))


async def delete_session(request: Request) -> JSONResponse:
    runtime = runtime_of(request)
    session = await load_session(request, request.path_params["session_id"])
    await runtime.brain.stop(session.id)
    await runtime.store.delete_session(session.id)
    await runtime.hands.destroy(session.id)
    runtime.bus.publish_transient(
        session.id, {"type": "session.deleted", "id": new_id("sevt"), "processed_at": now_rfc3339()}
    )
    runtime.bus.end_session(session.id)
    return ok({"id": session.id, "type": "session_deleted"})


routes = [
    ApiRoute("POST", "/v1/sessions", create_session, body=SessionCreate),
    ApiRoute("GET", "/v1/sessions", list_sessions, query=SessionListQuery),
    ApiRoute("GET", "/v1/sessions/{session_id}", retrieve_session),
    ApiRoute("POST", "/v1/sessions/{session_id}", update_session, body=SessionUpdate),
    ApiRoute("DELETE", "/v1/sessions/{session_id}", delete_session),
    ApiRoute("POST", "/v1/sessions/{session_id}/archive", archive_session),
]
