"""Session events (spec §8, §1.5-1.7): send, list, and the live SSE stream, driven by the official SDK."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import anthropic
import pytest

from tests.support.fake_model import FakeModel
from tests.support.live_events import (
    WAIT_SECONDS,
    LiveEvents,
    all_events,
    raw_frames,
    raw_stream,
    run_turn,
    types_of,
    user_message,
)
from tests.support.server import CorralServer


@pytest.fixture
def finished_turn(client: anthropic.Anthropic, session: Any, fake_model: FakeModel) -> list[Any]:
    """A session that has run one tool turn (a dozen events), and what its stream carried."""
    fake_model.script({"text": "Looking.", "tool_use": {"name": "bash", "input": {"command": "echo hi"}}})
    return run_turn(client, session.id, [user_message("list the files")])


# --- send -----------------------------------------------------------------------------------------


def test_send_echoes_each_event_with_a_new_id_and_null_processed_at(client: anthropic.Anthropic, session: Any) -> None:
    sent = client.beta.sessions.events.send(session.id, events=[user_message("first"), user_message("second")])

    assert [event.type for event in sent.data] == ["user.message", "user.message"]
    assert all(event.id.startswith("sevt_") for event in sent.data)
    assert sent.data[0].id != sent.data[1].id
    assert [event.processed_at for event in sent.data] == [None, None]
    assert [event.content[0].text for event in sent.data] == ["first", "second"]


def test_send_to_an_unknown_session_is_404(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.events.send("sesn_011CDoesNotExist0000000000", events=[user_message("hello")])


def test_send_of_a_message_without_content_is_400_and_stores_nothing(client: anthropic.Anthropic, session: Any) -> None:
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.events.send(
            session.id,
            events=[user_message("valid"), {"type": "user.message"}],  # type: ignore[list-item]
        )
    # Had any of the batch been stored, the next turn would process it along with this message.
    run_turn(client, session.id, [user_message("after")])

    messages = all_events(client, session.id, types=["user.message"])
    assert [event.content[0].text for event in messages] == ["after"]


def test_send_of_an_unknown_event_type_is_400_and_stores_nothing(client: anthropic.Anthropic, session: Any) -> None:
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.events.send(
            session.id,
            events=[user_message("valid"), {"type": "user.bogus", "content": []}],  # type: ignore[list-item]
        )
    # Had any of the batch been stored, the next turn would process it along with this message.
    run_turn(client, session.id, [user_message("after")])

    messages = all_events(client, session.id, types=["user.message"])
    assert [event.content[0].text for event in messages] == ["after"]


# --- list -----------------------------------------------------------------------------------------


def test_list_is_oldest_first_by_default_and_matches_the_stream(
    client: anthropic.Anthropic, session: Any, finished_turn: list[Any]
) -> None:
    listed = all_events(client, session.id)

    assert [event.id for event in listed] == [event.id for event in finished_turn]
    stamps = [event.processed_at for event in listed]
    assert stamps == sorted(stamps)


def test_list_order_desc_is_newest_first(client: anthropic.Anthropic, session: Any, finished_turn: list[Any]) -> None:
    ascending = all_events(client, session.id)
    descending = all_events(client, session.id, order="desc")

    assert [event.id for event in descending] == [event.id for event in reversed(ascending)]


def test_list_types_filter_returns_only_those_types_in_order(
    client: anthropic.Anthropic, session: Any, finished_turn: list[Any]
) -> None:
    wanted = {"agent.tool_use", "agent.tool_result"}
    filtered = all_events(client, session.id, types=sorted(wanted))

    assert [event.id for event in filtered] == [event.id for event in finished_turn if event.type in wanted]
    assert types_of(filtered) == ["agent.tool_use", "agent.tool_result"]


def test_list_unknown_type_filter_is_400(client: anthropic.Anthropic, session: Any) -> None:
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.events.list(session.id, types=["agent.bogus"])  # type: ignore[list-item]


def test_list_created_at_bounds_compare_processed_at(
    client: anthropic.Anthropic, session: Any, finished_turn: list[Any]
) -> None:
    everything = all_events(client, session.id)
    pivot: datetime = everything[len(everything) // 2].processed_at

    at_or_after = all_events(client, session.id, created_at_gte=pivot)
    at_or_before = all_events(client, session.id, created_at_lte=pivot)
    after = all_events(client, session.id, created_at_gt=pivot)
    before = all_events(client, session.id, created_at_lt=pivot)

    assert [e.id for e in at_or_after] == [e.id for e in everything if e.processed_at >= pivot]
    assert [e.id for e in at_or_before] == [e.id for e in everything if e.processed_at <= pivot]
    assert [e.id for e in after] == [e.id for e in everything if e.processed_at > pivot]
    assert [e.id for e in before] == [e.id for e in everything if e.processed_at < pivot]
    assert 0 < len(at_or_after) < len(everything)
    assert 0 < len(at_or_before) < len(everything)


def test_list_pages_with_limit_have_no_gap_or_duplicate(
    client: anthropic.Anthropic, session: Any, finished_turn: list[Any]
) -> None:
    everything = [event.id for event in all_events(client, session.id)]

    paged: list[str] = []
    page = client.beta.sessions.events.list(session.id, limit=3)
    pages = 1
    while True:
        assert len(page.data) <= 3
        paged.extend(event.id for event in page.data)
        if not page.next_page:
            break
        page = client.beta.sessions.events.list(session.id, limit=3, page=page.next_page)
        pages += 1
        assert pages <= len(everything), "paging does not terminate"

    assert paged == everything
    assert pages >= len(everything) // 3


# --- stream ---------------------------------------------------------------------------------------


def test_stream_is_served_as_text_event_stream(server: CorralServer, session: Any) -> None:
    with raw_stream(server, session.id) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].split(";")[0].strip() == "text/event-stream"


def test_stream_frames_carry_an_event_line_equal_to_the_json_type(
    server: CorralServer, client: anthropic.Anthropic, session: Any, fake_model: FakeModel
) -> None:
    fake_model.script({"text": "Looking.", "tool_use": {"name": "bash", "input": {"command": "echo hi"}}})
    payload_frames: list[list[str]] = []
    with raw_stream(server, session.id) as response:
        client.beta.sessions.events.send(session.id, events=[user_message("go")])
        for frame in raw_frames(response.iter_lines(), time.monotonic() + WAIT_SECONDS):
            if all(line.startswith(":") for line in frame):
                continue  # keepalive comment
            payload_frames.append(frame)
            if any('"session.status_idle"' in line for line in frame):
                break

    assert len(payload_frames) >= 8
    for frame in payload_frames:
        events = [line for line in frame if line.startswith("event:")]
        data = [line for line in frame if line.startswith("data:")]
        assert len(events) == 1, frame
        assert len(data) == 1, frame
        body = json.loads(data[0][len("data:") :])
        assert events[0][len("event:") :].strip() == body["type"]


def test_stream_sends_keepalives_while_idle(server: CorralServer, session: Any) -> None:
    deadline = time.monotonic() + 5
    with raw_stream(server, session.id) as response:
        for frame in raw_frames(response.iter_lines(), deadline):
            is_comment = all(line.startswith(":") for line in frame)
            if is_comment or "event: ping" in frame:
                return
            raise AssertionError(f"an idle session's stream carried a non-keepalive frame: {frame}")
    raise AssertionError("the stream closed without a keepalive")


def test_stream_is_live_only_and_does_not_replay_earlier_events(
    client: anthropic.Anthropic, session: Any, finished_turn: list[Any]
) -> None:
    earlier = {event.id for event in all_events(client, session.id)}
    with LiveEvents(client, session.id) as live:
        sent = client.beta.sessions.events.send(session.id, events=[user_message("again")])
        seen = live.until_idle()

    assert seen[0].type == "user.message" and seen[0].id == sent.data[0].id
    assert not earlier & {event.id for event in seen}


def test_two_streams_on_one_session_see_the_same_events_in_the_same_order(
    client: anthropic.Anthropic, session: Any, fake_model: FakeModel
) -> None:
    fake_model.script({"tool_use": {"name": "bash", "input": {"command": "echo two"}}})
    with LiveEvents(client, session.id) as first, LiveEvents(client, session.id) as second:
        client.beta.sessions.events.send(session.id, events=[user_message("go")])
        seen_first = first.until_idle()
        seen_second = second.until_idle()

    assert len(seen_first) >= 8
    assert [event.id for event in seen_first] == [event.id for event in seen_second]


def test_event_deltas_preview_the_agent_message_before_it_arrives(
    client: anthropic.Anthropic, session: Any, fake_model: FakeModel
) -> None:
    final_text = "A reply long enough to arrive in several streamed pieces."
    fake_model.script({"text": final_text})
    seen = run_turn(client, session.id, [user_message("talk")], event_deltas=["agent.message"])

    kinds = types_of(seen)
    start = seen[kinds.index("event_start")]
    assert start.event.type == "agent.message"
    message = next(event for event in seen if event.type == "agent.message")
    assert message.id == start.event.id
    deltas = [event for event in seen if event.type == "event_delta"]
    assert deltas, kinds
    assert kinds.index("event_start") < kinds.index("event_delta") < kinds.index("agent.message")
    assert all(delta.event_id == start.event.id for delta in deltas)
    previewed = "".join(delta.delta.content.text for delta in deltas)
    assert previewed and final_text.startswith(previewed)
    assert message.content[0].text == final_text
    # Previews are stream-only: the log never holds them.
    assert not {"event_start", "event_delta"} & set(types_of(all_events(client, session.id)))


def test_sdk_accumulator_folds_previews_into_the_final_message(
    client: anthropic.Anthropic, session: Any, fake_model: FakeModel
) -> None:
    sessions_lib = pytest.importorskip("anthropic.lib.sessions")
    accumulate = sessions_lib.accumulate_managed_agents_event
    final_text = "Accumulated from several deltas into one message."
    fake_model.script({"text": final_text})
    seen = run_turn(client, session.id, [user_message("talk")], event_deltas=["agent.message"])

    snapshot = None
    previews = []
    for event in seen:
        snapshot = accumulate(snapshot, event)
        if event.type == "event_delta":
            previews.append(snapshot.content[0].text)

    assert previews and all(final_text.startswith(text) for text in previews)
    assert snapshot is not None and snapshot.type == "agent.message"
    assert snapshot.content[0].text == final_text


def test_event_deltas_of_an_unknown_type_is_400(client: anthropic.Anthropic, session: Any) -> None:
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.events.stream(session.id, event_deltas=["bogus"])  # type: ignore[list-item]


def test_deleting_a_session_sends_session_deleted_and_ends_open_streams(
    client: anthropic.Anthropic, session: Any
) -> None:
    with LiveEvents(client, session.id) as first, LiveEvents(client, session.id) as second:
        client.beta.sessions.delete(session.id)
        seen_first = first.wait_ended()
        seen_second = second.wait_ended()

    assert types_of(seen_first) == ["session.deleted"]
    assert types_of(seen_second) == ["session.deleted"]
    assert seen_first[0].id.startswith("sevt_")
