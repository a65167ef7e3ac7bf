"""A fresh store per test, on each adapter in `ADAPTERS`: SQLite in a temporary file, PostgreSQL in this run's
database, and the in-memory reference adapter.

Tests ask for `store` (open, closed after the test) or `open_store` (opens more stores on the same database,
to check what survives a restart or another node sees). Both run once per adapter (the `store_adapter`
parameter): `--store` chooses among the database adapters (see tests/conftest.py); the in-memory one always
runs. A new adapter passes the contract suites (test_store_contract.py, test_vault_store.py) once it has a
factory in `ADAPTERS`.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import corral.session.memory as memory_module
import corral.session.postgres as postgres_module
import corral.session.sqlite as sqlite_module
from corral.clock import rfc3339
from corral.session.memory import MemoryDatabase, MemoryStore
from corral.session.migrations import apply_migrations
from corral.session.postgres import PostgresStore, sqlalchemy_url
from corral.session.sqlite import SqliteStore
from corral.session.store import Store
from tests.support.postgres import PostgresServer, truncate_all_tables

StoreOpener = Callable[[], Awaitable[Store]]
# Given the test's request (for fixtures such as a database server) and its temporary directory, an opener of
# stores on one new, empty database.
AdapterFactory = Callable[[pytest.FixtureRequest, Path], StoreOpener]
BASE = datetime(2026, 1, 1, tzinfo=UTC)


def ts(seconds: float) -> str:
    return rfc3339(BASE + timedelta(seconds=seconds))


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stores' clock ticks one second per reading, so timestamps are distinct and ordered."""
    ticks = itertools.count(1_000)

    def tick() -> str:
        return ts(next(ticks))

    for adapter_module in (sqlite_module, postgres_module, memory_module):
        monkeypatch.setattr(adapter_module, "now_rfc3339", tick)


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


def sqlite_adapter(request: pytest.FixtureRequest, tmp_path: Path) -> StoreOpener:
    path = tmp_path / "corral.db"
    shutil.copy(request.getfixturevalue("sqlite_template"), path)

    async def open_sqlite() -> Store:
        return SqliteStore(path)

    return open_sqlite


def postgres_adapter(request: pytest.FixtureRequest, tmp_path: Path) -> StoreOpener:
    url: str = request.getfixturevalue("postgres_database")
    truncate_all_tables(url)

    async def open_postgres() -> Store:
        return await PostgresStore.open(url, migrate=False, min_connections=1, max_connections=4)

    return open_postgres


def memory_adapter(request: pytest.FixtureRequest, tmp_path: Path) -> StoreOpener:
    database = MemoryDatabase()  # shared by every store the test opens, as a database file or server would be

    async def open_memory() -> Store:
        return MemoryStore(database)

    return open_memory


ADAPTERS: dict[str, AdapterFactory] = {
    "sqlite": sqlite_adapter,
    "postgres": postgres_adapter,
    "memory": memory_adapter,
}
# Adapters that need no database: they run whichever database adapters `--store` chose.
ALWAYS_RUN = frozenset({"memory"})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests (and fixtures) that take `store_adapter` run once per adapter, grouped by adapter."""
    if "store_adapter" in metafunc.fixturenames:
        chosen = str(metafunc.config.getoption("--store"))
        adapters = [name for name in ADAPTERS if chosen in ("all", name) or name in ALWAYS_RUN]
        metafunc.parametrize("store_adapter", adapters, scope="session")


@pytest.fixture
def open_store(store_adapter: str, request: pytest.FixtureRequest, tmp_path: Path) -> StoreOpener:
    """Opens a store on this test's (initially empty) database; the caller closes it."""
    return ADAPTERS[store_adapter](request, tmp_path)


@pytest.fixture
async def store(open_store: StoreOpener) -> AsyncIterator[Store]:
    opened = await open_store()
    yield opened
    await opened.close()
