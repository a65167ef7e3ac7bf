"""The egress proxy's per-session bounds: connections open at once, and request-body bytes held whole.

At most `max_connections` connections of one session are open at once (tunnels included); one more is answered
`503` with `Retry-After` before anything of it is read (then, briefly, read and dropped so that the answer is not
lost to a reset: `relay.linger`; past `LINGERING_PER_CONNECTION` x `max_connections` such, they are cut). A relayed
connection holds a bounded amount of memory whatever it carries (a chunk each way and asyncio's stream buffers: a
few hundred KiB at most): bodies stream through. The one exception is credential substitution, which holds a body
whole: those bodies count against the session's `max_buffered_bytes` (a `BodyBudget`), and a body waits for room
(its bytes still unread, in the kernel's socket buffers) rather than growing the server; one that cannot get room
within `BODY_TIMEOUT_S` gets `503`. `EgressProxy.usage` reports both (`EgressUsage`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from corral.hands.net.http1 import Reject

log = logging.getLogger("corral.egress")

# Per session: connections open at once (package managers open 10-20 in parallel), and bytes of request bodies
# held whole for credential substitution at once; one such body is at most `BODY_LIMIT` (larger ones with a
# Content-Length stream through unsubstituted, larger chunked ones are refused with 413).
MAX_CONNECTIONS = 64
MAX_BUFFERED_BYTES = 16 * 1024 * 1024
BODY_LIMIT = 8 * 1024 * 1024
BODY_TIMEOUT_S = 60.0
RETRY_AFTER_S = 1
# How many refused connections (per allowed one) may be read to their end at once.
LINGERING_PER_CONNECTION = 4


@dataclass(frozen=True)
class EgressUsage:
    """What one session's proxy holds now, and the most request-body bytes it has held at once."""

    connections: int = 0
    buffered_bytes: int = 0
    peak_buffered_bytes: int = 0


class BodyBudget:
    """Bytes of request bodies held in memory for one session, never more than `limit` at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0
        self._released = asyncio.Event()

    async def acquire(self, size: int) -> None:
        """Wait until `size` (at most `limit`) more bytes fit, then count them as held."""
        while self.held + size > self.limit:
            self._released.clear()  # no await between the check and the wait: no release can be missed
            await self._released.wait()
        self.held += size
        self.peak = max(self.peak, self.held)

    def release(self, size: int) -> None:
        self.held -= size
        self._released.set()

    @contextlib.asynccontextmanager
    async def room_for(self, session_id: str, size: int) -> AsyncIterator[None]:
        """Hold `size` bytes of the budget while the body is held whole; a 503 `Reject` when no room comes in time."""
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                await self.acquire(size)
        except TimeoutError as exc:
            log.warning("egress refused: session %s: no room to hold a %d-byte request body", session_id, size)
            raise Reject(
                503,
                "Service Unavailable",
                f"Corral egress proxy: this session's requests already hold {self.held} bytes of bodies "
                f"for credential substitution, the most they may ({self.limit}); retry",
                retry_after_s=RETRY_AFTER_S,
            ) from exc
        try:
            yield
        finally:
            self.release(size)
