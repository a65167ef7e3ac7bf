"""How the nodes of one Corral deployment tell each other about work and new events.

A single node (SQLite) needs nothing: every wake and append happens in its own process. Nodes sharing a
PostgreSQL database use LISTEN/NOTIFY, sent by the store right after the transaction that stores the events
commits (`PostgresStore._send_notices`), so a notice arrives only once what it announces is committed; the
brain relies on that to skip reading a log no notice says has grown. `corral_wake` carries `session_id` (or
`session_id:interrupt`) when client events are queued, and `corral_events` carries `session_id:position`
when events are appended.
Notifications are hints: streams catch up from the store and the brain sweeps for unclaimed work, so a
lost notification delays something, never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("corral.cluster")

WAKE_CHANNEL = "corral_wake"
EVENTS_CHANNEL = "corral_events"

OnWake = Callable[[str, bool], None]
OnAppended = Callable[[str, int], None]
OnReconnect = Callable[[], None]


class Cluster(Protocol):
    async def start(self, on_wake: OnWake, on_appended: OnAppended, on_reconnect: OnReconnect) -> None:
        """Begin listening; callbacks run on the event loop."""
        ...

    async def close(self) -> None: ...


class SingleNode:
    """The cluster of one: nothing to tell anyone."""

    async def start(self, on_wake: OnWake, on_appended: OnAppended, on_reconnect: OnReconnect) -> None:
        return None

    async def close(self) -> None:
        return None


def parse_wake(payload: str) -> tuple[str, bool]:
    session_id, _, flag = payload.partition(":")
    return session_id, flag == "interrupt"


def parse_appended(payload: str) -> tuple[str, int] | None:
    session_id, _, position = payload.rpartition(":")
    return (session_id, int(position)) if session_id and position.isdigit() else None


class PostgresCluster:
    """LISTEN/NOTIFY on a dedicated connection, reconnecting with backoff when the server goes away."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._listener: asyncio.Task[None] | None = None

    async def start(self, on_wake: OnWake, on_appended: OnAppended, on_reconnect: OnReconnect) -> None:
        ready = asyncio.get_running_loop().create_future()
        self._listener = asyncio.create_task(self._listen(on_wake, on_appended, on_reconnect, ready), name="cluster")
        await asyncio.wait({ready, self._listener}, timeout=10, return_when=asyncio.FIRST_COMPLETED)

    async def _listen(
        self, on_wake: OnWake, on_appended: OnAppended, on_reconnect: OnReconnect, ready: asyncio.Future[None]
    ) -> None:
        import psycopg

        delay = 0.1
        first = True
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {WAKE_CHANNEL}")
                    await conn.execute(f"LISTEN {EVENTS_CHANNEL}")
                    if not ready.done():
                        ready.set_result(None)
                    if not first:
                        on_reconnect()  # what was said while we were away is caught up from the store
                    first, delay = False, 0.1
                    async for notice in conn.notifies():
                        if notice.channel == WAKE_CHANNEL:
                            on_wake(*parse_wake(notice.payload))
                        elif (appended := parse_appended(notice.payload)) is not None:
                            on_appended(*appended)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cluster listener lost its connection (%s); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
