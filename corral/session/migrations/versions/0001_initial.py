"""Initial schema: workspaces, API keys, agents (versioned), environments, sessions and the event log.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Text that compares byte-wise everywhere: SQLite's default (BINARY); on PostgreSQL the "C" collation, so ids and
# timestamps sort (and keyset pagination pages) the same whatever locale the database was created with.
Text = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
# The log's insertion counter: SQLite's rowid (INTEGER PRIMARY KEY), a 64-bit identity elsewhere.
Counter = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "workspaces",
        sa.Column("id", Text, primary_key=True),
        sa.Column("name", Text, nullable=False),
        sa.Column("created_at", Text, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", Text, primary_key=True),
        sa.Column("workspace_id", Text, sa.ForeignKey("workspaces.id"), nullable=False),
        sa.Column("key_hash", Text, nullable=False, unique=True),
        sa.Column("hint", Text, nullable=False),
        sa.Column("created_at", Text, nullable=False),
        sa.Column("revoked_at", Text),
    )
    op.create_table(
        "agents",
        sa.Column("id", Text, primary_key=True),
        sa.Column("workspace_id", Text, nullable=False),
        sa.Column("latest_version", sa.Integer, nullable=False),
        sa.Column("created_at", Text, nullable=False),
        sa.Column("archived_at", Text),
    )
    op.create_index("agents_by_workspace", "agents", ["workspace_id", "created_at", "id"])
    op.create_table(
        "agent_versions",
        sa.Column("agent_id", Text, sa.ForeignKey("agents.id"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("body", Text, nullable=False),
        sa.Column("created_at", Text, nullable=False),
    )
    op.create_table(
        "environments",
        sa.Column("id", Text, primary_key=True),
        sa.Column("workspace_id", Text, nullable=False),
        sa.Column("name", Text, nullable=False),
        sa.Column("body", Text, nullable=False),
        sa.Column("created_at", Text, nullable=False),
        sa.Column("updated_at", Text, nullable=False),
        sa.Column("archived_at", Text),
        sa.UniqueConstraint("workspace_id", "name", name="environment_names_unique"),
    )
    op.create_index("environments_by_workspace", "environments", ["workspace_id", "created_at", "id"])
    op.create_table(
        "sessions",
        sa.Column("id", Text, primary_key=True),
        sa.Column("workspace_id", Text, nullable=False),
        sa.Column("agent_id", Text, nullable=False),
        sa.Column("agent_version", sa.Integer, nullable=False),
        sa.Column("environment_id", Text, nullable=False),
        sa.Column("body", Text, nullable=False),
        sa.Column("status", Text, nullable=False),
        sa.Column("usage", Text, nullable=False),
        sa.Column("active_seconds", sa.Float, nullable=False),
        sa.Column("running_since", Text),
        sa.Column("last_position", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", Text, nullable=False),
        sa.Column("updated_at", Text, nullable=False),
        sa.Column("archived_at", Text),
    )
    op.create_index("sessions_by_workspace", "sessions", ["workspace_id", "created_at", "id"])
    op.create_table(
        "events",
        sa.Column("seq", Counter, primary_key=True, autoincrement=True),
        sa.Column("id", Text, nullable=False, unique=True),
        sa.Column("session_id", Text, nullable=False),
        sa.Column("type", Text, nullable=False),
        sa.Column("body", Text, nullable=False),
        sa.Column("position", sa.Integer),
        sa.Column("processed_at", Text),
    )
    op.create_index("events_in_order", "events", ["session_id", "position"], unique=True)
    op.create_index(
        "events_queued",
        "events",
        ["session_id", "seq"],
        sqlite_where=sa.text("position IS NULL"),
        postgresql_where=sa.text("position IS NULL"),
    )


def downgrade() -> None:
    for table in ("events", "sessions", "environments", "agent_versions", "agents", "api_keys", "workspaces"):
        op.drop_table(table)
