"""The official SDK's session tool runner (spec §5.5) against Corral, used exactly as the SDK documents it.

`client.beta.sessions.events.tool_runner(session_id, tools=[...])` opens the session's event stream, reads
its history (`events.list`, limit 1000), runs each `agent.custom_tool_use` whose name it has, posts one
`user.custom_tool_result` per call, and yields a `DispatchedToolCall` for every call it saw. Iteration ends
`max_idle` seconds after the session goes idle with `end_turn`. (The SDK also documents leaving the loop with
`break`, but in SDK 2.10.0 that closes the generator's anyio task group from another task and cancels the
consumer, so these tests always let the runner end by itself.)

The model is the scripted fake; the tools are plain `@beta_async_tool` / `@beta_tool` functions, and the
agent declares them with the very definitions the SDK derives from them (`tool.to_dict()`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import anthropic
import pytest
from anthropic.lib.tools import ToolError, beta_async_tool, beta_tool
from anthropic.lib.tools._beta_session_runner import DispatchedToolCall

from tests.support.fake_model import FakeModel
from tests.support.live_events import types_of, user_message
from tests.support.server import CorralServer

# Every wait is bounded: a runner that never ends, or a session that never settles, fails the test.
RUNNER_TIMEOUT_S = 30.0
SETTLE_TIMEOUT_S = 15.0
# Seconds the runner keeps going after the turn ends; it then stops by itself (its documented way to end).
MAX_IDLE_S = 0.5


@beta_async_tool
async def get_weather(city: str) -> str:
    """Current weather for a city.

    Args:
        city: The city to report on.
    """
    return f"18C sunny in {city}"


@beta_tool
def get_time(city: str) -> str:
    """Local time in a city (a sync tool: the runner runs it on a worker thread).

    Args:
        city: The city to report on.
    """
    return f"noon in {city}"


@beta_async_tool
async def approve_payment(amount: int) -> str:
    """Approve a payment. Declared by the agent, but answered by another client (the app's backend).

    Args:
        amount: The amount in cents.
    """
    raise AssertionError("the runner must never run a tool it was not given")


@beta_async_tool
async def lookup_order(order_id: str) -> str:
    """Look up an order; its backend is down.

    Args:
        order_id: The order's id.
    """
    raise ToolError(f"the order service is down (order {order_id})")


@pytest.fixture
async def aclient(server: CorralServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=server.url, api_key=server.api_key, max_retries=0) as sdk:
        yield sdk


async def session_with(aclient: anthropic.AsyncAnthropic, *tools: Any, builtin: bool = False) -> str:
    """A fresh session whose agent declares `tools` as custom tools (and the built-in toolset if `builtin`)."""
    declared: list[Any] = [{"type": "custom", **tool.to_dict()} for tool in tools]
    if builtin:
        declared.append({"type": "agent_toolset_20260401"})
    agent = await aclient.beta.agents.create(name="Tool runner agent", model="claude-sonnet-4-6", tools=declared)
    environment = await aclient.beta.environments.create(
        name=f"env-{uuid.uuid4().hex[:12]}", config={"type": "cloud", "networking": {"type": "unrestricted"}}
    )
    session = await aclient.beta.sessions.create(agent=agent.id, environment_id=environment.id)
    return session.id


async def ask(aclient: anthropic.AsyncAnthropic, session_id: str, text: str) -> None:
    await aclient.beta.sessions.events.send(session_id, events=[user_message(text)])  # type: ignore[list-item]


async def run_tools(aclient: anthropic.AsyncAnthropic, session_id: str, tools: list[Any]) -> list[DispatchedToolCall]:
    """What the runner yields, iterated as documented, to its end (`max_idle` after the turn is over)."""
    calls: list[DispatchedToolCall] = []
    async with asyncio.timeout(RUNNER_TIMEOUT_S):
        async for call in aclient.beta.sessions.events.tool_runner(session_id, tools=tools, max_idle=MAX_IDLE_S):
            calls.append(call)
    return calls


async def events_of(aclient: anthropic.AsyncAnthropic, session_id: str) -> list[Any]:
    return [event async for event in aclient.beta.sessions.events.list(session_id)]


async def settled(
    aclient: anthropic.AsyncAnthropic, session_id: str, done: Callable[[Any], bool] | None = None
) -> list[Any]:
    """The session's events once its last one is a `session.status_idle` that `done` accepts (default: end_turn)."""
    accept = done or (lambda idle: idle.stop_reason.type == "end_turn")
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        events = await events_of(aclient, session_id)
        if events and events[-1].type == "session.status_idle" and accept(events[-1]):
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"the session did not settle within {SETTLE_TIMEOUT_S}s; saw {types_of(events)}")
        await asyncio.sleep(0.05)


