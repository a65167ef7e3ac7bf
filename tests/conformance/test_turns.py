"""The brain (spec §6.5, §8.4-8.5, §15.2): turns, tools, queueing, model errors, interrupts and client actions.

Every test drives a real `corral serve` with the official SDK; the model is the scripted fake, so each
test states exactly what the model says and checks what the session does with it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.support.fake_model import FakeModel
from tests.support.live_events import LiveEvents, all_events, run_turn, types_of, user_message
from tests.support.server import CorralServer

WORKSPACE_TOOLS = {"bash", "read", "write", "edit", "glob", "grep"}
# web_fetch runs in the server; web_search is not offered, as this server has no search backend configured.
OFFERED_TOOLS = WORKSPACE_TOOLS | {"web_fetch"}
WEATHER_TOOL = {
    "type": "custom",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ASK_FIRST = {"type": "agent_toolset_20260401", "default_config": {"permission_policy": {"type": "always_ask"}}}


def new_session(client: anthropic.Anthropic, **agent: Any) -> Any:
    """A session of a fresh agent (`agent` overrides the create params) in a fresh environment."""
    params: dict[str, Any] = {
        "name": "Turn test agent",
        "model": "claude-sonnet-4-6",
        "tools": [{"type": "agent_toolset_20260401"}],
        **agent,
    }
    created = client.beta.agents.create(**params)
    environment = client.beta.environments.create(
        name=f"env-{uuid.uuid4().hex[:12]}", config={"type": "cloud", "networking": {"type": "unrestricted"}}
    )
    return client.beta.sessions.create(agent=created.id, environment_id=environment.id)


def of_type(events: list[Any], event_type: str) -> list[Any]:
    return [event for event in events if event.type == event_type]


def one(events: list[Any], event_type: str) -> Any:
    matches = of_type(events, event_type)
    assert len(matches) == 1, f"expected one {event_type}, saw {types_of(events)}"
    return matches[0]


def text_of(content: Any) -> str:
    """Text of SDK content blocks or of Messages-API JSON (a string or a list of blocks)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, dict):
            parts.append(block.get("text", "") if block.get("type") == "text" else text_of(block.get("content")))
        elif getattr(block, "type", None) == "text":
            parts.append(block.text)
    return "".join(parts)


def model_bodies(fake_model: FakeModel) -> list[dict[str, Any]]:
    return [request["body"] for request in fake_model.requests if request["path"].endswith("/messages")]


def tool_results_in(body: dict[str, Any]) -> list[dict[str, Any]]:
    last = body["messages"][-1]
    assert last["role"] == "user", last
    return [block for block in last["content"] if isinstance(block, dict) and block.get("type") == "tool_result"]


def wait_for_idle_in_log(client: anthropic.Anthropic, session_id: str, timeout: float = 10.0) -> list[Any]:
    """The session's listed events, once they include a `session.status_idle`."""
    deadline = time.monotonic() + timeout
    while True:
        events = all_events(client, session_id)
        if "session.status_idle" in types_of(events):
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"no session.status_idle in the log within {timeout}s; saw {types_of(events)}")
        time.sleep(0.05)


def sdk_client(server: CorralServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=server.api_key, max_retries=0)


@pytest.fixture(scope="module")
def routed_server(fake_model: FakeModel) -> Iterator[CorralServer]:
    """A second server (one start serves two tests), routing by CORRAL_MODEL_ROUTES: `llama-*` to the fake
    model's OpenAI-compatible endpoint, `claude-*` to the fake Anthropic endpoint, with ANTHROPIC_API_KEY unset."""
    routes = [
        {
            "match": "llama-*",
            "provider": "openai",
            "base_url": fake_model.openai_base_url,
            "api_key_env": "CORRAL_TEST_OPENAI_KEY",
        },
        {"match": "claude-*", "provider": "anthropic", "base_url": fake_model.url, "api_key_env": "ANTHROPIC_API_KEY"},
    ]
    env = {"CORRAL_MODEL_ROUTES": json.dumps(routes), "CORRAL_TEST_OPENAI_KEY": "sk-openai-fake-key"}
    with CorralServer(env=env) as running:
        assert "ANTHROPIC_API_KEY" not in running.env
        yield running


# --- event order ----------------------------------------------------------------------------------


