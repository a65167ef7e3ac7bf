"""A session's events (spec §8): list the log, accept what a client sends, open live streams.

Appends go through the session's one writer, `SessionLog`: client events are queued for the brain (or, for
answers to custom tool calls, appended processed); nothing here writes the log another way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from corral.config import Settings
from corral.errors import InvalidRequest
from corral.protocol.events import EventType
from corral.services.event_params import EventParam, to_new_event
from corral.services.schemas import Strict
from corral.services.sessions import Sessions, ensure_writable
from corral.session.budget import over_budget
from corral.session.fanout import Frame
from corral.session.log import SessionLog
from corral.session.records import EventRecord, Json, NewEvent, Page, SessionRecord, TimeBounds
from corral.session.store import Store

if TYPE_CHECKING:
    from corral.brain.scheduler import Brain


class SendEvents(Strict):
    events: Annotated[list[EventParam], Field(min_length=1, max_length=100)]


class Events:
    def __init__(
        self, store: Store, session_log: SessionLog, brain: Brain, settings: Settings, *, sessions: Sessions
    ) -> None:
        self._store = store
        self._log = session_log
        self._brain = brain
        self._settings = settings
        self._sessions = sessions

    async def list_events(
        self,
        session: SessionRecord,
        *,
        types: list[str],
        processed: TimeBounds,
        order: str,
        limit: int,
        cursor: Json | None,
    ) -> Page:
        return await self._store.list_events(
            session.id, types=types, processed=processed, order=order, limit=limit, cursor=cursor
        )

    async def send(self, workspace_id: str, session_id: str, params: SendEvents) -> list[EventRecord]:
        """Store the batch (all of it or, when one event is refused, none) and wake the brain; the stored
        events in the order sent."""
        session = await self._sessions.get(workspace_id, session_id)
        ensure_writable(session)
        # Validate every event before storing any: a batch is accepted whole or not at all.
        events = [to_new_event(param) for param in params.events]
        for event in events:
            await self._check_answer(session.id, event)
        if any(event.type == EventType.USER_MESSAGE for event in events) and over_budget(
            self._settings.prices, session.body, session.usage
        ):
            raise InvalidRequest(
                f"session {session.id} is paused at its budget; raise or remove the budget (sessions.update) "
                "before sending messages (tool results, confirmations and interrupts are still accepted)"
            )
        await self._sessions.ensure_capacity(session, any(event.type == EventType.USER_MESSAGE for event in events))
        # Custom tool results are processed on receipt (the spec's echo has processed_at set); the rest queue
        # for the brain, which processes them in order.
        answers = [event for event in events if event.type == EventType.USER_CUSTOM_TOOL_RESULT]
        queued = [event for event in events if event.type != EventType.USER_CUSTOM_TOOL_RESULT]
        stored = (await self._log.append(session.id, *answers) if answers else []) + (
            await self._log.enqueue(session.id, queued) if queued else []
        )
        by_id = {record.id: record for record in stored}
        self._brain.wake(session.id)
        if any(event.type == EventType.USER_INTERRUPT for event in events):
            self._brain.interrupt(session.id)
        return [by_id[event.id] for event in events]

    async def _check_answer(self, session_id: str, event: NewEvent) -> None:
        """A tool result or confirmation must answer a call of this session that asked for one."""
        if event.type == EventType.USER_CUSTOM_TOOL_RESULT:
            call_id = event.body["custom_tool_use_id"]
            call = await self._store.find_event(session_id, call_id)
            if call is None or call.type != EventType.AGENT_CUSTOM_TOOL_USE:
                raise InvalidRequest(
                    f"custom_tool_use_id {call_id} is not an agent.custom_tool_use event of this session"
                )
        elif event.type == EventType.USER_TOOL_CONFIRMATION:
            call_id = event.body["tool_use_id"]
            call = await self._store.find_event(session_id, call_id)
            if call is None or call.type not in (EventType.AGENT_TOOL_USE, EventType.AGENT_MCP_TOOL_USE):
                raise InvalidRequest(f"tool_use_id {call_id} is not a tool use event of this session")
            if call.body.get("evaluated_permission") != "ask":
                raise InvalidRequest(f"tool use {call_id} did not ask for confirmation; there is nothing to confirm")
            if event.body.get("deny_message") and event.body["result"] != "deny":
                raise InvalidRequest("deny_message is only allowed with result 'deny'")

    async def open_stream(
        self, workspace_id: str, session_id: str, previews: frozenset[str], after_event: str | None
    ) -> AsyncIterator[Frame]:
        """The session's frames from now on (or after event `after_event`, for a client resuming)."""
        session = await self._sessions.get(workspace_id, session_id)
        try:
            subscription = await self._log.open_stream(session.id, previews, after_event)
        except LookupError:
            raise InvalidRequest(f"Last-Event-ID {after_event} is not an event of session {session.id}") from None
        return self._log.frames(subscription)
