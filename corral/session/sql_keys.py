"""The SQL of the `Keys` port: workspaces and API keys."""

from __future__ import annotations

from corral.clock import now_rfc3339
from corral.session import rows
from corral.session.records import (
    ApiKeyRecord,
)
from corral.session.sql_port import SqlPort


class SqlKeys(SqlPort):
    """`corral.session.ports.Keys` in shared SQL; each driver adds `live_api_key_ids`, which passes a list of ids
    its own way."""

    async def create_workspace(self, workspace_id: str, name: str) -> None:
        await self._execute(
            "INSERT INTO workspaces (id, name, created_at) VALUES (?, ?, ?)",
            (workspace_id, name, now_rfc3339()),
            replayable=False,
        )

    async def add_api_key(self, key: ApiKeyRecord, key_hash: str) -> None:
        await self._execute(
            "INSERT INTO api_keys (id, workspace_id, key_hash, hint, created_at) VALUES (?, ?, ?, ?, ?)",
            (key.id, key.workspace_id, key_hash, key.hint, key.created_at),
            replayable=False,
        )

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        row = await self._one("SELECT * FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (key_hash,))
        return rows.api_key(row) if row else None

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        return [rows.api_key(row) for row in await self._all("SELECT * FROM api_keys ORDER BY created_at, id")]

    async def revoke_api_key(self, key_id: str) -> bool:
        changed = await self._execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (now_rfc3339(), key_id),
            replayable=False,
        )
        return changed == 1
