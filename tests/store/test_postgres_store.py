"""What only the PostgreSQL store has: surviving lost connections, notices to other nodes, shared migrations."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from corral.session.cluster import EVENTS_CHANNEL, WAKE_CHANNEL
from corral.session.postgres import PostgresStore, psycopg_conninfo, redact_url, sqlalchemy_url
from corral.session.records import EnvironmentRecord, NewEvent, SessionRecord, TimeBounds
from corral.session.state import empty_usage
from corral.session.store import StorageUnavailable
from tests.support.postgres import PostgresServer, truncate_all_tables, with_database

NOTICE_WAIT_S = 5.0
NOW = "2026-01-01T00:00:00.000000Z"


@pytest.fixture
def database(postgres_database: str) -> str:
    truncate_all_tables(postgres_database)
    return postgres_database


@pytest.fixture
async def store(database: str) -> AsyncIterator[PostgresStore]:
    opened = await PostgresStore.open(database, migrate=False, min_connections=2, max_connections=4)
    yield opened
    await opened.close()


@pytest.fixture
async def session(store: PostgresStore) -> str:
    await store.insert_session(
        SessionRecord("sess_1", "ws", "agent_1", 1, "env_1", {}, "idle", empty_usage(), 0.0, None, NOW, NOW)
    )
    return "sess_1"


def note(event_id: str) -> NewEvent:
    return NewEvent(id=event_id, type="agent.message", body={"content": [{"type": "text", "text": event_id}]})


async def logged_ids(store: PostgresStore, session_id: str) -> list[str]:
    page = await store.list_events(session_id, types=[], processed=TimeBounds(), order="asc", limit=100, cursor=None)
    return [record.id for record in page.items]


def terminate_connections(database_url: str) -> int:
    """Kill every server process serving `database_url`, as a server restart would."""
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(with_database(database_url, "postgres"), autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid != pg_backend_pid()",
            (name,),
        ).fetchall()
    return len(rows)


WRITES = ("WITH", "INSERT", "UPDATE", "DELETE")


@pytest.fixture
def commit_replies_lost(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The next N writes commit, then their connection fails before the reply arrives (N = the list's length).

    A write is a transaction block, or a write statement that commits on its own (outside any block).
    """
    pending: list[int] = []
    transaction, execute = psycopg.AsyncConnection.transaction, psycopg.AsyncConnection.execute

    def reply_lost() -> None:
        if pending:
            pending.pop()
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    @contextlib.asynccontextmanager
    async def lossy_transaction(self: psycopg.AsyncConnection[Any], *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async with transaction(self, *args, **kwargs) as tx:
            yield tx
        reply_lost()

    async def lossy_execute(self: psycopg.AsyncConnection[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        cursor = await execute(self, query, *args, **kwargs)
        committed = self.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        if committed and str(query).lstrip().upper().startswith(WRITES):
            reply_lost()
        return cursor

    monkeypatch.setattr(psycopg.AsyncConnection, "transaction", lossy_transaction)
    monkeypatch.setattr(psycopg.AsyncConnection, "execute", lossy_execute)
    yield pending


# --- lost connections --------------------------------------------------------------------------------


async def test_reads_and_appends_carry_on_after_the_servers_connections_are_killed(
    store: PostgresStore, session: str, database: str
) -> None:
    await store.append_events(session, [note("e1")])
    assert terminate_connections(database) >= 1

    assert (await store.get_session(None, session)) is not None
    [appended] = await store.append_events(session, [note("e2")])

    assert appended.position == 2
    assert await logged_ids(store, session) == ["e1", "e2"]


@pytest.fixture
def private_server() -> Iterator[PostgresServer]:
    server = PostgresServer.start_private()
    yield server
    server.close()


@pytest.mark.slow
async def test_the_store_carries_on_across_a_server_crash_and_restart(private_server: PostgresServer) -> None:
    store = await PostgresStore.open(private_server.create_database(), min_connections=2)
    try:
        await store.insert_session(
            SessionRecord("sess_1", "ws", "agent_1", 1, "env_1", {}, "idle", empty_usage(), 0.0, None, NOW, NOW)
        )
        await store.append_events("sess_1", [note("e1")])

        private_server.restart("immediate")

        [after] = await store.append_events("sess_1", [note("e2")])
        assert after.position == 2
        assert await logged_ids(store, "sess_1") == ["e1", "e2"]
    finally:
        await store.close()


async def test_an_append_whose_commit_reply_was_lost_is_stored_once(
    store: PostgresStore, session: str, commit_replies_lost: list[int]
) -> None:
    commit_replies_lost.append(1)

    records = await store.append_events(session, [note("e1"), note("e2")])

    assert commit_replies_lost == []
    assert [(record.id, record.position) for record in records] == [("e1", 1), ("e2", 2)]
    assert await logged_ids(store, session) == ["e1", "e2"]
    assert await store.last_position(session) == 2


async def test_a_state_changing_append_whose_commit_reply_was_lost_is_stored_once(
    store: PostgresStore, session: str, commit_replies_lost: list[int]
) -> None:
    commit_replies_lost.append(1)

    [running] = await store.append_events(session, [NewEvent("s1", "session.status_running")])

    assert commit_replies_lost == []
    assert running.position == 1
    assert await logged_ids(store, session) == ["s1"]
    stored = await store.get_session(None, session)
    assert stored is not None and stored.status == "running"


async def test_a_queued_event_whose_commit_reply_was_lost_is_queued_once(
    store: PostgresStore, session: str, commit_replies_lost: list[int]
) -> None:
    commit_replies_lost.append(1)

    await store.enqueue_events(session, [note("q1")])

    assert commit_replies_lost == []
    assert [record.id for record in await store.queued_events(session)] == ["q1"]


async def test_mark_processed_whose_commit_reply_was_lost_returns_the_processed_event(
    store: PostgresStore, session: str, commit_replies_lost: list[int]
) -> None:
    await store.enqueue_events(session, [note("q1")])
    commit_replies_lost.append(1)

    processed = await store.mark_processed(session, "q1")

    assert commit_replies_lost == []
    assert (processed.id, processed.position) == ("q1", 1)
    assert await store.queued_events(session) == []
    assert await store.last_position(session) == 1


async def test_a_create_whose_commit_reply_was_lost_fails_as_unavailable_saying_the_outcome_is_unknown(
    store: PostgresStore, commit_replies_lost: list[int]
) -> None:
    commit_replies_lost.append(1)
    environment = EnvironmentRecord("env_1", "ws", "dev", {"name": "dev"}, NOW, NOW)

    with pytest.raises(StorageUnavailable, match="outcome is unknown"):
        await store.insert_environment(environment)

    assert await store.get_environment("ws", "env_1") == environment


async def test_a_server_that_cannot_be_reached_fails_as_unavailable() -> None:
    with pytest.raises(StorageUnavailable, match="cannot"):
        await PostgresStore.open("postgresql://postgres@127.0.0.1:1/nowhere", connect_timeout=2)


# --- notices to other nodes --------------------------------------------------------------------------


@pytest.fixture
async def notices(store: PostgresStore) -> AsyncIterator[asyncio.Queue[tuple[str, str]]]:
    """Notices on both channels, heard on a connection of their own."""
    received: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    conn = await store.connect()
    await conn.execute(f"LISTEN {EVENTS_CHANNEL}")
    await conn.execute(f"LISTEN {WAKE_CHANNEL}")

    async def listen() -> None:
        async for notice in conn.notifies():
            received.put_nowait((notice.channel, notice.payload))

    task = asyncio.create_task(listen())
    yield received
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await conn.close()


async def next_notice(notices: asyncio.Queue[tuple[str, str]]) -> tuple[str, str]:
    return await asyncio.wait_for(notices.get(), NOTICE_WAIT_S)


async def test_an_append_notifies_the_session_and_its_new_last_position(
    store: PostgresStore, session: str, notices: asyncio.Queue[tuple[str, str]]
) -> None:
    await store.append_events(session, [note("e1"), note("e2")])
    await store.enqueue_events(session, [note("q1")])
    await store.mark_processed(session, "q1")

    assert await next_notice(notices) == (EVENTS_CHANNEL, f"{session}:2")
    assert await next_notice(notices) == (WAKE_CHANNEL, session)
    assert await next_notice(notices) == (EVENTS_CHANNEL, f"{session}:3")


async def test_queueing_an_interrupt_says_so_in_the_wake_notice(
    store: PostgresStore, session: str, notices: asyncio.Queue[tuple[str, str]]
) -> None:
    await store.enqueue_events(session, [NewEvent("i1", "user.interrupt")])

    assert await next_notice(notices) == (WAKE_CHANNEL, f"{session}:interrupt")


async def test_a_write_that_rolls_back_notifies_nothing(
    store: PostgresStore, session: str, notices: asyncio.Queue[tuple[str, str]]
) -> None:
    with pytest.raises(LookupError):
        await store.mark_processed(session, "not-queued")
    await store.append_events(session, [note("e1")])

    assert await next_notice(notices) == (EVENTS_CHANNEL, f"{session}:1")


# --- schema ------------------------------------------------------------------------------------------


def test_nodes_starting_at_once_migrate_a_new_database_once(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    migrate = f"from corral.session.migrations import apply_migrations; apply_migrations({sqlalchemy_url(url)!r})"

    nodes = [subprocess.Popen([sys.executable, "-c", migrate], stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [(node.wait(timeout=60), node.stderr.read() if node.stderr else "") for node in nodes]

    assert results == [(0, "")] * 3
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)


# --- URLs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["postgresql://u:pw@db:5433/corral", "postgres://u:pw@db:5433/corral", "postgresql+psycopg://u:pw@db:5433/corral"],
)
def test_every_accepted_spelling_names_the_same_database_for_psycopg_and_alembic(url: str) -> None:
    assert psycopg_conninfo(url) == "postgresql://u:pw@db:5433/corral"
    assert sqlalchemy_url(url) == "postgresql+psycopg://u:pw@db:5433/corral"


def test_redacted_urls_keep_everything_but_the_password() -> None:
    assert redact_url("postgresql://u:secret@db:5433/corral?sslmode=require") == (
        "postgresql://u:***@db:5433/corral?sslmode=require"
    )
    assert redact_url("postgresql://u@db/corral") == "postgresql://u@db/corral"
