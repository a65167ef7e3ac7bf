"""The harness (corral/brain/harness.py) on the in-memory store: what one session's turns append to its log.

The end-to-end versions of these behaviours run against a real server in tests/conformance/test_turns.py and
test_recovery.py; these run the same brain without HTTP or a database, in milliseconds.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

from corral.brain.harness import INTERRUPTED_TOOL, RESTARTED_TOOL
from corral.brain.tools import ToolCatalog
from corral.session.log import new_event
from tests.support.brain_node import (
    BrainNode,
    StartNode,
    one,
    replies,
    stop_reason,
    types_of,
    until_appended,
    user_message,
)
from tests.support.fake_model import FakeModel

LOOKUP_TOOL = {
    "type": "custom",
    "name": "lookup",
    "description": "Looks a word up.",
    "input_schema": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
}


def last_tool_results(model: FakeModel) -> list[dict[str, Any]]:
    """The tool_result blocks of the newest model request's last message."""
    last_message = model.requests[-1]["body"]["messages"][-1]
    return [block for block in last_message["content"] if block["type"] == "tool_result"]


async def test_a_user_message_runs_a_turn_that_settles_idle_with_end_turn(node: BrainNode) -> None:
    session_id = await node.new_session()

    seen = await node.run(session_id, user_message("hello"))

    assert types_of(seen) == [
        "user.message",
        "session.status_running",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        "session.usage",
        "session.status_idle",
    ]
    assert replies(seen) == ["echo: hello"]
    assert stop_reason(seen) == {"type": "end_turn"}


async def test_a_tool_calls_result_is_fed_back_to_the_model(node: BrainNode, model: FakeModel) -> None:
    session_id = await node.new_session()

    seen = await node.run(session_id, user_message("bash: echo from-the-shell"))

    call, result = one(seen, "agent.tool_use"), one(seen, "agent.tool_result")
    assert (result.body["tool_use_id"], result.body["is_error"]) == (call.id, False)
    [fed_back] = last_tool_results(model)
    assert fed_back["tool_use_id"] == call.id
    assert "from-the-shell" in fed_back["content"][0]["text"]
    assert replies(seen) == ["done: from-the-shell\n"]
    assert stop_reason(seen) == {"type": "end_turn"}


async def test_a_custom_tool_call_idles_requiring_action_and_its_result_resumes_the_turn(
    node: BrainNode, model: FakeModel
) -> None:
    session_id = await node.new_session(tools=[LOOKUP_TOOL])
    model.script({"tool_use": {"name": "lookup", "input": {"word": "corral"}}})

    asked = await node.run(session_id, user_message("what is a corral?"))
    call = one(asked, "agent.custom_tool_use")
    assert stop_reason(asked) == {"type": "requires_action", "event_ids": [call.id]}

    answer = {"type": "text", "text": "a pen for livestock"}
    resumed = await node.run(
        session_id, {"type": "user.custom_tool_result", "custom_tool_use_id": call.id, "content": [answer]}
    )

    [fed_back] = last_tool_results(model)
    assert fed_back["tool_use_id"] == call.id
    assert replies(resumed) == ["done: a pen for livestock"]
    assert stop_reason(resumed) == {"type": "end_turn"}


async def test_an_interrupt_ends_the_turn_with_its_model_request_closed(node: BrainNode, model: FakeModel) -> None:
    session_id = await node.new_session()
    # The reply's first frame comes at once, the rest only after the test is over: the request hangs mid-stream.
    model.script({"text": "a reply that never finishes", "chunk_delay": 60})
    async with aclosing(await node.watch(session_id)) as stream:
        await node.send(session_id, user_message("take your time"))
        await until_appended(stream, "span.model_request_start")

    seen = await node.run(session_id, {"type": "user.interrupt"})

    start, end = one(await node.events(session_id), "span.model_request_start"), one(seen, "span.model_request_end")
    assert (end.body["model_request_start_id"], end.body["is_error"]) == (start.id, True)
    assert "user.interrupt" in types_of(seen)
    assert replies(seen) == []
    assert stop_reason(seen) == {"type": "end_turn"}


