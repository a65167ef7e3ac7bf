"""The SQL both adapters share: every statement of the `Store` written once, over a four-call database port.

`SqlStore` implements the `Store` methods whose SQL is the same on SQLite and PostgreSQL. It reaches the
database only through `_one`, `_all`, `_execute` and `_transaction`, which each adapter implements on its own
driver. Statements are written with `?` placeholders; the PostgreSQL adapter translates them (`pyformat`).
The adapters keep what really differs: connecting, the append path (positions, derived state, notifications),
retries, the clock leases compare with, and how a list of ids travels as one parameter.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from corral.clock import now_rfc3339
from corral.session import rows
from corral.session.records import (
    AgentRecord,
    ApiKeyRecord,
    CredentialRecord,
    EnvironmentRecord,
    EventRecord,
    Json,
    Page,
    SessionRecord,
    TimeBounds,
    VaultRecord,
)
from corral.session.rows import Row

T = TypeVar("T")
Params = Sequence[Any]
# Runs one statement inside a transaction; returns the number of rows it changed.
Execute = Callable[[str, Params], Awaitable[int]]

# One encoder for every write: `json.dumps` with options builds a new one per call, which costs more than encoding.
dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

# Sessions with work for a brain: a turn cut short (left running), client events queued, or a processed message
# that no turn has started on (a brain died between the two appends).
WORK_SQL = (
    "SELECT id FROM sessions WHERE status IN ('running', 'rescheduling') "
    "UNION SELECT DISTINCT session_id FROM events WHERE position IS NULL "
    "UNION SELECT s.id FROM sessions s JOIN events e ON e.session_id = s.id AND e.position = s.last_position "
    "WHERE s.status = 'idle' AND e.type = 'user.message'"
)

# Reserves positions for an append (on PostgreSQL this takes the session's row lock) and reads the derived state.
ALLOCATE_SQL = (
    "UPDATE sessions SET last_position = last_position + ? WHERE id = ? "
    "RETURNING status, usage, active_seconds, running_since, last_position"
)

SAVE_STATE_SQL = (
    "UPDATE sessions SET status = ?, usage = ?, active_seconds = ?, running_since = ?, updated_at = ? WHERE id = ?"
)

_AGENT_COLUMNS = (
    "a.id, a.workspace_id, a.created_at, a.archived_at, v.version, v.body, v.created_at AS updated_at "
    "FROM agents a JOIN agent_versions v ON v.agent_id = a.id"
)


@functools.lru_cache(maxsize=512)
def pyformat(sql: str) -> str:
    """The statement with psycopg's `%s` placeholders for `?` (a literal `%` doubled, as psycopg wants it).

    Every `?` is taken for a placeholder, so shared SQL cannot use PostgreSQL's `?` JSON operators."""
    return sql.replace("%", "%%").replace("?", "%s")


def in_list(values: Sequence[Any]) -> str:
    """Placeholders for `column IN (...)`, one per value."""
    return ", ".join("?" for _ in values)


def bounds_sql(column: str, bounds: TimeBounds, where: list[str], params: list[Any]) -> None:
    for op, value in ((">", bounds.gt), (">=", bounds.gte), ("<", bounds.lt), ("<=", bounds.lte)):
        if value is not None:
            where.append(f"{column} {op} ?")
            params.append(value)


