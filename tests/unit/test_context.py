"""The conversation the model sees is rebuilt from the log's conversation events alone."""

from __future__ import annotations

from typing import Any

from corral.brain.context import ConversationBuilder
from corral.session.records import EventRecord


def event(event_id: str, event_type: str, **body: Any) -> EventRecord:
    return EventRecord(id=event_id, session_id="sess_1", type=event_type, body=body, position=None, processed_at=None)


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def build(*events: EventRecord) -> ConversationBuilder:
    builder = ConversationBuilder()
    for item in events:
        builder.add(item)
    return builder


def test_a_tool_round_trip_becomes_alternating_turns_with_the_event_id_as_tool_use_id() -> None:
    builder = build(
        event("u1", "user.message", content=[text("list files")]),
        event("a1", "agent.message", content=[text("Looking.")]),
        event("t1", "agent.tool_use", name="bash", input={"command": "ls"}),
        event("r1", "agent.tool_result", tool_use_id="t1", content=[text("a.txt")]),
        event("a2", "agent.message", content=[text("One file.")]),
    )

    assert builder.messages() == [
        {"role": "user", "content": [text("list files")]},
        {
            "role": "assistant",
            "content": [text("Looking."), {"type": "tool_use", "id": "t1", "name": "bash", "input": {"command": "ls"}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [text("a.txt")]}]},
        {"role": "assistant", "content": [text("One file.")]},
    ]


def test_consecutive_user_messages_merge_into_one_turn() -> None:
    builder = build(
        event("u1", "user.message", content=[text("first")]),
        event("u2", "user.message", content=[text("second")]),
    )

    assert builder.messages() == [{"role": "user", "content": [text("first"), text("second")]}]


def test_tool_results_come_before_text_in_a_user_turn_that_has_both() -> None:
    builder = build(
        event("t1", "agent.tool_use", name="bash", input={"command": "ls"}),
        event("u1", "user.message", content=[text("also this")]),
        event("r1", "agent.tool_result", tool_use_id="t1", content=[text("out")]),
    )

    [_, user] = builder.messages()
    assert [block["type"] for block in user["content"]] == ["tool_result", "text"]


def test_an_errored_tool_result_keeps_is_error() -> None:
    builder = build(
        event("t1", "agent.tool_use", name="bash", input={}),
        event("r1", "agent.tool_result", tool_use_id="t1", content=[text("boom")], is_error=True),
    )

    assert builder.messages()[-1]["content"][0]["is_error"] is True


def test_custom_tool_use_and_its_result_map_to_tool_use_and_tool_result() -> None:
    builder = build(
        event("u1", "user.message", content=[text("weather?")]),
        event("c1", "agent.custom_tool_use", name="get_weather", input={"city": "Oslo"}),
        event("r1", "user.custom_tool_result", custom_tool_use_id="c1", content=[text("rain")]),
    )

    assert builder.messages()[1:] == [
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "c1", "name": "get_weather", "input": {"city": "Oslo"}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": [text("rain")]}]},
    ]


def test_non_conversation_events_are_ignored() -> None:
    builder = build(
        event("u1", "user.message", content=[text("hi")]),
        event("s1", "session.status_idle"),
        event("m1", "span.model_request_end", model_usage={}),
    )

    assert builder.messages() == [{"role": "user", "content": [text("hi")]}]


def test_awaits_reply_after_a_user_message() -> None:
    assert build(event("u1", "user.message", content=[text("hi")])).awaits_reply is True


def test_awaits_reply_after_a_tool_result() -> None:
    builder = build(
        event("u1", "user.message", content=[text("hi")]),
        event("t1", "agent.tool_use", name="bash", input={}),
        event("r1", "agent.tool_result", tool_use_id="t1", content=[text("ok")]),
    )

    assert builder.awaits_reply is True


def test_does_not_await_reply_after_an_assistant_message() -> None:
    builder = build(
        event("u1", "user.message", content=[text("hi")]),
        event("a1", "agent.message", content=[text("hello")]),
    )

    assert builder.awaits_reply is False


def test_does_not_await_reply_with_no_conversation() -> None:
    assert ConversationBuilder().awaits_reply is False
