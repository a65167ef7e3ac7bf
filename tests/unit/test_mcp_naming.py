"""MCP tools' names for the model, their place in the rebuilt conversation, and credential URL matching."""

from __future__ import annotations

import re
from typing import Any

from corral.brain.context import ConversationBuilder
from corral.mcp.names import MAX_MODEL_TOOL_NAME, model_tool_name
from corral.session.records import EventRecord
from corral.vault.credentials import EnvironmentSecret, McpCredential, mcp_identity, normalize_mcp_url

MODEL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def event(event_id: str, event_type: str, **body: Any) -> EventRecord:
    return EventRecord(id=event_id, session_id="sesn_1", type=event_type, body=body, position=None, processed_at=None)


def test_a_plain_server_and_tool_become_server__tool() -> None:
    assert model_tool_name("github", "create_issue") == "github__create_issue"


def test_names_with_other_characters_are_cleaned_and_made_unique_by_a_hash() -> None:
    dotted, underscored = model_tool_name("my server", "files.read"), model_tool_name("my server", "files_read")

    assert MODEL_NAME.match(dotted) and MODEL_NAME.match(underscored)
    assert dotted != underscored


def test_a_server_name_with_a_double_underscore_cannot_collide_with_another_split() -> None:
    assert model_tool_name("a__b", "c") != model_tool_name("a", "b__c")


def test_long_names_are_cut_to_the_providers_limit() -> None:
    name = model_tool_name("s" * 100, "t" * 100)

    assert len(name) <= MAX_MODEL_TOOL_NAME and MODEL_NAME.match(name)


def test_an_mcp_call_and_result_become_a_tool_use_and_result_under_the_model_name() -> None:
    builder = ConversationBuilder()
    builder.add(event("u1", "user.message", content=[{"type": "text", "text": "add"}]))
    builder.add(event("m1", "agent.mcp_tool_use", name="add", mcp_server_name="calc", input={"a": 1}))
    builder.add(event("r1", "agent.mcp_tool_result", mcp_tool_use_id="m1", content=[{"type": "text", "text": "2"}]))

    assert builder.messages()[1:] == [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "m1", "name": "calc__add", "input": {"a": 1}}]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "m1", "content": [{"type": "text", "text": "2"}]}],
        },
    ]


def test_mcp_server_urls_match_whatever_their_case_default_port_or_trailing_slash() -> None:
    assert normalize_mcp_url("HTTPS://MCP.Example.com:443/mcp/") == "https://mcp.example.com/mcp"
    assert mcp_identity("http://h:80/x") == mcp_identity("http://H/x/")
    assert mcp_identity("https://h/x") != mcp_identity("https://h/y")
    assert mcp_identity("https://h:8443/x") != mcp_identity("https://h/x")


def test_an_opened_credential_shows_no_secret_in_its_repr() -> None:
    credential = McpCredential("vcrd_1", "vlt_1", "static_bearer", "tok-very-secret")
    variable = EnvironmentSecret("vcrd_2", "vlt_1", "API_KEY", "placeholder", "val-very-secret", None, True, False)

    assert "very-secret" not in repr(credential) and "very-secret" not in repr(variable)
    assert credential.headers == {"Authorization": "Bearer tok-very-secret"}


def test_an_environment_secret_applies_to_its_hosts_and_their_wildcards_only() -> None:
    secret = EnvironmentSecret("c", "v", "K", "p", "s", ("api.example.com", "*.example.org"), True, False)

    assert secret.applies_to("api.example.com") and secret.applies_to("a.b.example.org")
    assert not secret.applies_to("example.org") and not secret.applies_to("evil.com")
