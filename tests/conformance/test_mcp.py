"""MCP servers (spec §2.5, §8.4-8.5) with vault credentials (§10), through the official SDK.

The MCP server is real (tests/support/mcp_server.py, built with the `mcp` SDK); the model is the scripted fake,
which calls a tool when the user says `tool: <name> <json input>` and answers `done: <result>` after it.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.support.fake_model import FakeModel
from tests.support.live_events import run_turn, types_of, user_message
from tests.support.mcp_server import McpTestServer
from tests.support.server import CorralServer, free_port

ALLOW = {"type": "always_allow"}


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[McpTestServer]:
    with McpTestServer() as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_mcp_records(mcp_server: McpTestServer) -> None:
    mcp_server.reset()


def mcp_session(
    client: anthropic.Anthropic,
    url: str,
    *,
    name: str = "tools",
    default_policy: dict[str, str] | None = None,
    configs: list[dict[str, Any]] | None = None,
    vault_ids: list[str] | None = None,
    builtin: bool = False,
) -> Any:
    """A session of a fresh agent with one MCP server (and its toolset), in a fresh environment."""
    toolset: dict[str, Any] = {"type": "mcp_toolset", "mcp_server_name": name}
    if default_policy is not None:
        toolset["default_config"] = {"permission_policy": default_policy}
    if configs is not None:
        toolset["configs"] = configs
    tools: list[dict[str, Any]] = [toolset]
    if builtin:
        tools.append({"type": "agent_toolset_20260401"})
    agent = client.beta.agents.create(
        name="MCP agent",
        model="claude-sonnet-4-6",
        tools=tools,  # type: ignore[arg-type]
        mcp_servers=[{"type": "url", "name": name, "url": url}],
    )
    environment = client.beta.environments.create(
        name=f"env-{uuid.uuid4().hex[:12]}", config={"type": "cloud", "networking": {"type": "unrestricted"}}
    )
    return client.beta.sessions.create(agent=agent.id, environment_id=environment.id, vault_ids=vault_ids or [])


def bearer_vault(client: anthropic.Anthropic, url: str, token: str) -> Any:
    vault = client.beta.vaults.create(display_name="MCP user")
    client.beta.vaults.credentials.create(
        vault.id, auth={"type": "static_bearer", "token": token, "mcp_server_url": url}
    )
    return vault


def call(tool: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    return user_message(f"tool: {tool} {json.dumps(tool_input)}")


def confirmation(call_id: str, result: str, deny_message: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "user.tool_confirmation", "tool_use_id": call_id, "result": result}
    if deny_message is not None:
        event["deny_message"] = deny_message
    return event


def one(events: list[Any], event_type: str) -> Any:
    matches = [event for event in events if event.type == event_type]
    assert len(matches) == 1, f"expected one {event_type}, saw {types_of(events)}"
    return matches[0]


def text_of(content: Any) -> str:
    return "".join(block.text for block in content or [] if getattr(block, "type", None) == "text")


def model_bodies(fake_model: FakeModel) -> list[dict[str, Any]]:
    return [request["body"] for request in fake_model.requests if request["path"].endswith("/messages")]


def raw_events(server: CorralServer, session_id: str) -> str:
    """Every event of the session as the server serves it, as one JSON text."""
    response = httpx.get(
        f"{server.url}/v1/sessions/{session_id}/events",
        params={"limit": 1000},
        headers={"Authorization": f"Bearer {server.api_key}"},
        timeout=10,
    )
    response.raise_for_status()
    return response.text


# --- tools offered and called ---------------------------------------------------------------------------


def test_mcp_tools_are_offered_to_the_model_under_namespaced_names(
    client: anthropic.Anthropic, mcp_server: McpTestServer, fake_model: FakeModel
) -> None:
    session = mcp_session(client, mcp_server.url)
    run_turn(client, session.id, [user_message("hello")])

    (body,) = model_bodies(fake_model)
    offered = {tool["name"]: tool for tool in body["tools"]}
    assert set(offered) == {"tools__add", "tools__echo", "tools__fail", "tools__wait"}
    assert offered["tools__add"]["input_schema"]["required"] == ["a", "b"]
    assert offered["tools__add"]["description"] == "Add two integers."


def test_an_allowed_mcp_call_emits_mcp_tool_use_and_result(
    client: anthropic.Anthropic, mcp_server: McpTestServer
) -> None:
    session = mcp_session(client, mcp_server.url, configs=[{"name": "add", "permission_policy": ALLOW}])
    seen = run_turn(client, session.id, [call("tools__add", {"a": 2, "b": 3})])

    use = one(seen, "agent.mcp_tool_use")
    assert (use.name, use.mcp_server_name, use.input) == ("add", "tools", {"a": 2, "b": 3})
    assert use.evaluated_permission == "allow" and use.evaluation.type == "always_allow"
    result = one(seen, "agent.mcp_tool_result")
    assert result.mcp_tool_use_id == use.id
    assert result.is_error is False and text_of(result.content) == "5"
    assert text_of(one(seen, "agent.message").content) == "done: 5"
    assert seen[-1].stop_reason.type == "end_turn"
    assert mcp_server.calls == [("add", {"a": 2, "b": 3})]


def test_the_model_sees_an_mcp_call_and_its_result_under_the_event_id(
    client: anthropic.Anthropic, mcp_server: McpTestServer, fake_model: FakeModel
) -> None:
    session = mcp_session(client, mcp_server.url, default_policy=ALLOW)
    use = one(run_turn(client, session.id, [call("tools__echo", {"text": "hi"})]), "agent.mcp_tool_use")

    last = model_bodies(fake_model)[-1]["messages"]
    (tool_use,) = [block for block in last[-2]["content"] if block["type"] == "tool_use"]
    (tool_result,) = [block for block in last[-1]["content"] if block["type"] == "tool_result"]
    assert (tool_use["id"], tool_use["name"]) == (use.id, "tools__echo")
    assert tool_result["tool_use_id"] == use.id


def test_an_mcp_toolset_asks_before_each_call_by_default(
    client: anthropic.Anthropic, mcp_server: McpTestServer
) -> None:
    session = mcp_session(client, mcp_server.url)
    seen = run_turn(client, session.id, [call("tools__add", {"a": 1, "b": 1})])

    use = one(seen, "agent.mcp_tool_use")
    assert use.evaluated_permission == "ask" and use.evaluation.type == "always_ask"
    assert seen[-1].stop_reason.type == "requires_action"
    assert seen[-1].stop_reason.event_ids == [use.id]
    assert mcp_server.calls == []


def test_allowing_an_mcp_call_runs_it(client: anthropic.Anthropic, mcp_server: McpTestServer) -> None:
    session = mcp_session(client, mcp_server.url)
    use = one(run_turn(client, session.id, [call("tools__add", {"a": 20, "b": 22})]), "agent.mcp_tool_use")

    seen = run_turn(client, session.id, [confirmation(use.id, "allow")])

    result = one(seen, "agent.mcp_tool_result")
    assert result.mcp_tool_use_id == use.id and text_of(result.content) == "42"
    assert seen[-1].stop_reason.type == "end_turn"
    assert mcp_server.calls == [("add", {"a": 20, "b": 22})]


def test_denying_an_mcp_call_gives_the_model_the_deny_message_and_never_runs_it(
    client: anthropic.Anthropic, mcp_server: McpTestServer
) -> None:
    session = mcp_session(client, mcp_server.url)
    use = one(run_turn(client, session.id, [call("tools__add", {"a": 1, "b": 2})]), "agent.mcp_tool_use")

    seen = run_turn(client, session.id, [confirmation(use.id, "deny", "Not today")])

    result = one(seen, "agent.mcp_tool_result")
    assert result.is_error is True and "Not today" in text_of(result.content)
    assert mcp_server.calls == []


def test_a_per_tool_policy_overrides_the_toolset_default(
    client: anthropic.Anthropic, mcp_server: McpTestServer
) -> None:
    session = mcp_session(
        client,
        mcp_server.url,
        default_policy=ALLOW,
        configs=[{"name": "echo", "permission_policy": {"type": "always_ask"}}],
    )
    seen = run_turn(client, session.id, [call("tools__echo", {"text": "x"})])

    assert one(seen, "agent.mcp_tool_use").evaluated_permission == "ask"


def test_a_disabled_mcp_tool_is_not_offered(
    client: anthropic.Anthropic, mcp_server: McpTestServer, fake_model: FakeModel
) -> None:
    session = mcp_session(client, mcp_server.url, configs=[{"name": "fail", "enabled": False}])
    run_turn(client, session.id, [user_message("hello")])

    (body,) = model_bodies(fake_model)
    assert {tool["name"] for tool in body["tools"]} == {"tools__add", "tools__echo", "tools__wait"}


def test_mcp_tools_sit_beside_the_built_in_tools(
    client: anthropic.Anthropic, mcp_server: McpTestServer, fake_model: FakeModel
) -> None:
    session = mcp_session(client, mcp_server.url, builtin=True)
    run_turn(client, session.id, [user_message("hello")])

    (body,) = model_bodies(fake_model)
    assert {"bash", "read", "tools__add"} <= {tool["name"] for tool in body["tools"]}


def test_an_mcp_tool_error_comes_back_as_an_error_result(
    client: anthropic.Anthropic, mcp_server: McpTestServer
) -> None:
    session = mcp_session(client, mcp_server.url, default_policy=ALLOW)
    seen = run_turn(client, session.id, [call("tools__fail", {"reason": "disk on fire"})])

    result = one(seen, "agent.mcp_tool_result")
    assert result.is_error is True and "disk on fire" in text_of(result.content)
    assert seen[-1].stop_reason.type == "end_turn"


def test_mcp_tools_work_over_the_sse_transport(client: anthropic.Anthropic, mcp_server: McpTestServer) -> None:
    session = mcp_session(client, mcp_server.sse_url, default_policy=ALLOW)
    seen = run_turn(client, session.id, [call("tools__echo", {"text": "over sse"})])

    assert text_of(one(seen, "agent.mcp_tool_result").content) == "over sse"


def test_a_session_keeps_using_its_mcp_server_on_later_turns(
    client: anthropic.Anthropic, mcp_server: McpTestServer
) -> None:
    session = mcp_session(client, mcp_server.url, default_policy=ALLOW)
    run_turn(client, session.id, [call("tools__add", {"a": 1, "b": 1})])
    seen = run_turn(client, session.id, [call("tools__add", {"a": 2, "b": 2})])

    assert text_of(one(seen, "agent.mcp_tool_result").content) == "4"
    assert len(mcp_server.calls) == 2


# --- servers that cannot be used --------------------------------------------------------------------------


def test_an_unreachable_mcp_server_is_reported_and_the_turn_still_ends_idle(client: anthropic.Anthropic) -> None:
    session = mcp_session(client, f"http://127.0.0.1:{free_port()}/mcp", name="offline")
    seen = run_turn(client, session.id, [user_message("hello")])

    errors = [event.error for event in seen if event.type == "session.error"]
    assert errors and all(error.type == "mcp_connection_failed_error" for error in errors)
    assert all(error.mcp_server_name == "offline" and "offline" in error.message for error in errors)
    assert [error.retry_status.type for error in errors] == ["retrying"] * (len(errors) - 1) + ["exhausted"]
    assert text_of(one(seen, "agent.message").content) == "echo: hello"
    assert seen[-1].stop_reason.type == "end_turn"


def test_a_url_that_is_not_an_mcp_endpoint_is_a_connection_failure(
    client: anthropic.Anthropic, mcp_server: McpTestServer
) -> None:
    session = mcp_session(client, mcp_server.url.replace("/mcp", "/nothing-here"), name="wrong")
    seen = run_turn(client, session.id, [user_message("hello")])

    error = one(seen, "session.error").error
    assert error.type == "mcp_connection_failed_error" and error.mcp_server_name == "wrong"
    assert seen[-1].stop_reason.type == "end_turn"


def test_a_missing_bearer_is_an_mcp_authentication_failure(
    client: anthropic.Anthropic, mcp_server: McpTestServer
) -> None:
    session = mcp_session(client, mcp_server.guarded_url, name="guarded")
    seen = run_turn(client, session.id, [user_message("hello")])

    error = one(seen, "session.error").error
    assert (error.type, error.mcp_server_name) == ("mcp_authentication_failed_error", "guarded")
    assert seen[-1].stop_reason.type == "end_turn"


def test_a_wrong_bearer_is_an_mcp_authentication_failure(
    client: anthropic.Anthropic, mcp_server: McpTestServer
) -> None:
    wrong = f"wrong-{secrets.token_hex(8)}"
    vault = bearer_vault(client, mcp_server.guarded_url, wrong)
    session = mcp_session(client, mcp_server.guarded_url, name="guarded", vault_ids=[vault.id])
    seen = run_turn(client, session.id, [user_message("hello")])

    error = one(seen, "session.error").error
    assert (error.type, error.mcp_server_name) == ("mcp_authentication_failed_error", "guarded")
    assert wrong not in error.message


# --- credentials from vaults ------------------------------------------------------------------------------


def test_a_vault_bearer_reaches_the_mcp_server_as_authorization(
    client: anthropic.Anthropic, mcp_server: McpTestServer
) -> None:
    vault = bearer_vault(client, mcp_server.guarded_url, mcp_server.token)
    session = mcp_session(client, mcp_server.guarded_url, name="guarded", default_policy=ALLOW, vault_ids=[vault.id])
    seen = run_turn(client, session.id, [call("guarded__add", {"a": 3, "b": 4})])

    assert text_of(one(seen, "agent.mcp_tool_result").content) == "7"
    assert f"Bearer {mcp_server.token}" in mcp_server.authorizations
    assert "session.error" not in types_of(seen)


def test_the_first_vault_with_a_credential_for_the_server_wins(
    client: anthropic.Anthropic, mcp_server: McpTestServer
) -> None:
    right = bearer_vault(client, mcp_server.guarded_url, mcp_server.token)
    wrong = bearer_vault(client, mcp_server.guarded_url, "not-the-token")
    session = mcp_session(client, mcp_server.guarded_url, name="guarded", vault_ids=[right.id, wrong.id])
    seen = run_turn(client, session.id, [user_message("hello")])

    assert "session.error" not in types_of(seen)


def test_an_archived_credential_is_no_longer_sent(client: anthropic.Anthropic, mcp_server: McpTestServer) -> None:
    vault = bearer_vault(client, mcp_server.guarded_url, mcp_server.token)
    session = mcp_session(client, mcp_server.guarded_url, name="guarded", vault_ids=[vault.id])
    (credential,) = client.beta.vaults.credentials.list(vault.id)
    client.beta.vaults.credentials.archive(credential.id, vault_id=vault.id)

    seen = run_turn(client, session.id, [user_message("hello")])

    assert one(seen, "session.error").error.type == "mcp_authentication_failed_error"


def test_a_rejected_oauth_token_is_refreshed_and_the_new_one_stored(
    server: CorralServer, client: anthropic.Anthropic, mcp_server: McpTestServer
) -> None:
    vault = client.beta.vaults.create(display_name="OAuth user")
    credential = client.beta.vaults.credentials.create(
        vault.id,
        auth={
            "type": "mcp_oauth",
            "access_token": "stale-token",
            "mcp_server_url": mcp_server.guarded_url,
            "refresh": {
                "client_id": "corral-tests",
                "refresh_token": mcp_server.refresh_token,
                "token_endpoint": mcp_server.token_endpoint,
                "token_endpoint_auth": {"type": "none"},
            },
        },
    )
    session = mcp_session(client, mcp_server.guarded_url, name="guarded", default_policy=ALLOW, vault_ids=[vault.id])
    seen = run_turn(client, session.id, [call("guarded__echo", {"text": "fresh"})])

    assert text_of(one(seen, "agent.mcp_tool_result").content) == "fresh"
    assert f"Bearer {mcp_server.refreshed_token}" in mcp_server.authorizations
    assert client.beta.vaults.credentials.retrieve(credential.id, vault_id=vault.id).auth.expires_at is not None
    assert mcp_server.refreshed_token not in raw_events(server, session.id)


# --- the secret never leaks ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chatty_server(fake_model: FakeModel) -> Iterator[CorralServer]:
    """A server logging at debug level, so a secret in any log line would show. (Where the log is stored does
    not change what it logs: these tests run on the default SQLite store only.)"""
    with CorralServer(model_url=fake_model.url, env={"CORRAL_LOG_LEVEL": "debug"}) as running:
        yield running


@pytest.fixture
def secret_session(chatty_server: CorralServer, mcp_server: McpTestServer) -> Iterator[tuple[anthropic.Anthropic, Any]]:
    """A session whose vault holds the MCP server's token, after one MCP call that used it."""
    with anthropic.Anthropic(base_url=chatty_server.url, api_key=chatty_server.api_key, max_retries=0) as sdk:
        vault = bearer_vault(sdk, mcp_server.guarded_url, mcp_server.token)
        session = mcp_session(
            sdk, mcp_server.guarded_url, name="guarded", default_policy=ALLOW, vault_ids=[vault.id], builtin=True
        )
        seen = run_turn(sdk, session.id, [call("guarded__echo", {"text": "used the secret"})])
        assert text_of(one(seen, "agent.mcp_tool_result").content) == "used the secret"
        yield sdk, session


