"""Choosing the storage adapter from a database URL: `sqlite:///PATH` or `postgresql://USER@HOST:PORT/DB`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from corral.session.store import Store

SQLITE_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


@dataclass(frozen=True)
class DatabaseUrl:
    kind: Literal["sqlite", "postgresql"]
    url: str

    @property
    def sqlite_path(self) -> Path:
        """The database file of an SQLite URL (SQLAlchemy's form: `sqlite:////abs/path`, `sqlite:///rel/path`)."""
        return Path(self.url.removeprefix(SQLITE_PREFIX)).expanduser()


def parse_database_url(url: str) -> DatabaseUrl:
    """Which adapter serves `url`; ValueError for anything else."""
    if url.startswith(SQLITE_PREFIX) and len(url) > len(SQLITE_PREFIX):
        return DatabaseUrl("sqlite", url)
    if urlsplit(url).scheme in POSTGRES_SCHEMES:
        return DatabaseUrl("postgresql", url)
    raise ValueError(
        "the database URL must be sqlite:///PATH (sqlite:////abs/path for an absolute path) or "
        f"postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE, not {url.split(':', 1)[0]}:..."
    )


async def open_store(url: str) -> Store:
    """Open (creating or migrating the schema as needed) the store at `url`, on the running event loop."""
    database = parse_database_url(url)
    if database.kind == "sqlite":
        from corral.session.sqlite import SqliteStore

        return SqliteStore(database.sqlite_path)
    from corral.session.postgres import PostgresStore

    return await PostgresStore.open(url)
