"""Vaults and their credentials (spec §10): credentials sessions use without holding them.

Secrets are write-only: they are sealed (`corral.vault.crypto`) before they reach the store, and records carry
the auth type and its non-secret fields only. A vault holds one live credential per MCP server URL (or per
variable name) and at most 20 live credentials. Archiving a credential purges its secret; archiving a vault
archives every credential in it. Archived vaults and credentials are read-only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from corral.clock import now_rfc3339
from corral.config import McpSettings
from corral.errors import Conflict, InvalidRequest, NotFound
from corral.ids import new_id
from corral.mcp.probe import McpProbe, probe_mcp_server
from corral.services.credentials import CredentialCreate, CredentialUpdate, DisplayName, apply_auth_update, resolve_auth
from corral.services.schemas import Metadata, MetadataPatch, Strict, patch_metadata
from corral.session.records import CredentialRecord, Json, Page, VaultRecord
from corral.session.store import Store
from corral.vault.credentials import HttpReply, McpCredential, VaultAccess, credential_context
from corral.vault.crypto import SecretUnavailable

MAX_LIVE_CREDENTIALS = 20
# How much of an error response's body a validation report shows.
MAX_REPORTED_BODY = 2048
# Token-like JSON fields an MCP server or token endpoint might echo back, scrubbed from reported bodies
# along with the credential's own secrets.
_SECRET_FIELD = re.compile(r'("(?:access_token|refresh_token|id_token|client_secret|token)"\s*:\s*)"[^"]*"')


class VaultCreate(Strict):
    display_name: DisplayName
    metadata: Metadata | None = None


class VaultUpdate(Strict):
    display_name: DisplayName | None = None
    metadata: MetadataPatch | None = None


@dataclass(frozen=True)
class CredentialValidation:
    """The outcome of `mcp_oauth_validate` (spec §10.3): the verdict, and the failing probe step and refresh
    attempt as wire objects (their HTTP bodies scrubbed of secrets)."""

    credential_id: str
    vault_id: str
    status: str  # valid | invalid | unknown
    has_refresh_token: bool
    validated_at: str
    mcp_probe: Json | None
    refresh: Json | None


def reported_response(reply: HttpReply | None, secrets: list[str]) -> Json | None:
    """An HTTP response as a validation report shows it: secrets scrubbed, then the body cut short."""
    if reply is None:
        return None
    body = _SECRET_FIELD.sub(r'\1"[redacted]"', reply.body.decode("utf-8", errors="replace"))
    for secret in secrets:
        body = body.replace(secret, "[redacted]")
    return {
        "status_code": reply.status_code,
        "content_type": reply.content_type,
        "body": body[:MAX_REPORTED_BODY],
        "body_truncated": len(body) > MAX_REPORTED_BODY,
    }


def _token_of(credential: McpCredential) -> str:
    return credential.headers["Authorization"].removeprefix("Bearer ")


def _writable(vault: VaultRecord) -> None:
    if vault.archived_at is not None:
        raise Conflict(f"vault {vault.id} is archived and read-only")


class Vaults:
    def __init__(self, store: Store, access: VaultAccess, mcp: McpSettings) -> None:
        self._store = store
        self._box = access.box  # seals secrets on their way in; opens them only to apply an update
        self._access = access  # opens and refreshes an OAuth credential to validate it
        self._mcp = mcp

    # --- vaults ------------------------------------------------------------------------------------------

    async def get(self, workspace_id: str, vault_id: str) -> VaultRecord:
        vault = await self._store.get_vault(workspace_id, vault_id)
        if vault is None:
            raise NotFound(f"vault {vault_id} not found")
        return vault

    async def create(self, workspace_id: str, params: VaultCreate) -> VaultRecord:
        timestamp = now_rfc3339()
        body: Json = {"display_name": params.display_name, "metadata": params.metadata or {}}
        vault = VaultRecord(new_id("vlt"), workspace_id, body, timestamp, timestamp)
        await self._store.insert_vault(vault)
        return vault

    async def update(self, workspace_id: str, vault_id: str, params: VaultUpdate) -> VaultRecord:
        vault = await self.get(workspace_id, vault_id)
        _writable(vault)
        if "display_name" in params.model_fields_set and params.display_name is None:
            raise InvalidRequest("display_name cannot be cleared")
        body = dict(vault.body)
        if params.display_name is not None:
            body["display_name"] = params.display_name
        if "metadata" in params.model_fields_set:
            body["metadata"] = patch_metadata(vault.body.get("metadata", {}), params.metadata)
        if body == vault.body:
            return vault
        updated = VaultRecord(vault.id, vault.workspace_id, body, vault.created_at, now_rfc3339())
        await self._store.update_vault(updated)
        return updated

    async def list_vaults(self, workspace_id: str, *, include_archived: bool, limit: int, cursor: Json | None) -> Page:
        return await self._store.list_vaults(
            workspace_id, include_archived=include_archived, limit=limit, cursor=cursor
        )

    async def delete(self, workspace_id: str, vault_id: str) -> VaultRecord:
        vault = await self.get(workspace_id, vault_id)
        await self._store.delete_vault(vault.workspace_id, vault.id)
        return vault

    async def archive(self, workspace_id: str, vault_id: str) -> VaultRecord:
        vault = await self.get(workspace_id, vault_id)
        await self._store.archive_vault(vault.workspace_id, vault.id, now_rfc3339())
        return await self.get(workspace_id, vault.id)

    # --- credentials -------------------------------------------------------------------------------------

    async def get_credential(self, workspace_id: str, vault_id: str, credential_id: str) -> CredentialRecord:
        credential = await self._store.get_credential(workspace_id, vault_id, credential_id)
        if credential is None:
            raise NotFound(f"credential {credential_id} not found in vault {vault_id}")
        return credential

    async def create_credential(self, workspace_id: str, vault_id: str, params: CredentialCreate) -> CredentialRecord:
        vault = await self.get(workspace_id, vault_id)
        _writable(vault)
        public, secret, identity = resolve_auth(params.auth)
        live = await self._store.live_credentials(vault.workspace_id, [vault.id])
        if len(live) >= MAX_LIVE_CREDENTIALS:
            raise InvalidRequest(
                f"vault {vault.id} already holds {MAX_LIVE_CREDENTIALS} live credentials, the most a vault can hold; "
                "archive or delete one first"
            )
        credential_id = new_id("vcrd")
        timestamp = now_rfc3339()
        body: Json = {"display_name": params.display_name, "auth": public, "metadata": params.metadata or {}}
        sealed = self._box.seal(secret, context=credential_context(vault.workspace_id, credential_id))
        credential = CredentialRecord(
            credential_id, vault.workspace_id, vault.id, identity, body, sealed, timestamp, timestamp
        )
        if not await self._store.insert_credential(credential):
            what = public.get("mcp_server_url") or public.get("secret_name")
            raise Conflict(
                f"vault {vault.id} already has a live credential for {what}; update that one, or archive it first"
            )
        return credential

    async def update_credential(
        self, workspace_id: str, vault_id: str, credential_id: str, params: CredentialUpdate
    ) -> CredentialRecord:
        vault = await self.get(workspace_id, vault_id)
        credential = await self.get_credential(workspace_id, vault.id, credential_id)
        if credential.archived_at is not None:
            raise Conflict(f"credential {credential.id} is archived and read-only")
        body = dict(credential.body)
        sealed = credential.secret
        if params.auth is not None:
            context = credential_context(credential.workspace_id, credential.id)
            try:
                current_secret = self._box.open(credential.secret, context=context) if credential.secret else {}
            except SecretUnavailable as exc:
                raise Conflict(f"credential {credential.id} cannot be updated: {exc}") from exc
            public, secret = apply_auth_update(credential.body["auth"], current_secret, params.auth)
            body["auth"] = public
            if secret != current_secret:
                sealed = self._box.seal(secret, context=context)
        if "display_name" in params.model_fields_set:
            body["display_name"] = params.display_name
        if "metadata" in params.model_fields_set:
            body["metadata"] = patch_metadata(credential.body.get("metadata", {}), params.metadata)
        if body == credential.body and sealed == credential.secret:
            return credential
        updated = CredentialRecord(
            credential.id,
            credential.workspace_id,
            credential.vault_id,
            credential.identity,
            body,
            sealed,
            credential.created_at,
            now_rfc3339(),
        )
        if not await self._store.update_credential(updated):
            raise Conflict(f"credential {credential.id} was archived or deleted meanwhile")
        return updated

    async def list_credentials(
        self, vault: VaultRecord, *, include_archived: bool, limit: int, cursor: Json | None
    ) -> Page:
        return await self._store.list_credentials(
            vault.workspace_id, vault.id, include_archived=include_archived, limit=limit, cursor=cursor
        )

    async def delete_credential(self, workspace_id: str, vault_id: str, credential_id: str) -> CredentialRecord:
        credential = await self.get_credential(workspace_id, vault_id, credential_id)
        await self._store.delete_credential(credential.workspace_id, credential.vault_id, credential.id)
        return credential

    async def archive_credential(self, workspace_id: str, vault_id: str, credential_id: str) -> CredentialRecord:
        credential = await self.get_credential(workspace_id, vault_id, credential_id)
        await self._store.archive_credential(credential.workspace_id, credential.vault_id, credential.id, now_rfc3339())
        return await self.get_credential(workspace_id, credential.vault_id, credential.id)

    async def validate_credential(self, workspace_id: str, vault_id: str, credential_id: str) -> CredentialValidation:
        """Try an `mcp_oauth` credential against its MCP server; on a rejection (HTTP 401/403) refresh its token
        if it can (storing the new one, as a session would) and try again. `valid`: the server took a token;
        `invalid`: it rejected the token and no refresh fixed that; `unknown`: the server (or the token endpoint)
        could not be reached or failed otherwise. The report names no token."""
        credential = await self.get_credential(workspace_id, vault_id, credential_id)
        auth_type = credential.body["auth"]["type"]
        if auth_type != "mcp_oauth":
            raise InvalidRequest(
                f"credential {credential.id} is a {auth_type} credential; mcp_oauth_validate validates mcp_oauth "
                "credentials only"
            )
        if credential.archived_at is not None:
            raise Conflict(f"credential {credential.id} is archived: its tokens were purged")
        opened = self._access.opened_oauth_credential(credential)
        if opened is None or credential.secret is None:
            raise Conflict(f"credential {credential.id} cannot be opened with this server's secret key")
        stored = self._box.open(credential.secret, context=credential_context(credential.workspace_id, credential.id))
        secrets = [value for value in stored.values() if isinstance(value, str) and value]
        url = credential.body["auth"]["mcp_server_url"]
        probe: McpProbe = await probe_mcp_server(url, opened.headers, self._mcp)
        refresh: Json | None = None
        if probe.rejected:
            outcome = await self._access.exchange_refresh_token(credential)
            if outcome.credential is not None:
                secrets.append(_token_of(outcome.credential))
                probe = await probe_mcp_server(url, outcome.credential.headers, self._mcp)
            refresh = {"status": outcome.status, "http_response": reported_response(outcome.reply, secrets)}
        if probe.ok:
            status = "valid"
        elif probe.rejected and (refresh is None or refresh["status"] != "connect_error"):
            status = "invalid"
        else:
            status = "unknown"  # the server or token endpoint failed: the token itself may well be good
        return CredentialValidation(
            credential_id=credential.id,
            vault_id=credential.vault_id,
            status=status,
            has_refresh_token=opened.can_refresh,
            validated_at=now_rfc3339(),
            mcp_probe=None
            if probe.ok
            else {"method": probe.failed_method, "http_response": reported_response(probe.reply, secrets)},
            refresh=refresh,
        )
