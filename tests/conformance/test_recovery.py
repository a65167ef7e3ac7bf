"""A session outlives the death of its server: kill -9 mid-turn, restart, and the turn finishes.

Nothing acknowledged is lost or duplicated, ids and order stay consistent, and a tool call that started but
never got its result gets an error result saying the runtime restarted (it is never silently run again), which
the model is then asked to answer, as after any other tool result.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import pytest

from corral.brain.harness import RESTARTED_TOOL as RESTARTED
from corral.session.log import new_event
from corral.session.open_store import open_store
from tests.conformance.conftest import StoreEnv
from tests.support.fake_model import FakeModel
from tests.support.live_events import LiveEvents, all_events, types_of, user_message
from tests.support.mcp_server import McpTestServer
from tests.support.server import CorralServer

pytestmark = pytest.mark.slow

TOOLSET: dict[str, Any] = {"type": "agent_toolset_20260401"}
ALLOW = {"type": "always_allow"}
# A command that runs until the server is killed under it; the file it creates says that it started.
CUT_COMMAND = "touch /workspace/started; sleep 30"
WEATHER_TOOL = {
    "type": "custom",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def crashable_server(fake_model: FakeModel, new_store_env: StoreEnv) -> Iterator[CorralServer]:
    """A server with a store of its own (SQLite, or a new PostgreSQL database), restartable on the same store.
    One per store for the module: each test kills and restarts it, with sessions of its own."""
    server = CorralServer(model_url=fake_model.url, env=new_store_env())
    with server:
        yield server


@pytest.fixture
def crashable(crashable_server: CorralServer) -> CorralServer:
    """The module's server, running (a test that failed between a kill and a restart left it down)."""
    if crashable_server.process is None:
        crashable_server.start()
    return crashable_server


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[McpTestServer]:
    with McpTestServer() as running:
        yield running


def sdk(server: CorralServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=server.api_key, max_retries=0)


def new_session(client: anthropic.Anthropic, **agent: Any) -> Any:
    """A session of a fresh agent (`agent` overrides the create params: tools, mcp_servers)."""
    params: dict[str, Any] = {"name": "a", "model": "claude-sonnet-4-6", "tools": [TOOLSET], **agent}
    created = client.beta.agents.create(**params)
    env = client.beta.environments.create(name=f"env-{time.monotonic_ns()}")
    return client.beta.sessions.create(agent=created.id, environment_id=env.id)


def wait_for_request(fake_model: FakeModel, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(fake_model.requests) < count:
        assert time.monotonic() < deadline, "the model was never called"
        time.sleep(0.01)


def wait_idle(client: anthropic.Anthropic, session_id: str, timeout: float = 20.0, turns: int = 1) -> list[Any]:
    """The session's events once it has gone idle `turns` times."""
    deadline = time.monotonic() + timeout
    while True:
        events = all_events(client, session_id)
        if (
            events
            and events[-1].type == "session.status_idle"
            and types_of(events).count("session.status_idle") >= turns
        ):
            return events
        assert time.monotonic() < deadline, f"session never went idle: {types_of(events)}"
        time.sleep(0.05)


def assert_consistent(events: list[Any]) -> None:
    ids = [event.id for event in events]
    assert len(ids) == len(set(ids)), "an event appears twice"
    times = [event.processed_at for event in events]
    assert times == sorted(times), "events are out of order"


def test_a_turn_cut_during_the_model_call_is_rescheduled_and_finishes(
    crashable: CorralServer, fake_model: FakeModel
) -> None:
    client = sdk(crashable)
    session = new_session(client)
    fake_model.script({"text": "never delivered", "delay": 30, "match": "slow question"})
    client.beta.sessions.events.send(session.id, events=[user_message("slow question")])
    wait_for_request(fake_model, 1)

    crashable.kill()
    fake_model.reset()
    crashable.start()
    events = wait_idle(sdk(crashable), session.id)

    types = types_of(events)
    assert types.count("user.message") == 1
    assert "session.status_rescheduled" in types
    assert types[-1] == "session.status_idle"
    assert events[-1].stop_reason.type == "end_turn"
    assert events[types.index("agent.message")].content[0].text == "echo: slow question"
    assert_consistent(events)


def test_a_tool_call_cut_by_a_crash_gets_an_error_result_and_is_not_rerun(
    crashable: CorralServer, fake_model: FakeModel
) -> None:
    client = sdk(crashable)
    session = new_session(client)
    with LiveEvents(client, session.id) as live:
        client.beta.sessions.events.send(
            session.id, events=[user_message("bash: echo ran >> /workspace/runs.txt; sleep 30")]
        )
        live.until_type("agent.tool_use")
    ran = crashable.data_dir / "workspaces" / session.id / "runs.txt"
    deadline = time.monotonic() + 10
    while not ran.exists():
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.01)

    crashable.kill()
    crashable.start()
    client = sdk(crashable)
    events = wait_idle(client, session.id)

    types = types_of(events)
    result = next(event for event in events if event.type == "agent.tool_result")
    assert result.is_error is True
    assert "restarted" in result.content[0].text
    assert types.index("session.status_rescheduled") < types.index("agent.tool_result")
    assert types.count("agent.tool_use") == 1
    assert_consistent(events)
    # It ran once, before the crash, and was not run again. Read through the sandbox: a workspace is a
    # filesystem image, mounted on the host only while its session uses it.
    fake_model.script({"tool_use": {"name": "bash", "input": {"command": "cat /workspace/runs.txt"}}})
    client.beta.sessions.events.send(session.id, events=[user_message("how many runs?")])
    results = [event for event in wait_idle(client, session.id, turns=2) if event.type == "agent.tool_result"]
    assert results[-1].content[0].text == "ran\n"


