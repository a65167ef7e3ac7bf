"""An index on each workspace's sessions by status: the running-sessions cap counts them on every posted message.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("sessions_by_status", "sessions", ["workspace_id", "status"])


def downgrade() -> None:
    op.drop_index("sessions_by_status", table_name="sessions")
