"""Rows of the store's tables as records: one mapping for every adapter (sqlite3.Row and psycopg dict rows
both index by column name)."""

from __future__ import annotations

import json
from typing import Any, Protocol

from corral.session.records import (
    AgentRecord,
    ApiKeyRecord,
    CredentialRecord,
    EnvironmentRecord,
    EventRecord,
    SessionRecord,
    VaultRecord,
)


class Row(Protocol):
    def __getitem__(self, column: str) -> Any: ...


def api_key(row: Row) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row["id"],
        workspace_id=row["workspace_id"],
        hint=row["hint"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


def agent(row: Row) -> AgentRecord:
    return AgentRecord(
        id=row["id"],
        workspace_id=row["workspace_id"],
        version=row["version"],
        body=json.loads(row["body"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        archived_at=row["archived_at"],
    )


def environment(row: Row) -> EnvironmentRecord:
    return EnvironmentRecord(
        id=row["id"],
        workspace_id=row["workspace_id"],
        name=row["name"],
        body=json.loads(row["body"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        archived_at=row["archived_at"],
    )


def session(row: Row) -> SessionRecord:
    return SessionRecord(
        id=row["id"],
        workspace_id=row["workspace_id"],
        agent_id=row["agent_id"],
        agent_version=row["agent_version"],
        environment_id=row["environment_id"],
        body=json.loads(row["body"]),
        status=row["status"],
        usage=json.loads(row["usage"]),
        active_seconds=row["active_seconds"],
        running_since=row["running_since"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        archived_at=row["archived_at"],
    )


def event(row: Row) -> EventRecord:
    return EventRecord(
        id=row["id"],
        session_id=row["session_id"],
        type=row["type"],
        body=json.loads(row["body"]),
        position=row["position"],
        processed_at=row["processed_at"],
    )


def vault(row: Row) -> VaultRecord:
    return VaultRecord(
        id=row["id"],
        workspace_id=row["workspace_id"],
        body=json.loads(row["body"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        archived_at=row["archived_at"],
    )


def credential(row: Row) -> CredentialRecord:
    return CredentialRecord(
        id=row["id"],
        workspace_id=row["workspace_id"],
        vault_id=row["vault_id"],
        identity=row["identity"],
        body=json.loads(row["body"]),
        secret=row["secret"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        archived_at=row["archived_at"],
    )
