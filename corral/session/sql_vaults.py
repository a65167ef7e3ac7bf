"""The SQL of the `Vaults` port: vaults and their credentials (secrets stay sealed)."""

from __future__ import annotations

from corral.session import rows
from corral.session.records import (
    CredentialRecord,
    Json,
    Page,
    VaultRecord,
)
from corral.session.sql_port import Execute, SqlPort, dumps, in_list


class SqlVaults(SqlPort):
    """`corral.session.ports.Vaults` in shared SQL."""

    async def insert_vault(self, vault: VaultRecord) -> None:
        await self._execute(
            "INSERT INTO vaults (id, workspace_id, body, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            (vault.id, vault.workspace_id, dumps(vault.body), vault.created_at, vault.updated_at),
            replayable=False,
        )

    async def update_vault(self, vault: VaultRecord) -> None:
        await self._execute(
            "UPDATE vaults SET body = ?, updated_at = ? WHERE workspace_id = ? AND id = ?",
            (dumps(vault.body), vault.updated_at, vault.workspace_id, vault.id),
        )

    async def get_vault(self, workspace_id: str, vault_id: str) -> VaultRecord | None:
        row = await self._one("SELECT * FROM vaults WHERE workspace_id = ? AND id = ?", (workspace_id, vault_id))
        return rows.vault(row) if row else None

    async def list_vaults(self, workspace_id: str, *, include_archived: bool, limit: int, cursor: Json | None) -> Page:
        return await self._list_newest_first(
            "vaults", ["workspace_id = ?"], [workspace_id], include_archived, limit, cursor, rows.vault
        )

    async def delete_vault(self, workspace_id: str, vault_id: str) -> None:
        async def work(execute: Execute) -> None:
            await execute(
                "DELETE FROM vault_credentials WHERE workspace_id = ? AND vault_id = ?", (workspace_id, vault_id)
            )
            await execute("DELETE FROM vaults WHERE workspace_id = ? AND id = ?", (workspace_id, vault_id))

        await self._transaction(work, replayable=True)

    async def archive_vault(self, workspace_id: str, vault_id: str, archived_at: str) -> None:
        async def work(execute: Execute) -> None:
            await execute(
                "UPDATE vault_credentials SET archived_at = ?, updated_at = ?, secret = NULL "
                "WHERE workspace_id = ? AND vault_id = ? AND archived_at IS NULL",
                (archived_at, archived_at, workspace_id, vault_id),
            )
            await execute(
                "UPDATE vaults SET archived_at = COALESCE(archived_at, ?), updated_at = ? "
                "WHERE workspace_id = ? AND id = ?",
                (archived_at, archived_at, workspace_id, vault_id),
            )

        await self._transaction(work, replayable=True)

    async def insert_credential(self, credential: CredentialRecord) -> bool:
        return await self._write_unless_taken(
            "INSERT INTO vault_credentials (id, workspace_id, vault_id, identity, body, secret, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                credential.id,
                credential.workspace_id,
                credential.vault_id,
                credential.identity,
                dumps(credential.body),
                credential.secret,
                credential.created_at,
                credential.updated_at,
            ),
            replayable=False,
        )

    async def update_credential(self, credential: CredentialRecord) -> bool:
        changed = await self._execute(
            "UPDATE vault_credentials SET body = ?, secret = ?, updated_at = ? "
            "WHERE workspace_id = ? AND vault_id = ? AND id = ? AND archived_at IS NULL",
            (
                dumps(credential.body),
                credential.secret,
                credential.updated_at,
                credential.workspace_id,
                credential.vault_id,
                credential.id,
            ),
        )
        return changed == 1

    async def get_credential(self, workspace_id: str, vault_id: str, credential_id: str) -> CredentialRecord | None:
        row = await self._one(
            "SELECT * FROM vault_credentials WHERE workspace_id = ? AND vault_id = ? AND id = ?",
            (workspace_id, vault_id, credential_id),
        )
        return rows.credential(row) if row else None

    async def list_credentials(
        self, workspace_id: str, vault_id: str, *, include_archived: bool, limit: int, cursor: Json | None
    ) -> Page:
        return await self._list_newest_first(
            "vault_credentials",
            ["workspace_id = ?", "vault_id = ?"],
            [workspace_id, vault_id],
            include_archived,
            limit,
            cursor,
            rows.credential,
        )

    async def delete_credential(self, workspace_id: str, vault_id: str, credential_id: str) -> None:
        await self._execute(
            "DELETE FROM vault_credentials WHERE workspace_id = ? AND vault_id = ? AND id = ?",
            (workspace_id, vault_id, credential_id),
        )

    async def archive_credential(self, workspace_id: str, vault_id: str, credential_id: str, archived_at: str) -> None:
        await self._execute(
            "UPDATE vault_credentials SET archived_at = ?, updated_at = ?, secret = NULL "
            "WHERE workspace_id = ? AND vault_id = ? AND id = ? AND archived_at IS NULL",
            (archived_at, archived_at, workspace_id, vault_id, credential_id),
        )

    async def live_credentials(self, workspace_id: str, vault_ids: list[str]) -> list[CredentialRecord]:
        if not vault_ids:
            return []
        found = await self._all(
            "SELECT c.* FROM vault_credentials c JOIN vaults v ON v.id = c.vault_id "
            f"WHERE c.workspace_id = ? AND c.vault_id IN ({in_list(vault_ids)}) "
            "AND c.archived_at IS NULL AND v.archived_at IS NULL ORDER BY c.created_at, c.id",
            (workspace_id, *vault_ids),
        )
        return [rows.credential(row) for row in found]
