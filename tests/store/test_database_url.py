"""A database URL names its adapter: `sqlite:///PATH`, `postgresql://...` (and aliases), or `memory://` for tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.session.database_url import parse_database_url
from corral.session.memory import MemoryStore
from corral.session.open_store import open_store


def test_an_sqlite_url_names_its_database_file() -> None:
    database = parse_database_url("sqlite:////var/lib/corral/corral.db")

    assert database.kind == "sqlite"
    assert database.sqlite_path == Path("/var/lib/corral/corral.db")


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_every_postgresql_spelling_names_the_postgresql_adapter(scheme: str) -> None:
    assert parse_database_url(f"{scheme}://corral@127.0.0.1:5432/corral").kind == "postgresql"


def test_an_unknown_url_is_refused_with_the_accepted_forms() -> None:
    with pytest.raises(ValueError, match=r"must be sqlite:///PATH .* or postgresql://"):
        parse_database_url("mysql://corral@localhost/corral")


async def test_a_memory_url_opens_an_empty_in_memory_store() -> None:
    store = await open_store("memory://")
    try:
        assert isinstance(store, MemoryStore)
        assert await store.list_api_keys() == []
    finally:
        await store.close()
