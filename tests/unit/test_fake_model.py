"""The fake model server must look like the real providers to their official SDKs."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator

import anthropic
import httpx
import openai
import pytest

from tests.support.fake_model import FakeModel, ScriptError

API_KEY = "test-key"
MODEL = "claude-fake"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeModel]:
    with FakeModel(api_key=API_KEY) as fake:
        yield fake


@pytest.fixture
def fake(server: FakeModel) -> FakeModel:
    server.reset()
    return server


@pytest.fixture
async def claude(fake: FakeModel) -> AsyncIterator[anthropic.AsyncAnthropic]:
    # No retries: a scripted error must surface on the first attempt.
    async with anthropic.AsyncAnthropic(base_url=fake.url, api_key=API_KEY, max_retries=0) as client:
        yield client


@pytest.fixture
async def gpt(fake: FakeModel) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key=API_KEY, max_retries=0) as client:
        yield client


def user(text: str) -> list[anthropic.types.MessageParam]:
    return [{"role": "user", "content": text}]


# --- Anthropic Messages API -------------------------------------------------------------------


async def test_anthropic_stream_echoes_text_in_several_deltas(claude: anthropic.AsyncAnthropic) -> None:
    deltas: list[str] = []
    async with claude.messages.stream(model=MODEL, max_tokens=100, messages=user("hello there world")) as s:
        async for event in s:
            if event.type == "text":
                deltas.append(event.text)
        message = await s.get_final_message()

    assert "".join(deltas) == "echo: hello there world"
    assert len(deltas) > 1
    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text"
    assert message.content[0].text == "echo: hello there world"
    assert message.usage.input_tokens >= 1
    assert message.usage.output_tokens == len("echo: hello there world") // 4 + 1


async def test_anthropic_stream_emits_exact_event_sequence(fake: FakeModel) -> None:
    fake.script({"text": "hi", "tool_use": {"name": "bash", "input": {"command": "ls"}}})
    body = {"model": MODEL, "max_tokens": 10, "stream": True, "messages": user("x")}
    async with httpx.AsyncClient() as client:
        response = await client.post(fake.url + "/v1/messages", json=body, headers={"x-api-key": API_KEY})

    frames = [f for f in response.text.split("\n\n") if f]
    events = [f.split("\n")[0].removeprefix("event: ") for f in frames]
    assert [json.loads(f.split("\n")[1].removeprefix("data: "))["type"] for f in frames] == events
    assert events[0] == "message_start"
    assert events[-2:] == ["message_delta", "message_stop"]
    blocks = " ".join(events[1:-2]).split("content_block_stop")
    assert [b.split() for b in blocks if b.strip()] == [
        ["content_block_start", "content_block_delta"],
        ["content_block_start", "content_block_delta"],
    ]


async def test_anthropic_stream_tool_use_accumulates_input(fake: FakeModel, claude: anthropic.AsyncAnthropic) -> None:
    command = "echo a long command so the json arrives in several pieces"
    async with claude.messages.stream(model=MODEL, max_tokens=100, messages=user("bash: " + command)) as s:
        json_deltas = [event async for event in s if event.type == "input_json"]
        message = await s.get_final_message()

    assert len(json_deltas) > 1
    assert message.stop_reason == "tool_use"
    [block] = message.content
    assert block.type == "tool_use"
    assert block.name == "bash"
    assert block.input == {"command": command}
    assert re.fullmatch(r"toolu_[0-9a-f]{24}", block.id)


async def test_anthropic_create_returns_message(claude: anthropic.AsyncAnthropic) -> None:
    message = await claude.messages.create(model=MODEL, max_tokens=100, messages=user("ping"))

    assert message.model == MODEL
    assert message.content[0].type == "text"
    assert message.content[0].text == "echo: ping"
    assert message.stop_reason == "end_turn"


async def test_anthropic_tool_result_answers_done(claude: anthropic.AsyncAnthropic) -> None:
    message = await claude.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=[
            {"role": "user", "content": "bash: ls"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {"command": "ls"}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "x" * 300}],
            },
        ],
    )

    assert message.content[0].type == "text"
    assert message.content[0].text == "done: " + "x" * 200


async def test_named_tool_command_calls_that_tool(claude: anthropic.AsyncAnthropic) -> None:
    message = await claude.messages.create(model=MODEL, max_tokens=100, messages=user('tool: read {"path": "/tmp/a"}'))

    [block] = message.content
    assert block.type == "tool_use"
    assert (block.name, block.input) == ("read", {"path": "/tmp/a"})


async def test_scripted_text_and_several_tool_uses_in_one_response(
    fake: FakeModel, claude: anthropic.AsyncAnthropic
) -> None:
    fake.script({"text": "two calls", "tool_uses": [{"name": "a", "input": {}}, {"name": "b", "input": {"n": 1}}]})

    message = await claude.messages.create(model=MODEL, max_tokens=100, messages=user("go"))

    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    assert [(b.name, b.input) for b in message.content if b.type == "tool_use"] == [
        ("a", {}),
        ("b", {"n": 1}),
    ]
    assert fake.pending == 0


async def test_scripted_529_raises_overloaded(fake: FakeModel, claude: anthropic.AsyncAnthropic) -> None:
    fake.script({"status": 529, "error_type": "overloaded_error", "message": "busy"})

    with pytest.raises(anthropic.APIStatusError) as raised:
        await claude.messages.create(model=MODEL, max_tokens=100, messages=user("hi"))

    assert raised.value.status_code == 529
    assert isinstance(raised.value, anthropic.InternalServerError)
    assert raised.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}


async def test_wrong_api_key_gets_401(fake: FakeModel) -> None:
    async with anthropic.AsyncAnthropic(base_url=fake.url, api_key="wrong", max_retries=0) as client:
        with pytest.raises(anthropic.AuthenticationError) as raised:
            await client.messages.create(model=MODEL, max_tokens=100, messages=user("hi"))

    assert raised.value.status_code == 401
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }


async def test_match_routes_scripted_items_to_their_sessions(fake: FakeModel, claude: anthropic.AsyncAnthropic) -> None:
    fake.script(
        {"match": "session-A", "text": "for A", "delay": 0.05},
        {"match": "session-B", "text": "for B"},
    )

    a, b, other = await asyncio.gather(
        claude.messages.create(model=MODEL, max_tokens=100, messages=user("I am session-A")),
        claude.messages.create(model=MODEL, max_tokens=100, messages=user("I am session-B")),
        claude.messages.create(model=MODEL, max_tokens=100, messages=user("unscripted")),
    )

    texts = [m.content[0].text for m in (a, b, other) if m.content[0].type == "text"]
    assert texts == ["for A", "for B", "echo: unscripted"]


async def test_requests_are_recorded_with_lowercased_headers(fake: FakeModel, claude: anthropic.AsyncAnthropic) -> None:
    await claude.messages.create(model=MODEL, max_tokens=100, messages=user("record me"))

    [recorded] = fake.requests
    assert recorded["path"] == "/v1/messages"
    # This SDK version authenticates with a bearer token rather than x-api-key.
    assert recorded["headers"]["authorization"] == f"Bearer {API_KEY}"
    assert "anthropic-version" in recorded["headers"]
    assert recorded["body"]["messages"] == user("record me")


async def test_control_endpoints_script_list_and_reset(fake: FakeModel) -> None:
    async with httpx.AsyncClient(base_url=fake.url) as client:
        queued = await client.post("/_control/script", json={"items": [{"text": "via http"}]})
        reply = await client.post(
            "/v1/messages",
            json={"model": MODEL, "max_tokens": 5, "messages": user("q")},
            headers={"x-api-key": API_KEY},
        )
        listed = await client.get("/_control/requests")
        await client.post("/_control/reset")
        after_reset = await client.get("/_control/requests")

    assert queued.status_code == 200
    assert reply.json()["content"] == [{"type": "text", "text": "via http"}]
    assert [r["path"] for r in listed.json()["requests"]] == ["/v1/messages"]
    assert after_reset.json() == {"requests": []}


def test_malformed_script_item_is_rejected(fake: FakeModel) -> None:
    with pytest.raises(ScriptError):
        fake.script({"txt": "typo"})


# --- OpenAI chat completions -------------------------------------------------------------------


async def test_openai_stream_text_then_usage_and_done(gpt: openai.AsyncOpenAI) -> None:
    stream = await gpt.chat.completions.create(
        model="gpt-fake",
        messages=[{"role": "user", "content": "hello there world"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello there world"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(text) // 4 + 1


async def test_openai_stream_tool_call_accumulates_arguments(gpt: openai.AsyncOpenAI) -> None:
    command = "echo a long command so the arguments arrive in pieces"
    async with gpt.chat.completions.stream(
        model="gpt-fake", messages=[{"role": "user", "content": "bash: " + command}]
    ) as stream:
        completion = await stream.get_final_completion()

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "bash"
    assert json.loads(call.function.arguments) == {"command": command}
    assert re.fullmatch(r"call_[0-9a-f]{24}", call.id)


async def test_openai_create_returns_completion(gpt: openai.AsyncOpenAI) -> None:
    completion = await gpt.chat.completions.create(model="gpt-fake", messages=[{"role": "user", "content": "ping"}])

    assert completion.choices[0].message.content == "echo: ping"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


async def test_openai_tool_message_answers_done(gpt: openai.AsyncOpenAI) -> None:
    completion = await gpt.chat.completions.create(
        model="gpt-fake",
        messages=[
            {"role": "user", "content": "bash: ls"},
            {
                "role": "assistant",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "bash", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "file.txt"},
        ],
    )

    assert completion.choices[0].message.content == "done: file.txt"


async def test_openai_scripted_error_uses_openai_envelope(fake: FakeModel, gpt: openai.AsyncOpenAI) -> None:
    fake.script({"status": 429, "message": "slow down"})

    with pytest.raises(openai.RateLimitError) as raised:
        await gpt.chat.completions.create(model="gpt-fake", messages=[{"role": "user", "content": "hi"}])

    assert raised.value.body == {
        "message": "slow down",
        "type": "rate_limit_error",
        "param": None,
        "code": None,
    }


async def test_openai_wrong_api_key_gets_401(fake: FakeModel) -> None:
    async with openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as raised:
            await client.chat.completions.create(model="gpt-fake", messages=[{"role": "user", "content": "hi"}])

    assert raised.value.code == "invalid_api_key"
