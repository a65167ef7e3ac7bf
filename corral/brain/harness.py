"""The harness: turns a session's queued events into model calls, tool calls and the events that record them.

A `SessionWorker` is created each time a session has work. It rebuilds everything it needs from the log
(conversation, calls awaiting the client, whether a turn was cut short by a crash), so it holds nothing
that a crash could lose.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from corral.brain.context import CONVERSATION_TYPES, ConversationBuilder
from corral.config import Settings
from corral.hands.base import HandsProvider, ToolResult
from corral.hands.toolset import WORKSPACE_TOOLS, builtin_config, model_tool_definitions
from corral.ids import new_id
from corral.models.base import ModelError, ModelRequest, ModelResponse
from corral.models.router import ModelRouter
from corral.session.log import SessionLog, new_event
from corral.session.records import EventRecord, Json, NewEvent, SessionRecord

log = logging.getLogger("corral.brain")

# Beyond the conversation, what the worker reads back to know where a session stands.
_STATE_TYPES = (*CONVERSATION_TYPES, "user.tool_confirmation", "session.status_idle")

INTERRUPTED_TOOL = "Tool execution was interrupted before completion. Please retry."
RESTARTED_TOOL = (
    "The tool call did not complete because the Corral runtime restarted while it ran; "
    "it may or may not have taken effect. Check before retrying."
)


def _error_result(message: str) -> Json:
    return {"content": [{"type": "text", "text": message}], "is_error": True}


@dataclass
class PendingCall:
    """A call that waits for the client: a custom tool's result, or a confirmation to run a built-in tool."""

    event: EventRecord

    @property
    def kind(self) -> str:
        return "custom" if self.event.type == "agent.custom_tool_use" else "confirm"


@dataclass
class TurnState:
    """What the running turn has opened and not yet closed, so an interrupt can close it cleanly."""

    open_span: str | None = None
    unanswered: dict[str, EventRecord] = field(default_factory=dict)


