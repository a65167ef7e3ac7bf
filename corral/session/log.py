"""The session log as the rest of the system sees it: every append goes to the store, then to live streams.

This is the only writer of events. Appending and publishing in one place keeps the order on every stream
identical to the order in the store.
"""

from __future__ import annotations

from corral.ids import new_id
from corral.session.fanout import EventBus
from corral.session.records import EventRecord, Json, NewEvent
from corral.session.store import Store


def new_event(event_type: str, **body: object) -> NewEvent:
    """A processed-on-append event with a fresh `sevt_` id."""
    return NewEvent(id=new_id("sevt"), type=event_type, body=dict(body))


class SessionLog:
    def __init__(self, store: Store, bus: EventBus) -> None:
        self.store = store
        self.bus = bus

    async def append(self, session_id: str, *events: NewEvent) -> list[EventRecord]:
        records = await self.store.append_events(session_id, list(events))
        self.bus.publish(session_id, [record.to_wire() for record in records])
        return records

    async def enqueue(self, session_id: str, events: list[NewEvent]) -> list[EventRecord]:
        """Store client events durably; they reach streams when the brain processes them."""
        return await self.store.enqueue_events(session_id, events)

    async def mark_processed(self, session_id: str, event_id: str) -> EventRecord:
        record = await self.store.mark_processed(session_id, event_id)
        self.bus.publish(session_id, [record.to_wire()])
        return record

    def preview(self, session_id: str, kind: str, payload: Json) -> None:
        """A stream-only frame (`event_start`/`event_delta`): never stored, only for streams that asked."""
        self.bus.publish_preview(session_id, kind, payload)

    def wants_previews(self, session_id: str, kind: str) -> bool:
        return self.bus.wants_previews(session_id, kind)
