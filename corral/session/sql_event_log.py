"""The SQL of the `EventLog` port: reading a session's log (the append path is each driver's own)."""

from __future__ import annotations

from typing import Any

from corral.session import rows
from corral.session.records import (
    EventRecord,
    Json,
    Page,
    TimeBounds,
)
from corral.session.sql_port import SqlPort, bounds_sql, in_list

# Reserves positions for an append (on PostgreSQL this takes the session's row lock) and reads the derived state.
ALLOCATE_SQL = (
    "UPDATE sessions SET last_position = last_position + ? WHERE id = ? "
    "RETURNING status, usage, active_seconds, running_since, last_position"
)

SAVE_STATE_SQL = (
    "UPDATE sessions SET status = ?, usage = ?, active_seconds = ?, running_since = ?, updated_at = ? WHERE id = ?"
)


class SqlEventLog(SqlPort):
    """`corral.session.ports.EventLog`'s reads in shared SQL; the drivers add `append_events`, `enqueue_events` and
    `mark_processed`, which allocate positions and apply the derived state in their own transactions."""

    async def queued_events(self, session_id: str) -> list[EventRecord]:
        found = await self._all(
            "SELECT * FROM events WHERE session_id = ? AND position IS NULL ORDER BY seq", (session_id,)
        )
        return [rows.event(row) for row in found]

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
        where = ["session_id = ?", "position IS NOT NULL"]
        params: list[Any] = [session_id]
        if types:
            where.append(f"type IN ({in_list(types)})")
            params.extend(types)
        bounds_sql("processed_at", processed, where, params)
        descending = order == "desc"
        if cursor is not None:
            where.append("position < ?" if descending else "position > ?")
            params.append(int(cursor["k"]))
        sql = (
            f"SELECT * FROM events WHERE {' AND '.join(where)} "
            f"ORDER BY position {'DESC' if descending else 'ASC'} LIMIT ?"
        )
        found, more = await self._up_to(limit, sql, params)
        return Page(
            items=[rows.event(row) for row in found],
            next_cursor={"k": found[-1]["position"]} if more else None,
        )

    async def conversation_events(
        self, session_id: str, types: tuple[str, ...], after_position: int = 0
    ) -> list[EventRecord]:
        if not types:
            return []
        found = await self._all(
            f"SELECT * FROM events WHERE session_id = ? AND position > ? AND type IN ({in_list(types)}) "
            "ORDER BY position",
            (session_id, after_position, *types),
        )
        return [rows.event(row) for row in found]

    async def find_event(self, session_id: str, event_id: str) -> EventRecord | None:
        row = await self._one("SELECT * FROM events WHERE session_id = ? AND id = ?", (session_id, event_id))
        return rows.event(row) if row else None

    async def last_position(self, session_id: str) -> int:
        row = await self._one("SELECT last_position FROM sessions WHERE id = ?", (session_id,))
        return int(row["last_position"]) if row else 0

    async def events_after(self, session_id: str, position: int, limit: int) -> list[EventRecord]:
        found = await self._all(
            "SELECT * FROM events WHERE session_id = ? AND position > ? ORDER BY position LIMIT ?",
            (session_id, position, limit),
        )
        return [rows.event(row) for row in found]