class SessionWorker:
    def __init__(
        self,
        session: SessionRecord,
        *,
        log_: SessionLog,
        hands: HandsProvider,
        models: ModelRouter,
        settings: Settings,
    ) -> None:
        self.session = session
        self.session_id = session.id
        self.log = log_
        self.store = log_.store
        self.hands = hands.for_session(session.id)
        self.models = models
        self.settings = settings
        self.agent: Json = session.body["agent"]
        self.conversation = ConversationBuilder()
        self.pending: dict[str, PendingCall] = {}
        self.running = session.status in ("running", "rescheduling")
        self.needs_model = False
        self.stop_reason: Json = {"type": "end_turn"}
        self.turn = TurnState()
        self.turn_task: asyncio.Task[None] | None = None
        # Set when calls awaiting the client were answered in part, so the idle is re-emitted with the rest.
        self._pending_changed = False

    # --- loading ---------------------------------------------------------------------------------

    async def load(self) -> None:
        """Rebuild the conversation and pending calls from the log; close what a crash left open."""
        events = await self.store.conversation_events(self.session_id, _STATE_TYPES)
        answered: set[str] = set()
        for event in events:
            if event.type == "agent.tool_result":
                answered.add(event.body["tool_use_id"])
            elif event.type == "user.custom_tool_result":
                answered.add(event.body["custom_tool_use_id"])
            elif event.type == "user.tool_confirmation":
                answered.add(event.body["tool_use_id"])
        orphans: list[EventRecord] = []
        last_idle: EventRecord | None = None
        for event in events:
            if event.type == "session.status_idle":
                last_idle = event
                continue
            if event.type in CONVERSATION_TYPES:
                self.conversation.add(event)
            if event.type in ("agent.tool_use", "agent.custom_tool_use") and event.id not in answered:
                asks = event.type == "agent.custom_tool_use" or event.body.get("evaluated_permission") == "ask"
                if asks:
                    self.pending[event.id] = PendingCall(event)
                else:
                    orphans.append(event)
        if self.running:
            # The previous brain died mid-turn: say so, answer what it left hanging, and finish the turn.
            await self.log.append(self.session_id, new_event("session.status_rescheduled"))
            for event in orphans:
                await self._append(self._tool_result_event(event.id, _error_result(RESTARTED_TOOL)))
            await self._append(new_event("session.status_running"))
            self.needs_model = self.conversation.awaits_reply
        elif last_idle is not None and last_idle.body["stop_reason"]["type"] == "requires_action":
            # Custom tool results are stored on receipt (by the API); see which of the calls the session
            # last waited for have been answered since.
            waiting = set(last_idle.body["stop_reason"]["event_ids"])
            if waiting - set(self.pending):
                self._pending_changed = True
                self.needs_model = not (waiting & set(self.pending))

    # --- the main loop ---------------------------------------------------------------------------

    async def process(self) -> None:
        """Handle queued events and run turns until nothing is left to do, then settle the status."""
        while True:
            progressed = False
            queued = await self.store.queued_events(self.session_id)
            # An interrupt jumps ahead of everything queued before it.
            for event in sorted(queued, key=lambda queued_event: queued_event.type != "user.interrupt"):
                if event.type == "user.message" and self.pending:
                    continue  # stays queued until the calls awaiting the client are settled
                await self._handle(event)
                progressed = True
            if self.needs_model and not self.pending:
                await self._run_turn()
                continue
            if not progressed:
                break
        await self._settle()

    async def _settle(self) -> None:
        if self.pending:
            if self.running or self._pending_changed:
                await self._idle({"type": "requires_action", "event_ids": list(self.pending)})
        elif self.running:
            await self._idle(self.stop_reason)
        self._pending_changed = False

    async def _idle(self, stop_reason: Json) -> None:
        session = await self.store.get_session(None, self.session_id)
        usage = session.usage if session else {}
        await self.log.append(
            self.session_id,
            new_event("session.usage", usage=usage),
            new_event("session.status_idle", stop_reason=stop_reason, stop_details=None),
        )
        self.running = False
        self.stop_reason = {"type": "end_turn"}

    async def _ensure_running(self) -> None:
        if not self.running:
            await self._append(new_event("session.status_running"))
            self.running = True

    async def _append(self, *events: NewEvent) -> list[EventRecord]:
        records = await self.log.append(self.session_id, *events)
        for record in records:
            if record.type in CONVERSATION_TYPES:
                self.conversation.add(record)
        return records

    # --- client events ---------------------------------------------------------------------------

    async def _handle(self, event: EventRecord) -> None:
        record = await self.log.mark_processed(self.session_id, event.id)
        if record.type == "user.message":
            self.conversation.add(record)
            self.needs_model = True
        elif record.type == "user.interrupt":
            await self._on_interrupt()
        elif record.type == "user.tool_confirmation":
            await self._on_confirmation(record)

    async def _on_interrupt(self) -> None:
        if self.pending:
            await self._ensure_running()
            for call_id in list(self.pending):
                await self._append(self._tool_result_event(call_id, _error_result(INTERRUPTED_TOOL)))
            self.pending.clear()
        self.needs_model = False
        self.stop_reason = {"type": "end_turn"}

    async def _on_confirmation(self, record: EventRecord) -> None:
        call = self.pending.get(record.body["tool_use_id"])
        if call is None or call.kind != "confirm":
            return
        del self.pending[call.event.id]
        self._pending_changed = True
        await self._ensure_running()
        if record.body["result"] == "allow":
            result = await self._execute(call.event)
        else:
            reason = record.body.get("deny_message") or "The user denied permission to run this tool."
            result = _error_result(reason)
        await self._append(self._tool_result_event(call.event.id, result))
        self.needs_model = True

    # --- turns -----------------------------------------------------------------------------------

    async def _run_turn(self) -> None:
        """Run the model loop as a child task, so an interrupt can cancel just the turn."""
        await self._ensure_running()
        self.turn = TurnState()
        task = asyncio.create_task(self._model_loop())
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
        for call_id in list(self.turn.unanswered):
            await self._append(self._tool_result_event(call_id, _error_result(INTERRUPTED_TOOL)))
        self.turn = TurnState()
        self.needs_model = False
        self.stop_reason = {"type": "end_turn"}

    async def _model_loop(self) -> None:
        while True:
            response = await self._call_model()
            if response is None:
                self.needs_model = False
                self.stop_reason = {"type": "retries_exhausted"}
                return
            calls = list(self.turn.unanswered.values())
            for call in calls:
                if call.type == "agent.custom_tool_use" or call.body.get("evaluated_permission") == "ask":
                    self.pending[call.id] = PendingCall(call)
                    self.turn.unanswered.pop(call.id)
                    self._pending_changed = True
                    continue
                if call.body.get("evaluated_permission") == "deny":
                    result = _error_result(f"The tool '{call.body['name']}' is not enabled for this agent.")
                else:
                    result = await self._execute(call)
                await self._append(self._tool_result_event(call.id, result))
                self.turn.unanswered.pop(call.id, None)
            if self.pending or not calls:
                self.needs_model = False
                return

    async def _execute(self, call: EventRecord) -> Json:
        result: ToolResult = await self.hands.execute(call.body["name"], call.body["input"])
        return {"content": result.content, "is_error": result.is_error}

    def _tool_result_event(self, call_id: str, result: Json) -> NewEvent:
        return new_event("agent.tool_result", tool_use_id=call_id, **result)

    # --- the model call --------------------------------------------------------------------------

    def _request(self) -> ModelRequest:
        return ModelRequest(
            model=self.agent["model"]["id"],
            system=self.agent.get("system"),
            messages=self.conversation.messages(),
            tools=model_tool_definitions(self.agent["tools"]),
            max_tokens=self.settings.max_tokens,
        )

    def _span_end(self, start_id: str, response: ModelResponse | None, *, is_error: bool) -> NewEvent:
        usage = response.usage.to_wire() if response else ModelResponse([], None).usage.to_wire()
        return new_event(
            "span.model_request_end", model_request_start_id=start_id, is_error=is_error, model_usage=usage
        )

    async def _call_model(self) -> ModelResponse | None:
        """One model request with retries; appends what the model said. None when retries are exhausted."""
        attempt = 0
        while True:
            (start,) = await self._append(new_event("span.model_request_start"))
            self.turn.open_span = start.id
            preview = _Preview(self.log, self.session_id)
            try:
                provider = self.models.provider_for(self.agent["model"]["id"])
                response = await provider.complete(self._request(), preview.on_text)
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
            for record in await self._append(*events):
                if record.type in ("agent.tool_use", "agent.custom_tool_use"):
                    self.turn.unanswered[record.id] = record
            return response

    def _session_error(self, error: ModelError, retry_status: str) -> NewEvent:
        message = error.message
        if error.kind == "auth":
            message = (
                f"{message} (the model API rejected the credential: check "
                f"{self.models.describe_credential(self.agent['model']['id'])} in the Corral server's environment)"
            )
        return new_event(
            "session.error",
            error={
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
            events.append(NewEvent(id=message_id or new_id("sevt"), type="agent.message", body={"content": content}))
        for block in response.content:
            if block["type"] == "tool_use":
                events.append(self._tool_use_event(block["name"], block.get("input") or {}))
        return events

    def _tool_use_event(self, name: str, tool_input: Any) -> NewEvent:
        custom = next(
            (tool for tool in self.agent["tools"] if tool.get("type") == "custom" and tool["name"] == name),
            None,
        )
        if custom is not None:
            return new_event("agent.custom_tool_use", name=name, input=tool_input)
        config = builtin_config(self.agent["tools"], name)
        if config is None or not config["enabled"] or name not in WORKSPACE_TOOLS:
            return new_event("agent.tool_use", name=name, input=tool_input, evaluated_permission="deny")
        policy = config["permission_policy"]["type"]
        evaluation: Json
        if policy == "always_allow":
            permission, evaluation = "allow", {"type": "always_allow"}
        elif policy == "always_ask":
            permission, evaluation = "ask", {"type": "always_ask"}
        else:
            # No classifier decides `auto` here yet, so it asks: never run a call nobody approved.
            permission = "ask"
            evaluation = {
                "type": "auto",
                "evaluated_permission": {"type": "ask", "reason_code": "indeterminate"},
            }
        return new_event(
            "agent.tool_use",
            name=name,
            input=tool_input,
            evaluated_permission=permission,
            evaluation=evaluation,
        )


class _Preview:
    """Streams `event_start`/`event_delta` previews of the coming agent.message to streams that asked."""

    def __init__(self, session_log: SessionLog, session_id: str) -> None:
        self._log = session_log
        self._session_id = session_id
        self.message_id: str | None = None

    def on_text(self, index: int, text: str) -> None:
        if not self._log.wants_previews(self._session_id, "agent.message"):
            return
        if self.message_id is None:
            self.message_id = new_id("sevt")
            self._log.preview(
                self._session_id,
                "agent.message",
                {"type": "event_start", "event": {"type": "agent.message", "id": self.message_id}},
            )
        self._log.preview(
            self._session_id,
            "agent.message",
            {
                "type": "event_delta",
                "event_id": self.message_id,
                "delta": {"type": "content_delta", "index": index, "content": {"type": "text", "text": text}},
            },
        )
