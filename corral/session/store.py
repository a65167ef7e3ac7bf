"""The storage interface: every read and write of durable state goes through a `Store`.

`Store` is the combination of the narrow ports in `corral.session.ports` (keys, resources, work and leases, the
event log, vaults), which each adapter implements whole: SQLite and PostgreSQL over shared SQL
(`corral.session.sql_store`), and the in-memory reference adapter (`corral.session.memory`). The API and the brain
never see SQL. A database that cannot serve a call raises `StorageUnavailable`, whatever the adapter.
"""

from __future__ import annotations

from typing import Any, Protocol

from corral.session.ports import EventLog, Keys, Resources, Vaults, Work


class StorageUnavailable(Exception):
    """The database cannot serve the call: disk full, locked for too long, read-only, unreachable or restarting.

    The API answers it with a 503 `api_error` (`corral.api.errors`); the command line prints its `message`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Store(Keys, Resources, Work, EventLog, Vaults, Protocol):
    """Every port at once: what an adapter implements, and what callers that need several ports hold."""

    async def close(self) -> None: ...

    def describe(self) -> dict[str, Any]:
        """What this store is, for logs and the health endpoint."""
        ...
