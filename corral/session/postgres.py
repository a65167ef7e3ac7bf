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
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import AsyncConnection
from psycopg.abc import Params as DriverParams
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from corral.clock import now_rfc3339
from corral.protocol.events import EventType
from corral.session import rows
from corral.session.cluster import EVENTS_CHANNEL, WAKE_CHANNEL
from corral.session.database_url import POSTGRES_SCHEMES
from corral.session.migrations import apply_migrations
from corral.session.records import EventRecord, Json, NewEvent
from corral.session.rows import Row
from corral.session.sql_event_log import ALLOCATE_SQL, SAVE_STATE_SQL
from corral.session.sql_port import Execute, Params, dumps, pyformat
from corral.session.sql_store import SqlStore
from corral.session.sql_work import WORK_SQL
from corral.session.state import STATE_EVENT_TYPES, SessionState, empty_usage, reduce
from corral.session.store import StorageUnavailable

log = logging.getLogger("corral.session.postgres")

Connection = AsyncConnection[DictRow]
T = TypeVar("T")
# What a store operation runs on a connection; `retrying` is True on the second attempt after a lost connection.
Operation = Callable[[Connection, bool], Awaitable[T]]

# The database's clock, in seconds since the epoch (leases store expiry as such a number).
DB_NOW = "EXTRACT(EPOCH FROM clock_timestamp())::float8"

# The shared statements the append path runs on its own connection, in psycopg's placeholder style.
_ALLOCATE = pyformat(ALLOCATE_SQL)
_SAVE_STATE = pyformat(SAVE_STATE_SQL)
_SET_BODY = "UPDATE sessions SET body = %(body)s, updated_at = %(at)s WHERE id = %(id)s"


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


async def _one(conn: Connection, sql: str, params: DriverParams = ()) -> DictRow | None:
    cursor = await conn.execute(sql, params)
    return await cursor.fetchone()


async def _all(conn: Connection, sql: str, params: DriverParams = ()) -> list[DictRow]:
    cursor = await conn.execute(sql, params)
    return await cursor.fetchall()


