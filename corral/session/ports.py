"""The storage ports: five narrow interfaces, one per kind of durable state, that every adapter implements.

A part that needs only one kind of state asks for that port (the brain's lease loop for `Work`, the key check
for `Keys`), so a reader sees what it touches and a test can hand it a small fake. `corral.session.store.Store`
is their combination, which each adapter (SQLite, PostgreSQL, in-memory) implements whole.

Methods that take a `workspace_id` only see that workspace's objects: an id from another workspace is simply
not found. A database that cannot serve a call raises `StorageUnavailable`, whatever the adapter.
"""

from __future__ import annotations

from typing import Protocol

from corral.session.records import (
    AgentRecord,
    ApiKeyRecord,
    CredentialRecord,
    EnvironmentRecord,
    EventRecord,
    Json,
    NewEvent,
    Page,
    SessionRecord,
    TimeBounds,
    VaultRecord,
)


class Keys(Protocol):
    """Workspaces and the API keys that open them (keys are kept as hashes only)."""

    async def create_workspace(self, workspace_id: str, name: str) -> None: ...

    async def add_api_key(self, key: ApiKeyRecord, key_hash: str) -> None: ...

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The live (not revoked) key with this hash."""
        ...

    async def list_api_keys(self) -> list[ApiKeyRecord]: ...

    async def revoke_api_key(self, key_id: str) -> bool: ...

    async def live_api_key_ids(self, key_ids: list[str]) -> set[str]:
        """Those of `key_ids` that name a key not revoked: one indexed lookup for a whole batch of keys."""
        ...


class Resources(Protocol):
    """The API's configured objects: agents (versioned), environments and sessions."""

    # --- agents ----------------------------------------------------------------------------------
    async def insert_agent(self, agent: AgentRecord) -> None: ...

    async def add_agent_version(self, agent: AgentRecord, expected_version: int) -> bool:
        """Store `agent` (version = expected_version + 1) if the latest version is still `expected_version`."""
        ...

    async def get_agent(self, workspace_id: str, agent_id: str, version: int | None = None) -> AgentRecord | None: ...

    async def list_agents(
        self,
        workspace_id: str,
        *,
        include_archived: bool,
        created: TimeBounds,
        limit: int,
        cursor: Json | None,
    ) -> Page: ...

    async def list_agent_versions(
        self, workspace_id: str, agent_id: str, *, limit: int, cursor: Json | None
    ) -> Page: ...

    async def archive_agent(self, workspace_id: str, agent_id: str, archived_at: str) -> None: ...

    # --- environments ----------------------------------------------------------------------------
    async def insert_environment(self, environment: EnvironmentRecord) -> bool:
        """False when the workspace already has an environment of that name."""
        ...

    async def update_environment(self, environment: EnvironmentRecord) -> bool:
        """False when the new name collides with another environment."""
        ...

    async def get_environment(self, workspace_id: str, environment_id: str) -> EnvironmentRecord | None: ...

    async def list_environments(
        self, workspace_id: str, *, include_archived: bool, limit: int, cursor: Json | None
    ) -> Page: ...

    async def delete_environment(self, workspace_id: str, environment_id: str) -> None: ...

    async def archive_environment(self, workspace_id: str, environment_id: str, archived_at: str) -> None: ...

    # --- sessions --------------------------------------------------------------------------------
    async def insert_session(self, session: SessionRecord) -> None: ...

    async def get_session(self, workspace_id: str | None, session_id: str) -> SessionRecord | None:
        """The session, if it belongs to `workspace_id` (None: any workspace, for the brain)."""
        ...

    async def list_sessions(
        self,
        workspace_id: str,
        *,
        agent_id: str | None,
        agent_version: int | None,
        statuses: list[str],
        include_archived: bool,
        created: TimeBounds,
        order: str,
        limit: int,
        cursor: Json | None,
    ) -> Page: ...

    async def count_sessions(self, workspace_id: str, statuses: list[str], *, excluding: str, up_to: int) -> int:
        """How many of the workspace's sessions (archived ones too), other than `excluding`, have one of `statuses`,
        counting no further than `up_to`: one indexed lookup whose cost does not grow with the sessions."""
        ...

    async def archive_session(self, session_id: str, archived_at: str) -> None: ...

    async def delete_session(self, session_id: str) -> None:
        """Remove the session, its whole event log and its lease."""
        ...


