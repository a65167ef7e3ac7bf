"""A fresh store per test, on each adapter: SQLite in a temporary file, PostgreSQL in this run's database.

Tests ask for `store` (open, closed after the test) or `open_store` (opens more stores on the same database,
to check what survives a restart or another node sees). Both run once per adapter `--store` selects (the
`store_kind` parameter, see tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import corral.session.postgres as postgres_module
import corral.session.sqlite as sqlite_module
from corral.clock import rfc3339
from corral.session.migrations import apply_migrations
from corral.session.postgres import PostgresStore, sqlalchemy_url
from corral.session.sqlite import SqliteStore
from corral.session.store import Store
from tests.support.postgres import PostgresServer, truncate_all_tables

StoreOpener = Callable[[], Awaitable[Store]]
BASE = datetime(2026, 1, 1, tzinfo=UTC)


def ts(seconds: float) -> str:
    return rfc3339(BASE + timedelta(seconds=seconds))


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stores' clock ticks one second per reading, so timestamps are distinct and ordered."""
    ticks = itertools.count(1_000)

    def tick() -> str:
        return ts(next(ticks))

    monkeypatch.setattr(sqlite_module, "now_rfc3339", tick)
    monkeypatch.setattr(postgres_module, "now_rfc3339", tick)


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, already-WAL database file: copying it is far cheaper than building one per test."""
    path = tmp_path_factory.mktemp("template") / "corral.db"
    asyncio.run(SqliteStore(path).close())
    return path


@pytest.fixture(scope="session")
def postgres_database(postgres_server: PostgresServer) -> str:
    """This run's store-test database, migrated once; each test starts from emptied tables."""
    url = postgres_server.create_database()
    apply_migrations(sqlalchemy_url(url))
    return url


@pytest.fixture
def open_store(store_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> StoreOpener:
    """Opens a store on this test's (initially empty) database; the caller closes it."""
    if store_kind == "sqlite":
        path = tmp_path / "corral.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)

        async def open_sqlite() -> Store:
            return SqliteStore(path)

        return open_sqlite
    url: str = request.getfixturevalue("postgres_database")
    truncate_all_tables(url)

    async def open_postgres() -> Store:
        return await PostgresStore.open(url, migrate=False, min_connections=1, max_connections=4)

    return open_postgres


@pytest.fixture
async def store(open_store: StoreOpener) -> AsyncIterator[Store]:
    opened = await open_store()
    yield opened
    await opened.close()
