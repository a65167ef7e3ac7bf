"""Typed records that cross the storage interface. Bodies are the wire JSON the API serves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Event records are the protocol's; they stay importable from here, where the storage interface names them.
from corral.protocol.events import EventRecord as EventRecord
from corral.protocol.events import NewEvent as NewEvent

Json = dict[str, Any]


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    workspace_id: str
    hint: str
    created_at: str
    revoked_at: str | None = None


@dataclass(frozen=True)
class AgentRecord:
    """One version of an agent. `body` holds the versioned config (name, model, system, tools, ...)."""

    id: str
    workspace_id: str
    version: int
    body: Json
    created_at: str
    updated_at: str
    archived_at: str | None = None


@dataclass(frozen=True)
class EnvironmentRecord:
    id: str
    workspace_id: str
    name: str
    body: Json
    created_at: str
    updated_at: str
    archived_at: str | None = None


@dataclass(frozen=True)
class SessionRecord:
    """A session row. `body` holds title, metadata, the agent snapshot, resources and vault ids.

    `status`, `usage` and `active_seconds` are derived from the event log and cached here
    (see `corral.session.state`).
    """

    id: str
    workspace_id: str
    agent_id: str
    agent_version: int
    environment_id: str
    body: Json
    status: str
    usage: Json
    active_seconds: float
    running_since: str | None
    created_at: str
    updated_at: str
    archived_at: str | None = None


@dataclass(frozen=True)
class VaultRecord:
    """A vault: a named set of credentials that sessions attach by id. `body` holds display_name and metadata."""

    id: str
    workspace_id: str
    body: Json
    created_at: str
    updated_at: str
    archived_at: str | None = None


@dataclass(frozen=True)
class CredentialRecord:
    """A credential in a vault. `body` is the wire form without secrets (display_name, auth, metadata).

    `identity` names what it is for (`mcp:<server url>`, `env:<NAME>`): a vault holds one live credential per
    identity. `secret` is the encrypted secret material (see `corral.vault.crypto`), opaque to the store; None
    once the credential is archived (archiving purges it).
    """

    id: str
    workspace_id: str
    vault_id: str
    identity: str
    body: Json
    secret: str | None
    created_at: str
    updated_at: str
    archived_at: str | None = None

    def __repr__(self) -> str:
        # Never print the ciphertext either: it is useless without the key, but logs have no business with it.
        return f"CredentialRecord(id={self.id!r}, vault_id={self.vault_id!r}, type={self.body['auth']['type']!r})"


@dataclass(frozen=True)
class Page:
    """One page of a keyset-paginated listing; cursors are keyset positions (encoded by the API), None at the ends."""

    items: list[Any]
    next_cursor: Json | None = None
    prev_cursor: Json | None = None


@dataclass(frozen=True)
class TimeBounds:
    """`created_at[gt|gte|lt|lte]` filters, already normalised to wire timestamps."""

    gt: str | None = None
    gte: str | None = None
    lt: str | None = None
    lte: str | None = None

    def is_empty(self) -> bool:
        return not (self.gt or self.gte or self.lt or self.lte)