class Work(Protocol):
    """Which sessions have work, and leases: at most one brain works on a session at a time."""

    async def sessions_with_work(self, owner: str) -> list[str]:
        """Ids of sessions with queued events or left running, unless another owner's live lease covers them."""
        ...

    async def acquire_lease(self, session_id: str, owner: str, ttl_seconds: float) -> bool:
        """Take or renew the session's lease for `owner`; False while another owner's lease is live."""
        ...

    async def release_lease(self, session_id: str, owner: str) -> None: ...


class EventLog(Protocol):
    """Each session's append-only log: processed events in position order, and client events queued before it."""

    async def append_events(
        self, session_id: str, events: list[NewEvent], *, session_body: Json | None = None
    ) -> list[EventRecord]:
        """Append processed events in order, updating the session's derived state in the same transaction.

        `session_body`: also store it as the session's body (updated at the last event's `processed_at`) in that
        transaction, so that a `session.updated` event and the change it announces are never seen apart."""
        ...

    async def enqueue_events(self, session_id: str, events: list[NewEvent]) -> list[EventRecord]:
        """Durably store client events that wait to be processed (position and processed_at unset)."""
        ...

    async def queued_events(self, session_id: str) -> list[EventRecord]:
        """Client events not yet processed, in the order they were sent."""
        ...

    async def mark_processed(self, session_id: str, event_id: str) -> EventRecord:
        """Give a queued event its place in the processed order."""
        ...

    async def list_events(
        self,
        session_id: str,
        *,
        types: list[str],
        processed: TimeBounds,
        order: str,
        limit: int,
        cursor: Json | None,
    ) -> Page: ...

    async def conversation_events(
        self, session_id: str, types: tuple[str, ...], after_position: int = 0
    ) -> list[EventRecord]:
        """Processed events of the given types after `after_position`, in order (what the brain reads)."""
        ...

    async def find_event(self, session_id: str, event_id: str) -> EventRecord | None: ...

    async def last_position(self, session_id: str) -> int:
        """The position of the session's newest processed event (0 when it has none)."""
        ...

    async def events_after(self, session_id: str, position: int, limit: int) -> list[EventRecord]:
        """Processed events after `position`, in order (how streams catch up and replay)."""
        ...


class Vaults(Protocol):
    """Vaults and their credentials. Secrets arrive sealed (`corral.vault.crypto`); the store never sees them in
    the clear."""

    async def insert_vault(self, vault: VaultRecord) -> None: ...

    async def update_vault(self, vault: VaultRecord) -> None:
        """Store a new body and updated_at."""
        ...

    async def get_vault(self, workspace_id: str, vault_id: str) -> VaultRecord | None: ...

    async def list_vaults(self, workspace_id: str, *, include_archived: bool, limit: int, cursor: Json | None) -> Page:
        """Newest first."""
        ...

    async def delete_vault(self, workspace_id: str, vault_id: str) -> None:
        """Remove the vault and every credential in it."""
        ...

    async def archive_vault(self, workspace_id: str, vault_id: str, archived_at: str) -> None:
        """Archive the vault and every live credential in it, purging their secrets."""
        ...

    async def insert_credential(self, credential: CredentialRecord) -> bool:
        """False when the vault already has a live credential with the same `identity`."""
        ...

    async def update_credential(self, credential: CredentialRecord) -> bool:
        """Store a new body, secret and updated_at; False if the credential is archived or gone."""
        ...

    async def get_credential(self, workspace_id: str, vault_id: str, credential_id: str) -> CredentialRecord | None: ...

    async def list_credentials(
        self, workspace_id: str, vault_id: str, *, include_archived: bool, limit: int, cursor: Json | None
    ) -> Page:
        """Newest first."""
        ...

    async def delete_credential(self, workspace_id: str, vault_id: str, credential_id: str) -> None: ...

    async def archive_credential(self, workspace_id: str, vault_id: str, credential_id: str, archived_at: str) -> None:
        """Archive the credential and purge its secret."""
        ...

    async def live_credentials(self, workspace_id: str, vault_ids: list[str]) -> list[CredentialRecord]:
        """The live credentials of the live vaults among `vault_ids`, oldest first (what a session may use)."""
        ...
