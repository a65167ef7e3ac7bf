"""The harness: turns a session's queued events into model calls, tool calls and the events that record them.

A `SessionWorker` is created each time a session has work. It rebuilds everything it needs from the log
(conversation, calls awaiting the client, whether a turn was cut short by a crash), so it holds nothing
that a crash could lose.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from corral.brain.context import ConversationBuilder
from corral.brain.tools import ToolRouter, error_result, result_event
from corral.brain.view import SessionView
from corral.config import Settings
from corral.hands.base import Hands, HandsProvider
from corral.hands.net.policy import mcp_server_hosts
from corral.ids import new_id
from corral.mcp.client import McpHub
from corral.models.base import ModelError, ModelRequest, ModelResponse
from corral.models.router import ModelRouter
from corral.observability import logs, metrics
from corral.protocol.events import (
    EventType,
    agent_message,
    model_request_end,
    model_request_start,
    session_error,
    session_usage,
    status_idle,
    status_rescheduled,
    status_running,
)
from corral.session.budget import list_cost, over_budget
from corral.session.log import SessionLog
from corral.session.records import EventRecord, Json, NewEvent, SessionRecord

log = logging.getLogger("corral.brain")

INTERRUPTED_TOOL = "Tool execution was interrupted before completion. Please retry."
RESTARTED_TOOL = (
    "The tool call did not complete because the Corral runtime restarted while it ran; "
    "it may or may not have taken effect. Check before retrying."
)


@dataclass
class TurnState:
    """What the running turn has opened and not yet closed, so an interrupt can close it cleanly."""

    open_span: str | None = None


class SessionWorker:
    """The brain of one session. Kept between wakes (its view only reads what is new), rebuilt from the log
    by any process after a restart."""

    def __init__(
        self,
        session_id: str,
        *,
        log_: SessionLog,
        hands: HandsProvider,
        models: ModelRouter,
        settings: Settings,
        mcp: McpHub | None = None,
    ) -> None:
        self.session_id = session_id
        self.log = log_
        self.store = log_.store
        self._hands_provider = hands
        self.hands: Hands | None = None
        self.models = models
        self.settings = settings
        self.view = SessionView()
        self.agent: Json = {}
        self.running = False
        self.needs_model = False
        # Calls whose answers resume the model once all have come (custom tool results, confirmations).
        self.awaiting: set[str] = set()
        self.stop_reason: Json = {"type": "end_turn"}
        self.turn = TurnState()
        self.turn_task: asyncio.Task[None] | None = None
        # MCP: the hub keeps the session's connections between turns.
        self._mcp_hub = mcp or McpHub(settings.mcp, None)
        self.tools: ToolRouter | None = None
        self.workspace_id = ""
        self.vault_ids: list[str] = []

    # --- waking ----------------------------------------------------------------------------------

    async def resume(self, session: SessionRecord) -> None:
        """Catch up with the log; close what a crashed predecessor left open."""
        logs.bind_session(self.session_id)  # observability: log records carry the session id
        self.agent = session.body["agent"]
        self.workspace_id = session.workspace_id
        self.vault_ids = list(session.body.get("vault_ids") or [])
        if self.hands is None:
            environment = await self.store.get_environment(session.workspace_id, session.environment_id)
            self.hands = self._hands_provider.for_session(
                self.session_id,
                environment.body["config"] if environment else None,
                mcp_hosts=mcp_server_hosts(self.agent.get("mcp_servers") or []),
            )
        self.tools = ToolRouter(
            self.agent,
            hands=self.hands,
            runnable=self._hands_provider.tool_names,
            mcp=self._mcp_hub,
            session_id=self.session_id,
            workspace_id=self.workspace_id,
            vault_ids=self.vault_ids,
        )
        self.running = session.status in ("running", "rescheduling")
        self.needs_model = False
        self.stop_reason = {"type": "end_turn"}
        await self._sync(always=True)
        self.awaiting = set(self.view.waited_for())
        if self.running:
            # The previous brain died mid-turn: say so, answer what it left hanging, and finish the turn.
            await self._append(status_rescheduled())
            for call_id in list(self.view.open_calls):
                await self._append(self._tool_result_event(call_id, error_result(RESTARTED_TOOL)))
            await self._append(status_running())
            # The view has not necessarily taken those appends (the dead brain's last events leave a gap that
            # apply_own does not bridge): read them, so that the error results are the tool results the model
            # now owes an answer to, as after any other tool results.
            await self._sync()
            self.awaiting |= set(self.view.pending)
            self.needs_model = self.conversation.awaits_reply and not self.view.pending
        elif self.view.unanswered_message() and not self.view.pending:
            self.needs_model = True  # the brain that took the message died before it could start the turn
        elif self._paused_at_budget() and not over_budget(self.settings.prices, session.body, session.usage):
            # The budget was raised or removed: the turn it paused goes on.
            self.needs_model = self.conversation.awaits_reply and not self.view.pending

    def _paused_at_budget(self) -> bool:
        idle = self.view.last_idle
        return idle is not None and idle.body["stop_reason"]["type"] == "budget_reached"

    @property
    def conversation(self) -> ConversationBuilder:
        return self.view.conversation

    async def _sync(self, *, always: bool = False) -> None:
        """Take into the view what others appended (custom tool results, confirmations and interrupts the client
        sent, possibly through another node). The view takes the brain's own appends as it makes them, so the log
        is read only when it is known to reach past the view: every append of this process, and (on PostgreSQL)
        every other node's notice, tells the log's bus how far it reaches. A notice can lag; an answer it announces
        late is the same as one that came just after the read, which the wake that follows it comes back for.
        `always` reads regardless, where the view may be stale for reasons no notice tells: each wake begins
        with one such read (another node may have worked on the session, a notice may have been lost)."""
        known = self.log.known_position(self.session_id)
        if always or self.view.behind(known):
            await self.view.sync(self.store, self.session_id, committed_through=known)

    # --- the main loop ---------------------------------------------------------------------------

    async def process(self) -> None:
        """Handle queued events and run turns until nothing is left to do, then settle the status."""
        while True:
            await self._sync()
            progressed = False
            queued = await self.store.queued_events(self.session_id)
            # An interrupt jumps ahead of everything queued before it.
            for event in sorted(queued, key=lambda queued_event: queued_event.type != EventType.USER_INTERRUPT):
                if event.type == EventType.USER_MESSAGE and self.view.pending:
                    continue  # stays queued until the calls awaiting the client are settled
                await self._handle(event)
                progressed = True
            await self._sync()
            if self.awaiting and not self.awaiting & set(self.view.pending):
                self.awaiting.clear()  # every call the model waited on is answered: it goes on
                self.needs_model = True
            if self.needs_model and not self.view.pending:
                await self._run_turn()
                continue
            if not progressed and await self._settle():
                return

    async def _settle(self) -> bool:
        """Idle with what is left to do; False (no idle) when the calls the model waited on were all answered
        since the last look (a client may answer the moment it sees a call): the loop then goes on."""
        # Idling to wait for the client hangs on answers only the client sends, perhaps through another node whose
        # notice may not have come yet: read them rather than trust the notices.
        await self._sync(always=bool(self.view.pending))
        pending = list(self.view.pending)
        if pending:
            # Re-idle when the set changed (some calls answered) so the client sees what is still wanted.
            if self.running or set(pending) != set(self.view.waited_for()):
                self.awaiting = set(pending)
                await self._idle({"type": "requires_action", "event_ids": pending})
        elif self.awaiting:
            return False
        elif self.running:
            await self._idle(self.stop_reason)
        return True

    async def _idle(self, stop_reason: Json) -> None:
        session = await self.store.get_session(None, self.session_id)
        usage: Json = {}
        budget: Json | None = None
        if session is not None:
            usage = dict(session.usage)
            cost = list_cost(self.settings.prices, session.body, session.usage)
            if cost is not None:
                usage["list_cost"] = cost
            if session.body.get("budget") is not None:
                budget = session.body["budget"]
        await self._append(
            session_usage(usage, budget),
            status_idle(stop_reason),
        )
        self.running = False
        self.stop_reason = {"type": "end_turn"}

    async def _ensure_running(self) -> None:
        if not self.running:
            await self._append(status_running())
            self.running = True

    async def _append(self, *events: NewEvent) -> list[EventRecord]:
        records = await self.log.append(self.session_id, *events)
        self.view.apply_own(records)
        return records

    # --- client events ---------------------------------------------------------------------------

    async def _handle(self, event: EventRecord) -> None:
        record = await self.log.mark_processed(self.session_id, event.id)
        self.view.apply_own([record])
        if record.type == EventType.USER_MESSAGE:
            self.needs_model = True
        elif record.type == EventType.USER_INTERRUPT:
            await self._on_interrupt()
        elif record.type == EventType.USER_TOOL_CONFIRMATION:
            await self._on_confirmation(record)

    async def _on_interrupt(self) -> None:
        await self._sync()
        if self.view.pending:
            await self._ensure_running()
            for call_id in list(self.view.pending):
                await self._append(self._tool_result_event(call_id, error_result(INTERRUPTED_TOOL)))
        self.awaiting.clear()
        self.needs_model = False
        self.stop_reason = {"type": "end_turn"}

    async def _on_confirmation(self, record: EventRecord) -> None:
        await self._sync()
        call = self.view.open_calls.get(record.body["tool_use_id"])
        if call is None:
            return  # answered already, or interrupted: nothing waits for this confirmation
        await self._ensure_running()
        if record.body["result"] == "allow":
            result = await self._router.execute(call)
        else:
            reason = record.body.get("deny_message") or "The user denied permission to run this tool."
            result = error_result(reason)
        await self._append(self._tool_result_event(call.id, result))

    # --- turns -----------------------------------------------------------------------------------

    async def _run_turn(self) -> None:
        """Run the model loop as a child task, so an interrupt can cancel just the turn."""
        await self._ensure_running()
        self.turn = TurnState()
        task = asyncio.create_task(metrics.observe_turn(self.session_id, self._model_loop()))  # observability
        self.turn_task = task
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            self.turn_task = None
        if task.cancelled():
            await self._close_interrupted_turn()
            return
        task.result()

    def interrupt(self) -> None:
        if self.turn_task is not None:
            self.turn_task.cancel()

    async def _close_interrupted_turn(self) -> None:
        if self.turn.open_span is not None:
            await self._append(self._span_end(self.turn.open_span, None, is_error=True))
        await self._sync()
        for call_id in list(self.view.open_calls):
            await self._append(self._tool_result_event(call_id, error_result(INTERRUPTED_TOOL)))
        self.turn = TurnState()
        self.needs_model = False
        self.stop_reason = {"type": "end_turn"}

    async def _model_loop(self) -> None:
        self.needs_model = False
        await self._prepare_tools()
        calls_made = 0
        while True:
            if await self._at_budget():
                self.stop_reason = {"type": "budget_reached"}
                return
            response = await self._call_model()
            if response is None:
                self.stop_reason = {"type": "retries_exhausted"}
                return
            await self._sync()
            calls_made += len(self.view.open_calls) + len(self.view.pending)
            if calls_made > self.settings.max_tool_calls_per_turn:
                await self._end_at_tool_limit()
                return
            for call in list(self.view.open_calls.values()):
                await self._append(self._tool_result_event(call.id, await self._router.execute(call)))
            await self._sync()
            if self.view.pending:
                self.awaiting = set(self.view.pending)
                return
            if not any(block["type"] == "tool_use" for block in response.content):
                return

    async def _at_budget(self) -> bool:
        """True when the session's budget is spent (checked before every model request)."""
        if not self.settings.prices:
            return False
        session = await self.store.get_session(None, self.session_id)
        return session is not None and over_budget(self.settings.prices, session.body, session.usage)

    async def _end_at_tool_limit(self) -> None:
        """Too many tool calls in one turn: none of the last batch runs, and the turn ends exhausted."""
        limit = self.settings.max_tool_calls_per_turn
        message = f"This turn reached the limit of {limit} tool calls; the call was not run."
        for call_id in [*self.view.open_calls, *self.view.pending]:
            await self._append(self._tool_result_event(call_id, error_result(message)))
        error = {
            "type": "tool_use_limit_reached_error",
            "message": f"the turn made more than {limit} tool calls (--max-tool-calls-per-turn) and was stopped",
            "retry_status": {"type": "exhausted"},
        }
        await self._append(session_error(error))
        self.stop_reason = {"type": "retries_exhausted"}

    @property
    def _router(self) -> ToolRouter:
        assert self.tools is not None, "resume() builds the tool router"
        return self.tools

    async def _prepare_tools(self) -> None:
        """Connect the agent's MCP servers (reusing the session's open connections) and take their tools."""

        async def report(error: Json) -> None:
            await self._append(session_error(error))

        await self._router.prepare(report)

    def _tool_result_event(self, call_id: str, result: Json) -> NewEvent:
        call = self.view.open_calls.get(call_id) or self.view.pending.get(call_id)
        return result_event(call_id, call.type if call is not None else EventType.AGENT_TOOL_USE, result)

    # --- the model call --------------------------------------------------------------------------

    async def _request(self) -> ModelRequest:
        await self._sync()
        return ModelRequest(
            model=self.agent["model"]["id"],
            system=self.agent.get("system"),
            messages=self.conversation.messages(),
            tools=self._router.catalog.definitions(),
            max_tokens=self.settings.max_tokens,
        )

    def _span_end(self, start_id: str, response: ModelResponse | None, *, is_error: bool) -> NewEvent:
        usage = response.usage.to_wire() if response else ModelResponse([], None).usage.to_wire()
        return model_request_end(start_id, is_error=is_error, model_usage=usage)

    async def _call_model(self) -> ModelResponse | None:
        """One model request with retries; appends what the model said. None when retries are exhausted."""
        attempt = 0
        while True:
            (start,) = await self._append(model_request_start())
            self.turn.open_span = start.id
            preview = _Preview(self.log, self.session_id)
            try:
                provider = self.models.provider_for(self.agent["model"]["id"])
                response = await metrics.observe_model_call(  # observability: latency, span
                    self.agent["model"]["id"], provider.complete(await self._request(), preview.on_text)
                )
            except ModelError as error:
                self.turn.open_span = None
                await self._append(self._span_end(start.id, None, is_error=True))
                if error.retryable and attempt < self.settings.model_max_retries:
                    attempt += 1
                    await self._append(self._session_error(error, "retrying"))
                    await asyncio.sleep(self.settings.model_retry_delay * 2 ** (attempt - 1))
                    continue
                await self._append(self._session_error(error, "exhausted"))
                return None
            self.turn.open_span = None
            events = self._response_events(response, preview.message_id)
            events.append(self._span_end(start.id, response, is_error=False))
            await self._append(*events)
            return response

    def _session_error(self, error: ModelError, retry_status: str) -> NewEvent:
        message = error.message
        if error.kind == "auth":
            message = (
                f"{message} (the model API rejected the credential: check "
                f"{self.models.describe_credential(self.agent['model']['id'])} in the Corral server's environment)"
            )
        return session_error(
            {
                "type": error.session_error_type,
                "message": message,
                "retry_status": {"type": retry_status},
            },
        )

    def _response_events(self, response: ModelResponse, message_id: str | None) -> list[NewEvent]:
        events: list[NewEvent] = []
        texts = [block for block in response.content if block["type"] == "text" and block["text"]]
        if texts:
            content = [{"type": "text", "text": block["text"]} for block in texts]
            events.append(agent_message(content, message_id))
        for block in response.content:
            if block["type"] == "tool_use":
                events.append(self._router.catalog.call_event(block["name"], block.get("input") or {}))
        return events


class _Preview:
    """Streams `event_start`/`event_delta` previews of the coming agent.message to streams that asked."""

    def __init__(self, session_log: SessionLog, session_id: str) -> None:
        self._log = session_log
        self._session_id = session_id
        self.message_id: str | None = None

    def on_text(self, index: int, text: str) -> None:
        if not self._log.wants_previews(self._session_id, EventType.AGENT_MESSAGE):
            return
        if self.message_id is None:
            self.message_id = new_id("sevt")
            self._log.preview(
                self._session_id,
                EventType.AGENT_MESSAGE,
                {"type": "event_start", "event": {"type": EventType.AGENT_MESSAGE.value, "id": self.message_id}},
            )
        self._log.preview(
            self._session_id,
            EventType.AGENT_MESSAGE,
            {
                "type": "event_delta",
                "event_id": self.message_id,
                "delta": {"type": "content_delta", "index": index, "content": {"type": "text", "text": text}},
            },
        )