@pytest.mark.slow
def test_a_vault_secret_appears_in_no_event_and_no_log_line(
    chatty_server: CorralServer, mcp_server: McpTestServer, secret_session: tuple[anthropic.Anthropic, Any]
) -> None:
    _, session = secret_session

    assert f"Bearer {mcp_server.token}" in mcp_server.authorizations
    assert mcp_server.token not in raw_events(chatty_server, session.id)
    assert mcp_server.token not in chatty_server.log()


@pytest.mark.slow
def test_a_vault_secret_is_nowhere_in_the_sandbox(
    chatty_server: CorralServer, mcp_server: McpTestServer, secret_session: tuple[anthropic.Anthropic, Any]
) -> None:
    sdk, session = secret_session
    token = mcp_server.token
    half = len(token) // 2
    # The command holds the secret only in two pieces, so it cannot find itself (in /proc or in the events).
    search = (
        f"printf '%s%s' '{token[:half]}' '{token[half:]}' > /tmp/.needle; "
        "env | grep -c -F -f /tmp/.needle; "
        'for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do grep -l -a -F -f /tmp/.needle "$f" 2>/dev/null; done; '
        "grep -r -l -a -F -f /tmp/.needle --exclude=.needle /workspace /tmp /etc 2>/dev/null; "
        "grep -l -a -F -f /tmp/.needle /proc/self/environ /proc/self/cmdline /proc/self/maps 2>/dev/null; "
        "echo searched"
    )
    seen = run_turn(sdk, session.id, [user_message(f"bash: {search}")], timeout=30)

    output = text_of(one(seen, "agent.tool_result").content)
    assert output.split() == ["0", "searched"], output
    assert token not in raw_events(chatty_server, session.id)
