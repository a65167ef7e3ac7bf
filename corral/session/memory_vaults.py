"""The in-memory `Vaults` port: vaults and their credentials (secrets stay sealed, as stored)."""

from __future__ import annotations

from dataclasses import replace

from corral.session.memory_tables import (
    MemoryTables,
    newest_first,
    read_body,
    stored_pair,
)
from corral.session.records import (
    CredentialRecord,
    Json,
    Page,
    VaultRecord,
)


class MemoryVaults(MemoryTables):
    """`corral.session.ports.Vaults` in memory."""

    # --- Vaults ----------------------------------------------------------------------------------

    def _vault(self, workspace_id: str, vault_id: str) -> VaultRecord | None:
        found = self.db.vaults.get(vault_id)
        if found is None or found[0].workspace_id != workspace_id:
            return None
        vault: VaultRecord = read_body(found)
        return vault

    def _credential(self, workspace_id: str, vault_id: str, credential_id: str) -> CredentialRecord | None:
        found = self.db.credentials.get(credential_id)
        if found is None or found[0].workspace_id != workspace_id or found[0].vault_id != vault_id:
            return None
        credential: CredentialRecord = read_body(found)
        return credential

    def _credentials_of(self, workspace_id: str, vault_id: str) -> list[CredentialRecord]:
        return [
            read_body(pair)
            for pair in self.db.credentials.values()
            if pair[0].workspace_id == workspace_id and pair[0].vault_id == vault_id
        ]

    async def insert_vault(self, vault: VaultRecord) -> None:
        async with self.db.lock:
            if vault.id in self.db.vaults:
                raise ValueError(f"vault {vault.id} already exists")
            self.db.vaults[vault.id] = stored_pair(vault, vault.body)

    async def update_vault(self, vault: VaultRecord) -> None:
        async with self.db.lock:
            found = self._vault(vault.workspace_id, vault.id)
            if found is not None:
                self.db.vaults[vault.id] = stored_pair(replace(found, updated_at=vault.updated_at), vault.body)

    async def get_vault(self, workspace_id: str, vault_id: str) -> VaultRecord | None:
        return self._vault(workspace_id, vault_id)

    async def list_vaults(self, workspace_id: str, *, include_archived: bool, limit: int, cursor: Json | None) -> Page:
        vaults = [read_body(pair) for pair in self.db.vaults.values() if pair[0].workspace_id == workspace_id]
        return newest_first(vaults, include_archived, limit, cursor)

    async def delete_vault(self, workspace_id: str, vault_id: str) -> None:
        async with self.db.lock:
            for credential in self._credentials_of(workspace_id, vault_id):
                del self.db.credentials[credential.id]
            if self._vault(workspace_id, vault_id) is not None:
                del self.db.vaults[vault_id]

    async def archive_vault(self, workspace_id: str, vault_id: str, archived_at: str) -> None:
        async with self.db.lock:
            for credential in self._credentials_of(workspace_id, vault_id):
                if credential.archived_at is None:
                    self._archive_credential(credential, archived_at)
            found = self._vault(workspace_id, vault_id)
            if found is not None:
                archived = replace(found, archived_at=found.archived_at or archived_at, updated_at=archived_at)
                self.db.vaults[vault_id] = stored_pair(archived, found.body)

    def _archive_credential(self, credential: CredentialRecord, archived_at: str) -> None:
        """Archive it and purge its secret."""
        archived = replace(credential, archived_at=archived_at, updated_at=archived_at, secret=None)
        self.db.credentials[credential.id] = stored_pair(archived, credential.body)

    async def insert_credential(self, credential: CredentialRecord) -> bool:
        async with self.db.lock:
            if credential.id in self.db.credentials:
                raise ValueError(f"credential {credential.id} already exists")
            if any(
                other.identity == credential.identity and other.archived_at is None
                for other in self._credentials_of(credential.workspace_id, credential.vault_id)
            ):
                return False
            self.db.credentials[credential.id] = stored_pair(credential, credential.body)
            return True

    async def update_credential(self, credential: CredentialRecord) -> bool:
        async with self.db.lock:
            found = self._credential(credential.workspace_id, credential.vault_id, credential.id)
            if found is None or found.archived_at is not None:
                return False
            updated = replace(found, secret=credential.secret, updated_at=credential.updated_at)
            self.db.credentials[credential.id] = stored_pair(updated, credential.body)
            return True

    async def get_credential(self, workspace_id: str, vault_id: str, credential_id: str) -> CredentialRecord | None:
        return self._credential(workspace_id, vault_id, credential_id)

    async def list_credentials(
        self, workspace_id: str, vault_id: str, *, include_archived: bool, limit: int, cursor: Json | None
    ) -> Page:
        return newest_first(self._credentials_of(workspace_id, vault_id), include_archived, limit, cursor)

    async def delete_credential(self, workspace_id: str, vault_id: str, credential_id: str) -> None:
        async with self.db.lock:
            if self._credential(workspace_id, vault_id, credential_id) is not None:
                del self.db.credentials[credential_id]

    async def archive_credential(self, workspace_id: str, vault_id: str, credential_id: str, archived_at: str) -> None:
        async with self.db.lock:
            found = self._credential(workspace_id, vault_id, credential_id)
            if found is not None and found.archived_at is None:
                self._archive_credential(found, archived_at)

    async def live_credentials(self, workspace_id: str, vault_ids: list[str]) -> list[CredentialRecord]:
        live_vaults = {
            vault_id
            for vault_id in vault_ids
            if (vault := self._vault(workspace_id, vault_id)) is not None and vault.archived_at is None
        }
        live = [
            credential
            for vault_id in live_vaults
            for credential in self._credentials_of(workspace_id, vault_id)
            if credential.archived_at is None
        ]
        return sorted(live, key=lambda credential: (credential.created_at, credential.id))