class PostgresStore(SqlStore):
    """`Store` on a PostgreSQL database (see `corral.session.store.Store` for the contract; `SqlStore` for the SQL
    shared with SQLite).

    Make one with `await PostgresStore.open(url)` on the event loop that will use it: the pool's connections
    and background tasks belong to that loop.
    """

    _unique_violation = psycopg.errors.UniqueViolation

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

    # --- the database port (see `SqlStore`): statements arrive with `?` placeholders ---------------------

    async def _one(self, sql: str, params: Params = ()) -> Row | None:
        return await self._read(lambda conn: _one(conn, pyformat(sql), params))

    async def _all(self, sql: str, params: Params = ()) -> list[Row]:
        found = await self._read(lambda conn: _all(conn, pyformat(sql), params))
        return cast(list[Row], found)  # dict rows are rows; only list's invariance needs telling

    async def _execute(self, sql: str, params: Params, *, replayable: bool = True) -> int:
        """One write statement; returns the number of rows it changed.

        A replayable statement runs on its own (one round trip) and simply runs again after a lost connection.
        Any other runs in an explicit transaction, so that a failure before its COMMIT is known to have changed
        nothing and can be retried.
        """

        async def run(conn: Connection, _retrying: bool) -> int:
            cursor = await conn.execute(pyformat(sql), params)
            return cursor.rowcount

        return await self._run(run, transaction=not replayable, replayable=replayable)

    async def _transaction(
        self, work: Callable[[Execute], Awaitable[T]], *, replayable: bool, pipelined: bool = False
    ) -> T:
        async def run(conn: Connection, _retrying: bool) -> T:
            async def execute(sql: str, params: Params) -> int:
                cursor = await conn.execute(pyformat(sql), params)
                return cursor.rowcount

            return await work(execute)

        return await self._write(run, replayable=replayable, pipeline=pipelined)

    # --- API keys, leases: PostgreSQL's own spellings -----------------------------------------------

    async def live_api_key_ids(self, key_ids: list[str]) -> set[str]:
        # The ids travel as one array parameter: no limit on how many keys a batch holds.
        found = await self._all("SELECT id FROM api_keys WHERE revoked_at IS NULL AND id = ANY(?)", (key_ids,))
        return {row["id"] for row in found}

    async def sessions_with_work(self, owner: str) -> list[str]:
        found = await self._all(
            f"SELECT id FROM ({WORK_SQL}) AS work WHERE id NOT IN "
            f"(SELECT session_id FROM session_leases WHERE expires_at > {DB_NOW} AND owner != ?)",
            (owner,),
        )
        return [row["id"] for row in found]

    async def acquire_lease(self, session_id: str, owner: str, ttl_seconds: float) -> bool:
        changed = await self._execute(
            f"INSERT INTO session_leases (session_id, owner, expires_at) VALUES (?, ?, {DB_NOW} + ?) "
            "ON CONFLICT (session_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
            f"WHERE session_leases.owner = excluded.owner OR session_leases.expires_at <= {DB_NOW}",
            (session_id, owner, float(ttl_seconds)),
        )
        return changed == 1

    # --- the event log ---------------------------------------------------------------------------

    @staticmethod
    async def _allocate(conn: Connection, session_id: str, count: int) -> tuple[SessionState, int]:
        """Lock the session's row and reserve `count` positions; returns its state and the position before them."""
        row = await _one(conn, _ALLOCATE, (count, session_id))
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
            _SAVE_STATE,
            (after.status, dumps(after.usage), after.active_seconds, after.running_since, now_rfc3339(), session_id),
        )

    async def _stored_events(self, conn: Connection, session_id: str, events: list[NewEvent]) -> list[EventRecord]:
        """Those of `events` already in the session's log (how a retried write recognises its first attempt)."""
        if not events:
            return []
        found = await _all(
            conn,
            "SELECT * FROM events WHERE session_id = %s AND id = ANY(%s) ORDER BY position, seq",
            (session_id, [event.id for event in events]),
        )
        return [rows.event(row) for row in found]

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

    async def append_events(
        self, session_id: str, events: list[NewEvent], *, session_body: Json | None = None
    ) -> list[EventRecord]:
        """One statement stores the events. When one of them can change the session's derived state, or a new
        `session_body` comes with them, that statement and the session's update share a transaction (pipelined:
        two round trips); otherwise the statement commits on its own (one round trip)."""
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
                    "bodies": [dumps(event.body) for event in events],
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
            if session_body is not None and records:
                await conn.execute(
                    _SET_BODY, {"body": dumps(session_body), "at": records[-1].processed_at, "id": session_id}
                )
            if events:
                notices.append((EVENTS_CHANNEL, f"{session_id}:{position}"))
            return records

        if session_body is not None or any(event.type in STATE_EVENT_TYPES for event in events):
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
                        [dumps(event.body) for event in events],
                    ),
                )
                interrupt = any(event.type == EventType.USER_INTERRUPT for event in events)
                notices.append((WAKE_CHANNEL, f"{session_id}:interrupt" if interrupt else session_id))

        # One statement, atomic on its own.
        await self._run(run, transaction=False, replayable=True, notices=notices)
        return [EventRecord(event.id, session_id, event.type, event.body, None, None) for event in events]

    async def mark_processed(self, session_id: str, event_id: str) -> EventRecord:
        notices: list[tuple[str, str]] = []

        async def run(conn: Connection, retrying: bool) -> EventRecord:
            if retrying:
                row = await _one(conn, "SELECT * FROM events WHERE id = %s AND session_id = %s", (event_id, session_id))
                if row is not None and row["position"] is not None:
                    return rows.event(row)  # the first attempt committed before its connection was lost
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
