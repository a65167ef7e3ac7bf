"""A turn may make at most --max-tool-calls-per-turn tool calls; past that it ends, and nothing more runs."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest

from tests.support.fake_model import FakeModel
from tests.support.live_events import run_turn, types_of, user_message
from tests.support.server import CorralServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def limited_server(fake_model: FakeModel) -> Iterator[CorralServer]:
    with CorralServer(model_url=fake_model.url, env={"CORRAL_MAX_TOOL_CALLS_PER_TURN": "2"}) as server:
        yield server


def test_a_turn_past_the_tool_call_limit_ends_exhausted_without_running_the_call(
    limited_server: CorralServer, fake_model: FakeModel
) -> None:
    client = anthropic.Anthropic(base_url=limited_server.url, api_key=limited_server.api_key, max_retries=0)
    agent = client.beta.agents.create(name="a", model="claude-sonnet-4-6", tools=[{"type": "agent_toolset_20260401"}])
    env = client.beta.environments.create(name="tool-limit")
    session = client.beta.sessions.create(agent=agent.id, environment_id=env.id)
    call = {"tool_use": {"name": "bash", "input": {"command": "echo once >> /workspace/calls.txt"}}, "match": "loop"}
    fake_model.script(call, call, call, {"text": "unreachable", "match": "loop"})

    seen = run_turn(client, session.id, [user_message("loop")])

    results = [event for event in seen if event.type == "agent.tool_result"]
    assert [result.is_error for result in results] == [False, False, True]
    assert "limit of 2 tool calls" in results[-1].content[0].text
    error = next(event for event in seen if event.type == "session.error")
    assert error.error.type == "tool_use_limit_reached_error"
    assert error.error.retry_status.type == "exhausted"
    assert seen[-1].stop_reason.type == "retries_exhausted"
    assert types_of(seen).count("span.model_request_start") == 3
