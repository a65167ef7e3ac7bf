"""The SQL of the `Resources` port: agents and their versions, environments, sessions."""

from __future__ import annotations

from typing import Any

from corral.session import rows
from corral.session.records import (
    AgentRecord,
    EnvironmentRecord,
    Json,
    Page,
    SessionRecord,
    TimeBounds,
)
from corral.session.sql_port import Execute, SqlPort, bounds_sql, dumps, in_list

_AGENT_COLUMNS = (
    "a.id, a.workspace_id, a.created_at, a.archived_at, v.version, v.body, v.created_at AS updated_at "
    "FROM agents a JOIN agent_versions v ON v.agent_id = a.id"
)


class SqlResources(SqlPort):
    """`corral.session.ports.Resources` in shared SQL."""

    # --- agents ----------------------------------------------------------------------------------

    async def insert_agent(self, agent: AgentRecord) -> None:
        async def work(execute: Execute) -> None:
            await execute(
                "INSERT INTO agents (id, workspace_id, latest_version, created_at) VALUES (?, ?, ?, ?)",
                (agent.id, agent.workspace_id, agent.version, agent.created_at),
            )
            await self._insert_agent_version(execute, agent)

        await self._transaction(work, replayable=False)

    async def add_agent_version(self, agent: AgentRecord, expected_version: int) -> bool:
        async def work(execute: Execute) -> bool:
            changed = await execute(
                "UPDATE agents SET latest_version = ? WHERE id = ? AND latest_version = ?",
                (agent.version, agent.id, expected_version),
            )
            if changed != 1:
                return False
            await self._insert_agent_version(execute, agent)
            return True

        return await self._transaction(work, replayable=False)

    @staticmethod
    async def _insert_agent_version(execute: Execute, agent: AgentRecord) -> None:
        await execute(
            "INSERT INTO agent_versions (agent_id, version, body, created_at) VALUES (?, ?, ?, ?)",
            (agent.id, agent.version, dumps(agent.body), agent.updated_at),
        )

    async def get_agent(self, workspace_id: str, agent_id: str, version: int | None = None) -> AgentRecord | None:
        if version is None:
            row = await self._one(
                f"SELECT {_AGENT_COLUMNS} AND v.version = a.latest_version WHERE a.workspace_id = ? AND a.id = ?",
                (workspace_id, agent_id),
            )
        else:
            row = await self._one(
                f"SELECT {_AGENT_COLUMNS} WHERE a.workspace_id = ? AND a.id = ? AND v.version = ?",
                (workspace_id, agent_id, version),
            )
        return rows.agent(row) if row else None

    async def list_agents(
        self,
        workspace_id: str,
        *,
        include_archived: bool,
        created: TimeBounds,
        limit: int,
        cursor: Json | None,
    ) -> Page:
        where = ["a.workspace_id = ?"]
        params: list[Any] = [workspace_id]
        if not include_archived:
            where.append("a.archived_at IS NULL")
        bounds_sql("a.created_at", created, where, params)
        select = (
            f"SELECT * FROM (SELECT {_AGENT_COLUMNS} AND v.version = a.latest_version "
            f"WHERE {' AND '.join(where)}) AS latest"
        )
        return await self._keyset_page(
            select,
            [],
            params,
            key_columns=("created_at", "id"),
            order="desc",
            limit=limit,
            cursor=cursor,
            to_item=rows.agent,
        )

    async def list_agent_versions(self, workspace_id: str, agent_id: str, *, limit: int, cursor: Json | None) -> Page:
        select = f"SELECT * FROM (SELECT {_AGENT_COLUMNS} WHERE a.workspace_id = ? AND a.id = ?) AS versions"
        return await self._keyset_page(
            select,
            [],
            [workspace_id, agent_id],
            key_columns=("version", "id"),
            order="desc",
            limit=limit,
            cursor=cursor,
            to_item=rows.agent,
        )

    async def archive_agent(self, workspace_id: str, agent_id: str, archived_at: str) -> None:
        await self._execute(
            "UPDATE agents SET archived_at = COALESCE(archived_at, ?) WHERE workspace_id = ? AND id = ?",
            (archived_at, workspace_id, agent_id),
        )

    # --- environments ----------------------------------------------------------------------------

    async def insert_environment(self, environment: EnvironmentRecord) -> bool:
        return await self._write_unless_taken(
            "INSERT INTO environments (id, workspace_id, name, body, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                environment.id,
                environment.workspace_id,
                environment.name,
                dumps(environment.body),
                environment.created_at,
                environment.updated_at,
            ),
            replayable=False,
        )

    async def update_environment(self, environment: EnvironmentRecord) -> bool:
        return await self._write_unless_taken(
            "UPDATE environments SET name = ?, body = ?, updated_at = ? WHERE id = ? AND workspace_id = ?",
            (
                environment.name,
                dumps(environment.body),
                environment.updated_at,
                environment.id,
                environment.workspace_id,
            ),
            replayable=True,
        )

    async def get_environment(self, workspace_id: str, environment_id: str) -> EnvironmentRecord | None:
        row = await self._one(
            "SELECT * FROM environments WHERE workspace_id = ? AND id = ?", (workspace_id, environment_id)
        )
        return rows.environment(row) if row else None

    async def list_environments(
        self, workspace_id: str, *, include_archived: bool, limit: int, cursor: Json | None
    ) -> Page:
        return await self._list_newest_first(
            "environments", ["workspace_id = ?"], [workspace_id], include_archived, limit, cursor, rows.environment
        )

    async def delete_environment(self, workspace_id: str, environment_id: str) -> None:
        await self._execute(
            "DELETE FROM environments WHERE workspace_id = ? AND id = ?", (workspace_id, environment_id)
        )

    async def archive_environment(self, workspace_id: str, environment_id: str, archived_at: str) -> None:
        await self._execute(
            "UPDATE environments SET archived_at = COALESCE(archived_at, ?), updated_at = ? "
            "WHERE workspace_id = ? AND id = ?",
            (archived_at, archived_at, workspace_id, environment_id),
        )

    # --- sessions --------------------------------------------------------------------------------

    async def insert_session(self, session: SessionRecord) -> None:
        await self._execute(
            "INSERT INTO sessions (id, workspace_id, agent_id, agent_version, environment_id, body, status, "
            "usage, active_seconds, running_since, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                session.id,
                session.workspace_id,
                session.agent_id,
                session.agent_version,
                session.environment_id,
                dumps(session.body),
                session.status,
                dumps(session.usage),
                session.active_seconds,
                session.running_since,
                session.created_at,
                session.updated_at,
            ),
            replayable=False,
        )

    async def get_session(self, workspace_id: str | None, session_id: str) -> SessionRecord | None:
        if workspace_id is None:
            row = await self._one("SELECT * FROM sessions WHERE id = ?", (session_id,))
        else:
            row = await self._one(
                "SELECT * FROM sessions WHERE workspace_id = ? AND id = ?", (workspace_id, session_id)
            )
        return rows.session(row) if row else None

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
        where = ["workspace_id = ?"]
        params: list[Any] = [workspace_id]
        if agent_id is not None:
            where.append("agent_id = ?")
            params.append(agent_id)
            if agent_version is not None:
                where.append("agent_version = ?")
                params.append(agent_version)
        if statuses:
            where.append(f"status IN ({in_list(statuses)})")
            params.extend(statuses)
        if not include_archived:
            where.append("archived_at IS NULL")
        bounds_sql("created_at", created, where, params)
        return await self._keyset_page(
            "SELECT * FROM sessions",
            where,
            params,
            key_columns=("created_at", "id"),
            order=order,
            limit=limit,
            cursor=cursor,
            to_item=rows.session,
            bidirectional=True,
        )

    async def count_sessions(self, workspace_id: str, statuses: list[str], *, excluding: str, up_to: int) -> int:
        if not statuses or up_to <= 0:
            return 0
        # Served by `sessions_by_status` (migration 0004); the inner LIMIT stops the count at `up_to`.
        row = await self._one(
            "SELECT COUNT(*) AS found FROM (SELECT 1 FROM sessions WHERE workspace_id = ? "
            f"AND status IN ({in_list(statuses)}) AND id <> ? LIMIT ?) AS capped",
            (workspace_id, *statuses, excluding, up_to),
        )
        return int(row["found"]) if row else 0

    async def archive_session(self, session_id: str, archived_at: str) -> None:
        await self._execute(
            "UPDATE sessions SET archived_at = COALESCE(archived_at, ?), updated_at = ? WHERE id = ?",
            (archived_at, archived_at, session_id),
        )

    async def delete_session(self, session_id: str) -> None:
        async def work(execute: Execute) -> None:
            await execute("DELETE FROM events WHERE session_id = ?", (session_id,))
            await execute("DELETE FROM session_leases WHERE session_id = ?", (session_id,))
            await execute("DELETE FROM sessions WHERE id = ?", (session_id,))

        await self._transaction(work, replayable=True, pipelined=True)
