"""A session outlives the death of its server: kill -9 mid-turn, restart, and the turn finishes.

Nothing acknowledged is lost or duplicated, ids and order stay consistent, and a tool call that started but
never got its result gets an error result saying the runtime restarted (it is never silently run again).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from corral.session.log import new_event
from corral.session.open_store import open_store
from tests.conformance.conftest import StoreEnv
from tests.support.fake_model import FakeModel
from tests.support.live_events import LiveEvents, all_events, types_of, user_message
from tests.support.server import CorralServer

pytestmark = pytest.mark.slow


@pytest.fixture
def crashable(fake_model: FakeModel, new_store_env: StoreEnv) -> Iterator[CorralServer]:
    """A server with a store of its own (SQLite, or a new PostgreSQL database), restartable on the same store."""
    server = CorralServer(model_url=fake_model.url, env=new_store_env())
    with server:
        yield server


def sdk(server: CorralServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=server.api_key, max_retries=0)


def new_session(client: anthropic.Anthropic) -> Any:
    agent = client.beta.agents.create(name="a", model="claude-sonnet-4-6", tools=[{"type": "agent_toolset_20260401"}])
    env = client.beta.environments.create(name=f"env-{time.monotonic_ns()}")
    return client.beta.sessions.create(agent=agent.id, environment_id=env.id)


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
