"""Opening the storage adapter a database URL names (see `corral.session.database_url` for the spellings)."""

from __future__ import annotations

from corral.session.database_url import (
    POSTGRES_SCHEMES,
    SQLITE_PREFIX,
    DatabaseUrl,
    parse_database_url,
)
from corral.session.store import Store

__all__ = ["POSTGRES_SCHEMES", "SQLITE_PREFIX", "DatabaseUrl", "open_store", "parse_database_url"]


async def open_store(url: str) -> Store:
    """Open (creating or migrating the schema as needed) the store at `url`, on the running event loop."""
    database = parse_database_url(url)
    if database.kind == "sqlite":
        from corral.session.sqlite import SqliteStore

        return SqliteStore(database.sqlite_path)
    if database.kind == "memory":
        from corral.session.memory import MemoryStore

        return MemoryStore()
    from corral.session.postgres import PostgresStore

    return await PostgresStore.open(url)