class SqlStore:
    """The shared half of a SQL `Store` (see `corral.session.store.Store` for the contract).

    Writes say whether they are `replayable`: safe to run again after a lost connection even if their COMMIT
    may have succeeded (the PostgreSQL adapter retries those; SQLite has no connection to lose).
    """

    # What the driver raises when an insert or update breaks a uniqueness constraint.
    _unique_violation: type[Exception]

    # --- the database port, one implementation per driver --------------------------------------

    async def _one(self, sql: str, params: Params = ()) -> Row | None:
        raise NotImplementedError

    async def _all(self, sql: str, params: Params = ()) -> list[Row]:
        raise NotImplementedError

    async def _execute(self, sql: str, params: Params, *, replayable: bool = True) -> int:
        """One write statement on its own; returns the number of rows it changed."""
        raise NotImplementedError

    async def _transaction(
        self, work: Callable[[Execute], Awaitable[T]], *, replayable: bool, pipelined: bool = False
    ) -> T:
        """Run `work` in one transaction. `pipelined`: statements do not wait for one another's results (a
        PostgreSQL round trip saved), so `work` must not use the counts they return."""
        raise NotImplementedError

    # --- keyset pagination -----------------------------------------------------------------------

    async def _keyset_page(
        self,
        select_sql: str,
        where: list[str],
        params: list[Any],
        *,
        key_columns: tuple[str, str],
        order: str,
        limit: int,
        cursor: Json | None,
        to_item: Callable[[Row], Any],
        bidirectional: bool = False,
    ) -> Page:
        """One page ordered by (key_columns) in `order`; cursors carry the boundary key and a direction."""
        going_back = bool(cursor and cursor.get("d") == "prev")
        scan_desc = (order == "desc") != going_back
        key = cursor.get("k") if cursor else None
        first, second = key_columns
        if key is not None:
            where = [*where, f"({first}, {second}) {'<' if scan_desc else '>'} (?, ?)"]
            params = [*params, *key]
        direction = "DESC" if scan_desc else "ASC"
        sql = (
            f"{select_sql} WHERE {' AND '.join(where) or 'TRUE'} "
            f"ORDER BY {first} {direction}, {second} {direction} LIMIT ?"
        )
        found, more = await self._up_to(limit, sql, params)
        if going_back:
            found.reverse()
        if not found:
            return Page(items=[])

        def key_of(row: Row) -> list[Any]:
            return [row[first], row[second]]

        has_next = (more and not going_back) or going_back
        has_prev = (more and going_back) or (not going_back and key is not None)
        return Page(
            items=[to_item(row) for row in found],
            next_cursor={"d": "next", "k": key_of(found[-1])} if has_next else None,
            prev_cursor={"d": "prev", "k": key_of(found[0])} if bidirectional and has_prev else None,
        )

    async def _up_to(self, limit: int, sql: str, params: list[Any]) -> tuple[list[Row], bool]:
        """The first `limit` rows of `sql` (which ends in `LIMIT ?`), and whether more follow."""
        found = await self._all(sql, [*params, limit + 1])
        return found[:limit], len(found) > limit

    async def _write_unless_taken(self, sql: str, params: Params, *, replayable: bool) -> bool:
        """Run a write that a uniqueness constraint may refuse; False when it does."""
        try:
            await self._execute(sql, params, replayable=replayable)
        except self._unique_violation:
            return False
        return True

    # --- workspaces and API keys -----------------------------------------------------------------

    async def create_workspace(self, workspace_id: str, name: str) -> None:
        await self._execute(
            "INSERT INTO workspaces (id, name, created_at) VALUES (?, ?, ?)",
            (workspace_id, name, now_rfc3339()),
            replayable=False,
        )

    async def add_api_key(self, key: ApiKeyRecord, key_hash: str) -> None:
        await self._execute(
            "INSERT INTO api_keys (id, workspace_id, key_hash, hint, created_at) VALUES (?, ?, ?, ?, ?)",
            (key.id, key.workspace_id, key_hash, key.hint, key.created_at),
            replayable=False,
        )

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        row = await self._one("SELECT * FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (key_hash,))
        return rows.api_key(row) if row else None

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        return [rows.api_key(row) for row in await self._all("SELECT * FROM api_keys ORDER BY created_at, id")]

    async def revoke_api_key(self, key_id: str) -> bool:
        changed = await self._execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (now_rfc3339(), key_id),
            replayable=False,
        )
        return changed == 1

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

    async def _list_newest_first(
        self,
        table: str,
        where: list[str],
        params: list[Any],
        include_archived: bool,
        limit: int,
        cursor: Json | None,
        to_item: Callable[[Row], Any],
    ) -> Page:
        """A page of `table`'s rows, newest first (archived ones too if asked)."""
        if not include_archived:
            where = [*where, "archived_at IS NULL"]
        return await self._keyset_page(
            f"SELECT * FROM {table}",
            where,
            params,
            key_columns=("created_at", "id"),
            order="desc",
            limit=limit,
            cursor=cursor,
            to_item=to_item,
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

    async def update_session_body(self, session_id: str, body: Json, updated_at: str) -> None:
        await self._execute(
            "UPDATE sessions SET body = ?, updated_at = ? WHERE id = ?", (dumps(body), updated_at, session_id)
        )

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

    async def release_lease(self, session_id: str, owner: str) -> None:
        await self._execute("DELETE FROM session_leases WHERE session_id = ? AND owner = ?", (session_id, owner))

    # --- reading the event log -------------------------------------------------------------------

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

    # --- vaults and credentials ------------------------------------------------------------------

    async def insert_vault(self, vault: VaultRecord) -> None:
        await self._execute(
            "INSERT INTO vaults (id, workspace_id, body, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            (vault.id, vault.workspace_id, dumps(vault.body), vault.created_at, vault.updated_at),
            replayable=False,
        )

    async def update_vault(self, vault: VaultRecord) -> None:
        await self._execute(
            "UPDATE vaults SET body = ?, updated_at = ? WHERE workspace_id = ? AND id = ?",
            (dumps(vault.body), vault.updated_at, vault.workspace_id, vault.id),
        )

    async def get_vault(self, workspace_id: str, vault_id: str) -> VaultRecord | None:
        row = await self._one("SELECT * FROM vaults WHERE workspace_id = ? AND id = ?", (workspace_id, vault_id))
        return rows.vault(row) if row else None

    async def list_vaults(self, workspace_id: str, *, include_archived: bool, limit: int, cursor: Json | None) -> Page:
        return await self._list_newest_first(
            "vaults", ["workspace_id = ?"], [workspace_id], include_archived, limit, cursor, rows.vault
        )

    async def delete_vault(self, workspace_id: str, vault_id: str) -> None:
        async def work(execute: Execute) -> None:
            await execute(
                "DELETE FROM vault_credentials WHERE workspace_id = ? AND vault_id = ?", (workspace_id, vault_id)
            )
            await execute("DELETE FROM vaults WHERE workspace_id = ? AND id = ?", (workspace_id, vault_id))

        await self._transaction(work, replayable=True)

    async def archive_vault(self, workspace_id: str, vault_id: str, archived_at: str) -> None:
        async def work(execute: Execute) -> None:
            await execute(
                "UPDATE vault_credentials SET archived_at = ?, updated_at = ?, secret = NULL "
                "WHERE workspace_id = ? AND vault_id = ? AND archived_at IS NULL",
                (archived_at, archived_at, workspace_id, vault_id),
            )
            await execute(
                "UPDATE vaults SET archived_at = COALESCE(archived_at, ?), updated_at = ? "
                "WHERE workspace_id = ? AND id = ?",
                (archived_at, archived_at, workspace_id, vault_id),
            )

        await self._transaction(work, replayable=True)

    async def insert_credential(self, credential: CredentialRecord) -> bool:
        return await self._write_unless_taken(
            "INSERT INTO vault_credentials (id, workspace_id, vault_id, identity, body, secret, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                credential.id,
                credential.workspace_id,
                credential.vault_id,
                credential.identity,
                dumps(credential.body),
                credential.secret,
                credential.created_at,
                credential.updated_at,
            ),
            replayable=False,
        )

    async def update_credential(self, credential: CredentialRecord) -> bool:
        changed = await self._execute(
            "UPDATE vault_credentials SET body = ?, secret = ?, updated_at = ? "
            "WHERE workspace_id = ? AND vault_id = ? AND id = ? AND archived_at IS NULL",
            (
                dumps(credential.body),
                credential.secret,
                credential.updated_at,
                credential.workspace_id,
                credential.vault_id,
                credential.id,
            ),
        )
        return changed == 1

    async def get_credential(self, workspace_id: str, vault_id: str, credential_id: str) -> CredentialRecord | None:
        row = await self._one(
            "SELECT * FROM vault_credentials WHERE workspace_id = ? AND vault_id = ? AND id = ?",
            (workspace_id, vault_id, credential_id),
        )
        return rows.credential(row) if row else None

    async def list_credentials(
        self, workspace_id: str, vault_id: str, *, include_archived: bool, limit: int, cursor: Json | None
    ) -> Page:
        return await self._list_newest_first(
            "vault_credentials",
            ["workspace_id = ?", "vault_id = ?"],
            [workspace_id, vault_id],
            include_archived,
            limit,
            cursor,
            rows.credential,
        )

    async def delete_credential(self, workspace_id: str, vault_id: str, credential_id: str) -> None:
        await self._execute(
            "DELETE FROM vault_credentials WHERE workspace_id = ? AND vault_id = ? AND id = ?",
            (workspace_id, vault_id, credential_id),
        )

    async def archive_credential(self, workspace_id: str, vault_id: str, credential_id: str, archived_at: str) -> None:
        await self._execute(
            "UPDATE vault_credentials SET archived_at = ?, updated_at = ?, secret = NULL "
            "WHERE workspace_id = ? AND vault_id = ? AND id = ? AND archived_at IS NULL",
            (archived_at, archived_at, workspace_id, vault_id, credential_id),
        )

    async def live_credentials(self, workspace_id: str, vault_ids: list[str]) -> list[CredentialRecord]:
        if not vault_ids:
            return []
        found = await self._all(
            "SELECT c.* FROM vault_credentials c JOIN vaults v ON v.id = c.vault_id "
            f"WHERE c.workspace_id = ? AND c.vault_id IN ({in_list(vault_ids)}) "
            "AND c.archived_at IS NULL AND v.archived_at IS NULL ORDER BY c.created_at, c.id",
            (workspace_id, *vault_ids),
        )
        return [rows.credential(row) for row in found]