async def test_an_interrupt_while_requiring_action_fails_the_waiting_call(node: BrainNode, model: FakeModel) -> None:
    session_id = await node.new_session(tools=[LOOKUP_TOOL])
    model.script({"tool_use": {"name": "lookup", "input": {"word": "corral"}}})
    call = one(await node.run(session_id, user_message("what is a corral?")), "agent.custom_tool_use")

    seen = await node.run(session_id, {"type": "user.interrupt"})

    result = one(seen, "agent.tool_result")
    assert (result.body["tool_use_id"], result.body["is_error"]) == (call.id, True)
    assert result.body["content"][0]["text"] == INTERRUPTED_TOOL
    assert stop_reason(seen) == {"type": "end_turn"}


async def test_a_tool_call_cut_by_a_restart_gets_an_error_result_and_the_model_is_asked_again(
    node: BrainNode, model: FakeModel
) -> None:
    session_id = await node.new_session()
    # What a brain that died while running a tool leaves: the turn running and the call without a result.
    [message] = await node.log.enqueue(session_id, [new_event("user.message", **user_message("run it"))])
    await node.log.mark_processed(session_id, message.id)
    session = await node.store.get_session(None, session_id)
    assert session is not None
    catalog = ToolCatalog(session.body["agent"]["tools"], frozenset({"bash"}))
    cut_call = catalog.call_event("bash", {"command": "sleep 600"})
    await node.log.append(session_id, new_event("session.status_running"), cut_call)
    start = await node.store.last_position(session_id)

    await node.brain.sweep()  # what a restarted node does first
    await node.settled(session_id)
    seen = await node.events(session_id, after=start)

    assert types_of(seen)[:3] == ["session.status_rescheduled", "agent.tool_result", "session.status_running"]
    result = one(seen, "agent.tool_result")
    assert (result.body["tool_use_id"], result.body["is_error"]) == (cut_call.id, True)
    [fed_back] = last_tool_results(model)
    assert (fed_back["tool_use_id"], fed_back["is_error"]) == (cut_call.id, True)
    assert fed_back["content"][0]["text"] == RESTARTED_TOOL
    assert replies(seen) == ["done: " + RESTARTED_TOOL[:200]]
    assert stop_reason(seen) == {"type": "end_turn"}


async def test_a_turn_over_the_tool_call_limit_runs_none_of_the_batch_and_ends_exhausted(
    start_node: StartNode, model: FakeModel
) -> None:
    node = await start_node(max_tool_calls_per_turn=2)
    session_id = await node.new_session()
    model.script({"tool_uses": [{"name": "bash", "input": {"command": f"echo {n} >> ran"}} for n in range(3)]})

    seen = await node.run(session_id, user_message("do three things"))

    results = [event for event in seen if event.type == "agent.tool_result"]
    assert len(results) == 3
    assert all(result.body["is_error"] for result in results)
    assert "limit of 2 tool calls" in results[0].body["content"][0]["text"]
    assert one(seen, "session.error").body["error"]["type"] == "tool_use_limit_reached_error"
    assert not (node.settings.workspaces_dir / session_id / "ran").exists()
    assert len(model.requests) == 1
    assert stop_reason(seen) == {"type": "retries_exhausted"}


async def test_a_model_error_is_retried_then_the_turn_ends_when_retries_are_exhausted(
    start_node: StartNode, model: FakeModel
) -> None:
    node = await start_node(model_max_retries=1)
    session_id = await node.new_session()
    model.script({"status": 529}, {"status": 529})

    seen = await node.run(session_id, user_message("hello"))

    errors = [event.body["error"] for event in seen if event.type == "session.error"]
    assert [(error["type"], error["retry_status"]["type"]) for error in errors] == [
        ("model_overloaded_error", "retrying"),
        ("model_overloaded_error", "exhausted"),
    ]
    ends = [event for event in seen if event.type == "span.model_request_end"]
    assert [end.body["is_error"] for end in ends] == [True, True]
    assert len(model.requests) == 2
    assert stop_reason(seen) == {"type": "retries_exhausted"}


async def test_a_model_error_within_the_retries_is_retried_and_the_turn_completes(
    node: BrainNode, model: FakeModel
) -> None:
    session_id = await node.new_session()
    model.script({"status": 529})

    seen = await node.run(session_id, user_message("hello"))

    assert one(seen, "session.error").body["error"]["retry_status"] == {"type": "retrying"}
    assert replies(seen) == ["echo: hello"]
    assert stop_reason(seen) == {"type": "end_turn"}
