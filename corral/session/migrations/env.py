"""Alembic environment: runs migrations online against the URL set by `alembic_config`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

# Nodes sharing one PostgreSQL may start at once: the first to take this lock migrates, the others wait and
# then find the schema current. (PostgreSQL runs the whole upgrade in this one transaction.)
MIGRATION_LOCK = 7_262_300_001

url = context.config.get_main_option("sqlalchemy.url")
assert url, "sqlalchemy.url must be set"
engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()
engine.dispose()
