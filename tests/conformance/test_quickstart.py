"""The hosted product's quick-start, unchanged but for base_url and api_key, runs against Corral."""

from __future__ import annotations

import anthropic

from tests.support.fake_model import FakeModel
from tests.support.server import CorralServer


def test_quickstart_runs_a_tool_turn_to_idle(server: CorralServer, fake_model: FakeModel) -> None:
    fake_model.script(
        {"text": "I'll look at the workspace.", "tool_use": {"name": "bash", "input": {"command": "ls -a"}}},
        {"text": "The workspace is empty."},
    )
    client = anthropic.Anthropic(base_url=server.url, api_key=server.api_key)
    agent = client.beta.agents.create(
        name="Code Reviewer",
        model="claude-sonnet-4-6",
        system="You review code for bugs, security issues, and style problems. Be direct.",
        tools=[{"type": "agent_toolset_20260401"}],
    )
    env = client.beta.environments.create(
        name="reviewer-env", config={"type": "cloud", "networking": {"type": "unrestricted"}}
    )
    session = client.beta.sessions.create(agent=agent.id, environment_id=env.id, title="Review PR #847")
    seen = []
    with client.beta.sessions.events.stream(session.id) as stream:
        client.beta.sessions.events.send(
            session.id,
            events=[
                {
                    "type": "user.message",
                    "content": [{"type": "text", "text": "List the files in the workspace and summarise them"}],
                }
            ],
        )
        for event in stream:
            seen.append(event)
            if event.type == "session.status_idle":
                break

    assert [event.type for event in seen] == [
        "user.message",
        "session.status_running",
        "span.model_request_start",
        "agent.message",
        "agent.tool_use",
        "span.model_request_end",
        "agent.tool_result",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        "session.usage",
        "session.status_idle",
    ]
    tool_use, tool_result = seen[4], seen[6]
    assert tool_use.name == "bash" and tool_use.input == {"command": "ls -a"}
    assert tool_result.tool_use_id == tool_use.id and tool_result.is_error is False
    assert seen[-1].stop_reason.type == "end_turn"
    assert seen[-3].model_usage.output_tokens > 0
    finished = client.beta.sessions.retrieve(session.id)
    assert finished.status == "idle"
    assert finished.usage.input_tokens and finished.usage.output_tokens
