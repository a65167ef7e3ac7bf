"""The brain's projection of a session's log, kept current by reading only the events it has not seen.

Everything the harness decides on (the conversation, the calls that wait for the client, the calls that
started and never finished, the last idle) is a function of the log, so a projection built by any process
from the log alone is the same as the one the previous brain had.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.brain.context import CONVERSATION_TYPES, ConversationBuilder
from corral.protocol.events import TOOL_CALL_TYPES, EventType
from corral.session.records import EventRecord
from corral.session.store import Store

# Plain strings: they are query parameters of the store.
VIEW_TYPES = tuple(
    str(event_type)
    for event_type in (*CONVERSATION_TYPES, EventType.USER_TOOL_CONFIRMATION, EventType.SESSION_STATUS_IDLE)
)


def _answered_call(event: EventRecord) -> str | None:
    """The call an event answers, if it answers one."""
    if event.type in (EventType.AGENT_TOOL_RESULT, EventType.USER_TOOL_CONFIRMATION):
        return str(event.body["tool_use_id"])
    if event.type == EventType.USER_CUSTOM_TOOL_RESULT:
        return str(event.body["custom_tool_use_id"])
    if event.type == EventType.AGENT_MCP_TOOL_RESULT:
        return str(event.body["mcp_tool_use_id"])
    return None


def asks_client(event: EventRecord) -> bool:
    """A custom tool call, or a built-in or MCP call held for confirmation: the client must answer it."""
    return event.type == EventType.AGENT_CUSTOM_TOOL_USE or event.body.get("evaluated_permission") == "ask"


@dataclass
class SessionView:
    conversation: ConversationBuilder = field(default_factory=ConversationBuilder)
    # Calls the client must answer (custom tools, confirmations), in the order they were made.
    pending: dict[str, EventRecord] = field(default_factory=dict)
    # Calls the brain runs itself that have no result yet (the turn's work, or a crash's leftovers).
    open_calls: dict[str, EventRecord] = field(default_factory=dict)
    last_idle: EventRecord | None = None
    # Where the newest processed user.message is: a message after the last idle has not been answered.
    last_message_position: int = 0
    position: int = 0

    def apply(self, event: EventRecord) -> None:
        if event.type in CONVERSATION_TYPES:
            self.conversation.add(event)
        if event.type in TOOL_CALL_TYPES:
            (self.pending if asks_client(event) else self.open_calls)[event.id] = event
        elif event.type == EventType.SESSION_STATUS_IDLE:
            self.last_idle = event
        elif event.type == EventType.USER_MESSAGE and event.position is not None:
            self.last_message_position = event.position
        answered = _answered_call(event)
        if answered is not None:
            call = self.pending.pop(answered, None)
            if event.type == EventType.USER_TOOL_CONFIRMATION:
                if call is not None:
                    self.open_calls[answered] = call  # confirmed (or denied): the brain now owes its result
            else:
                self.open_calls.pop(answered, None)
        if event.position is not None:
            self.position = max(self.position, event.position)

    def apply_own(self, records: list[EventRecord]) -> None:
        """Apply events this brain just appended, as long as nothing else was appended in between; otherwise they
        wait for the next sync. Decide on the view only after a sync, never right after appending."""
        for record in records:
            if record.position != self.position + 1:
                return  # someone else appended too: the next sync reads everything in order
            self.apply(record)

    async def sync(self, store: Store, session_id: str, committed_through: int | None = None) -> None:
        """Read the events appended since the view's position. `committed_through`, a position known to be
        committed before this read began, lets the view pass the events of other types up to it, which this read
        skips: without it the view would stay behind them, and `apply_own` would take none of the brain's appends."""
        for event in await store.conversation_events(session_id, VIEW_TYPES, after_position=self.position):
            self.apply(event)
        if committed_through is not None:
            self.position = max(self.position, committed_through)

    def behind(self, known_position: int | None) -> bool:
        """Whether the log may hold events this view has not taken: it is known to reach past the view, or
        nothing is known about it."""
        return known_position is None or known_position > self.position

    def unanswered_message(self) -> bool:
        """A message was processed after the last idle, yet no turn is running on it (its brain died)."""
        idle_position = self.last_idle.position or 0 if self.last_idle is not None else 0
        return self.last_message_position > idle_position

    def waited_for(self) -> list[str]:
        """The call ids of the last idle, if it was `requires_action`."""
        if self.last_idle is None or self.last_idle.body["stop_reason"]["type"] != "requires_action":
            return []
        return list(self.last_idle.body["stop_reason"]["event_ids"])