def test_a_turn_without_tools_emits_events_in_order(client: anthropic.Anthropic, session: Any) -> None:
    seen = run_turn(client, session.id, [user_message("hello")])

    assert types_of(seen) == [
        "user.message",
        "session.status_running",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        "session.usage",
        "session.status_idle",
    ]
    assert seen[0].processed_at is not None
    assert seen[0].content[0].text == "hello"
    assert text_of(seen[3].content) == "echo: hello"
    assert seen[-1].stop_reason.type == "end_turn"


def test_a_tool_turn_emits_events_in_order(client: anthropic.Anthropic, session: Any, fake_model: FakeModel) -> None:
    fake_model.script({"text": "Checking.", "tool_use": {"name": "bash", "input": {"command": "echo ok"}}})
    seen = run_turn(client, session.id, [user_message("run it")])

    assert types_of(seen) == [
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
    assert seen[6].tool_use_id == seen[4].id
    assert seen[-1].stop_reason.type == "end_turn"


def test_a_tool_call_under_the_default_policy_is_allowed_by_always_allow(
    client: anthropic.Anthropic, session: Any
) -> None:
    seen = run_turn(client, session.id, [user_message("bash: echo allowed")])

    tool_use = one(seen, "agent.tool_use")
    assert tool_use.name == "bash" and tool_use.input == {"command": "echo allowed"}
    assert tool_use.evaluated_permission == "allow"
    assert tool_use.evaluation.type == "always_allow"
    result = one(seen, "agent.tool_result")
    assert result.is_error is False and "allowed" in text_of(result.content)


def test_span_end_reports_model_usage_and_its_start(client: anthropic.Anthropic, session: Any) -> None:
    seen = run_turn(client, session.id, [user_message("hello")])

    start, end = one(seen, "span.model_request_start"), one(seen, "span.model_request_end")
    assert end.model_request_start_id == start.id
    assert end.is_error is False
    usage = end.model_usage
    counts = [usage.input_tokens, usage.output_tokens, usage.cache_creation_input_tokens, usage.cache_read_input_tokens]
    assert all(isinstance(count, int) for count in counts)
    assert usage.input_tokens > 0 and usage.output_tokens > 0


# --- what the model is asked ----------------------------------------------------------------------


def test_model_request_carries_the_agent_system_prompt(client: anthropic.Anthropic, fake_model: FakeModel) -> None:
    prompt = "You are a meticulous reviewer of test suites."
    session = new_session(client, system=prompt)
    run_turn(client, session.id, [user_message("hello")])

    (body,) = model_bodies(fake_model)
    assert text_of(body["system"]) == prompt
    assert body["model"] == "claude-sonnet-4-6"


def test_model_request_offers_the_workspace_tools_and_web_fetch_but_no_unconfigured_web_search(
    client: anthropic.Anthropic, session: Any, fake_model: FakeModel
) -> None:
    run_turn(client, session.id, [user_message("hello")])

    (body,) = model_bodies(fake_model)
    names = [tool["name"] for tool in body["tools"]]
    assert sorted(names) == sorted(OFFERED_TOOLS)
    assert all(tool["input_schema"]["type"] == "object" for tool in body["tools"])


def test_model_request_after_a_tool_call_carries_its_result_under_the_event_id(
    client: anthropic.Anthropic, session: Any, fake_model: FakeModel
) -> None:
    seen = run_turn(client, session.id, [user_message("bash: echo from-the-tool")])

    tool_use = one(seen, "agent.tool_use")
    first, second = model_bodies(fake_model)
    (result,) = tool_results_in(second)
    assert result["tool_use_id"] == tool_use.id
    assert "from-the-tool" in text_of(result["content"])
    calls = [block for block in second["messages"][-2]["content"] if block.get("type") == "tool_use"]
    assert [call["id"] for call in calls] == [tool_use.id]
    assert tool_results_in(first) == []


# --- tools really run -----------------------------------------------------------------------------


def test_a_file_written_by_the_write_tool_reads_back(
    client: anthropic.Anthropic, session: Any, fake_model: FakeModel
) -> None:
    fake_model.script(
        {"tool_use": {"name": "write", "input": {"file_path": "/workspace/notes/a.txt", "content": "written-text"}}},
        {"tool_use": {"name": "read", "input": {"file_path": "/workspace/notes/a.txt"}}},
        {"text": "Read it."},
    )
    seen = run_turn(client, session.id, [user_message("write then read")])

    write_result, read_result = of_type(seen, "agent.tool_result")
    assert write_result.is_error is False
    assert read_result.is_error is False and "written-text" in text_of(read_result.content)


def test_bash_sees_a_file_written_by_the_write_tool(
    client: anthropic.Anthropic, session: Any, fake_model: FakeModel
) -> None:
    fake_model.script(
        {"tool_use": {"name": "write", "input": {"file_path": "/workspace/shared.txt", "content": "seen-by-bash"}}},
        {"tool_use": {"name": "bash", "input": {"command": "cat shared.txt"}}},
        {"text": "Done."},
    )
    seen = run_turn(client, session.id, [user_message("write then cat")])

    _, cat_result = of_type(seen, "agent.tool_result")
    assert cat_result.is_error is False and "seen-by-bash" in text_of(cat_result.content)


def test_bash_keeps_its_working_directory_between_calls(
    client: anthropic.Anthropic, session: Any, fake_model: FakeModel
) -> None:
    fake_model.script(
        {"tool_use": {"name": "bash", "input": {"command": "mkdir -p deeper && cd deeper"}}},
        {"tool_use": {"name": "bash", "input": {"command": "pwd"}}},
        {"text": "Done."},
    )
    seen = run_turn(client, session.id, [user_message("cd then pwd")])

    _, pwd_result = of_type(seen, "agent.tool_result")
    assert text_of(pwd_result.content).strip().endswith("/deeper")


def test_two_sessions_have_separate_workspaces(
    client: anthropic.Anthropic, session: Any, agent: Any, environment: Any, fake_model: FakeModel
) -> None:
    other = client.beta.sessions.create(agent=agent.id, environment_id=environment.id)
    fake_model.script(
        {"tool_use": {"name": "write", "input": {"file_path": "/workspace/private.txt", "content": "secret-of-a"}}},
        {"text": "Written."},
    )
    run_turn(client, session.id, [user_message("write a private file")])

    seen = run_turn(client, other.id, [user_message("bash: cat private.txt")])

    result = one(seen, "agent.tool_result")
    assert result.is_error is True
    assert "secret-of-a" not in text_of(result.content)


# --- queueing -------------------------------------------------------------------------------------


def test_messages_sent_during_a_turn_are_queued_and_run_after_it(
    client: anthropic.Anthropic, session: Any, fake_model: FakeModel
) -> None:
    fake_model.script({"text": "first reply", "delay": 1.0})
    with LiveEvents(client, session.id) as live:
        client.beta.sessions.events.send(session.id, events=[user_message("one")])
        seen = live.until_type("span.model_request_start")
        queued = client.beta.sessions.events.send(session.id, events=[user_message("two"), user_message("three")])
        seen += live.until_idle()

    assert [event.processed_at for event in queued.data] == [None, None]
    messages = of_type(seen, "user.message")
    assert [event.content[0].text for event in messages] == ["one", "two", "three"]
    assert [event.id for event in messages[1:]] == [event.id for event in queued.data]
    assert all(event.processed_at is not None for event in messages)
    first_reply = seen.index(next(e for e in seen if e.type == "agent.message"))
    assert seen.index(messages[1]) > first_reply
    assert text_of(seen[first_reply].content) == "first reply"
    assert types_of(seen).count("session.status_idle") == 1
    last_request = model_bodies(fake_model)[-1]
    asked = json.dumps(last_request["messages"])
    assert asked.index('"two"') < asked.index('"three"')


# --- disabled tools -------------------------------------------------------------------------------


def test_a_disabled_tool_is_not_offered_to_the_model(client: anthropic.Anthropic, fake_model: FakeModel) -> None:
    session = new_session(
        client, tools=[{"type": "agent_toolset_20260401", "configs": [{"name": "bash", "enabled": False}]}]
    )
    run_turn(client, session.id, [user_message("hello")])

    (body,) = model_bodies(fake_model)
    assert sorted(tool["name"] for tool in body["tools"]) == sorted(OFFERED_TOOLS - {"bash"})


def test_a_call_to_a_disabled_tool_is_denied_with_an_error_result(client: anthropic.Anthropic) -> None:
    session = new_session(
        client, tools=[{"type": "agent_toolset_20260401", "configs": [{"name": "bash", "enabled": False}]}]
    )
    seen = run_turn(client, session.id, [user_message("bash: echo ran-$((6*7))")])

    tool_use = one(seen, "agent.tool_use")
    assert tool_use.evaluated_permission == "deny"
    result = one(seen, "agent.tool_result")
    assert result.tool_use_id == tool_use.id
    assert result.is_error is True
    assert "ran-42" not in text_of(result.content)
    assert seen[-1].stop_reason.type == "end_turn"


# --- model errors ---------------------------------------------------------------------------------


def test_an_overloaded_model_is_retried_and_the_turn_completes(
    client: anthropic.Anthropic, session: Any, fake_model: FakeModel
) -> None:
    fake_model.script({"status": 529}, {"text": "recovered"})
    seen = run_turn(client, session.id, [user_message("hello")])

    error = one(seen, "session.error")
    assert error.error.type == "model_overloaded_error"
    assert error.error.retry_status.type == "retrying"
    assert text_of(one(seen, "agent.message").content) == "recovered"
    assert seen.index(error) < seen.index(one(seen, "agent.message"))
    assert seen[-1].stop_reason.type == "end_turn"


def test_rate_limits_beyond_the_retry_budget_exhaust_the_turn(
    client: anthropic.Anthropic, session: Any, fake_model: FakeModel
) -> None:
    fake_model.script(*[{"status": 429}] * 5, {"text": "never reached"})
    seen = run_turn(client, session.id, [user_message("hello")])

    errors = of_type(seen, "session.error")
    assert [error.error.type for error in errors] == ["model_rate_limited_error"] * 5
    assert [error.error.retry_status.type for error in errors] == ["retrying"] * 4 + ["exhausted"]
    assert len(model_bodies(fake_model)) == 5  # one attempt and CORRAL_MODEL_MAX_RETRIES (4) retries
    assert of_type(seen, "agent.message") == []
    assert seen[-1].stop_reason.type == "retries_exhausted"


@pytest.mark.slow
def test_a_missing_model_api_key_fails_the_turn_naming_the_variable(
    routed_server: CorralServer, fake_model: FakeModel
) -> None:
    with sdk_client(routed_server) as client:
        session = new_session(client)
        seen = run_turn(client, session.id, [user_message("hello")])

    error = one(seen, "session.error")
    assert error.error.type == "model_request_failed_error"
    assert "ANTHROPIC_API_KEY" in error.error.message
    assert error.error.retry_status.type == "exhausted"
    assert seen[-1].type == "session.status_idle"
    assert seen[-1].stop_reason.type == "retries_exhausted"
    assert fake_model.requests == []


def test_a_rejected_model_credential_fails_the_turn_naming_it(
    client: anthropic.Anthropic, session: Any, fake_model: FakeModel
) -> None:
    fake_model.script({"status": 401, "message": "invalid x-api-key"})
    seen = run_turn(client, session.id, [user_message("hello")])

    error = one(seen, "session.error")
    assert error.error.type == "model_request_failed_error"
    assert "ANTHROPIC_API_KEY" in error.error.message
    assert error.error.retry_status.type == "exhausted"
    assert len(model_bodies(fake_model)) == 1  # a bad credential is not retried
    assert seen[-1].stop_reason.type == "retries_exhausted"


@pytest.mark.slow
def test_an_openai_compatible_route_completes_a_tool_turn(routed_server: CorralServer, fake_model: FakeModel) -> None:
    with sdk_client(routed_server) as client:
        session = new_session(client, model="llama-test")
        seen = run_turn(client, session.id, [user_message("bash: echo via-openai")])

    assert types_of(seen)[-1] == "session.status_idle" and seen[-1].stop_reason.type == "end_turn"
    tool_use = one(seen, "agent.tool_use")
    assert tool_use.name == "bash" and tool_use.input == {"command": "echo via-openai"}
    result = one(seen, "agent.tool_result")
    assert result.is_error is False and "via-openai" in text_of(result.content)
    assert text_of(one(seen, "agent.message").content).startswith("done: via-openai")
    paths = {request["path"] for request in fake_model.requests}
    assert paths == {"/v1/chat/completions"}
    assert all(r["headers"]["authorization"] == "Bearer sk-openai-fake-key" for r in fake_model.requests)


# --- interrupts -----------------------------------------------------------------------------------


def wait_for_model_requests(fake_model: FakeModel, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(fake_model.requests) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"the model received {len(fake_model.requests)} requests, not {count}")
        time.sleep(0.01)


def interrupt_a_slow_reply(client: anthropic.Anthropic, session_id: str, fake_model: FakeModel) -> list[Any]:
    """Start a turn whose model reply takes 5 s, interrupt it mid-reply, and return the stream up to the idle."""
    fake_model.script({"text": "too slow", "delay": 5})
    with LiveEvents(client, session_id) as live:
        client.beta.sessions.events.send(session_id, events=[user_message("take your time")])
        wait_for_model_requests(fake_model, 1)
        client.beta.sessions.events.send(session_id, events=[{"type": "user.interrupt"}])
        return live.until_idle()


def test_an_interrupt_ends_a_slow_model_reply_with_end_turn(
    client: anthropic.Anthropic, session: Any, fake_model: FakeModel
) -> None:
    seen = interrupt_a_slow_reply(client, session.id, fake_model)

    assert one(seen, "user.interrupt").processed_at is not None
    assert of_type(seen, "agent.message") == []
    assert seen[-1].stop_reason.type == "end_turn"


def test_an_interrupted_model_request_span_is_closed(
    client: anthropic.Anthropic, session: Any, fake_model: FakeModel
) -> None:
    seen = interrupt_a_slow_reply(client, session.id, fake_model)

    start, end = one(seen, "span.model_request_start"), one(seen, "span.model_request_end")
    assert end.model_request_start_id == start.id
    assert seen.index(end) < len(seen) - 1


def test_a_session_takes_a_new_message_after_an_interrupt(
    client: anthropic.Anthropic, session: Any, fake_model: FakeModel
) -> None:
    interrupt_a_slow_reply(client, session.id, fake_model)
    fake_model.script({"match": "still there?", "text": "Yes, still here."})
    seen = run_turn(client, session.id, [user_message("still there?")])

    assert text_of(one(seen, "agent.message").content) == "Yes, still here."
    assert seen[-1].stop_reason.type == "end_turn"


def test_an_interrupt_on_an_idle_session_is_a_no_op(client: anthropic.Anthropic, session: Any) -> None:
    with LiveEvents(client, session.id) as live:
        client.beta.sessions.events.send(session.id, events=[{"type": "user.interrupt"}])
        (echo,) = live.until_type("user.interrupt")
        client.beta.sessions.events.send(session.id, events=[user_message("after the interrupt")])
        seen = live.until_idle()

    assert echo.processed_at is not None
    # Anything the interrupt caused would arrive before the next message's echo.
    assert types_of(seen)[:2] == ["user.message", "session.status_running"]
    assert types_of(seen).count("session.status_running") == 1


# --- custom tools ---------------------------------------------------------------------------------


@pytest.fixture
def weather_session(client: anthropic.Anthropic) -> Any:
    return new_session(client, tools=[WEATHER_TOOL])


def ask_for_weather(client: anthropic.Anthropic, session_id: str, fake_model: FakeModel) -> list[Any]:
    fake_model.script({"tool_use": {"name": "get_weather", "input": {"city": "Paris"}}})
    return run_turn(client, session_id, [user_message("weather in Paris?")])


def weather_result(call_id: str) -> dict[str, Any]:
    return {
        "type": "user.custom_tool_result",
        "custom_tool_use_id": call_id,
        "content": [{"type": "text", "text": "18C sunny"}],
    }


def test_a_custom_tool_call_idles_the_session_requiring_action(
    client: anthropic.Anthropic, weather_session: Any, fake_model: FakeModel
) -> None:
    seen = ask_for_weather(client, weather_session.id, fake_model)

    call = one(seen, "agent.custom_tool_use")
    assert call.name == "get_weather" and call.input == {"city": "Paris"}
    assert of_type(seen, "agent.tool_result") == []
    assert seen[-1].stop_reason.type == "requires_action"
    assert seen[-1].stop_reason.event_ids == [call.id]


def test_a_custom_tool_result_resumes_and_completes_the_turn(
    client: anthropic.Anthropic, weather_session: Any, fake_model: FakeModel
) -> None:
    call = one(ask_for_weather(client, weather_session.id, fake_model), "agent.custom_tool_use")
    seen = run_turn(client, weather_session.id, [weather_result(call.id)])

    assert seen[0].type == "user.custom_tool_result" and seen[0].custom_tool_use_id == call.id
    assert "session.status_running" in types_of(seen)
    assert text_of(one(seen, "agent.message").content) == "done: 18C sunny"
    assert seen[-1].stop_reason.type == "end_turn"
    (result,) = tool_results_in(model_bodies(fake_model)[-1])
    assert result["tool_use_id"] == call.id


def test_a_custom_tool_result_echo_is_processed_on_receipt(
    client: anthropic.Anthropic, weather_session: Any, fake_model: FakeModel
) -> None:
    call = one(ask_for_weather(client, weather_session.id, fake_model), "agent.custom_tool_use")
    with LiveEvents(client, weather_session.id) as live:
        sent = client.beta.sessions.events.send(weather_session.id, events=[weather_result(call.id)])
        live.until_idle()

    # §8.1: user.custom_tool_result (like define_outcome and tool_result) comes back with processed_at set.
    assert sent.data[0].processed_at is not None


def test_answering_some_custom_calls_re_idles_requiring_the_rest(
    client: anthropic.Anthropic, weather_session: Any, fake_model: FakeModel
) -> None:
    fake_model.script(
        {
            "tool_uses": [
                {"name": "get_weather", "input": {"city": "Paris"}},
                {"name": "get_weather", "input": {"city": "Oslo"}},
            ]
        }
    )
    first = run_turn(client, weather_session.id, [user_message("weather in Paris and Oslo?")])
    paris, oslo = of_type(first, "agent.custom_tool_use")
    assert first[-1].stop_reason.event_ids == [paris.id, oslo.id]

    partial = run_turn(client, weather_session.id, [weather_result(paris.id)])
    assert partial[-1].stop_reason.type == "requires_action"
    assert partial[-1].stop_reason.event_ids == [oslo.id]
    assert of_type(partial, "span.model_request_start") == []

    rest = run_turn(client, weather_session.id, [weather_result(oslo.id)])
    assert rest[-1].stop_reason.type == "end_turn"
    assert [r["tool_use_id"] for r in tool_results_in(model_bodies(fake_model)[-1])] == [paris.id, oslo.id]


def test_an_interrupt_while_requiring_action_fails_the_pending_call_and_ends_the_turn(
    client: anthropic.Anthropic, weather_session: Any, fake_model: FakeModel
) -> None:
    call = one(ask_for_weather(client, weather_session.id, fake_model), "agent.custom_tool_use")
    seen = run_turn(client, weather_session.id, [{"type": "user.interrupt"}])

    result = one(seen, "agent.tool_result")
    assert result.tool_use_id == call.id and result.is_error is True
    assert of_type(seen, "span.model_request_start") == []
    assert seen[-1].stop_reason.type == "end_turn"


def test_a_custom_tool_result_for_an_unknown_call_is_400(client: anthropic.Anthropic, weather_session: Any) -> None:
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.events.send(weather_session.id, events=[weather_result("sevt_011CNoSuchCall00000000")])


# --- tool confirmation ----------------------------------------------------------------------------


@pytest.fixture
def ask_session(client: anthropic.Anthropic) -> Any:
    return new_session(client, tools=[ASK_FIRST])


def ask_to_run(client: anthropic.Anthropic, session_id: str) -> list[Any]:
    return run_turn(client, session_id, [user_message("bash: echo confirmed-$((6*7))")])


def confirmation(call_id: str, result: str, deny_message: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "user.tool_confirmation", "tool_use_id": call_id, "result": result}
    if deny_message is not None:
        event["deny_message"] = deny_message
    return event


def test_an_always_ask_tool_call_waits_for_confirmation(client: anthropic.Anthropic, ask_session: Any) -> None:
    seen = ask_to_run(client, ask_session.id)

    call = one(seen, "agent.tool_use")
    assert call.evaluated_permission == "ask"
    assert call.evaluation.type == "always_ask"
    assert of_type(seen, "agent.tool_result") == []
    assert seen[-1].stop_reason.type == "requires_action"
    assert seen[-1].stop_reason.event_ids == [call.id]


def test_allowing_a_confirmation_runs_the_tool(client: anthropic.Anthropic, ask_session: Any) -> None:
    call = one(ask_to_run(client, ask_session.id), "agent.tool_use")
    seen = run_turn(client, ask_session.id, [confirmation(call.id, "allow")])

    assert seen[0].type == "user.tool_confirmation" and seen[0].result == "allow"
    result = one(seen, "agent.tool_result")
    assert result.tool_use_id == call.id
    assert result.is_error is False and "confirmed-42" in text_of(result.content)
    assert seen[-1].stop_reason.type == "end_turn"


def test_denying_a_confirmation_gives_the_deny_message_as_an_error_result(
    client: anthropic.Anthropic, ask_session: Any, fake_model: FakeModel
) -> None:
    call = one(ask_to_run(client, ask_session.id), "agent.tool_use")
    seen = run_turn(client, ask_session.id, [confirmation(call.id, "deny", "Not on a Friday")])

    result = one(seen, "agent.tool_result")
    assert result.tool_use_id == call.id
    assert result.is_error is True
    assert "Not on a Friday" in text_of(result.content)
    assert "confirmed-42" not in text_of(result.content)
    (sent_back,) = tool_results_in(model_bodies(fake_model)[-1])
    assert "Not on a Friday" in text_of(sent_back["content"])
    assert seen[-1].stop_reason.type == "end_turn"


def test_a_confirmation_for_a_call_that_needed_none_is_400(client: anthropic.Anthropic, session: Any) -> None:
    call = one(run_turn(client, session.id, [user_message("bash: echo ran")]), "agent.tool_use")

    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.events.send(session.id, events=[confirmation(call.id, "allow")])


# --- session state --------------------------------------------------------------------------------


def test_session_status_is_running_during_a_turn_and_idle_after(
    client: anthropic.Anthropic, session: Any, fake_model: FakeModel
) -> None:
    fake_model.script({"text": "thinking slowly", "delay": 1.0})
    with LiveEvents(client, session.id) as live:
        client.beta.sessions.events.send(session.id, events=[user_message("hello")])
        live.until_type("span.model_request_start")
        during = client.beta.sessions.retrieve(session.id).status
        live.until_idle()
    after = client.beta.sessions.retrieve(session.id).status

    assert (during, after) == ("running", "idle")


def test_session_usage_accumulates_across_turns(client: anthropic.Anthropic, session: Any) -> None:
    run_turn(client, session.id, [user_message("first")])
    after_first = client.beta.sessions.retrieve(session.id).usage
    run_turn(client, session.id, [user_message("second")])
    after_second = client.beta.sessions.retrieve(session.id).usage

    spans = all_events(client, session.id, types=["span.model_request_end"])
    assert len(spans) == 2
    assert after_first.input_tokens == spans[0].model_usage.input_tokens
    assert after_second.input_tokens == sum(span.model_usage.input_tokens for span in spans)
    assert after_second.output_tokens == sum(span.model_usage.output_tokens for span in spans)
    assert after_second.input_tokens > after_first.input_tokens


def test_initial_events_start_the_loop(client: anthropic.Anthropic, agent: Any, environment: Any) -> None:
    session = client.beta.sessions.create(
        agent=agent.id, environment_id=environment.id, initial_events=[user_message("hello from create")]
    )

    events = wait_for_idle_in_log(client, session.id)
    assert types_of(events)[:3] == ["user.message", "session.status_running", "span.model_request_start"]
    assert events[0].processed_at is not None
    assert text_of(one(events, "agent.message").content) == "echo: hello from create"
    assert events[-1].stop_reason.type == "end_turn"


def test_a_session_can_be_archived_the_moment_its_idle_arrives(
    client: anthropic.Anthropic, agent: Any, environment: Any
) -> None:
    # The brain may still be letting go of the session when the idle reaches the client: that is no conflict.
    for _ in range(5):
        session = client.beta.sessions.create(agent=agent.id, environment_id=environment.id)
        run_turn(client, session.id, [user_message("bash: echo hi")])

        archived = client.beta.sessions.archive(session.id)

        assert archived.archived_at is not None
