"""The event bus hands each session's events to that session's live streams, in order, and bounds backlog."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from corral.session.fanout import CATCH_UP, END, EventBus, Subscription
from corral.session.records import EventRecord

# Guards against a hang if a stream fails to end; never reached when the code is right.
HANG_GUARD_SECONDS = 5


async def collect(subscription: Subscription) -> list[dict[str, Any]]:
    """The frames queued until the stream ends (catch-up markers shown as {"type": "catch-up"})."""

    async def read() -> list[dict[str, Any]]:
        frames = []
        while (frame := await subscription.queue.get()) is not END:
            frames.append({"type": "catch-up"} if frame is CATCH_UP else json.loads(frame.data))
        return frames

    return await asyncio.wait_for(read(), HANG_GUARD_SECONDS)


def event(event_id: str) -> EventRecord:
    """A persisted event whose position is the number in its id (e1 is at position 1)."""
    position = int(event_id.lstrip("abcdefghijklmnopqrstuvwxyz"))
    return EventRecord(event_id, "sess_1", "agent.message", {"content": []}, position, "2026-01-01T00:00:00.000000Z")


def start(event_id: str) -> dict[str, Any]:
    return {"type": "event_start", "event": {"type": "agent.message", "id": event_id}}


def delta(event_id: str, text: str) -> dict[str, Any]:
    return {
        "type": "event_delta",
        "event_id": event_id,
        "delta": {"type": "content_delta", "index": 0, "content": {"type": "text", "text": text}},
    }


def ids(frames: list[dict[str, Any]]) -> list[str]:
    return [frame.get("id") or frame.get("event_id") or frame["event"]["id"] for frame in frames]


async def test_published_events_reach_every_subscriber_of_the_session_in_order() -> None:
    bus = EventBus()
    first, second = bus.subscribe("sess_1"), bus.subscribe("sess_1")

    bus.publish("sess_1", [event("e1"), event("e2")])
    bus.publish("sess_1", [event("e3")])
    bus.end_session("sess_1")

    assert ids(await collect(first)) == ["e1", "e2", "e3"]
    assert ids(await collect(second)) == ["e1", "e2", "e3"]


async def test_frames_carry_the_event_type_as_their_name() -> None:
    bus = EventBus()
    subscription = bus.subscribe("sess_1")

    bus.publish("sess_1", [event("e1")])
    frame = subscription.queue.get_nowait()

    assert frame.event == "agent.message"
    assert json.loads(frame.data) == event("e1").to_wire()
    assert frame.position == 1


async def test_events_of_another_session_are_not_delivered() -> None:
    bus = EventBus()
    subscription = bus.subscribe("sess_1")

    bus.publish("sess_2", [event("x1")])
    bus.publish("sess_1", [event("e1")])
    subscription.end()

    assert ids(await collect(subscription)) == ["e1"]


async def test_a_subscriber_beyond_max_backlog_gets_an_error_frame_and_its_stream_ends() -> None:
    bus = EventBus(max_backlog=2)
    subscription = bus.subscribe("sess_1")

    bus.publish("sess_1", [event("e1"), event("e2"), event("e3"), event("e4")])
    subscription.end()

    frames = await collect(subscription)
    assert ids(frames[:2]) == ["e1", "e2"]
    assert len(frames) == 3
    assert frames[2]["type"] == "error"
    assert frames[2]["error"]["type"] == "api_error"


async def test_an_overflowed_subscriber_gets_nothing_more() -> None:
    bus = EventBus(max_backlog=1)
    subscription = bus.subscribe("sess_1")
    bus.publish("sess_1", [event("e1"), event("e2")])

    bus.publish("sess_1", [event("e3")])
    subscription.end()

    assert [frame["type"] for frame in await collect(subscription)] == ["agent.message", "error"]


async def test_previews_reach_only_subscribers_that_asked_for_that_kind() -> None:
    bus = EventBus()
    wants = bus.subscribe("sess_1", previews=frozenset({"agent.message"}))
    other_kind = bus.subscribe("sess_1", previews=frozenset({"agent.thinking"}))
    plain = bus.subscribe("sess_1")

    bus.publish_preview("sess_1", "agent.message", start("p1"))
    bus.publish_preview("sess_1", "agent.message", delta("p1", "Hel"))
    bus.end_session("sess_1")

    assert [frame["type"] for frame in await collect(wants)] == ["event_start", "event_delta"]
    assert await collect(other_kind) == []
    assert await collect(plain) == []


async def test_wants_previews_reports_whether_any_subscriber_asked_for_the_kind() -> None:
    bus = EventBus()
    bus.subscribe("sess_1", previews=frozenset({"agent.message"}))

    assert bus.wants_previews("sess_1", "agent.message") is True
    assert bus.wants_previews("sess_1", "agent.thinking") is False
    assert bus.wants_previews("sess_2", "agent.message") is False


async def test_a_delta_whose_start_the_subscriber_did_not_see_is_not_delivered() -> None:
    bus = EventBus()
    early = bus.subscribe("sess_1", previews=frozenset({"agent.message"}))
    bus.publish_preview("sess_1", "agent.message", start("p1"))
    late = bus.subscribe("sess_1", previews=frozenset({"agent.message"}))

    bus.publish_preview("sess_1", "agent.message", delta("p1", "lo"))
    bus.publish_preview("sess_1", "agent.message", start("p2"))
    bus.publish_preview("sess_1", "agent.message", delta("p2", "next"))
    bus.end_session("sess_1")

    assert [(frame["type"], ids([frame])[0]) for frame in await collect(late)] == [
        ("event_start", "p2"),
        ("event_delta", "p2"),
    ]
    assert len(await collect(early)) == 4


async def test_end_session_ends_every_stream_of_the_session() -> None:
    bus = EventBus()
    subscription = bus.subscribe("sess_1")
    bus.publish("sess_1", [event("e1")])

    bus.end_session("sess_1")

    assert ids(await collect(subscription)) == ["e1"]
    assert bus.has_subscribers("sess_1") is False


async def test_end_session_leaves_other_sessions_streaming() -> None:
    bus = EventBus()
    other = bus.subscribe("sess_2")

    bus.end_session("sess_1")
    bus.publish("sess_2", [event("x2")])

    assert bus.has_subscribers("sess_2") is True
    assert other.queue.get_nowait().event == "agent.message"


async def test_unsubscribe_stops_delivery() -> None:
    bus = EventBus()
    leaving = bus.subscribe("sess_1")
    staying = bus.subscribe("sess_1")
    bus.publish("sess_1", [event("e1")])

    bus.unsubscribe(leaving)
    bus.publish("sess_1", [event("e2")])
    leaving.end()
    staying.end()

    assert ids(await collect(leaving)) == ["e1"]
    assert ids(await collect(staying)) == ["e1", "e2"]


async def test_the_last_unsubscribe_leaves_the_session_without_subscribers() -> None:
    bus = EventBus()
    subscription = bus.subscribe("sess_1")

    bus.unsubscribe(subscription)

    assert bus.has_subscribers("sess_1") is False


async def test_an_event_already_queued_is_not_queued_again() -> None:
    bus = EventBus()
    subscription = bus.subscribe("sess_1")

    bus.publish("sess_1", [event("e1"), event("e2")])
    bus.publish("sess_1", [event("e2")])
    bus.end_session("sess_1")

    assert ids(await collect(subscription)) == ["e1", "e2"]


async def test_an_event_out_of_turn_becomes_one_catch_up_from_the_store() -> None:
    bus = EventBus()
    subscription = bus.subscribe("sess_1")
    bus.publish("sess_1", [event("e1")])

    bus.publish("sess_1", [event("e3")])
    bus.publish("sess_1", [event("e4")])
    bus.end_session("sess_1")

    assert [frame.get("id", frame["type"]) for frame in await collect(subscription)] == ["e1", "catch-up", "e4"]


async def test_another_nodes_append_makes_subscribers_behind_it_catch_up() -> None:
    bus = EventBus()
    behind, current = bus.subscribe("sess_1"), bus.subscribe("sess_1")
    bus.publish("sess_1", [event("e1")])
    current.queued_through = 5

    bus.reached("sess_1", 5)
    bus.end_session("sess_1")

    assert [frame.get("id", frame["type"]) for frame in await collect(behind)] == ["e1", "catch-up"]
    assert [frame.get("id", frame["type"]) for frame in await collect(current)] == ["e1"]
