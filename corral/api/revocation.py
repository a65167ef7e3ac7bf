"""Revoking a key ends the requests it has in progress, not only its next ones.

The auth middleware checks a key when a request arrives. Every request is then held here under its key
until it ends, and while any is held, a check once a second asks the store which of the held keys are still
live: one indexed query for all of them, however many streams each key has open, and none at all while no
request is in flight. Revocation is a row in the database, so the check sees it whoever wrote it (`corral
keys revoke` from another process, another node sharing a PostgreSQL database); polling rather than
LISTEN/NOTIFY keeps one mechanism for both stores, at the cost of up to a second's delay.

A request of a revoked key is ended only where ending it leaves nothing half-done: while it waits on the
client (reading its body) or streams its response (an SSE stream). One that is busy in between (writing
the store, stopping a sandbox) finishes, and its response goes out: it was allowed when it began. A
stream it then starts ends at the next check.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
from starlette.types import Message, Receive, Send

from corral.session.store import Store

log = logging.getLogger("corral.api.revocation")

CHECK_INTERVAL_SECONDS = 1.0


class HeldRequest:
    """One request in progress: what it is waiting on, and the cancel scope that ends it."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self.cancel_scope = anyio.CancelScope()
        self.response_started = False
        self.response_finished = False
        self.content_type = b""
        self._receiving = 0
        self._receive = receive
        self._send = send

    async def receive(self) -> Message:
        self._receiving += 1
        try:
            return await self._receive()
        finally:
            self._receiving -= 1

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.response_started = True
            self.content_type = dict(message.get("headers", [])).get(b"content-type", b"")
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.response_finished = True
        await self._send(message)

    def end_if_waiting_on_client(self) -> None:
        if self._receiving > 0 or self.response_started:
            self.cancel_scope.cancel()

    @property
    def ended_by_revocation(self) -> bool:
        return self.cancel_scope.cancelled_caught


class KeyRevocations:
    """The requests in progress of each key, ended once their key is revoked (see the module docstring)."""

    def __init__(self, store: Store, interval: float = CHECK_INTERVAL_SECONDS) -> None:
        self._store = store
        self._interval = interval
        self._held: dict[str, set[HeldRequest]] = {}
        self._checker: asyncio.Task[None] | None = None

    @contextmanager
    def hold(self, key_id: str, receive: Receive, send: Send) -> Iterator[HeldRequest]:
        """Hold a request of `key_id` while the block runs; run the app on the held request's receive and send,
        inside its cancel scope."""
        request = HeldRequest(receive, send)
        self._held.setdefault(key_id, set()).add(request)
        if self._checker is None or self._checker.done():
            self._checker = asyncio.get_running_loop().create_task(self._check_while_held(), name="key-revocations")
        try:
            yield request
        finally:
            requests = self._held[key_id]
            requests.discard(request)
            if not requests:
                del self._held[key_id]

    async def _check_while_held(self) -> None:
        while self._held:
            await asyncio.sleep(self._interval)
            await self.check()

    async def check(self) -> None:
        """End the requests of every held key that is no longer live."""
        if not self._held:
            return
        try:
            live = await self._store.live_api_key_ids(list(self._held))
        except Exception as exc:  # the store may be briefly unavailable: the next check tries again
            log.warning("could not check API keys for revocation: %s", exc)
            return
        for key_id, requests in list(self._held.items()):
            if key_id not in live:
                for request in list(requests):
                    request.end_if_waiting_on_client()