def of_type(events: list[Any], event_type: str) -> list[Any]:
    return [event for event in events if event.type == event_type]


def texts(content: Any) -> list[str]:
    return [block.text for block in content or [] if block.type == "text"]


def model_tool_results(fake_model: FakeModel) -> list[dict[str, Any]]:
    """The tool_result blocks of the last request the model received."""
    body = [r["body"] for r in fake_model.requests if r["path"].endswith("/messages")][-1]
    last = body["messages"][-1]
    return [block for block in last["content"] if isinstance(block, dict) and block.get("type") == "tool_result"]


async def test_the_runner_answers_a_custom_tool_call_and_the_turn_completes(
    aclient: anthropic.AsyncAnthropic, fake_model: FakeModel
) -> None:
    session_id = await session_with(aclient, get_weather)
    fake_model.script({"tool_use": {"name": "get_weather", "input": {"city": "Paris"}}})
    await ask(aclient, session_id, "weather in Paris?")

    (call,) = await run_tools(aclient, session_id, [get_weather])  # ends by itself once the turn is over

    assert (call.name, call.event.type, call.event.input) == ("get_weather", "agent.custom_tool_use", {"city": "Paris"})
    assert call.posted is True and call.is_error is False and call.confirmation is None
    events = await settled(aclient, session_id)
    (result,) = of_type(events, "user.custom_tool_result")
    assert result.custom_tool_use_id == call.tool_use_id
    assert texts(result.content) == ["18C sunny in Paris"]
    assert texts(of_type(events, "agent.message")[-1].content) == ["done: 18C sunny in Paris"]


async def test_the_runner_dispatches_several_tools_by_name_across_parallel_and_later_calls(
    aclient: anthropic.AsyncAnthropic, fake_model: FakeModel
) -> None:
    session_id = await session_with(aclient, get_weather, get_time)
    fake_model.script(
        {
            "tool_uses": [
                {"name": "get_weather", "input": {"city": "Paris"}},
                {"name": "get_time", "input": {"city": "Paris"}},
            ]
        },
        {"tool_use": {"name": "get_weather", "input": {"city": "Oslo"}}},
    )
    await ask(aclient, session_id, "weather and time in Paris, then weather in Oslo")

    calls = await run_tools(aclient, session_id, [get_weather, get_time])

    assert [(c.name, c.event.input) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"city": "Paris"}),
        ("get_weather", {"city": "Oslo"}),
    ]
    assert all(c.posted and not c.is_error for c in calls)
    events = await settled(aclient, session_id)
    answered = {r.custom_tool_use_id: texts(r.content) for r in of_type(events, "user.custom_tool_result")}
    assert answered == {
        calls[0].tool_use_id: ["18C sunny in Paris"],
        calls[1].tool_use_id: ["noon in Paris"],
        calls[2].tool_use_id: ["18C sunny in Oslo"],
    }
    assert texts(of_type(events, "agent.message")[-1].content) == ["done: 18C sunny in Oslo"]


