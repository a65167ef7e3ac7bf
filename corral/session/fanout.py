"""Fan-out of appended events to the live streams of a session, inside one process.

Each event is serialised once and handed to every subscriber's bounded queue. A subscriber that falls
more than `max_backlog` frames behind is cut off with an error frame rather than letting memory grow
without bound; its client reconnects and reads the gap back with `events.list`.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from corral.session.records import Json


@dataclass(frozen=True)
class Frame:
    """One SSE frame: the `event:` name and the JSON text of `data:`."""

    event: str
    data: str

    @classmethod
    def of(cls, payload: Json) -> Frame:
        return cls(event=str(payload["type"]), data=json.dumps(payload, separators=(",", ":"), ensure_ascii=False))


_END = Frame(event="", data="")


@dataclass(eq=False)
class Subscription:
    """A live view of one session's events, as an async iterator of frames."""

    session_id: str
    previews: frozenset[str]
    max_backlog: int
    queue: asyncio.Queue[Frame] = field(default_factory=asyncio.Queue)
    overflowed: bool = False
    # Previews this stream saw start: a stream that connects mid-message gets no orphan deltas.
    started_previews: set[str] = field(default_factory=set)

    def offer(self, frame: Frame) -> None:
        if self.overflowed:
            return
        if self.queue.qsize() >= self.max_backlog:
            self.overflowed = True
            self.queue.put_nowait(_overflow_frame())
            self.queue.put_nowait(_END)
            return
        self.queue.put_nowait(frame)

    def end(self) -> None:
        self.queue.put_nowait(_END)

    async def __aiter__(self) -> AsyncIterator[Frame]:
        while True:
            frame = await self.queue.get()
            if frame is _END:
                return
            yield frame


def _overflow_frame() -> Frame:
    return Frame.of(
        {
            "type": "error",
            "error": {
                "type": "api_error",
                "message": "this stream fell too far behind and was closed; reconnect and list events to catch up",
            },
        }
    )


class EventBus:
    """Per-process publish/subscribe keyed by session id."""

    def __init__(self, max_backlog: int = 10_000) -> None:
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)
        self._max_backlog = max_backlog

    def subscribe(self, session_id: str, previews: frozenset[str] = frozenset()) -> Subscription:
        subscription = Subscription(session_id, previews, self._max_backlog)
        self._subscribers[session_id].add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(subscription.session_id)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscribers[subscription.session_id]

    def has_subscribers(self, session_id: str) -> bool:
        return session_id in self._subscribers

    def wants_previews(self, session_id: str, kind: str) -> bool:
        return any(kind in sub.previews for sub in self._subscribers.get(session_id, ()))

    def publish(self, session_id: str, payloads: list[Json]) -> None:
        """Deliver persisted events (wire JSON) to every subscriber of the session, in order."""
        subscribers = self._subscribers.get(session_id)
        if not subscribers:
            return
        frames = [Frame.of(payload) for payload in payloads]
        for subscriber in list(subscribers):
            for frame in frames:
                subscriber.offer(frame)

    def publish_preview(self, session_id: str, kind: str, payload: Json) -> None:
        """Deliver a stream-only `event_start`/`event_delta` to subscribers that asked for `kind` previews."""
        subscribers = [sub for sub in self._subscribers.get(session_id, ()) if kind in sub.previews]
        if not subscribers:
            return
        frame = Frame.of(payload)
        is_start = payload["type"] == "event_start"
        event_id = payload["event"]["id"] if is_start else payload["event_id"]
        for subscriber in subscribers:
            if is_start:
                subscriber.started_previews.add(event_id)
            elif event_id not in subscriber.started_previews:
                continue
            subscriber.offer(frame)

    def end_session(self, session_id: str) -> None:
        """Close every stream of a deleted session (after its `session.deleted` frame)."""
        for subscriber in self._subscribers.pop(session_id, set()):
            subscriber.end()

    def close(self) -> None:
        for session_id in list(self._subscribers):
            self.end_session(session_id)

    def stats(self) -> dict[str, Any]:
        return {
            "sessions": len(self._subscribers),
            "streams": sum(len(s) for s in self._subscribers.values()),
        }
