"""Sessions: running instances of an agent in an environment (spec §6), created, changed, archived, deleted.

A session's operations touch several parts: the store (its row), the log (`session.updated`, initial events),
the brain (woken, stopped), the hands (its sandbox released or destroyed) and the live streams (ended on delete).
They happen here, in one place, in an order that keeps each part consistent with the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from corral.clock import now_rfc3339
from corral.config import Settings
from corral.errors import ApiError, Conflict, InvalidRequest, NotFound
from corral.hands.base import HandsProvider
from corral.ids import new_id
from corral.observability import metrics
from corral.pricing import ModelPrice, price_for
from corral.protocol.events import EventType, session_deleted_frame, session_updated
from corral.services.agents import (
    Agents,
    AgentVersion,
    McpServerParam,
    ModelConfigParam,
    ToolParam,
    check_tools,
    resolve_model,
    resolve_tools,
    snapshot_of,
)
from corral.services.environments import Environments
from corral.services.event_params import InitialEventParam, to_new_event
from corral.services.schemas import Metadata, MetadataPatch, Strict, patch_metadata
from corral.services.vaults import Vaults
from corral.session.budget import budget_cents, list_cost
from corral.session.fanout import EventBus
from corral.session.log import SessionLog
from corral.session.records import Json, Page, SessionRecord, TimeBounds
from corral.session.state import empty_usage
from corral.session.store import Store

if TYPE_CHECKING:
    from corral.brain.scheduler import Brain

RUNNING_STATUSES = ["running", "rescheduling"]

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


def ensure_writable(session: SessionRecord) -> None:
    if session.archived_at is not None:
        raise Conflict(f"session {session.id} is archived and read-only")
    if session.status == "terminated":
        raise Conflict(f"session {session.id} is terminated and accepts no more events")


def _apply_overrides(snapshot: Json, overrides: AgentWithOverrides) -> Json:
    given = overrides.model_fields_set  # what the request named, null or not
    if overrides.skills:
        raise InvalidRequest("agent.skills overrides are not supported by this server yet")
    if overrides.model is not None:
        snapshot["model"] = resolve_model(overrides.model)
    if "system" in given:
        snapshot["system"] = overrides.system or None
    if "tools" in given:
        snapshot["tools"] = resolve_tools(overrides.tools)
    if "mcp_servers" in given:
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


class RunningSessionsCap(ApiError):
    """The workspace already runs as many sessions as `--max-running-sessions` allows (see `corral.api.edge`)."""

    status = 429
    error_type = "rate_limit_error"
    should_retry = False


class Sessions:
    def __init__(
        self,
        store: Store,
        session_log: SessionLog,
        bus: EventBus,
        brain: Brain,
        hands: HandsProvider,
        settings: Settings,
        *,
        agents: Agents,
        environments: Environments,
        vaults: Vaults,
    ) -> None:
        self._store = store
        self._log = session_log
        self._bus = bus
        self._brain = brain
        self._hands = hands
        self._settings = settings
        self._agents = agents
        self._environments = environments
        self._vaults = vaults

    @property
    def _prices(self) -> list[ModelPrice]:
        return self._settings.prices

    async def get(self, workspace_id: str, session_id: str) -> SessionRecord:
        session = await self._store.get_session(workspace_id, session_id)
        if session is None:
            raise NotFound(f"session {session_id} not found")
        return session

    async def create(self, workspace_id: str, params: SessionCreate) -> SessionRecord:
        """A new idle session; its initial events queued and the brain woken when there are any."""
        _reject_unsupported(params)
        reference = params.agent
        agent_id = reference if isinstance(reference, str) else reference.id
        version = None if isinstance(reference, str) else reference.version
        agent = await self._agents.get(workspace_id, agent_id, version)
        if agent.archived_at is not None:
            raise InvalidRequest(f"agent {agent.id} is archived; new sessions cannot use it")
        environment = await self._environments.get(workspace_id, params.environment_id)
        if environment.archived_at is not None:
            raise InvalidRequest(f"environment {environment.id} is archived; new sessions cannot use it")
        vault_ids = await self._check_vaults(workspace_id, params.vault_ids or [])
        snapshot = snapshot_of(agent)
        if isinstance(reference, AgentWithOverrides):
            snapshot = _apply_overrides(snapshot, reference)
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
                "budget": _budget(params.budget, self._prices, snapshot),
            },
            status="idle",
            usage=empty_usage(),
            active_seconds=0.0,
            running_since=None,
            created_at=timestamp,
            updated_at=timestamp,
        )
        await self.ensure_capacity(session, any(event.type == EventType.USER_MESSAGE for event in initial))
        await self._store.insert_session(session)
        if initial:
            await self._log.enqueue(session.id, initial)
            self._brain.wake(session.id)
        return session

    async def update(self, workspace_id: str, session_id: str, params: SessionUpdate) -> SessionRecord:
        """Change what `params` names; a real change is stored and announced with one `session.updated` event."""
        given = params.model_fields_set  # what the body named, null or not (an omitted field is left alone)
        session = await self.get(workspace_id, session_id)
        if session.archived_at is not None:
            raise Conflict(f"session {session.id} is archived and read-only")
        if params.vault_ids is not None:
            raise InvalidRequest("vault_ids cannot be changed after a session is created")
        body = dict(session.body)
        changed: Json = {}
        if "budget" in given:
            budget = _updated_budget(session, params.budget, self._prices)
            if budget != body.get("budget"):
                body["budget"] = changed["budget"] = budget
        if "title" in given and params.title != body.get("title"):
            body["title"] = changed["title"] = params.title
        if "metadata" in given:
            metadata = patch_metadata(body.get("metadata", {}), params.metadata)
            if metadata != body.get("metadata", {}):
                body["metadata"] = changed["metadata"] = metadata
        if params.agent is not None:
            # The log decides (not whether a brain task is still winding down after its idle), so a client that
            # acts on `session.status_idle` is never refused.
            if session.status in RUNNING_STATUSES:
                raise Conflict(f"session {session.id} is running; interrupt it before changing its agent")
            agent = dict(body["agent"])
            agent_given = params.agent.model_fields_set
            if "tools" in agent_given:
                agent["tools"] = resolve_tools(params.agent.tools)
            if "mcp_servers" in agent_given:
                agent["mcp_servers"] = [server.model_dump() for server in params.agent.mcp_servers or []]
            check_tools(agent["tools"], agent["mcp_servers"])
            if agent != body["agent"]:
                body["agent"] = changed["agent"] = agent
        if changed:
            # One transaction: no reader sees the new body before its `session.updated`, or the event without it.
            await self._log.append(session.id, session_updated(changed), session_body=body)
            if "budget" in changed:
                self._brain.wake(session.id)  # a raised or removed budget resumes a session paused at it
        return await self.get(workspace_id, session.id)

    async def list_sessions(
        self,
        workspace_id: str,
        *,
        agent_id: str | None,
        agent_version: int | None,
        statuses: list[str],
        include_archived: bool,
        created: TimeBounds,
        order: str,
        limit: int,
        cursor: Json | None,
    ) -> Page:
        return await self._store.list_sessions(
            workspace_id,
            agent_id=agent_id,
            agent_version=agent_version,
            statuses=statuses,
            include_archived=include_archived,
            created=created,
            order=order,
            limit=limit,
            cursor=cursor,
        )

    async def archive(self, workspace_id: str, session_id: str) -> SessionRecord:
        """Make the session read-only and let its sandbox go (its workspace files stay)."""
        session = await self.get(workspace_id, session_id)
        if session.archived_at is None:
            if session.status in RUNNING_STATUSES:
                raise Conflict(f"session {session.id} is running; interrupt it or wait for it to idle, then archive")
            await self._store.archive_session(session.id, now_rfc3339())
            await self._hands.release(session.id)
        return await self.get(workspace_id, session.id)

    async def delete(self, workspace_id: str, session_id: str) -> SessionRecord:
        """Stop its brain first (so nothing appends to a log being removed), then remove the log, the sandbox and
        its workspace, and end its streams with a transient `session.deleted`."""
        session = await self.get(workspace_id, session_id)
        await self._brain.stop(session.id)
        await self._store.delete_session(session.id)
        await self._hands.destroy(session.id)
        self._bus.publish_transient(session.id, session_deleted_frame(now_rfc3339()))
        self._bus.end_session(session.id)
        return session

    async def ensure_capacity(self, session: SessionRecord, starts_turn: bool) -> None:
        """Refuse a request that would start one more running session than the workspace's cap allows."""
        cap = self._settings.operations.max_running_sessions
        if cap <= 0 or not starts_turn or session.status in RUNNING_STATUSES or self._brain.is_active(session.id):
            return
        running = await self._store.count_sessions(
            session.workspace_id, RUNNING_STATUSES, excluding=session.id, up_to=cap
        )
        if running >= cap:
            metrics.rate_limited("running_sessions")
            raise RunningSessionsCap(
                f"this workspace already has {running} running sessions, the most this server allows "
                f"(--max-running-sessions {cap}); send the message once one of them is idle, or interrupt one"
            )

    async def _check_vaults(self, workspace_id: str, vault_ids: list[str]) -> list[str]:
        """The vaults a new session attaches: each must exist in the caller's workspace and be live."""
        if len(set(vault_ids)) != len(vault_ids):
            raise InvalidRequest("vault_ids lists the same vault more than once")
        for vault_id in vault_ids:
            vault = await self._vaults.get(workspace_id, vault_id)
            if vault.archived_at is not None:
                raise InvalidRequest(f"vault {vault_id} is archived; new sessions cannot use it")
        return list(vault_ids)
