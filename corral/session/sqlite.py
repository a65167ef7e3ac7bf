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
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from corral.clock import now_rfc3339
from corral.session.migrations import apply_migrations
from corral.session.records import EventRecord, Json, NewEvent
from corral.session.rows import Row
from corral.session.sql_event_log import ALLOCATE_SQL, SAVE_STATE_SQL
from corral.session.sql_port import Execute, Params, dumps
from corral.session.sql_store import SqlStore
from corral.session.sql_work import WORK_SQL
from corral.session.state import STATE_EVENT_TYPES, SessionState, empty_usage, reduce
from corral.session.store import StorageUnavailable

log = logging.getLogger("corral.session.sqlite")

# Writes between two checkpoints (each adds a few pages to the WAL; SQLite's own default is every 1000 pages).
CHECKPOINT_EVERY_WRITES = 200
CHECKPOINT_IDLE_SECONDS = 1.0


T = TypeVar("T")


class SqliteStore(SqlStore):
    """`Store` on a local SQLite file (see `corral.session.store.Store` for the contract; `SqlStore` for the SQL
    shared with PostgreSQL)."""

    _unique_violation = sqlite3.IntegrityError

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

    # --- the database port (see `SqlStore`) -------------------------------------------------------

    async def _one(self, sql: str, params: Params = ()) -> Row | None:
        row: sqlite3.Row | None = self._db.execute(sql, params).fetchone()
        return row

    async def _all(self, sql: str, params: Params = ()) -> list[Row]:
        return self._db.execute(sql, params).fetchall()

    async def _execute(self, sql: str, params: Params, *, replayable: bool = True) -> int:
        with self._write() as db:
            return db.execute(sql, params).rowcount

    async def _transaction(
        self, work: Callable[[Execute], Awaitable[T]], *, replayable: bool, pipelined: bool = False
    ) -> T:
        async def execute(sql: str, params: Params) -> int:
            return self._db.execute(sql, params).rowcount

        # `execute` never suspends, so `work` runs to its end without yielding to the event loop: no other task
        # can issue a statement on this one connection inside the transaction.
        with self._write():
            return await work(execute)

    # --- API keys, leases: SQLite's own spellings ---------------------------------------------------

    async def live_api_key_ids(self, key_ids: list[str]) -> set[str]:
        # One JSON array parameter, not one `?` per id: no limit on how many keys a batch holds.
        rows = self._db.execute(
            "SELECT id FROM api_keys WHERE revoked_at IS NULL AND id IN (SELECT value FROM json_each(?))",
            (json.dumps(key_ids),),
        ).fetchall()
        return {row["id"] for row in rows}

    async def sessions_with_work(self, owner: str) -> list[str]:
        rows = self._db.execute(
            f"SELECT id FROM ({WORK_SQL}) AS work "
            "WHERE id NOT IN (SELECT session_id FROM session_leases WHERE expires_at > ? AND owner != ?)",
            (time.time(), owner),
        ).fetchall()
        return [row["id"] for row in rows]

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

    # --- the event log ---------------------------------------------------------------------------

    def _load_state(self, db: sqlite3.Connection, session_id: str, count: int) -> tuple[SessionState, int]:
        """Reserve `count` positions; returns the session's state and the position before them."""
        row = db.execute(ALLOCATE_SQL, (count, session_id)).fetchone()
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
            SAVE_STATE_SQL,
            (after.status, dumps(after.usage), after.active_seconds, after.running_since, now_rfc3339(), session_id),
        )

    async def append_events(
        self, session_id: str, events: list[NewEvent], *, session_body: Json | None = None
    ) -> list[EventRecord]:
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
                    (event.id, session_id, event.type, dumps(event.body), position, processed_at),
                )
                if state is not None:
                    state = reduce(state, event.type, event.body, processed_at)
                records.append(EventRecord(event.id, session_id, event.type, event.body, position, processed_at))
            if before is not None and state is not None:
                self._save_state(db, session_id, before, state)
            if session_body is not None and records:
                db.execute(
                    "UPDATE sessions SET body = ?, updated_at = ? WHERE id = ?",
                    (dumps(session_body), records[-1].processed_at, session_id),
                )
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
                [(event.id, session_id, event.type, dumps(event.body)) for event in events],
            )
        return [EventRecord(event.id, session_id, event.type, event.body, None, None) for event in events]

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
