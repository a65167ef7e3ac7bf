"""The SQL of the `Work` port: which sessions have work, and their leases."""

from __future__ import annotations

from corral.session.sql_port import SqlPort

# Sessions with work for a brain: a turn cut short (left running), client events queued, or a processed message
# that no turn has started on (a brain died between the two appends).
WORK_SQL = (
    "SELECT id FROM sessions WHERE status IN ('running', 'rescheduling') "
    "UNION SELECT DISTINCT session_id FROM events WHERE position IS NULL "
    "UNION SELECT s.id FROM sessions s JOIN events e ON e.session_id = s.id AND e.position = s.last_position "
    "WHERE s.status = 'idle' AND e.type = 'user.message'"
)


class SqlWork(SqlPort):
    """`corral.session.ports.Work` in shared SQL: the drivers add `sessions_with_work` and `acquire_lease`, which
    compare lease expiry with their own clock (the process's on SQLite, the database's on PostgreSQL)."""

    async def release_lease(self, session_id: str, owner: str) -> None:
        await self._execute("DELETE FROM session_leases WHERE session_id = ? AND owner = ?", (session_id, owner))
