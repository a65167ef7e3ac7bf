"""`VaultAccess`: which credential a session's MCP server or egress proxy gets, opened from the store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from corral.session.records import CredentialRecord, VaultRecord
from corral.session.sqlite import SqliteStore
from corral.vault.credentials import VaultAccess, credential_context, environment_identity, mcp_identity
from corral.vault.crypto import SecretBox

WS = "ws_1"
URL = "https://mcp.example.com/mcp"
BOX = SecretBox(bytes(range(32)))


@pytest.fixture
async def access(tmp_path: Path) -> AsyncIterator[VaultAccess]:
    store = SqliteStore(tmp_path / "corral.db")
    for vault_id in ("vlt_a", "vlt_b"):
        await store.insert_vault(VaultRecord(vault_id, WS, {"display_name": vault_id}, "t", "t"))
    yield VaultAccess(store, BOX)
    await store.close()


async def add(
    access: VaultAccess, credential_id: str, vault_id: str, auth: dict[str, Any], secret: dict[str, Any]
) -> None:
    identity = (
        mcp_identity(auth["mcp_server_url"]) if "mcp_server_url" in auth else environment_identity(auth["secret_name"])
    )
    sealed = BOX.seal(secret, context=credential_context(WS, credential_id))
    record = CredentialRecord(
        credential_id, WS, vault_id, identity, {"auth": auth}, sealed, credential_id, credential_id
    )
    assert await access.store.insert_credential(record)


async def test_an_mcp_server_gets_the_bearer_of_the_credential_for_its_url(access: VaultAccess) -> None:
    await add(access, "c1", "vlt_a", {"type": "static_bearer", "mcp_server_url": URL}, {"token": "tok-a"})

    found = await access.mcp_credential(WS, ["vlt_a"], "https://MCP.example.com/mcp/")

    assert found is not None and found.headers == {"Authorization": "Bearer tok-a"}
    assert await access.mcp_credential(WS, ["vlt_a"], "https://other.example.com/mcp") is None


async def test_the_first_listed_vault_with_a_match_wins(access: VaultAccess) -> None:
    await add(access, "c1", "vlt_a", {"type": "static_bearer", "mcp_server_url": URL}, {"token": "tok-a"})
    await add(access, "c2", "vlt_b", {"type": "static_bearer", "mcp_server_url": URL}, {"token": "tok-b"})

    first_b = await access.mcp_credential(WS, ["vlt_b", "vlt_a"], URL)

    assert first_b is not None and first_b.credential_id == "c2"


async def test_a_session_without_vaults_gets_no_credential(access: VaultAccess) -> None:
    await add(access, "c1", "vlt_a", {"type": "static_bearer", "mcp_server_url": URL}, {"token": "tok-a"})

    assert await access.mcp_credential(WS, [], URL) is None


async def test_a_credential_that_does_not_decrypt_is_skipped(access: VaultAccess) -> None:
    await add(access, "c1", "vlt_a", {"type": "static_bearer", "mcp_server_url": URL}, {"token": "tok-a"})
    other_key = VaultAccess(access.store, SecretBox(bytes(32)))

    assert await other_key.mcp_credential(WS, ["vlt_a"], URL) is None


async def test_environment_secrets_give_the_proxy_placeholder_value_hosts_and_locations(access: VaultAccess) -> None:
    auth = {
        "type": "environment_variable",
        "secret_name": "API_KEY",
        "networking": {"type": "limited", "allowed_hosts": ["api.example.com"]},
        "injection_location": {"header": True, "body": False},
    }
    await add(access, "c1", "vlt_a", auth, {"secret_value": "val-a"})
    await add(access, "c2", "vlt_b", auth, {"secret_value": "val-b"})

    (secret,) = await access.environment_secrets(WS, ["vlt_a", "vlt_b"])

    assert (secret.secret_name, secret.value, secret.credential_id) == ("API_KEY", "val-a", "c1")
    assert "val-a" not in secret.placeholder and secret.allowed_hosts == ("api.example.com",)
    assert (secret.header, secret.body) == (True, False)
