"""Vaults and their credentials (secrets encrypted by the server before they reach the database).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Byte-wise text everywhere (the "C" collation on PostgreSQL), as in 0001: keyset pagination sorts the same.
Text = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "vaults",
        sa.Column("id", Text, primary_key=True),
        sa.Column("workspace_id", Text, nullable=False),
        sa.Column("body", Text, nullable=False),
        sa.Column("created_at", Text, nullable=False),
        sa.Column("updated_at", Text, nullable=False),
        sa.Column("archived_at", Text),
    )
    op.create_index("vaults_by_workspace", "vaults", ["workspace_id", "created_at", "id"])
    op.create_table(
        "vault_credentials",
        sa.Column("id", Text, primary_key=True),
        sa.Column("workspace_id", Text, nullable=False),
        sa.Column("vault_id", Text, sa.ForeignKey("vaults.id"), nullable=False),
        # What the credential is for (`mcp:<server url>` or `env:<NAME>`): one live credential per identity and vault.
        sa.Column("identity", Text, nullable=False),
        sa.Column("body", Text, nullable=False),
        # AES-GCM ciphertext of the secret fields; NULL once archived (archiving purges the secret).
        sa.Column("secret", Text),
        sa.Column("created_at", Text, nullable=False),
        sa.Column("updated_at", Text, nullable=False),
        sa.Column("archived_at", Text),
    )
    op.create_index("vault_credentials_by_vault", "vault_credentials", ["vault_id", "created_at", "id"])
    op.create_index(
        "vault_credentials_live_identity",
        "vault_credentials",
        ["vault_id", "identity"],
        unique=True,
        sqlite_where=sa.text("archived_at IS NULL"),
        postgresql_where=sa.text("archived_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("vault_credentials")
    op.drop_table("vaults")
