"""The in-memory reference adapter: the `Store` contract in plain dicts, for tests that want no database.

It passes the same contract suite as the SQL adapters (tests/store), so it is also the contract written out
in Python: positions allocated per session, derived status and usage from `corral.session.state` applied in the
same step as the append, leases compared with a clock, keyset paging with the same cursors, vault secrets kept
sealed (the store never sees them in the clear, here as elsewhere).

Bodies are kept as JSON text and decoded on every read, as the SQL adapters do, so a caller that mutates a
record it read (or wrote) never changes what is stored. `MemoryDatabase` is the shared state: several
`MemoryStore`s on one database behave like several processes on one SQL database (what a restart keeps, what
another node sees). Nothing survives the process.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from corral.clock import now_rfc3339
from corral.protocol.events import EventType
from corral.session.memory_resources import MemoryResources
from corral.session.memory_tables import (
    EventRow,
    MemoryDatabase,
    SessionRow,
    within,
)
from corral.session.memory_vaults import MemoryVaults
from corral.session.records import (
    ApiKeyRecord,
    EventRecord,
    Json,
    NewEvent,
    Page,
    TimeBounds,
)
from corral.session.sql_port import dumps
from corral.session.state import SessionState, reduce

__all__ = ["MemoryDatabase", "MemoryStore"]


class MemoryStore(MemoryResources, MemoryVaults):
    """`Store` in memory (see `corral.session.store.Store` for the contract). Open several on one
    `MemoryDatabase` to share it."""

    def describe(self) -> dict[str, Any]:
        return {"backend": "memory"}

    async def close(self) -> None:
        """Nothing to release: the data lives as long as its `MemoryDatabase`."""

    # --- Keys ------------------------------------------------------------------------------------

    async def create_workspace(self, workspace_id: str, name: str) -> None:
        async with self.db.lock:
            if workspace_id in self.db.workspaces:
                raise ValueError(f"workspace {workspace_id} already exists")
            self.db.workspaces[workspace_id] = name

    async def add_api_key(self, key: ApiKeyRecord, key_hash: str) -> None:
        async with self.db.lock:
            if key.id in self.db.api_keys or any(taken == key_hash for _, taken in self.db.api_keys.values()):
                raise ValueError(f"API key {key.id} already exists")
            self.db.api_keys[key.id] = (key, key_hash)

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        for key, stored_hash in self.db.api_keys.values():
            if stored_hash == key_hash and key.revoked_at is None:
                return key
        return None

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        return sorted((key for key, _ in self.db.api_keys.values()), key=lambda key: (key.created_at, key.id))

    async def revoke_api_key(self, key_id: str) -> bool:
        async with self.db.lock:
            found = self.db.api_keys.get(key_id)
            if found is None or found[0].revoked_at is not None:
                return False
            self.db.api_keys[key_id] = (replace(found[0], revoked_at=now_rfc3339()), found[1])
            return True

    async def live_api_key_ids(self, key_ids: list[str]) -> set[str]:
        return {
            key_id
            for key_id in key_ids
            if key_id in self.db.api_keys and self.db.api_keys[key_id][0].revoked_at is None
        }

    # --- Work ------------------------------------------------------------------------------------

    async def sessions_with_work(self, owner: str) -> list[str]:
        """The SQL adapters' `WORK_SQL`: a turn left running, queued client events, or a processed message that
        no turn started on; less sessions another owner holds a live lease on."""
        work = {
            session_id
            for session_id, stored in self.db.sessions.items()
            if stored.record.status in ("running", "rescheduling")
        }
        work |= {event.session_id for event in self.db.events.values() if event.position is None}
        for session_id, stored in self.db.sessions.items():
            if stored.record.status == "idle" and stored.last_position:
                last = self._event_at(session_id, stored.last_position)
                if last is not None and last.type == EventType.USER_MESSAGE:
                    work.add(session_id)
        now = self.db.clock()
        return [
            session_id
            for session_id in work
            if not ((lease := self.db.leases.get(session_id)) is not None and lease[1] > now and lease[0] != owner)
        ]

    async def acquire_lease(self, session_id: str, owner: str, ttl_seconds: float) -> bool:
        async with self.db.lock:
            now = self.db.clock()
            held = self.db.leases.get(session_id)
            if held is not None and held[0] != owner and held[1] > now:
                return False
            self.db.leases[session_id] = (owner, now + ttl_seconds)
            return True

    async def release_lease(self, session_id: str, owner: str) -> None:
        async with self.db.lock:
            held = self.db.leases.get(session_id)
            if held is not None and held[0] == owner:
                del self.db.leases[session_id]

    # --- EventLog --------------------------------------------------------------------------------

    def _processed(self, session_id: str) -> list[EventRow]:
        """The session's processed events in position order."""
        found = [event for event in self.events_of(session_id) if event.position is not None]
        return sorted(found, key=lambda event: event.position or 0)

    def _event_at(self, session_id: str, position: int) -> EventRow | None:
        return next((event for event in self.events_of(session_id) if event.position == position), None)

    def _session_for_append(self, session_id: str) -> SessionRow:
        stored = self.db.sessions.get(session_id)
        if stored is None:
            raise LookupError(f"session {session_id} does not exist")
        return stored

    @staticmethod
    def _apply(stored: SessionRow, event: EventRow) -> None:
        """Give `event` the session's next position and apply it to the session's derived state."""
        stored.last_position += 1
        event.position = stored.last_position
        event.processed_at = now_rfc3339()
        record = stored.record
        before = SessionState(record.status, json.loads(stored.usage), record.active_seconds, record.running_since)
        after = reduce(before, event.type, json.loads(event.body), event.processed_at)
        if after != before:
            stored.usage = dumps(after.usage)
            stored.record = replace(
                record,
                status=after.status,
                active_seconds=after.active_seconds,
                running_since=after.running_since,
                updated_at=now_rfc3339(),
            )

    def _check_new(self, events: list[NewEvent]) -> None:
        taken = [event.id for event in events if event.id in self.db.events]
        if taken or len({event.id for event in events}) < len(events):
            raise ValueError(f"event ids already stored: {taken or [event.id for event in events]}")

    async def append_events(
        self, session_id: str, events: list[NewEvent], *, session_body: Json | None = None
    ) -> list[EventRecord]:
        async with self.db.lock:
            stored = self._session_for_append(session_id)
            self._check_new(events)
            appended = []
            for new in events:
                event = EventRow(next(self.db.seq), new.id, session_id, new.type, dumps(new.body))
                self._apply(stored, event)
                self.db.events[event.id] = event
                appended.append(event.record())
            if session_body is not None and appended:
                updated_at = appended[-1].processed_at
                assert updated_at is not None  # an appended event is processed
                stored.body = dumps(session_body)
                stored.record = replace(stored.record, updated_at=updated_at)
            return appended

    async def enqueue_events(self, session_id: str, events: list[NewEvent]) -> list[EventRecord]:
        async with self.db.lock:
            self._session_for_append(session_id)
            self._check_new(events)
            for new in events:
                self.db.events[new.id] = EventRow(next(self.db.seq), new.id, session_id, new.type, dumps(new.body))
        return [EventRecord(event.id, session_id, event.type, event.body, None, None) for event in events]

    async def queued_events(self, session_id: str) -> list[EventRecord]:
        queued = sorted((e for e in self.events_of(session_id) if e.position is None), key=lambda e: e.seq)
        return [event.record() for event in queued]

    async def mark_processed(self, session_id: str, event_id: str) -> EventRecord:
        async with self.db.lock:
            stored = self._session_for_append(session_id)
            event = self.db.events.get(event_id)
            if event is None or event.session_id != session_id or event.position is not None:
                raise LookupError(f"event {event_id} is not queued in session {session_id}")
            self._apply(stored, event)
            return event.record()

    async def list_events(
        self,
        session_id: str,
        *,
        types: list[str],
        processed: TimeBounds,
        order: str,
        limit: int,
        cursor: Json | None,
    ) -> Page:
        descending = order == "desc"
        found = [
            event
            for event in self._processed(session_id)
            if (not types or event.type in types) and within(event.processed_at or "", processed)
        ]
        if descending:
            found.reverse()
        if cursor is not None:
            boundary = int(cursor["k"])
            found = [e for e in found if ((e.position or 0) < boundary if descending else (e.position or 0) > boundary)]
        page, more = found[:limit], len(found) > limit
        return Page(
            items=[event.record() for event in page],
            next_cursor={"k": page[-1].position} if more else None,
        )

    async def conversation_events(
        self, session_id: str, types: tuple[str, ...], after_position: int = 0
    ) -> list[EventRecord]:
        return [
            event.record()
            for event in self._processed(session_id)
            if (event.position or 0) > after_position and event.type in types
        ]

    async def find_event(self, session_id: str, event_id: str) -> EventRecord | None:
        event = self.db.events.get(event_id)
        return event.record() if event is not None and event.session_id == session_id else None

    async def last_position(self, session_id: str) -> int:
        stored = self.db.sessions.get(session_id)
        return stored.last_position if stored is not None else 0

    async def events_after(self, session_id: str, position: int, limit: int) -> list[EventRecord]:
        after = [event for event in self._processed(session_id) if (event.position or 0) > position]
        return [event.record() for event in after[:limit]]
