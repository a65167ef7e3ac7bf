"""Fan-out of a session's events to its live streams, strictly in log order, without gaps or duplicates.

Every persisted event has a position in its session's log. A subscription remembers the last position it
was handed; an event that arrives out of turn (appended concurrently, or by another node, which only says
"the log now reaches position N") makes the subscription catch up from the store instead. The frames of
local appends are serialised once and shared by every subscriber.

A subscriber that falls more than `max_backlog` frames behind is cut off with an error frame rather than
letting memory grow without bound; its client reconnects (with `Last-Event-ID`, or with `events.list`).
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from dataclasses import dataclass, field

from corral.session.records import EventRecord, Json


@dataclass(frozen=True)
class Frame:
    """One SSE frame: the `event:` name, the JSON text of `data:`, and the log position it carries (if any)."""

    event: str
    data: str
    position: int | None = None
    event_id: str | None = None

    @classmethod
    def of(cls, payload: Json, position: int | None = None) -> Frame:
        event_id = payload.get("id") if position is not None else None
        return cls(
            event=str(payload["type"]),
            data=json.dumps(payload, separators=(",", ":"), ensure_ascii=False),
            position=position,
            event_id=event_id,
        )

    @classmethod
    def of_record(cls, record: EventRecord) -> Frame:
        return cls.of(record.to_wire(), record.position)


END = Frame(event="", data="")
# Asks the reader to fetch what the log holds beyond the subscription's position before going on.
CATCH_UP = Frame(event="", data="catch-up")


@dataclass(eq=False)
class Subscription:
    """A live view of one session's events; `queue` holds frames, `CATCH_UP` markers and `END`."""

    session_id: str
    previews: frozenset[str]
    max_backlog: int
    queue: asyncio.Queue[Frame] = field(default_factory=asyncio.Queue)
    # The highest position queued (or promised by a queued CATCH_UP); None until the first event.
    queued_through: int | None = None
    # The position the reader starts after (set when the stream opens).
    start: int = 0
    overflowed: bool = False
    # Previews this stream saw start: a stream that connects mid-message gets no orphan deltas.
    started_previews: set[str] = field(default_factory=set)

    def _put(self, frame: Frame) -> None:
        if self.overflowed:
            return
        if self.queue.qsize() >= self.max_backlog:
            self.overflowed = True
            self.queue.put_nowait(_overflow_frame())
            self.queue.put_nowait(END)
            return
        self.queue.put_nowait(frame)

    def offer(self, frames: list[Frame]) -> None:
        """Queue positioned frames in order; a gap turns into one catch-up from the store."""
        for frame in frames:
            assert frame.position is not None
            if self.queued_through is not None and frame.position <= self.queued_through:
                continue
            if self.queued_through is None or frame.position == self.queued_through + 1:
                self._put(frame)
            else:
                self._put(CATCH_UP)
            self.queued_through = frame.position

    def reached(self, position: int) -> None:
        """The log reaches `position` (said by another node): catch up if that is news."""
        if self.queued_through is None or position > self.queued_through:
            self._put(CATCH_UP)
            self.queued_through = position

    def offer_transient(self, frame: Frame) -> None:
        self._put(frame)

    def end(self) -> None:
        self.queue.put_nowait(END)


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


# Sessions whose log position this process remembers (about 200 bytes each); forgetting one costs its brain one
# read of the log, never a missed event.
MAX_KNOWN_POSITIONS = 10_000


class EventBus:
    """Per-process publish/subscribe keyed by session id.

    Every append of this process passes through `publish`, and every append of another node through `reached`,
    so the bus also knows how far each session's log reaches: the brain reads the log only when it has grown
    past what the brain has seen (`known_position`)."""

    def __init__(self, max_backlog: int = 10_000) -> None:
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)
        self._max_backlog = max_backlog
        # The highest committed position this process has heard of, per session (oldest first, bounded).
        self._known_positions: dict[str, int] = {}

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

    def session_ids(self) -> list[str]:
        """The sessions that have live streams on this node."""
        return list(self._subscribers)

    def has_subscribers(self, session_id: str) -> bool:
        return session_id in self._subscribers

    def wants_previews(self, session_id: str, kind: str) -> bool:
        return any(kind in sub.previews for sub in self._subscribers.get(session_id, ()))

    def known_position(self, session_id: str) -> int | None:
        """How far the session's log reaches, as far as this process has heard (every position up to it is
        committed); None when it has heard nothing (or forgot)."""
        return self._known_positions.get(session_id)

    def _heard(self, session_id: str, position: int) -> None:
        known = self._known_positions.get(session_id)
        if known is None:
            if len(self._known_positions) >= MAX_KNOWN_POSITIONS:
                del self._known_positions[next(iter(self._known_positions))]
            self._known_positions[session_id] = position
        elif position > known:
            self._known_positions[session_id] = position

    def publish(self, session_id: str, records: list[EventRecord]) -> None:
        """Deliver persisted events to every subscriber of the session, in log order."""
        if records and records[-1].position is not None:
            self._heard(session_id, records[-1].position)
        subscribers = self._subscribers.get(session_id)
        if not subscribers or not records:
            return
        frames = [Frame.of_record(record) for record in records]
        for subscriber in list(subscribers):
            subscriber.offer(frames)
            for record in records:
                subscriber.started_previews.discard(record.id)

    def reached(self, session_id: str, position: int) -> None:
        """Another node appended up to `position`: subscribers behind it catch up from the store."""
        self._heard(session_id, position)
        for subscriber in list(self._subscribers.get(session_id, ())):
            subscriber.reached(position)

    def publish_transient(self, session_id: str, payload: Json) -> None:
        """A frame that is not in the log (e.g. `session.deleted`, whose log is gone)."""
        frame = Frame.of(payload)
        for subscriber in list(self._subscribers.get(session_id, ())):
            subscriber.offer_transient(frame)

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
            subscriber.offer_transient(frame)

    def end_session(self, session_id: str) -> None:
        """Close every stream of a deleted session (after its `session.deleted` frame)."""
        self._known_positions.pop(session_id, None)
        for subscriber in self._subscribers.pop(session_id, set()):
            subscriber.end()

    def close(self) -> None:
        for session_id in list(self._subscribers):
            self.end_session(session_id)
