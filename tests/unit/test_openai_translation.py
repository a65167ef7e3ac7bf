"""Anthropic-shaped turns and tools translate to OpenAI chat-completion messages and function tools."""

from __future__ import annotations

import json

from corral.models.openai_chat import to_chat_messages, to_chat_tools


def test_the_system_prompt_comes_first() -> None:
    chat = to_chat_messages("Be brief.", [{"role": "user", "content": [{"type": "text", "text": "hi"}]}])

    assert chat == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
    ]


def test_no_system_message_without_a_system_prompt() -> None:
    chat = to_chat_messages(None, [{"role": "user", "content": "hi"}])

    assert [message["role"] for message in chat] == ["user"]


def test_assistant_tool_use_becomes_tool_calls_with_json_string_arguments() -> None:
    arguments = {"command": "ls -la", "timeout_ms": 500}
    chat = to_chat_messages(
        None,
        [
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Listing."},
                    {"type": "tool_use", "id": "sevt_1", "name": "bash", "input": arguments},
                ],
            }
        ],
    )

    [message] = chat
    assert message["role"] == "assistant"
    assert message["content"] == "Listing."
    [call] = message["tool_calls"]
    assert call["id"] == "sevt_1"
    assert call["type"] == "function"
    assert call["function"]["name"] == "bash"
    assert isinstance(call["function"]["arguments"], str)
    assert json.loads(call["function"]["arguments"]) == arguments


def test_an_assistant_turn_with_only_tool_use_has_null_content() -> None:
    [message] = to_chat_messages(
        None, [{"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read", "input": {}}]}]
    )

    assert message["content"] is None


def test_a_user_tool_result_becomes_a_tool_message_with_the_tool_call_id() -> None:
    chat = to_chat_messages(
        None,
        [
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "sevt_1", "content": [{"type": "text", "text": "a.txt"}]},
                ],
            }
        ],
    )

    assert chat == [{"role": "tool", "tool_call_id": "sevt_1", "content": "a.txt"}]


def test_tool_results_precede_the_user_text_of_the_same_turn() -> None:
    chat = to_chat_messages(
        None,
        [
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "out"}]},
                    {"type": "text", "text": "and now?"},
                ],
            }
        ],
    )

    assert [message["role"] for message in chat] == ["tool", "user"]


def test_a_base64_image_becomes_an_image_url_data_uri() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}

    [message] = to_chat_messages(None, [{"role": "user", "content": [image]}])

    assert message["content"] == [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]


def test_tools_become_function_tools_with_their_schema_as_parameters() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}

    tools = to_chat_tools([{"name": "get_weather", "description": "Weather.", "input_schema": schema}])

    assert tools == [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather.", "parameters": schema}}
    ]
