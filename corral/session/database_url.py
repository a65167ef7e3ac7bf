"""Database URLs: which adapter serves `sqlite:///PATH`, `postgresql://USER@HOST:PORT/DB` or `memory://`.

Kept apart from `open_store` (which imports the adapters) so that an adapter can read the accepted spellings
without importing the module that imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

SQLITE_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
# The in-memory reference adapter: for tests (nothing survives the process), so error messages do not offer it.
MEMORY_URL = "memory://"


@dataclass(frozen=True)
class DatabaseUrl:
    kind: Literal["sqlite", "postgresql", "memory"]
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
    if url == MEMORY_URL:
        return DatabaseUrl("memory", url)
    raise ValueError(
        "the database URL must be sqlite:///PATH (sqlite:////abs/path for an absolute path) or "
        f"postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE, not {url.split(':', 1)[0]}:..."
    )