def command_started(server: CorralServer, session_id: str) -> Callable[[], bool]:
    return (server.data_dir / "workspaces" / session_id / "started").exists


def kill_once(server: CorralServer, started: Callable[[], bool]) -> None:
    """kill -9 the server as soon as `started()` says that the call to cut is running."""
    deadline = time.monotonic() + 10
    while not started():
        assert time.monotonic() < deadline, "the call never started"
        time.sleep(0.01)
    server.kill()


def last_tool_results(request: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """(tool_use_id, is_error, text) of each tool result in a model request's last message."""
    (message,) = request["body"]["messages"][-1:]
    assert message["role"] == "user"
    return [
        (block["tool_use_id"], bool(block.get("is_error")), "".join(part["text"] for part in block["content"]))
        for block in message["content"]
        if block["type"] == "tool_result"
    ]


def calls_of(events: list[Any]) -> list[str]:
    return [
        event.id for event in events if event.type in ("agent.tool_use", "agent.custom_tool_use", "agent.mcp_tool_use")
    ]


def test_the_model_is_asked_again_with_the_error_result_of_a_tool_call_cut_by_a_crash(
    crashable: CorralServer, fake_model: FakeModel
) -> None:
    client = sdk(crashable)
    session = new_session(client)
    client.beta.sessions.events.send(session.id, events=[user_message(f"bash: {CUT_COMMAND}")])
    kill_once(crashable, command_started(crashable, session.id))

    fake_model.reset()
    crashable.start()
    events = wait_idle(sdk(crashable), session.id)

    (call,) = calls_of(events)
    (request,) = fake_model.requests
    assert last_tool_results(request) == [(call, True, RESTARTED)]
    types = types_of(events)
    assert types.index("agent.tool_result") < types.index("agent.message")
    assert events[-1].stop_reason.type == "end_turn"
    assert_consistent(events)


def test_every_call_of_a_turn_cut_by_a_crash_is_answered_before_the_model_is_asked_again(
    crashable: CorralServer, fake_model: FakeModel
) -> None:
    client = sdk(crashable)
    session = new_session(client)
    bash = [{"name": "bash", "input": {"command": command}} for command in ("echo done", CUT_COMMAND, "echo never")]
    fake_model.script({"tool_uses": bash, "match": "three calls"})
    client.beta.sessions.events.send(session.id, events=[user_message("three calls")])
    kill_once(crashable, command_started(crashable, session.id))

    fake_model.reset()
    crashable.start()
    events = wait_idle(sdk(crashable), session.id)

    (request,) = fake_model.requests
    results = last_tool_results(request)
    # The first ran before the crash; the second was cut; the third never started, but nothing in the log
    # says so, so it gets the same error (never a silent run).
    assert [(call_id, is_error) for call_id, is_error, _ in results] == list(
        zip(calls_of(events), (False, True, True), strict=True)
    )
    assert results[0][2] == "done\n"
    assert events[-1].stop_reason.type == "end_turn"


def test_a_cut_mcp_call_gets_an_mcp_error_result_and_the_model_is_asked_again(
    crashable: CorralServer, fake_model: FakeModel, mcp_server: McpTestServer
) -> None:
    mcp_server.reset()  # forget the calls of the other store's run
    client = sdk(crashable)
    toolset = {"type": "mcp_toolset", "mcp_server_name": "tools", "default_config": {"permission_policy": ALLOW}}
    session = new_session(
        client, tools=[toolset], mcp_servers=[{"type": "url", "name": "tools", "url": mcp_server.url}]
    )
    fake_model.script({"tool_use": {"name": "tools__wait", "input": {"seconds": 30}}, "match": "mcp wait"})
    client.beta.sessions.events.send(session.id, events=[user_message("mcp wait")])
    kill_once(crashable, lambda: ("wait", {"seconds": 30}) in mcp_server.calls)

    fake_model.reset()
    crashable.start()
    events = wait_idle(sdk(crashable), session.id)

    (call,) = calls_of(events)
    result = next(event for event in events if event.type == "agent.mcp_tool_result")
    assert (result.mcp_tool_use_id, result.is_error) == (call, True)
    (request,) = fake_model.requests
    assert last_tool_results(request) == [(call, True, RESTARTED)]
    assert events[-1].stop_reason.type == "end_turn"


def test_a_call_cut_beside_a_custom_call_waits_for_the_custom_result_then_the_model_is_asked(
    crashable: CorralServer, fake_model: FakeModel
) -> None:
    client = sdk(crashable)
    session = new_session(client, tools=[TOOLSET, WEATHER_TOOL])
    calls = [{"name": "bash", "input": {"command": CUT_COMMAND}}, {"name": "get_weather", "input": {"city": "Oslo"}}]
    fake_model.script({"tool_uses": calls, "match": "cut and custom"})
    client.beta.sessions.events.send(session.id, events=[user_message("cut and custom")])
    kill_once(crashable, command_started(crashable, session.id))

    fake_model.reset()
    crashable.start()
    client = sdk(crashable)
    events = wait_idle(client, session.id)
    cut, custom = calls_of(events)
    assert events[-1].stop_reason.type == "requires_action"
    assert events[-1].stop_reason.event_ids == [custom]
    assert fake_model.requests == []  # not before every call of the turn has its result

    result = {
        "type": "user.custom_tool_result",
        "custom_tool_use_id": custom,
        "content": [{"type": "text", "text": "4C"}],
    }
    client.beta.sessions.events.send(session.id, events=[result])
    events = wait_idle(client, session.id, turns=2)

    (request,) = fake_model.requests
    results = last_tool_results(request)
    assert [(call_id, is_error) for call_id, is_error, _ in results] == [(cut, True), (custom, False)]
    assert events[-1].stop_reason.type == "end_turn"


def test_a_call_cut_beside_a_call_awaiting_confirmation_waits_for_it_then_the_model_is_asked(
    crashable: CorralServer, fake_model: FakeModel
) -> None:
    client = sdk(crashable)
    ask_before_write = {**TOOLSET, "configs": [{"name": "write", "permission_policy": {"type": "always_ask"}}]}
    session = new_session(client, tools=[ask_before_write])
    calls = [
        {"name": "bash", "input": {"command": CUT_COMMAND}},
        {"name": "write", "input": {"file_path": "/workspace/note.txt", "content": "hi"}},
    ]
    fake_model.script({"tool_uses": calls, "match": "cut and ask"})
    client.beta.sessions.events.send(session.id, events=[user_message("cut and ask")])
    kill_once(crashable, command_started(crashable, session.id))

    fake_model.reset()
    crashable.start()
    client = sdk(crashable)
    events = wait_idle(client, session.id)
    cut, asked = calls_of(events)
    assert events[-1].stop_reason.type == "requires_action"
    assert events[-1].stop_reason.event_ids == [asked]
    assert fake_model.requests == []  # not before every call of the turn has its result

    deny = {"type": "user.tool_confirmation", "tool_use_id": asked, "result": "deny", "deny_message": "not now"}
    client.beta.sessions.events.send(session.id, events=[deny])
    events = wait_idle(client, session.id, turns=2)

    (request,) = fake_model.requests
    assert last_tool_results(request) == [(cut, True, RESTARTED), (asked, True, "not now")]
    assert events[-1].stop_reason.type == "end_turn"


def test_a_confirmed_call_cut_by_a_crash_gets_an_error_result_and_the_model_is_asked_again(
    crashable: CorralServer, fake_model: FakeModel
) -> None:
    client = sdk(crashable)
    session = new_session(client, tools=[{**TOOLSET, "default_config": {"permission_policy": {"type": "always_ask"}}}])
    client.beta.sessions.events.send(session.id, events=[user_message(f"bash: {CUT_COMMAND}")])
    (call,) = calls_of(wait_idle(client, session.id))
    client.beta.sessions.events.send(
        session.id, events=[{"type": "user.tool_confirmation", "tool_use_id": call, "result": "allow"}]
    )
    kill_once(crashable, command_started(crashable, session.id))

    fake_model.reset()
    crashable.start()
    events = wait_idle(sdk(crashable), session.id, turns=2)

    (request,) = fake_model.requests
    assert last_tool_results(request) == [(call, True, RESTARTED)]
    assert events[-1].stop_reason.type == "end_turn"


def test_a_message_acknowledged_just_before_a_crash_is_processed_after_restart(
    crashable: CorralServer, fake_model: FakeModel
) -> None:
    client = sdk(crashable)
    session = new_session(client)
    fake_model.script({"text": "slow", "delay": 30, "match": "first"})
    client.beta.sessions.events.send(session.id, events=[user_message("first")])
    wait_for_request(fake_model, 1)
    echo = client.beta.sessions.events.send(session.id, events=[user_message("second")]).data[0]

    crashable.kill()
    fake_model.reset()
    crashable.start()
    events = wait_idle(sdk(crashable), session.id)

    messages = [event for event in events if event.type == "user.message"]
    assert [message.id for message in messages][-1] == echo.id
    texts = [event.content[0].text for event in events if event.type == "agent.message"]
    assert any("second" in text for text in texts)
    assert_consistent(events)


def test_a_stream_reopened_with_last_event_id_replays_what_it_missed(
    crashable: CorralServer, fake_model: FakeModel
) -> None:
    client = sdk(crashable)
    session = new_session(client)
    with LiveEvents(client, session.id) as live:
        client.beta.sessions.events.send(session.id, events=[user_message("hello")])
        first = live.next()
    events = wait_idle(client, session.id)

    replayed = []
    with LiveEvents(client, session.id, extra_headers={"Last-Event-ID": first.id}) as live:
        replayed = live.until_idle()

    assert [event.id for event in replayed] == [event.id for event in events[1:]]


def test_a_message_taken_by_a_brain_that_died_before_starting_its_turn_is_answered(
    crashable: CorralServer, fake_model: FakeModel
) -> None:
    client = sdk(crashable)
    session = new_session(client)
    crashable.stop()
    # What a brain leaves when it dies between taking the message and starting the turn: the message is
    # processed, the session still idle.
    url = crashable.env.get("CORRAL_DATABASE_URL") or f"sqlite:///{crashable.data_dir / 'corral.db'}"

    async def take_message() -> None:
        store = await open_store(url)
        try:
            await store.append_events(
                session.id, [new_event("user.message", content=[{"type": "text", "text": "orphan"}])]
            )
        finally:
            await store.close()

    asyncio.run(take_message())
    crashable.start()
    events = wait_idle(sdk(crashable), session.id)

    assert types_of(events)[-1] == "session.status_idle"
    assert next(event for event in events if event.type == "agent.message").content[0].text == "echo: orphan"
