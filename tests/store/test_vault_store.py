"""Every storage adapter keeps vaults and credentials the same way: scoped to a workspace, one live credential
per identity and vault, secrets purged on archive. Each test runs once per adapter (see tests/store/conftest.py).
"""

from __future__ import annotations

from corral.session.records import CredentialRecord, VaultRecord
from corral.session.store import Store
from tests.store.conftest import ts

WS = "ws_main"
OTHER_WS = "ws_other"


def vault(vault_id: str, *, workspace_id: str = WS, created: float = 0) -> VaultRecord:
    return VaultRecord(vault_id, workspace_id, {"display_name": vault_id, "metadata": {}}, ts(created), ts(created))


def credential(
    credential_id: str, vault_id: str, *, identity: str | None = None, workspace_id: str = WS, created: float = 0
) -> CredentialRecord:
    return CredentialRecord(
        id=credential_id,
        workspace_id=workspace_id,
        vault_id=vault_id,
        identity=identity or f"mcp:https://{credential_id}.example.com/mcp",
        body={"display_name": None, "auth": {"type": "static_bearer"}, "metadata": {}},
        secret=f"v1.key.sealed-{credential_id}",
        created_at=ts(created),
        updated_at=ts(created),
    )


async def test_a_vault_reads_back_as_stored_in_its_workspace_only(store: Store) -> None:
    await store.insert_vault(vault("vlt_1"))

    assert await store.get_vault(WS, "vlt_1") == vault("vlt_1")
    assert await store.get_vault(OTHER_WS, "vlt_1") is None


async def test_vaults_list_newest_first_and_page(store: Store) -> None:
    for index in range(3):
        await store.insert_vault(vault(f"vlt_{index}", created=index))

    first = await store.list_vaults(WS, include_archived=False, limit=2, cursor=None)
    second = await store.list_vaults(WS, include_archived=False, limit=2, cursor=first.next_cursor)

    assert [v.id for v in first.items] == ["vlt_2", "vlt_1"]
    assert [v.id for v in second.items] == ["vlt_0"] and second.next_cursor is None


async def test_a_vault_update_stores_the_new_body(store: Store) -> None:
    await store.insert_vault(vault("vlt_1"))
    renamed = VaultRecord("vlt_1", WS, {"display_name": "renamed", "metadata": {"k": "v"}}, ts(0), ts(5))

    await store.update_vault(renamed)

    assert await store.get_vault(WS, "vlt_1") == renamed


async def test_a_credential_reads_back_with_its_sealed_secret(store: Store) -> None:
    await store.insert_vault(vault("vlt_1"))
    assert await store.insert_credential(credential("vcrd_1", "vlt_1"))

    assert await store.get_credential(WS, "vlt_1", "vcrd_1") == credential("vcrd_1", "vlt_1")
    assert await store.get_credential(OTHER_WS, "vlt_1", "vcrd_1") is None


async def test_a_vault_takes_one_live_credential_per_identity(store: Store) -> None:
    await store.insert_vault(vault("vlt_1"))
    await store.insert_vault(vault("vlt_2"))
    same = "mcp:https://mcp.example.com/mcp"
    assert await store.insert_credential(credential("vcrd_1", "vlt_1", identity=same))

    assert not await store.insert_credential(credential("vcrd_2", "vlt_1", identity=same))
    assert await store.insert_credential(credential("vcrd_3", "vlt_2", identity=same))
    await store.archive_credential(WS, "vlt_1", "vcrd_1", ts(9))
    assert await store.insert_credential(credential("vcrd_4", "vlt_1", identity=same))


async def test_archiving_a_credential_purges_its_secret_and_freezes_it(store: Store) -> None:
    await store.insert_vault(vault("vlt_1"))
    await store.insert_credential(credential("vcrd_1", "vlt_1"))

    await store.archive_credential(WS, "vlt_1", "vcrd_1", ts(9))

    archived = await store.get_credential(WS, "vlt_1", "vcrd_1")
    assert archived is not None and archived.archived_at == ts(9) and archived.secret is None
    assert not await store.update_credential(credential("vcrd_1", "vlt_1"))


async def test_archiving_a_vault_archives_its_credentials(store: Store) -> None:
    await store.insert_vault(vault("vlt_1"))
    await store.insert_credential(credential("vcrd_1", "vlt_1"))

    await store.archive_vault(WS, "vlt_1", ts(9))

    archived_vault = await store.get_vault(WS, "vlt_1")
    archived = await store.get_credential(WS, "vlt_1", "vcrd_1")
    assert archived_vault is not None and archived_vault.archived_at == ts(9)
    assert archived is not None and archived.archived_at == ts(9) and archived.secret is None


async def test_credentials_list_newest_first_hiding_archived_ones_unless_asked(store: Store) -> None:
    await store.insert_vault(vault("vlt_1"))
    for index in range(3):
        await store.insert_credential(credential(f"vcrd_{index}", "vlt_1", created=index))
    await store.archive_credential(WS, "vlt_1", "vcrd_1", ts(9))

    live = await store.list_credentials(WS, "vlt_1", include_archived=False, limit=10, cursor=None)
    every = await store.list_credentials(WS, "vlt_1", include_archived=True, limit=10, cursor=None)

    assert [c.id for c in live.items] == ["vcrd_2", "vcrd_0"]
    assert [c.id for c in every.items] == ["vcrd_2", "vcrd_1", "vcrd_0"]


async def test_live_credentials_are_those_of_live_vaults_in_the_workspace(store: Store) -> None:
    await store.insert_vault(vault("vlt_1"))
    await store.insert_vault(vault("vlt_2"))
    await store.insert_vault(vault("vlt_x", workspace_id=OTHER_WS))
    await store.insert_credential(credential("vcrd_1", "vlt_1", created=1))
    await store.insert_credential(credential("vcrd_2", "vlt_1", created=2))
    await store.insert_credential(credential("vcrd_3", "vlt_2", created=3))
    await store.insert_credential(credential("vcrd_x", "vlt_x", workspace_id=OTHER_WS))
    await store.archive_credential(WS, "vlt_1", "vcrd_2", ts(9))

    assert [c.id for c in await store.live_credentials(WS, ["vlt_1", "vlt_2", "vlt_x"])] == ["vcrd_1", "vcrd_3"]
    await store.archive_vault(WS, "vlt_2", ts(10))
    assert [c.id for c in await store.live_credentials(WS, ["vlt_1", "vlt_2"])] == ["vcrd_1"]
    assert await store.live_credentials(WS, []) == []


async def test_deleting_a_vault_deletes_its_credentials(store: Store) -> None:
    await store.insert_vault(vault("vlt_1"))
    await store.insert_credential(credential("vcrd_1", "vlt_1"))

    await store.delete_vault(WS, "vlt_1")

    assert await store.get_vault(WS, "vlt_1") is None
    assert await store.get_credential(WS, "vlt_1", "vcrd_1") is None


async def test_deleting_a_credential_leaves_the_others(store: Store) -> None:
    await store.insert_vault(vault("vlt_1"))
    await store.insert_credential(credential("vcrd_1", "vlt_1"))
    await store.insert_credential(credential("vcrd_2", "vlt_1"))

    await store.delete_credential(WS, "vlt_1", "vcrd_1")

    assert [c.id for c in await store.live_credentials(WS, ["vlt_1"])] == ["vcrd_2"]
