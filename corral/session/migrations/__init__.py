"""Schema migrations (Alembic). `apply_migrations(url)` brings a database to the newest schema."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

_HERE = Path(__file__).parent


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    config.set_main_option("sqlalchemy.url", database_url)
    return config


def apply_migrations(database_url: str) -> None:
    """Upgrade the database at `database_url` (an SQLAlchemy URL) to the head revision."""
    command.upgrade(alembic_config(database_url), "head")
