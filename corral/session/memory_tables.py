"""The in-memory adapter's tables (`MemoryDatabase`), its rows, and what every port's code shares: keyset
paging with the SQL adapters' cursors, time bounds, bodies kept as JSON text. See `corral.session.memory`."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from corral.session.records import (
    ApiKeyRecord,
    CredentialRecord,
    EnvironmentRecord,
    EventRecord,
    Json,
    Page,
    SessionRecord,
    TimeBounds,
    VaultRecord,
)
from corral.session.sql_port import dumps

R = TypeVar("R")


@dataclass
class EventRow:
    """An event row: `seq` is the insertion order (how the queue is ordered), `position` None while queued."""

    seq: int
    id: str
    session_id: str
    type: str
    body: str
    position: int | None = None
    processed_at: str | None = None

    def record(self) -> EventRecord:
        return EventRecord(self.id, self.session_id, self.type, json.loads(self.body), self.position, self.processed_at)


@dataclass
class SessionRow:
    """A session row: the record with its body and usage as JSON text, and the log's last position."""

    record: SessionRecord
    body: str
    usage: str
    last_position: int = 0

    def read(self) -> SessionRecord:
        return replace(self.record, body=json.loads(self.body), usage=json.loads(self.usage))


@dataclass
class AgentRow:
    workspace_id: str
    created_at: str
    latest_version: int
    archived_at: str | None = None
    # version -> (body as JSON text, created_at)
    versions: dict[int, tuple[str, str]] = field(default_factory=dict)


@dataclass
class MemoryDatabase:
    """Every table of the store as a dict keyed by id, and the lock that makes each write one transaction."""

    clock: Callable[[], float] = time.time
    workspaces: dict[str, str] = field(default_factory=dict)
    api_keys: dict[str, tuple[ApiKeyRecord, str]] = field(default_factory=dict)  # id -> (key, hash)
    agents: dict[str, AgentRow] = field(default_factory=dict)
    environments: dict[str, tuple[EnvironmentRecord, str]] = field(default_factory=dict)  # id -> (record, body)
    sessions: dict[str, SessionRow] = field(default_factory=dict)
    events: dict[str, EventRow] = field(default_factory=dict)  # by event id, in insertion order
    leases: dict[str, tuple[str, float]] = field(default_factory=dict)  # session id -> (owner, expires_at)
    vaults: dict[str, tuple[VaultRecord, str]] = field(default_factory=dict)
    credentials: dict[str, tuple[CredentialRecord, str]] = field(default_factory=dict)
    seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))  # the events' insertion order
    # Writes never await while they hold it today; the lock keeps them atomic should one ever need to (and says
    # where the transactions are).
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def stored_pair(record: R, body: Json) -> tuple[R, str]:
    """The record with its body as JSON text (the SQL adapters' encoder: what they would store, byte for byte)."""
    return record, dumps(body)


def read_body(pair: tuple[Any, str]) -> Any:
    record, body = pair
    return replace(record, body=json.loads(body))


def within(value: str, bounds: TimeBounds) -> bool:
    return (
        (bounds.gt is None or value > bounds.gt)
        and (bounds.gte is None or value >= bounds.gte)
        and (bounds.lt is None or value < bounds.lt)
        and (bounds.lte is None or value <= bounds.lte)
    )


def keyset_page(
    items: list[Any],
    key: Callable[[Any], tuple[Any, Any]],
    *,
    order: str,
    limit: int,
    cursor: Json | None,
    bidirectional: bool = False,
) -> Page:
    """One page of `items` ordered by `key` in `order`, with the SQL adapters' cursors (`sql_port._keyset_page`):
    a cursor carries the boundary key and a direction."""
    going_back = bool(cursor and cursor.get("d") == "prev")
    scan_desc = (order == "desc") != going_back
    boundary = tuple(cursor["k"]) if cursor and cursor.get("k") is not None else None
    scanned = sorted(items, key=key, reverse=scan_desc)
    if boundary is not None:
        scanned = [item for item in scanned if (key(item) < boundary if scan_desc else key(item) > boundary)]
    found, more = scanned[:limit], len(scanned) > limit
    if going_back:
        found.reverse()
    if not found:
        return Page(items=[])
    has_next = (more and not going_back) or going_back
    has_prev = (more and going_back) or (not going_back and boundary is not None)
    return Page(
        items=found,
        next_cursor={"d": "next", "k": list(key(found[-1]))} if has_next else None,
        prev_cursor={"d": "prev", "k": list(key(found[0]))} if bidirectional and has_prev else None,
    )


def newest_first(items: list[Any], include_archived: bool, limit: int, cursor: Json | None) -> Page:
    live = [item for item in items if include_archived or item.archived_at is None]
    return keyset_page(live, lambda item: (item.created_at, item.id), order="desc", limit=limit, cursor=cursor)


class MemoryTables:
    """The base of each port's in-memory code: the database it works on."""

    def __init__(self, database: MemoryDatabase | None = None) -> None:
        self.db = database if database is not None else MemoryDatabase()

    def events_of(self, session_id: str) -> list[EventRow]:
        return [event for event in self.db.events.values() if event.session_id == session_id]
