"""Suite-wide options and fixtures: which storage adapters the store and conformance suites run on.

`--store=all` (the default, or CORRAL_TEST_STORES) runs them on SQLite and on PostgreSQL; `--store=sqlite` or
`--store=postgres` runs one. The PostgreSQL server comes from tests/support/postgres.py: when none can be
found or started, every PostgreSQL test fails with the reason; none is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.postgres import PostgresServer

STORE_KINDS = ("sqlite", "postgres")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store",
        choices=("all", *STORE_KINDS),
        default=os.environ.get("CORRAL_TEST_STORES", "all"),
        help="storage adapter(s) for the store and conformance suites (default: all; env CORRAL_TEST_STORES)",
    )


def store_kinds(config: pytest.Config) -> list[str]:
    chosen = str(config.getoption("--store"))
    return list(STORE_KINDS) if chosen == "all" else [chosen]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests (and fixtures) that take `store_kind` run once per selected adapter, grouped by adapter."""
    if "store_kind" in metafunc.fixturenames:
        metafunc.parametrize("store_kind", store_kinds(metafunc.config), scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`--store=sqlite` also leaves out the tests written for PostgreSQL alone."""
    if "postgres" in store_kinds(config):
        return
    kept = [item for item in items if "postgres_server" not in getattr(item, "fixturenames", ())]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server this run may create databases on (they are dropped at the end)."""
    server = PostgresServer.find_or_start()
    server.drop_stale_databases()
    yield server
    server.close()
