"""Typed records that cross the storage interface. Bodies are the wire JSON the API serves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
class EventRecord:
    """A persisted event. `position` is its place in the session's processed order (None while queued)."""

    id: str
    session_id: str
    type: str
    body: Json
    position: int | None
    processed_at: str | None

    def to_wire(self) -> Json:
        return {"type": self.type, "id": self.id, **self.body, "processed_at": self.processed_at}


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


@dataclass(frozen=True)
class NewEvent:
    """An event to append: its id is allocated by the caller so previews can name it before it exists."""

    id: str
    type: str
    body: Json = field(default_factory=dict)
