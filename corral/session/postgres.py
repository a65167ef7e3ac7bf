"""The PostgreSQL store: psycopg 3 on an asyncio connection pool, for several nodes sharing one database.

Semantics match `SqliteStore` exactly (`corral.session.store.Store` is the contract; tests/store runs one
suite against both). What differs is how they are reached:

* Every multi-statement change runs in one transaction on one pooled connection. An append takes the
  session's row lock with `UPDATE sessions SET last_position = last_position + n ... RETURNING`, so
  positions are allocated atomically, in commit order, by whichever node appends; the state reducer runs
  inside the same transaction.
* Text columns use the "C" collation (see migration 0001), so ids and timestamps sort byte-wise, as in SQLite.
* Leases compare expiry with the database's clock, so nodes with skewed clocks still agree.
* Appending events sends `NOTIFY corral_events, 'session_id:last_position'`, and queueing client events
  `NOTIFY corral_wake, 'session_id'` (`session_id:interrupt` with a `user.interrupt`), so other nodes hear
  of them (see `corral.session.cluster`). The notice goes in a small transaction of its own, pipelined right
  behind the COMMIT of the write (no extra round trip), which the server runs only if that COMMIT succeeded.
  Not in the write's own transaction: a transaction that notifies holds a database-wide lock through its
  commit's WAL flush, which would serialise every append on the server. The notice's own transaction does
  not wait for a flush (`synchronous_commit = off`): a notice is a hint, and streams and brains catch up from
  the store, so one lost to a crash delays nothing for long.
* A lost connection (server restarted, network cut) is retried once on a fresh connection when that is
  safe: reads always, and writes that failed before their COMMIT was sent. Appends are safe to retry even
  when the COMMIT's outcome is unknown: the retry finds the events by id and returns them as stored.
  Anything else surfaces as `StorageUnavailable` (503 api_error), as SQLite's refusals do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import AsyncConnection
from psycopg.abc import Params
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from corral.clock import now_rfc3339
from corral.session import rows
from corral.session.cluster import EVENTS_CHANNEL, WAKE_CHANNEL
from corral.session.migrations import apply_migrations
from corral.session.open_store import POSTGRES_SCHEMES
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

log = logging.getLogger("corral.session.postgres")

Connection = AsyncConnection[DictRow]
T = TypeVar("T")
# What a store operation runs on a connection; `retrying` is True on the second attempt after a lost connection.
Operation = Callable[[Connection, bool], Awaitable[T]]

# The database's clock, in seconds since the epoch (leases store expiry as such a number).
DB_NOW = "EXTRACT(EPOCH FROM clock_timestamp())::float8"


def psycopg_conninfo(url: str) -> str:
    """A libpq URI for psycopg from any accepted spelling (`postgresql://`, `postgres://`, `postgresql+psycopg://`)."""
    parts = urlsplit(url)
    if parts.scheme not in POSTGRES_SCHEMES:
        raise ValueError(f"not a PostgreSQL URL: {redact_url(url)}")
    return urlunsplit(parts._replace(scheme="postgresql"))


def sqlalchemy_url(url: str) -> str:
    """The same database as an SQLAlchemy URL on the psycopg 3 driver (what Alembic connects with)."""
    return urlunsplit(urlsplit(psycopg_conninfo(url))._replace(scheme="postgresql+psycopg"))


def redact_url(url: str) -> str:
    """The URL with its password replaced, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


# One encoder for every write: `json.dumps` with options builds a new one per call, which costs more than encoding.
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _in_list(values: list[str] | tuple[str, ...]) -> str:
    return ", ".join("%s" for _ in values)


def _bounds_sql(column: str, bounds: TimeBounds, where: list[str], params: list[Any]) -> None:
    for op, value in ((">", bounds.gt), (">=", bounds.gte), ("<", bounds.lt), ("<=", bounds.lte)):
        if value is not None:
            where.append(f"{column} {op} %s")
            params.append(value)


async def _one(conn: Connection, sql: str, params: Params = ()) -> DictRow | None:
    cursor = await conn.execute(sql, params)
    return await cursor.fetchone()


async def _all(conn: Connection, sql: str, params: Params = ()) -> list[DictRow]:
    cursor = await conn.execute(sql, params)
    return await cursor.fetchall()