async def test_a_call_of_a_tool_the_runner_lacks_stays_pending_for_its_owner(
    aclient: anthropic.AsyncAnthropic, fake_model: FakeModel
) -> None:
    session_id = await session_with(aclient, get_weather, approve_payment)
    fake_model.script(
        {
            "tool_uses": [
                {"name": "get_weather", "input": {"city": "Paris"}},
                {"name": "approve_payment", "input": {"amount": 1200}},
            ]
        }
    )
    await ask(aclient, session_id, "check the weather, then pay")
    runner = asyncio.create_task(run_tools(aclient, session_id, [get_weather]))
    try:
        # The runner answers its own call and leaves the other pending: the session waits for that one alone.
        waiting = await settled(aclient, session_id, lambda idle: len(getattr(idle.stop_reason, "event_ids", [])) == 1)
        (payment_call,) = [e for e in waiting if e.type == "agent.custom_tool_use" and e.name == "approve_payment"]
        assert waiting[-1].stop_reason.event_ids == [payment_call.id]
        # The owner (the app's backend, another client) answers it; the turn goes on and the runner ends.
        owner_answer = {
            "type": "user.custom_tool_result",
            "custom_tool_use_id": payment_call.id,
            "content": [{"type": "text", "text": "approved"}],
        }
        await aclient.beta.sessions.events.send(session_id, events=[owner_answer])  # type: ignore[list-item]
        weather, payment = await runner
    finally:
        runner.cancel()

    assert weather.name == "get_weather" and weather.posted is True
    # The SDK's split-client contract: it posts no result for a tool it does not own and still reports the call.
    assert payment.tool_use_id == payment_call.id
    assert (payment.posted, payment.result, payment.is_error) == (False, None, False)
    events = await settled(aclient, session_id)
    answers = [(r.custom_tool_use_id, texts(r.content)) for r in of_type(events, "user.custom_tool_result")]
    assert answers == [(weather.tool_use_id, ["18C sunny in Paris"]), (payment_call.id, ["approved"])]
    assert [r["tool_use_id"] for r in model_tool_results(fake_model)] == [weather.tool_use_id, payment_call.id]


async def test_a_tool_error_reaches_the_model_as_an_error_result(
    aclient: anthropic.AsyncAnthropic, fake_model: FakeModel
) -> None:
    session_id = await session_with(aclient, lookup_order)
    fake_model.script({"tool_use": {"name": "lookup_order", "input": {"order_id": "A-17"}}})
    await ask(aclient, session_id, "where is order A-17?")

    (call,) = await run_tools(aclient, session_id, [lookup_order])

    assert call.posted is True and call.is_error is True
    events = await settled(aclient, session_id)
    (result,) = of_type(events, "user.custom_tool_result")
    assert result.is_error is True
    assert texts(result.content) == ["the order service is down (order A-17)"]
    (seen_by_model,) = model_tool_results(fake_model)
    assert seen_by_model["is_error"] is True


async def test_a_runner_started_after_the_call_finds_it_in_the_history(
    aclient: anthropic.AsyncAnthropic, fake_model: FakeModel
) -> None:
    session_id = await session_with(aclient, get_weather)
    fake_model.script({"tool_use": {"name": "get_weather", "input": {"city": "Lima"}}})
    await ask(aclient, session_id, "weather in Lima?")
    waiting = await settled(aclient, session_id, lambda idle: idle.stop_reason.type == "requires_action")
    (pending,) = waiting[-1].stop_reason.event_ids

    (call,) = await run_tools(aclient, session_id, [get_weather])

    assert call.tool_use_id == pending and call.posted is True
    events = await settled(aclient, session_id)
    assert texts(of_type(events, "agent.message")[-1].content) == ["done: 18C sunny in Lima"]


async def test_built_in_calls_the_server_runs_are_left_to_the_server(
    aclient: anthropic.AsyncAnthropic, fake_model: FakeModel
) -> None:
    session_id = await session_with(aclient, get_weather, builtin=True)
    fake_model.script(
        {
            "tool_uses": [
                {"name": "bash", "input": {"command": "echo from-the-sandbox"}},
                {"name": "get_weather", "input": {"city": "Rome"}},
            ]
        }
    )
    await ask(aclient, session_id, "run a command and check the weather")

    calls = {call.name: call for call in await run_tools(aclient, session_id, [get_weather])}

    assert calls["bash"].posted is False and calls["bash"].result is None
    assert calls["get_weather"].posted is True
    events = await settled(aclient, session_id)
    (bash_result,) = of_type(events, "agent.tool_result")
    assert "from-the-sandbox" in texts(bash_result.content)[0]
    assert of_type(events, "user.tool_result") == []
