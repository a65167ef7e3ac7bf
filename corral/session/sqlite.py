"""The embedded SQLite store: one WAL-mode database file, one connection, used from the event loop.

SQLite calls here are synchronous on purpose. A write in WAL mode with `synchronous=NORMAL` costs tens
of microseconds and survives a process crash (only a power loss can drop the last commits), which is far
cheaper than a hop to a worker thread. Every multi-row change runs in one `BEGIN IMMEDIATE` transaction.
Checkpoints (copying the WAL back into the database file, with an fsync) run on a thread of their own with
its own connection, so no write on the event loop pays for one.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from corral.clock import now_rfc3339
from corral.session import rows
from corral.session.migrations import apply_migrations
from corral.session.records import (
    AgentRecord,
    ApiKeyRecord,
    CredentialRecord,
    EnvironmentRecord,
    EventRecord,
    Json,
    NewEvent,
    Page,
    SessionRecord,
    TimeBounds,
    VaultRecord,
)
from corral.session.state import STATE_EVENT_TYPES, SessionState, empty_usage, reduce
from corral.session.store import WORK_SQL, StorageUnavailable

log = logging.getLogger("corral.session.sqlite")

# Writes between two checkpoints (each adds a few pages to the WAL; SQLite's own default is every 1000 pages).
CHECKPOINT_EVERY_WRITES = 200
CHECKPOINT_IDLE_SECONDS = 1.0


# One encoder for every write: `json.dumps` with options builds a new one per call, which costs more than encoding.
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _bounds_sql(column: str, bounds: TimeBounds, where: list[str], params: list[Any]) -> None:
    for op, value in ((">", bounds.gt), (">=", bounds.gte), ("<", bounds.lt), ("<=", bounds.lte)):
        if value is not None:
            where.append(f"{column} {op} ?")
            params.append(value)


class SqliteStore:
    """`Store` on a local SQLite file (see `corral.session.store.Store` for the contract)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        apply_migrations(f"sqlite:///{path}")
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "foreign_keys=ON",
            "busy_timeout=5000",
            "temp_store=MEMORY",
        ):
            self._db.execute(f"PRAGMA {pragma}")
        path.chmod(0o600)
        # The last session state read, decoded: appends to one session read the same usage JSON again and again.
        self._usage_cache: tuple[str, dict[str, Any]] | None = None
        self._checkpointer = _Checkpointer(path)
        self._db.execute("PRAGMA wal_autocheckpoint=0")

    def describe(self) -> dict[str, Any]:
        return {"backend": "sqlite", "path": str(self.path)}

    async def close(self) -> None:
        self._checkpointer.stop()
        self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StorageUnavailable(f"the database is unavailable for writing: {exc}") from exc
        try:
            yield self._db
        except sqlite3.OperationalError as exc:
            self._rollback()
            raise StorageUnavailable(f"the database refused the write: {exc}") from exc
        except BaseException:
            self._rollback()
            raise
        else:
            try:
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self._rollback()
                raise StorageUnavailable(f"the database refused the write: {exc}") from exc
            self._checkpointer.wrote()

    def _rollback(self) -> None:
        # SQLite may already have rolled the transaction back itself (it does on SQLITE_FULL, say).
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def _one(self, sql: str, params: tuple[Any, ...] | list[Any]) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._db.execute(sql, params).fetchone()
        return row

    # --- keyset pagination -----------------------------------------------------------------------

    def _keyset_page(
        self,
        select_sql: str,
        where: list[str],
        params: list[Any],
        *,
        key_columns: tuple[str, str],
        order: str,
        limit: int,
        cursor: Json | None,
        to_item: Callable[[sqlite3.Row], Any],
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
        sql = f"{select_sql} WHERE {' AND '.join(where) or '1'} ORDER BY {first} {direction}, {second} {direction}"
        rows = self._db.execute(f"{sql} LIMIT ?", [*params, limit + 1]).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        if going_back:
            rows.reverse()
        if not rows:
            return Page(items=[])

        def key_of(row: sqlite3.Row) -> list[Any]:
            return [row[first], row[second]]

        has_next = (more and not going_back) or going_back
        has_prev = (more and going_back) or (not going_back and key is not None)
        return Page(
            items=[to_item(row) for row in rows],
            next_cursor={"d": "next", "k": key_of(rows[-1])} if has_next else None,
            prev_cursor={"d": "prev", "k": key_of(rows[0])} if bidirectional and has_prev else None,
        )

    # --- workspaces and API keys -----------------------------------------------------------------

    async def create_workspace(self, workspace_id: str, name: str) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO workspaces (id, name, created_at) VALUES (?, ?, ?)",
                (workspace_id, name, now_rfc3339()),
            )

    async def add_api_key(self, key: ApiKeyRecord, key_hash: str) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO api_keys (id, workspace_id, key_hash, hint, created_at) VALUES (?, ?, ?, ?, ?)",
                (key.id, key.workspace_id, key_hash, key.hint, key.created_at),
            )

    _api_key = staticmethod(rows.api_key)

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        row = self._one("SELECT * FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (key_hash,))
        return self._api_key(row) if row else None

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        rows = self._db.execute("SELECT * FROM api_keys ORDER BY created_at, id").fetchall()
        return [self._api_key(row) for row in rows]

    async def revoke_api_key(self, key_id: str) -> bool:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (now_rfc3339(), key_id),
            )
        return cursor.rowcount == 1

    async def live_api_key_ids(self, key_ids: list[str]) -> set[str]:
        # One JSON array parameter, not one `?` per id: no limit on how many keys a batch holds.
        rows = self._db.execute(
            "SELECT id FROM api_keys WHERE revoked_at IS NULL AND id IN (SELECT value FROM json_each(?))",
            (json.dumps(key_ids),),
        ).fetchall()
        return {row["id"] for row in rows}

    # --- agents ----------------------------------------------------------------------------------

    _AGENT_SELECT = (
        "SELECT a.id, a.workspace_id, a.created_at, a.archived_at, v.version, v.body, v.created_at AS updated_at "
        "FROM agents a JOIN agent_versions v ON v.agent_id = a.id"
    )

    _agent = staticmethod(rows.agent)

    async def insert_agent(self, agent: AgentRecord) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO agents (id, workspace_id, latest_version, created_at) VALUES (?, ?, ?, ?)",
                (agent.id, agent.workspace_id, agent.version, agent.created_at),
            )
            db.execute(
                "INSERT INTO agent_versions (agent_id, version, body, created_at) VALUES (?, ?, ?, ?)",
                (agent.id, agent.version, _dumps(agent.body), agent.updated_at),
            )

    async def add_agent_version(self, agent: AgentRecord, expected_version: int) -> bool:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE agents SET latest_version = ? WHERE id = ? AND latest_version = ?",
                (agent.version, agent.id, expected_version),
            )
            if cursor.rowcount != 1:
                return False
            db.execute(
                "INSERT INTO agent_versions (agent_id, version, body, created_at) VALUES (?, ?, ?, ?)",
                (agent.id, agent.version, _dumps(agent.body), agent.updated_at),
            )
        return True

    async def get_agent(self, workspace_id: str, agent_id: str, version: int | None = None) -> AgentRecord | None:
        if version is None:
            row = self._one(
                f"{self._AGENT_SELECT} AND v.version = a.latest_version WHERE a.workspace_id = ? AND a.id = ?",
                (workspace_id, agent_id),
            )
        else:
            row = self._one(
                f"{self._AGENT_SELECT} WHERE a.workspace_id = ? AND a.id = ? AND v.version = ?",
                (workspace_id, agent_id, version),
            )
        return self._agent(row) if row else None

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
        _bounds_sql("a.created_at", created, where, params)
        select = (
            "SELECT * FROM (SELECT a.id, a.workspace_id, a.created_at, a.archived_at, v.version, v.body, "
            "v.created_at AS updated_at FROM agents a JOIN agent_versions v "
            f"ON v.agent_id = a.id AND v.version = a.latest_version WHERE {' AND '.join(where)})"
        )
        return self._keyset_page(
            select,
            [],
            params,
            key_columns=("created_at", "id"),
            order="desc",
            limit=limit,
            cursor=cursor,
            to_item=self._agent,
        )

    async def list_agent_versions(self, workspace_id: str, agent_id: str, *, limit: int, cursor: Json | None) -> Page:
        select = (
            "SELECT * FROM (SELECT a.id, a.workspace_id, a.created_at, a.archived_at, v.version, v.body, "
            "v.created_at AS updated_at FROM agents a JOIN agent_versions v ON v.agent_id = a.id "
            "WHERE a.workspace_id = ? AND a.id = ?)"
        )
        return self._keyset_page(
            select,
            [],
            [workspace_id, agent_id],
            key_columns=("version", "id"),
            order="desc",
            limit=limit,
            cursor=cursor,
            to_item=self._agent,
        )

    async def archive_agent(self, workspace_id: str, agent_id: str, archived_at: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE agents SET archived_at = COALESCE(archived_at, ?) WHERE workspace_id = ? AND id = ?",
                (archived_at, workspace_id, agent_id),
            )

    # --- environments ----------------------------------------------------------------------------

    _environment = staticmethod(rows.environment)

    async def insert_environment(self, environment: EnvironmentRecord) -> bool:
        try:
            with self._write() as db:
                db.execute(
                    "INSERT INTO environments (id, workspace_id, name, body, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        environment.id,
                        environment.workspace_id,
                        environment.name,
                        _dumps(environment.body),
                        environment.created_at,
                        environment.updated_at,
                    ),
                )
        except sqlite3.IntegrityError:
            return False
        return True

    async def update_environment(self, environment: EnvironmentRecord) -> bool:
        try:
            with self._write() as db:
                db.execute(
                    "UPDATE environments SET name = ?, body = ?, updated_at = ? WHERE id = ? AND workspace_id = ?",
                    (
                        environment.name,
                        _dumps(environment.body),
                        environment.updated_at,
                        environment.id,
                        environment.workspace_id,
                    ),
                )
        except sqlite3.IntegrityError:
            return False
        return True

    async def get_environment(self, workspace_id: str, environment_id: str) -> EnvironmentRecord | None:
        row = self._one("SELECT * FROM environments WHERE workspace_id = ? AND id = ?", (workspace_id, environment_id))
        return self._environment(row) if row else None

    async def list_environments(
        self, workspace_id: str, *, include_archived: bool, limit: int, cursor: Json | None
    ) -> Page:
        where = ["workspace_id = ?"]
        if not include_archived:
            where.append("archived_at IS NULL")
        return self._keyset_page(
            "SELECT * FROM environments",
            where,
            [workspace_id],
            key_columns=("created_at", "id"),
            order="desc",
            limit=limit,
            cursor=cursor,
            to_item=self._environment,
        )

    async def delete_environment(self, workspace_id: str, environment_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM environments WHERE workspace_id = ? AND id = ?", (workspace_id, environment_id))

    async def archive_environment(self, workspace_id: str, environment_id: str, archived_at: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE environments SET archived_at = COALESCE(archived_at, ?), updated_at = ? "
                "WHERE workspace_id = ? AND id = ?",
                (archived_at, archived_at, workspace_id, environment_id),
            )

    # --- sessions --------------------------------------------------------------------------------

    _session = staticmethod(rows.session)

    async def insert_session(self, session: SessionRecord) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO sessions (id, workspace_id, agent_id, agent_version, environment_id, body, status, "
                "usage, active_seconds, running_since, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session.id,
                    session.workspace_id,
                    session.agent_id,
                    session.agent_version,
                    session.environment_id,
                    _dumps(session.body),
                    session.status,
                    _dumps(session.usage),
                    session.active_seconds,
                    session.running_since,
                    session.created_at,
                    session.updated_at,
                ),
            )

    async def get_session(self, workspace_id: str | None, session_id: str) -> SessionRecord | None:
        if workspace_id is None:
            row = self._one("SELECT * FROM sessions WHERE id = ?", (session_id,))
        else:
            row = self._one("SELECT * FROM sessions WHERE workspace_id = ? AND id = ?", (workspace_id, session_id))
        return self._session(row) if row else None

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
            where.append(f"status IN ({', '.join('?' for _ in statuses)})")
            params.extend(statuses)
        if not include_archived:
            where.append("archived_at IS NULL")
        _bounds_sql("created_at", created, where, params)
        return self._keyset_page(
            "SELECT * FROM sessions",
            where,
            params,
            key_columns=("created_at", "id"),
            order=order,
            limit=limit,
            cursor=cursor,
            to_item=self._session,
            bidirectional=True,
        )

    async def update_session_body(self, session_id: str, body: Json, updated_at: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE sessions SET body = ?, updated_at = ? WHERE id = ?",
                (_dumps(body), updated_at, session_id),
            )

    async def archive_session(self, session_id: str, archived_at: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE sessions SET archived_at = COALESCE(archived_at, ?), updated_at = ? WHERE id = ?",
                (archived_at, archived_at, session_id),
            )

    async def delete_session(self, session_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM events WHERE session_id = ?", (session_id,))
            db.execute("DELETE FROM session_leases WHERE session_id = ?", (session_id,))
            db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    async def sessions_with_work(self, owner: str) -> list[str]:
        rows = self._db.execute(
            f"SELECT id FROM ({WORK_SQL}) AS work "
            "WHERE id NOT IN (SELECT session_id FROM session_leases WHERE expires_at > ? AND owner != ?)",
            (time.time(), owner),
        ).fetchall()
        return [row[0] for row in rows]

    async def acquire_lease(self, session_id: str, owner: str, ttl_seconds: float) -> bool:
        now = time.time()
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO session_leases (session_id, owner, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (session_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
                "WHERE session_leases.owner = excluded.owner OR session_leases.expires_at <= ?",
                (session_id, owner, now + ttl_seconds, now),
            )
        return cursor.rowcount == 1

    async def release_lease(self, session_id: str, owner: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM session_leases WHERE session_id = ? AND owner = ?", (session_id, owner))

    # --- the event log ---------------------------------------------------------------------------

    _event = staticmethod(rows.event)

    def _load_state(self, db: sqlite3.Connection, session_id: str, count: int) -> tuple[SessionState, int]:
        """Reserve `count` positions; returns the session's state and the position before them."""
        row = db.execute(
            "UPDATE sessions SET last_position = last_position + ? WHERE id = ? "
            "RETURNING status, usage, active_seconds, running_since, last_position",
            (count, session_id),
        ).fetchone()
        if row is None:
            raise LookupError(f"session {session_id} does not exist")
        state = SessionState(
            status=row["status"],
            usage=self._usage(row["usage"]),
            active_seconds=row["active_seconds"],
            running_since=row["running_since"],
        )
        return state, int(row["last_position"]) - count

    def _usage(self, text: str | None) -> dict[str, Any]:
        """The decoded usage column (never mutated: the reducer builds new dicts)."""
        if not text:
            return empty_usage()
        cached = self._usage_cache
        if cached is not None and cached[0] == text:
            return cached[1]
        usage: dict[str, Any] = json.loads(text)
        self._usage_cache = (text, usage)
        return usage

    def _save_state(self, db: sqlite3.Connection, session_id: str, before: SessionState, after: SessionState) -> None:
        if after == before:
            return
        db.execute(
            "UPDATE sessions SET status = ?, usage = ?, active_seconds = ?, running_since = ?, updated_at = ? "
            "WHERE id = ?",
            (after.status, _dumps(after.usage), after.active_seconds, after.running_since, now_rfc3339(), session_id),
        )

    async def append_events(self, session_id: str, events: list[NewEvent]) -> list[EventRecord]:
        records: list[EventRecord] = []
        # Most events leave the derived state alone whatever it is: then only the positions are needed.
        stateful = any(event.type in STATE_EVENT_TYPES for event in events)
        with self._write() as db:
            before: SessionState | None = None
            if stateful:
                before, position = self._load_state(db, session_id, len(events))
            else:
                position = self._reserve(db, session_id, len(events))
            state = before
            for event in events:
                position += 1
                processed_at = now_rfc3339()
                db.execute(
                    "INSERT INTO events (id, session_id, type, body, position, processed_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (event.id, session_id, event.type, _dumps(event.body), position, processed_at),
                )
                if state is not None:
                    state = reduce(state, event.type, event.body, processed_at)
                records.append(EventRecord(event.id, session_id, event.type, event.body, position, processed_at))
            if before is not None and state is not None:
                self._save_state(db, session_id, before, state)
        return records

    @staticmethod
    def _reserve(db: sqlite3.Connection, session_id: str, count: int) -> int:
        """Reserve `count` positions; returns the position before them."""
        row = db.execute(
            "UPDATE sessions SET last_position = last_position + ? WHERE id = ? RETURNING last_position",
            (count, session_id),
        ).fetchone()
        if row is None:
            raise LookupError(f"session {session_id} does not exist")
        return int(row[0]) - count

    async def enqueue_events(self, session_id: str, events: list[NewEvent]) -> list[EventRecord]:
        with self._write() as db:
            db.executemany(
                "INSERT INTO events (id, session_id, type, body) VALUES (?, ?, ?, ?)",
                [(event.id, session_id, event.type, _dumps(event.body)) for event in events],
            )
        return [EventRecord(event.id, session_id, event.type, event.body, None, None) for event in events]

    async def queued_events(self, session_id: str) -> list[EventRecord]:
        rows = self._db.execute(
            "SELECT * FROM events WHERE session_id = ? AND position IS NULL ORDER BY seq", (session_id,)
        ).fetchall()
        return [self._event(row) for row in rows]

    async def mark_processed(self, session_id: str, event_id: str) -> EventRecord:
        with self._write() as db:
            before, position = self._load_state(db, session_id, 1)
            row = db.execute(
                "SELECT * FROM events WHERE id = ? AND session_id = ? AND position IS NULL",
                (event_id, session_id),
            ).fetchone()
            if row is None:
                raise LookupError(f"event {event_id} is not queued in session {session_id}")
            position += 1
            processed_at = now_rfc3339()
            db.execute(
                "UPDATE events SET position = ?, processed_at = ? WHERE id = ?",
                (position, processed_at, event_id),
            )
            body = json.loads(row["body"])
            after = reduce(before, row["type"], body, processed_at)
            self._save_state(db, session_id, before, after)
        return EventRecord(event_id, session_id, row["type"], body, position, processed_at)

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
            where.append(f"type IN ({', '.join('?' for _ in types)})")
            params.extend(types)
        _bounds_sql("processed_at", processed, where, params)
        descending = order == "desc"
        if cursor is not None:
            where.append("position < ?" if descending else "position > ?")
            params.append(int(cursor["k"]))
        sql = (
            f"SELECT * FROM events WHERE {' AND '.join(where)} "
            f"ORDER BY position {'DESC' if descending else 'ASC'} LIMIT ?"
        )
        rows = self._db.execute(sql, [*params, limit + 1]).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(
            items=[self._event(row) for row in rows],
            next_cursor={"k": rows[-1]["position"]} if more else None,
        )

    async def conversation_events(
        self, session_id: str, types: tuple[str, ...], after_position: int = 0
    ) -> list[EventRecord]:
        rows = self._db.execute(
            f"SELECT * FROM events WHERE session_id = ? AND position > ? "
            f"AND type IN ({', '.join('?' for _ in types)}) ORDER BY position",
            (session_id, after_position, *types),
        ).fetchall()
        return [self._event(row) for row in rows]

    async def find_event(self, session_id: str, event_id: str) -> EventRecord | None:
        row = self._one("SELECT * FROM events WHERE session_id = ? AND id = ?", (session_id, event_id))
        return self._event(row) if row else None

    async def last_position(self, session_id: str) -> int:
        row = self._one("SELECT last_position FROM sessions WHERE id = ?", (session_id,))
        return int(row[0]) if row else 0

    async def events_after(self, session_id: str, position: int, limit: int) -> list[EventRecord]:
        rows = self._db.execute(
            "SELECT * FROM events WHERE session_id = ? AND position > ? ORDER BY position LIMIT ?",
            (session_id, position, limit),
        ).fetchall()
        return [self._event(row) for row in rows]

    # --- vaults and credentials ------------------------------------------------------------------

    _vault = staticmethod(rows.vault)

    _credential = staticmethod(rows.credential)

    async def insert_vault(self, vault: VaultRecord) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO vaults (id, workspace_id, body, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                (vault.id, vault.workspace_id, _dumps(vault.body), vault.created_at, vault.updated_at),
            )

    async def update_vault(self, vault: VaultRecord) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE vaults SET body = ?, updated_at = ? WHERE workspace_id = ? AND id = ?",
                (_dumps(vault.body), vault.updated_at, vault.workspace_id, vault.id),
            )

    async def get_vault(self, workspace_id: str, vault_id: str) -> VaultRecord | None:
        row = self._one("SELECT * FROM vaults WHERE workspace_id = ? AND id = ?", (workspace_id, vault_id))
        return self._vault(row) if row else None

    async def list_vaults(self, workspace_id: str, *, include_archived: bool, limit: int, cursor: Json | None) -> Page:
        where = ["workspace_id = ?"]
        if not include_archived:
            where.append("archived_at IS NULL")
        return self._keyset_page(
            "SELECT * FROM vaults",
            where,
            [workspace_id],
            key_columns=("created_at", "id"),
            order="desc",
            limit=limit,
            cursor=cursor,
            to_item=self._vault,
        )

    async def delete_vault(self, workspace_id: str, vault_id: str) -> None:
        with self._write() as db:
            db.execute(
                "DELETE FROM vault_credentials WHERE workspace_id = ? AND vault_id = ?", (workspace_id, vault_id)
            )
            db.execute("DELETE FROM vaults WHERE workspace_id = ? AND id = ?", (workspace_id, vault_id))

    async def archive_vault(self, workspace_id: str, vault_id: str, archived_at: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE vault_credentials SET archived_at = ?, updated_at = ?, secret = NULL "
                "WHERE workspace_id = ? AND vault_id = ? AND archived_at IS NULL",
                (archived_at, archived_at, workspace_id, vault_id),
            )
            db.execute(
                "UPDATE vaults SET archived_at = COALESCE(archived_at, ?), updated_at = ? "
                "WHERE workspace_id = ? AND id = ?",
                (archived_at, archived_at, workspace_id, vault_id),
            )

    async def insert_credential(self, credential: CredentialRecord) -> bool:
        try:
            with self._write() as db:
                db.execute(
                    "INSERT INTO vault_credentials (id, workspace_id, vault_id, identity, body, secret, created_at, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        credential.id,
                        credential.workspace_id,
                        credential.vault_id,
                        credential.identity,
                        _dumps(credential.body),
                        credential.secret,
                        credential.created_at,
                        credential.updated_at,
                    ),
                )
        except sqlite3.IntegrityError:
            return False
        return True

    async def update_credential(self, credential: CredentialRecord) -> bool:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE vault_credentials SET body = ?, secret = ?, updated_at = ? "
                "WHERE workspace_id = ? AND vault_id = ? AND id = ? AND archived_at IS NULL",
                (
                    _dumps(credential.body),
                    credential.secret,
                    credential.updated_at,
                    credential.workspace_id,
                    credential.vault_id,
                    credential.id,
                ),
            )
        return cursor.rowcount == 1

    async def get_credential(self, workspace_id: str, vault_id: str, credential_id: str) -> CredentialRecord | None:
        row = self._one(
            "SELECT * FROM vault_credentials WHERE workspace_id = ? AND vault_id = ? AND id = ?",
            (workspace_id, vault_id, credential_id),
        )
        return self._credential(row) if row else None

    async def list_credentials(
        self, workspace_id: str, vault_id: str, *, include_archived: bool, limit: int, cursor: Json | None
    ) -> Page:
        where = ["workspace_id = ?", "vault_id = ?"]
        if not include_archived:
            where.append("archived_at IS NULL")
        return self._keyset_page(
            "SELECT * FROM vault_credentials",
            where,
            [workspace_id, vault_id],
            key_columns=("created_at", "id"),
            order="desc",
            limit=limit,
            cursor=cursor,
            to_item=self._credential,
        )

    async def delete_credential(self, workspace_id: str, vault_id: str, credential_id: str) -> None:
        with self._write() as db:
            db.execute(
                "DELETE FROM vault_credentials WHERE workspace_id = ? AND vault_id = ? AND id = ?",
                (workspace_id, vault_id, credential_id),
            )

    async def archive_credential(self, workspace_id: str, vault_id: str, credential_id: str, archived_at: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE vault_credentials SET archived_at = ?, updated_at = ?, secret = NULL "
                "WHERE workspace_id = ? AND vault_id = ? AND id = ? AND archived_at IS NULL",
                (archived_at, archived_at, workspace_id, vault_id, credential_id),
            )

    async def live_credentials(self, workspace_id: str, vault_ids: list[str]) -> list[CredentialRecord]:
        if not vault_ids:
            return []
        rows = self._db.execute(
            "SELECT c.* FROM vault_credentials c JOIN vaults v ON v.id = c.vault_id "
            f"WHERE c.workspace_id = ? AND c.vault_id IN ({', '.join('?' for _ in vault_ids)}) "
            "AND c.archived_at IS NULL AND v.archived_at IS NULL ORDER BY c.created_at, c.id",
            (workspace_id, *vault_ids),
        ).fetchall()
        return [self._credential(row) for row in rows]


class _Checkpointer:
    """Checkpoints the WAL from a background thread every `CHECKPOINT_EVERY_WRITES` writes (and when idle).

    PASSIVE checkpoints never block the writer; the WAL restarts from its beginning at the first write after
    a checkpoint that caught up, so it stays a few megabytes. A failed checkpoint (disk full, say) is logged and
    tried again; the writes themselves report their own failures.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._writes = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def wrote(self) -> None:
        self._writes += 1
        if self._writes >= CHECKPOINT_EVERY_WRITES:
            self._writes = 0
            self._wake.set()

    def stop(self) -> None:
        if not self._stopping:
            self._stopping = True
            self._wake.set()
            self._thread.join(timeout=10)

    def _run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout=5000")
            while not self._stopping:
                self._wake.wait(CHECKPOINT_IDLE_SECONDS)
                self._wake.clear()
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:
                    log.warning("WAL checkpoint of %s failed (will retry): %s", self._path, exc)
        finally:
            db.close()