class PostgresStore:
    """`Store` on a PostgreSQL database (see `corral.session.store.Store` for the contract).

    Make one with `await PostgresStore.open(url)` on the event loop that will use it: the pool's connections
    and background tasks belong to that loop.
    """

    def __init__(self, url: str, pool: AsyncConnectionPool[Connection], *, notify: bool = True) -> None:
        self.url = url
        self._pool = pool
        self._notify = notify

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        migrate: bool = True,
        min_connections: int = 2,
        max_connections: int = 10,
        connect_timeout: float = 10.0,
        request_timeout: float = 10.0,
        notify: bool = True,
    ) -> PostgresStore:
        """Connect (after bringing the schema to the newest revision, unless `migrate` is False).

        `request_timeout` bounds how long a call waits for a pooled connection (for example while the server
        restarts) before it fails with `StorageUnavailable`.
        """
        conninfo = psycopg_conninfo(url)
        if migrate:
            try:
                await asyncio.to_thread(apply_migrations, sqlalchemy_url(url))
            except Exception as exc:
                raise StorageUnavailable(f"cannot migrate the database at {redact_url(url)}: {exc}") from exc
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            conninfo,
            connection_class=AsyncConnection[DictRow],
            kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": max(1, int(connect_timeout))},
            min_size=min_connections,
            max_size=max_connections,
            timeout=request_timeout,
            name="corral",
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=connect_timeout)
        except PoolTimeout as exc:
            await pool.close()
            raise StorageUnavailable(f"cannot connect to the database at {redact_url(url)}: {exc}") from exc
        return cls(url, pool, notify=notify)

    def describe(self) -> dict[str, Any]:
        return {"backend": "postgresql", "url": redact_url(self.url)}

    async def close(self) -> None:
        await self._pool.close()

    async def connect(self) -> Connection:
        """A dedicated autocommit connection outside the pool (for LISTEN); the caller closes it."""
        return await AsyncConnection.connect(psycopg_conninfo(self.url), autocommit=True, row_factory=dict_row)

    # --- running operations ----------------------------------------------------------------------

    async def _run(
        self,
        operation: Operation[T],
        *,
        transaction: bool,
        replayable: bool,
        pipeline: bool = False,
        notices: list[tuple[str, str]] | None = None,
    ) -> T:
        """Run `operation` on a pooled connection (in a transaction if asked), retrying once after a lost one.

        `replayable` says the operation may run again even if its first COMMIT may have succeeded: it either
        has no effect the second time or recognises its own earlier effect (`retrying`). `pipeline` sends
        statements without waiting for their results until one is read: BEGIN travels with the first
        statement and COMMIT with the last ones, so a transaction that reads once costs two round trips.
        `notices` (channel, payload), filled in by the operation, are sent once its transaction has committed.
        """
        for attempt in (1, 2):
            committing = False
            if notices is not None:
                notices.clear()
            try:
                async with self._pool.connection() as conn:
                    if not transaction:
                        result = await operation(conn, attempt > 1)
                        if notices and self._notify:
                            await self._send_notices(conn, notices)
                        return result
                    async with conn.pipeline() if pipeline else contextlib.nullcontext():
                        async with conn.transaction():
                            result = await operation(conn, attempt > 1)
                            committing = True
                        if notices and self._notify:
                            await self._send_notices(conn, notices)
                    return result
            except PoolTimeout as exc:
                raise StorageUnavailable(f"the database is unreachable: {exc}") from exc
            except psycopg.OperationalError as exc:
                if attempt > 1 or (committing and not replayable):
                    outcome = " (its outcome is unknown)" if committing else ""
                    raise StorageUnavailable(f"the database failed the request{outcome}: {exc}") from exc
                log.warning("database connection failed (%s); retrying on a fresh connection", exc)
                await self._pool.check()
        raise AssertionError("unreachable")

    @staticmethod
    async def _send_notices(conn: Connection, notices: list[tuple[str, str]]) -> None:
        """Each notice in a statement of its own, outside any transaction block (so an implicit transaction
        that commits without waiting for a WAL flush). In a pipeline, the server runs it only if everything
        before it since the last sync succeeded."""
        for channel, payload in notices:
            await conn.execute(
                "SELECT set_config('synchronous_commit', 'off', true), pg_notify(%s, %s)", (channel, payload)
            )

    async def _read(self, operation: Callable[[Connection], Awaitable[T]]) -> T:
        async def run(conn: Connection, _retrying: bool) -> T:
            return await operation(conn)

        return await self._run(run, transaction=False, replayable=True)

    async def _write(
        self,
        operation: Operation[T],
        *,
        replayable: bool,
        pipeline: bool = False,
        notices: list[tuple[str, str]] | None = None,
    ) -> T:
        return await self._run(operation, transaction=True, replayable=replayable, pipeline=pipeline, notices=notices)

    async def _execute(self, sql: str, params: tuple[Any, ...], *, replayable: bool = True) -> int:
        """One write statement; returns the number of rows it changed.

        A replayable statement runs on its own (one round trip) and simply runs again after a lost connection.
        Any other runs in an explicit transaction, so that a failure before its COMMIT is known to have changed
        nothing and can be retried.
        """

        async def run(conn: Connection, _retrying: bool) -> int:
            cursor = await conn.execute(sql, params)
            return cursor.rowcount

        return await self._run(run, transaction=not replayable, replayable=replayable)

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
        to_item: Callable[[DictRow], Any],
        bidirectional: bool = False,
    ) -> Page:
        """One page ordered by (key_columns) in `order`; cursors carry the boundary key and a direction."""
        going_back = bool(cursor and cursor.get("d") == "prev")
        scan_desc = (order == "desc") != going_back
        key = cursor.get("k") if cursor else None
        first, second = key_columns
        if key is not None:
            where = [*where, f"({first}, {second}) {'<' if scan_desc else '>'} (%s, %s)"]
            params = [*params, *key]
        direction = "DESC" if scan_desc else "ASC"
        sql = (
            f"{select_sql} WHERE {' AND '.join(where) or 'TRUE'} "
            f"ORDER BY {first} {direction}, {second} {direction} LIMIT %s"
        )
        rows = await self._read(lambda conn: _all(conn, sql, [*params, limit + 1]))
        more = len(rows) > limit
        rows = rows[:limit]
        if going_back:
            rows.reverse()
        if not rows:
            return Page(items=[])

        def key_of(row: DictRow) -> list[Any]:
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
        await self._execute(
            "INSERT INTO workspaces (id, name, created_at) VALUES (%s, %s, %s)",
            (workspace_id, name, now_rfc3339()),
            replayable=False,
        )

    async def add_api_key(self, key: ApiKeyRecord, key_hash: str) -> None:
        await self._execute(
            "INSERT INTO api_keys (id, workspace_id, key_hash, hint, created_at) VALUES (%s, %s, %s, %s, %s)",
            (key.id, key.workspace_id, key_hash, key.hint, key.created_at),
            replayable=False,
        )

    _api_key = staticmethod(rows.api_key)

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        row = await self._read(
            lambda conn: _one(conn, "SELECT * FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL", (key_hash,))
        )
        return self._api_key(row) if row else None

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        rows = await self._read(lambda conn: _all(conn, "SELECT * FROM api_keys ORDER BY created_at, id"))
        return [self._api_key(row) for row in rows]

    async def revoke_api_key(self, key_id: str) -> bool:
        changed = await self._execute(
            "UPDATE api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL",
            (now_rfc3339(), key_id),
            replayable=False,
        )
        return changed == 1

    async def live_api_key_ids(self, key_ids: list[str]) -> set[str]:
        rows = await self._read(
            lambda conn: _all(conn, "SELECT id FROM api_keys WHERE revoked_at IS NULL AND id = ANY(%s)", (key_ids,))
        )
        return {row["id"] for row in rows}

    # --- agents ----------------------------------------------------------------------------------

    _AGENT_COLUMNS = (
        "a.id, a.workspace_id, a.created_at, a.archived_at, v.version, v.body, v.created_at AS updated_at "
        "FROM agents a JOIN agent_versions v ON v.agent_id = a.id"
    )

    _agent = staticmethod(rows.agent)

    async def insert_agent(self, agent: AgentRecord) -> None:
        async def run(conn: Connection, _retrying: bool) -> None:
            await conn.execute(
                "INSERT INTO agents (id, workspace_id, latest_version, created_at) VALUES (%s, %s, %s, %s)",
                (agent.id, agent.workspace_id, agent.version, agent.created_at),
            )
            await conn.execute(
                "INSERT INTO agent_versions (agent_id, version, body, created_at) VALUES (%s, %s, %s, %s)",
                (agent.id, agent.version, _dumps(agent.body), agent.updated_at),
            )

        await self._write(run, replayable=False)

    async def add_agent_version(self, agent: AgentRecord, expected_version: int) -> bool:
        async def run(conn: Connection, _retrying: bool) -> bool:
            cursor = await conn.execute(
                "UPDATE agents SET latest_version = %s WHERE id = %s AND latest_version = %s",
                (agent.version, agent.id, expected_version),
            )
            if cursor.rowcount != 1:
                return False
            await conn.execute(
                "INSERT INTO agent_versions (agent_id, version, body, created_at) VALUES (%s, %s, %s, %s)",
                (agent.id, agent.version, _dumps(agent.body), agent.updated_at),
            )
            return True

        return await self._write(run, replayable=False)

    async def get_agent(self, workspace_id: str, agent_id: str, version: int | None = None) -> AgentRecord | None:
        if version is None:
            sql = (
                f"SELECT {self._AGENT_COLUMNS} AND v.version = a.latest_version WHERE a.workspace_id = %s AND a.id = %s"
            )
            params: tuple[Any, ...] = (workspace_id, agent_id)
        else:
            sql = f"SELECT {self._AGENT_COLUMNS} WHERE a.workspace_id = %s AND a.id = %s AND v.version = %s"
            params = (workspace_id, agent_id, version)
        row = await self._read(lambda conn: _one(conn, sql, params))
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
        where = ["a.workspace_id = %s"]
        params: list[Any] = [workspace_id]
        if not include_archived:
            where.append("a.archived_at IS NULL")
        _bounds_sql("a.created_at", created, where, params)
        select = (
            f"SELECT * FROM (SELECT {self._AGENT_COLUMNS} AND v.version = a.latest_version "
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
            to_item=self._agent,
        )

    async def list_agent_versions(self, workspace_id: str, agent_id: str, *, limit: int, cursor: Json | None) -> Page:
        select = f"SELECT * FROM (SELECT {self._AGENT_COLUMNS} WHERE a.workspace_id = %s AND a.id = %s) AS versions"
        return await self._keyset_page(
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
        await self._execute(
            "UPDATE agents SET archived_at = COALESCE(archived_at, %s) WHERE workspace_id = %s AND id = %s",
            (archived_at, workspace_id, agent_id),
        )

    # --- environments ----------------------------------------------------------------------------

    _environment = staticmethod(rows.environment)

    async def insert_environment(self, environment: EnvironmentRecord) -> bool:
        try:
            await self._execute(
                "INSERT INTO environments (id, workspace_id, name, body, created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    environment.id,
                    environment.workspace_id,
                    environment.name,
                    _dumps(environment.body),
                    environment.created_at,
                    environment.updated_at,
                ),
                replayable=False,
            )
        except psycopg.errors.UniqueViolation:
            return False
        return True

    async def update_environment(self, environment: EnvironmentRecord) -> bool:
        try:
            await self._execute(
                "UPDATE environments SET name = %s, body = %s, updated_at = %s WHERE id = %s AND workspace_id = %s",
                (
                    environment.name,
                    _dumps(environment.body),
                    environment.updated_at,
                    environment.id,
                    environment.workspace_id,
                ),
            )
        except psycopg.errors.UniqueViolation:
            return False
        return True

    async def get_environment(self, workspace_id: str, environment_id: str) -> EnvironmentRecord | None:
        row = await self._read(
            lambda conn: _one(
                conn, "SELECT * FROM environments WHERE workspace_id = %s AND id = %s", (workspace_id, environment_id)
            )
        )
        return self._environment(row) if row else None

    async def list_environments(
        self, workspace_id: str, *, include_archived: bool, limit: int, cursor: Json | None
    ) -> Page:
        where = ["workspace_id = %s"]
        if not include_archived:
            where.append("archived_at IS NULL")
        return await self._keyset_page(
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
        await self._execute(
            "DELETE FROM environments WHERE workspace_id = %s AND id = %s", (workspace_id, environment_id)
        )

    async def archive_environment(self, workspace_id: str, environment_id: str, archived_at: str) -> None:
        await self._execute(
            "UPDATE environments SET archived_at = COALESCE(archived_at, %s), updated_at = %s "
            "WHERE workspace_id = %s AND id = %s",
            (archived_at, archived_at, workspace_id, environment_id),
        )

    # --- sessions --------------------------------------------------------------------------------

    _session = staticmethod(rows.session)

    async def insert_session(self, session: SessionRecord) -> None:
        await self._execute(
            "INSERT INTO sessions (id, workspace_id, agent_id, agent_version, environment_id, body, status, "
            "usage, active_seconds, running_since, created_at, updated_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
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
            replayable=False,
        )

    async def get_session(self, workspace_id: str | None, session_id: str) -> SessionRecord | None:
        params: tuple[str, ...]
        if workspace_id is None:
            sql, params = "SELECT * FROM sessions WHERE id = %s", (session_id,)
        else:
            sql, params = "SELECT * FROM sessions WHERE workspace_id = %s AND id = %s", (workspace_id, session_id)
        row = await self._read(lambda conn: _one(conn, sql, params))
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
        where = ["workspace_id = %s"]
        params: list[Any] = [workspace_id]
        if agent_id is not None:
            where.append("agent_id = %s")
            params.append(agent_id)
            if agent_version is not None:
                where.append("agent_version = %s")
                params.append(agent_version)
        if statuses:
            where.append(f"status IN ({_in_list(statuses)})")
            params.extend(statuses)
        if not include_archived:
            where.append("archived_at IS NULL")
        _bounds_sql("created_at", created, where, params)
        return await self._keyset_page(
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
        await self._execute(
            "UPDATE sessions SET body = %s, updated_at = %s WHERE id = %s", (_dumps(body), updated_at, session_id)
        )

    async def archive_session(self, session_id: str, archived_at: str) -> None:
        await self._execute(
            "UPDATE sessions SET archived_at = COALESCE(archived_at, %s), updated_at = %s WHERE id = %s",
            (archived_at, archived_at, session_id),
        )

    async def delete_session(self, session_id: str) -> None:
        async def run(conn: Connection, _retrying: bool) -> None:
            await conn.execute("DELETE FROM events WHERE session_id = %s", (session_id,))
            await conn.execute("DELETE FROM session_leases WHERE session_id = %s", (session_id,))
            await conn.execute("DELETE FROM sessions WHERE id = %s", (session_id,))

        await self._write(run, replayable=True, pipeline=True)

    async def sessions_with_work(self, owner: str) -> list[str]:
        rows = await self._read(
            lambda conn: _all(
                conn,
                f"SELECT id FROM ({WORK_SQL}) AS work "
                "WHERE id NOT IN "
                f"(SELECT session_id FROM session_leases WHERE expires_at > {DB_NOW} AND owner != %s)",
                (owner,),
            )
        )
        return [row["id"] for row in rows]

    async def acquire_lease(self, session_id: str, owner: str, ttl_seconds: float) -> bool:
        changed = await self._execute(
            "INSERT INTO session_leases (session_id, owner, expires_at) "
            f"VALUES (%s, %s, {DB_NOW} + %s) "
            "ON CONFLICT (session_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
            f"WHERE session_leases.owner = excluded.owner OR session_leases.expires_at <= {DB_NOW}",
            (session_id, owner, float(ttl_seconds)),
        )
        return changed == 1

    async def release_lease(self, session_id: str, owner: str) -> None:
        await self._execute("DELETE FROM session_leases WHERE session_id = %s AND owner = %s", (session_id, owner))

    # --- the event log ---------------------------------------------------------------------------

    _event = staticmethod(rows.event)

    @staticmethod
    async def _allocate(conn: Connection, session_id: str, count: int) -> tuple[SessionState, int]:
        """Lock the session's row and reserve `count` positions; returns its state and the position before them."""
        row = await _one(
            conn,
            "UPDATE sessions SET last_position = last_position + %s WHERE id = %s "
            "RETURNING status, usage, active_seconds, running_since, last_position",
            (count, session_id),
        )
        if row is None:
            raise LookupError(f"session {session_id} does not exist")
        return PostgresStore._state(row), int(row["last_position"]) - count

    @staticmethod
    def _state(row: DictRow) -> SessionState:
        return SessionState(
            status=row["status"],
            usage=json.loads(row["usage"]) if row["usage"] else empty_usage(),
            active_seconds=row["active_seconds"],
            running_since=row["running_since"],
        )

    @staticmethod
    async def _save_state(conn: Connection, session_id: str, before: SessionState, after: SessionState) -> None:
        if after == before:
            return
        await conn.execute(
            "UPDATE sessions SET status = %s, usage = %s, active_seconds = %s, running_since = %s, updated_at = %s "
            "WHERE id = %s",
            (after.status, _dumps(after.usage), after.active_seconds, after.running_since, now_rfc3339(), session_id),
        )

    async def _stored_events(self, conn: Connection, session_id: str, events: list[NewEvent]) -> list[EventRecord]:
        """Those of `events` already in the session's log (how a retried write recognises its first attempt)."""
        if not events:
            return []
        ids = [event.id for event in events]
        rows = await _all(
            conn,
            f"SELECT * FROM events WHERE session_id = %s AND id IN ({_in_list(ids)}) ORDER BY position, seq",
            (session_id, *ids),
        )
        return [self._event(row) for row in rows]

    # Reserves the positions (taking the session's row lock) and inserts the events in one statement.
    _APPEND = (
        "WITH allocated AS (UPDATE sessions SET last_position = last_position + %(count)s WHERE id = %(session)s "
        "RETURNING status, usage, active_seconds, running_since, last_position), "
        "appended AS (INSERT INTO events (id, session_id, type, body, position, processed_at) "
        "SELECT e.id, %(session)s, e.type, e.body, allocated.last_position - %(count)s + e.ord, e.processed_at "
        "FROM allocated, unnest(%(ids)s::text[], %(types)s::text[], %(bodies)s::text[], %(stamps)s::text[]) "
        "WITH ORDINALITY AS e(id, type, body, processed_at, ord)) "
        "SELECT status, usage, active_seconds, running_since, last_position FROM allocated"
    )

    async def append_events(self, session_id: str, events: list[NewEvent]) -> list[EventRecord]:
        """One statement stores the events. When one of them can change the session's derived state, that
        statement and the state's update share a transaction (pipelined: two round trips); otherwise the
        statement commits on its own (one round trip)."""
        notices: list[tuple[str, str]] = []

        async def run(conn: Connection, retrying: bool) -> list[EventRecord]:
            if retrying:
                stored = await self._stored_events(conn, session_id, events)
                if stored and len(stored) == len(events):
                    return stored  # the first attempt committed before its connection was lost
            stamps = [now_rfc3339() for _ in events]
            row = await _one(
                conn,
                self._APPEND,
                {
                    "count": len(events),
                    "session": session_id,
                    "ids": [event.id for event in events],
                    "types": [event.type for event in events],
                    "bodies": [_dumps(event.body) for event in events],
                    "stamps": stamps,
                },
            )
            if row is None:
                raise LookupError(f"session {session_id} does not exist")
            before = self._state(row)
            position = int(row["last_position"]) - len(events)
            state = before
            records: list[EventRecord] = []
            for event, processed_at in zip(events, stamps, strict=True):
                position += 1
                state = reduce(state, event.type, event.body, processed_at)
                records.append(EventRecord(event.id, session_id, event.type, event.body, position, processed_at))
            await self._save_state(conn, session_id, before, state)
            if events:
                notices.append((EVENTS_CHANNEL, f"{session_id}:{position}"))
            return records

        if any(event.type in STATE_EVENT_TYPES for event in events):
            return await self._write(run, replayable=True, pipeline=True, notices=notices)
        return await self._run(run, transaction=False, replayable=True, notices=notices)

    async def enqueue_events(self, session_id: str, events: list[NewEvent]) -> list[EventRecord]:
        notices: list[tuple[str, str]] = []

        async def run(conn: Connection, retrying: bool) -> None:
            if retrying and len(await self._stored_events(conn, session_id, events)) == len(events):
                return
            if events:
                await conn.execute(
                    "INSERT INTO events (id, session_id, type, body) "
                    "SELECT id, %s, type, body FROM unnest(%s::text[], %s::text[], %s::text[]) AS e(id, type, body)",
                    (
                        session_id,
                        [event.id for event in events],
                        [event.type for event in events],
                        [_dumps(event.body) for event in events],
                    ),
                )
                interrupt = any(event.type == "user.interrupt" for event in events)
                notices.append((WAKE_CHANNEL, f"{session_id}:interrupt" if interrupt else session_id))

        # One statement, atomic on its own.
        await self._run(run, transaction=False, replayable=True, notices=notices)
        return [EventRecord(event.id, session_id, event.type, event.body, None, None) for event in events]

    async def queued_events(self, session_id: str) -> list[EventRecord]:
        rows = await self._read(
            lambda conn: _all(
                conn, "SELECT * FROM events WHERE session_id = %s AND position IS NULL ORDER BY seq", (session_id,)
            )
        )
        return [self._event(row) for row in rows]

    async def mark_processed(self, session_id: str, event_id: str) -> EventRecord:
        notices: list[tuple[str, str]] = []

        async def run(conn: Connection, retrying: bool) -> EventRecord:
            if retrying:
                row = await _one(conn, "SELECT * FROM events WHERE id = %s AND session_id = %s", (event_id, session_id))
                if row is not None and row["position"] is not None:
                    return self._event(row)  # the first attempt committed before its connection was lost
            before, position = await self._allocate(conn, session_id, 1)
            position += 1
            processed_at = now_rfc3339()
            row = await _one(
                conn,
                "UPDATE events SET position = %s, processed_at = %s "
                "WHERE id = %s AND session_id = %s AND position IS NULL RETURNING type, body",
                (position, processed_at, event_id, session_id),
            )
            if row is None:
                raise LookupError(f"event {event_id} is not queued in session {session_id}")
            body = json.loads(row["body"])
            after = reduce(before, row["type"], body, processed_at)
            await self._save_state(conn, session_id, before, after)
            notices.append((EVENTS_CHANNEL, f"{session_id}:{position}"))
            return EventRecord(event_id, session_id, row["type"], body, position, processed_at)

        return await self._write(run, replayable=True, pipeline=True, notices=notices)

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
        where = ["session_id = %s", "position IS NOT NULL"]
        params: list[Any] = [session_id]
        if types:
            where.append(f"type IN ({_in_list(types)})")
            params.extend(types)
        _bounds_sql("processed_at", processed, where, params)
        descending = order == "desc"
        if cursor is not None:
            where.append("position < %s" if descending else "position > %s")
            params.append(int(cursor["k"]))
        sql = (
            f"SELECT * FROM events WHERE {' AND '.join(where)} "
            f"ORDER BY position {'DESC' if descending else 'ASC'} LIMIT %s"
        )
        rows = await self._read(lambda conn: _all(conn, sql, [*params, limit + 1]))
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(
            items=[self._event(row) for row in rows],
            next_cursor={"k": rows[-1]["position"]} if more else None,
        )

    async def conversation_events(
        self, session_id: str, types: tuple[str, ...], after_position: int = 0
    ) -> list[EventRecord]:
        if not types:
            return []
        rows = await self._read(
            lambda conn: _all(
                conn,
                f"SELECT * FROM events WHERE session_id = %s AND position > %s "
                f"AND type IN ({_in_list(types)}) ORDER BY position",
                (session_id, after_position, *types),
            )
        )
        return [self._event(row) for row in rows]

    async def find_event(self, session_id: str, event_id: str) -> EventRecord | None:
        row = await self._read(
            lambda conn: _one(conn, "SELECT * FROM events WHERE session_id = %s AND id = %s", (session_id, event_id))
        )
        return self._event(row) if row else None

    async def last_position(self, session_id: str) -> int:
        row = await self._read(
            lambda conn: _one(conn, "SELECT last_position FROM sessions WHERE id = %s", (session_id,))
        )
        return int(row["last_position"]) if row else 0

    async def events_after(self, session_id: str, position: int, limit: int) -> list[EventRecord]:
        rows = await self._read(
            lambda conn: _all(
                conn,
                "SELECT * FROM events WHERE session_id = %s AND position > %s ORDER BY position LIMIT %s",
                (session_id, position, limit),
            )
        )
        return [self._event(row) for row in rows]

    # --- vaults and credentials ------------------------------------------------------------------

    _vault = staticmethod(rows.vault)

    _credential = staticmethod(rows.credential)

    async def insert_vault(self, vault: VaultRecord) -> None:
        await self._execute(
            "INSERT INTO vaults (id, workspace_id, body, created_at, updated_at) VALUES (%s, %s, %s, %s, %s)",
            (vault.id, vault.workspace_id, _dumps(vault.body), vault.created_at, vault.updated_at),
            replayable=False,
        )

    async def update_vault(self, vault: VaultRecord) -> None:
        await self._execute(
            "UPDATE vaults SET body = %s, updated_at = %s WHERE workspace_id = %s AND id = %s",
            (_dumps(vault.body), vault.updated_at, vault.workspace_id, vault.id),
        )

    async def get_vault(self, workspace_id: str, vault_id: str) -> VaultRecord | None:
        row = await self._read(
            lambda conn: _one(
                conn, "SELECT * FROM vaults WHERE workspace_id = %s AND id = %s", (workspace_id, vault_id)
            )
        )
        return self._vault(row) if row else None

    async def list_vaults(self, workspace_id: str, *, include_archived: bool, limit: int, cursor: Json | None) -> Page:
        where = ["workspace_id = %s"]
        if not include_archived:
            where.append("archived_at IS NULL")
        return await self._keyset_page(
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
        async def run(conn: Connection, _retrying: bool) -> None:
            await conn.execute(
                "DELETE FROM vault_credentials WHERE workspace_id = %s AND vault_id = %s", (workspace_id, vault_id)
            )
            await conn.execute("DELETE FROM vaults WHERE workspace_id = %s AND id = %s", (workspace_id, vault_id))

        await self._write(run, replayable=True)

    async def archive_vault(self, workspace_id: str, vault_id: str, archived_at: str) -> None:
        async def run(conn: Connection, _retrying: bool) -> None:
            await conn.execute(
                "UPDATE vault_credentials SET archived_at = %s, updated_at = %s, secret = NULL "
                "WHERE workspace_id = %s AND vault_id = %s AND archived_at IS NULL",
                (archived_at, archived_at, workspace_id, vault_id),
            )
            await conn.execute(
                "UPDATE vaults SET archived_at = COALESCE(archived_at, %s), updated_at = %s "
                "WHERE workspace_id = %s AND id = %s",
                (archived_at, archived_at, workspace_id, vault_id),
            )

        await self._write(run, replayable=True)

    async def insert_credential(self, credential: CredentialRecord) -> bool:
        try:
            await self._execute(
                "INSERT INTO vault_credentials (id, workspace_id, vault_id, identity, body, secret, created_at, "
                "updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
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
                replayable=False,
            )
        except psycopg.errors.UniqueViolation:
            return False
        return True

    async def update_credential(self, credential: CredentialRecord) -> bool:
        changed = await self._execute(
            "UPDATE vault_credentials SET body = %s, secret = %s, updated_at = %s "
            "WHERE workspace_id = %s AND vault_id = %s AND id = %s AND archived_at IS NULL",
            (
                _dumps(credential.body),
                credential.secret,
                credential.updated_at,
                credential.workspace_id,
                credential.vault_id,
                credential.id,
            ),
        )
        return changed == 1

    async def get_credential(self, workspace_id: str, vault_id: str, credential_id: str) -> CredentialRecord | None:
        row = await self._read(
            lambda conn: _one(
                conn,
                "SELECT * FROM vault_credentials WHERE workspace_id = %s AND vault_id = %s AND id = %s",
                (workspace_id, vault_id, credential_id),
            )
        )
        return self._credential(row) if row else None

    async def list_credentials(
        self, workspace_id: str, vault_id: str, *, include_archived: bool, limit: int, cursor: Json | None
    ) -> Page:
        where = ["workspace_id = %s", "vault_id = %s"]
        if not include_archived:
            where.append("archived_at IS NULL")
        return await self._keyset_page(
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
        await self._execute(
            "DELETE FROM vault_credentials WHERE workspace_id = %s AND vault_id = %s AND id = %s",
            (workspace_id, vault_id, credential_id),
        )

    async def archive_credential(self, workspace_id: str, vault_id: str, credential_id: str, archived_at: str) -> None:
        await self._execute(
            "UPDATE vault_credentials SET archived_at = %s, updated_at = %s, secret = NULL "
            "WHERE workspace_id = %s AND vault_id = %s AND id = %s AND archived_at IS NULL",
            (archived_at, archived_at, workspace_id, vault_id, credential_id),
        )

    async def live_credentials(self, workspace_id: str, vault_ids: list[str]) -> list[CredentialRecord]:
        if not vault_ids:
            return []
        rows = await self._read(
            lambda conn: _all(
                conn,
                "SELECT c.* FROM vault_credentials c JOIN vaults v ON v.id = c.vault_id "
                f"WHERE c.workspace_id = %s AND c.vault_id IN ({_in_list(vault_ids)}) "
                "AND c.archived_at IS NULL AND v.archived_at IS NULL ORDER BY c.created_at, c.id",
                (workspace_id, *vault_ids),
            )
        )
        return [self._credential(row) for row in rows]
