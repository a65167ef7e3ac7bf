"""The session log as the rest of the system sees it: every append goes to the store, then to live streams.

This is the only writer of events. Appending and publishing in one place keeps the order on every stream
identical to the order in the store; `frames` is the only reader for streams, so a stream that missed
something (a concurrent append, another node's append, a reconnect) catches up from the store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from corral.observability import metrics
from corral.protocol.events import new_event as new_event  # where the tests and benches name it
from corral.session.fanout import CATCH_UP, END, EventBus, Frame, Subscription
from corral.session.records import EventRecord, Json, NewEvent
from corral.session.store import Store

CATCH_UP_BATCH = 1000


class SessionLog:
    def __init__(self, store: Store, bus: EventBus) -> None:
        self.store = store
        self.bus = bus

    async def append(self, session_id: str, *events: NewEvent, session_body: Json | None = None) -> list[EventRecord]:
        """Store the events (with the session's new body, if given, in the same transaction), then publish them."""
        records = await self.store.append_events(session_id, list(events), session_body=session_body)
        self.bus.publish(session_id, records)
        metrics.events_appended(records)  # observability: session errors by type
        return records

    async def enqueue(self, session_id: str, events: list[NewEvent]) -> list[EventRecord]:
        """Store client events durably; they reach streams when the brain processes them."""
        return await self.store.enqueue_events(session_id, events)

    async def mark_processed(self, session_id: str, event_id: str) -> EventRecord:
        record = await self.store.mark_processed(session_id, event_id)
        self.bus.publish(session_id, [record])
        return record

    def known_position(self, session_id: str) -> int | None:
        """How far the session's log reaches, as far as this process knows: its own appends and, on PostgreSQL,
        other nodes' notices (which can lag). None when it knows nothing."""
        return self.bus.known_position(session_id)

    def preview(self, session_id: str, kind: str, payload: Json) -> None:
        """A stream-only frame (`event_start`/`event_delta`): never stored, only for streams that asked."""
        self.bus.publish_preview(session_id, kind, payload)

    def wants_previews(self, session_id: str, kind: str) -> bool:
        return self.bus.wants_previews(session_id, kind)

    async def open_stream(self, session_id: str, previews: frozenset[str], after_event: str | None) -> Subscription:
        """Subscribe to the session: live from now, or replaying everything after event `after_event`.

        Raises LookupError if `after_event` is not an event of this session.
        """
        replay_from: int | None = None
        if after_event is not None:
            event = await self.store.find_event(session_id, after_event)
            if event is None or event.position is None:
                raise LookupError(after_event)
            replay_from = event.position
        # Subscribe before reading the position, so nothing appended in between is missed.
        subscription = self.bus.subscribe(session_id, previews)
        start = await self.store.last_position(session_id)
        subscription.queued_through = max(subscription.queued_through or 0, start)
        subscription.start = start if replay_from is None else replay_from
        if replay_from is not None and replay_from < start:
            subscription.queue.put_nowait(CATCH_UP)
        return subscription

    async def frames(self, subscription: Subscription) -> AsyncIterator[Frame]:
        """The subscription's frames in log order, each persisted event exactly once, until it ends."""
        delivered = subscription.start
        try:
            while True:
                frame = await subscription.queue.get()
                if frame is END:
                    return
                if frame is CATCH_UP or (frame.position is not None and frame.position > delivered + 1):
                    async for missed in self._catch_up(subscription.session_id, delivered):
                        delivered = missed.position or delivered
                        yield missed
                    if frame is CATCH_UP:
                        continue
                if frame.position is not None:
                    if frame.position <= delivered:
                        continue
                    delivered = frame.position
                yield frame
        finally:
            self.bus.unsubscribe(subscription)

    async def _catch_up(self, session_id: str, after: int) -> AsyncIterator[Frame]:
        while True:
            records = await self.store.events_after(session_id, after, CATCH_UP_BATCH)
            for record in records:
                yield Frame.of_record(record)
            if len(records) < CATCH_UP_BATCH:
                return
            after = records[-1].position or after
