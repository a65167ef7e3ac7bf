"""The tool router names each model tool call (custom, MCP, built-in or denied), gives it its permission, and
runs the calls the brain runs itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from corral.brain.tools import ToolCatalog, ToolRouter, evaluate_policy, result_event
from corral.config import McpSettings
from corral.hands.builtin.toolset import TOOLSET_TYPE, WORKSPACE_TOOLS, resolve_toolset
from corral.hands.local import LocalHands
from corral.mcp.client import McpHub, McpTool
from corral.session.records import EventRecord, Json, NewEvent

RUNNABLE = frozenset(WORKSPACE_TOOLS)
ALWAYS_ASK = {"type": "always_ask"}
ALWAYS_ALLOW = {"type": "always_allow"}


def toolset(**param: Any) -> Json:
    return resolve_toolset({"type": TOOLSET_TYPE, **param})


def custom_tool(name: str) -> Json:
    return {"type": "custom", "name": name, "description": f"The client's {name}.", "input_schema": {"type": "object"}}


def mcp_toolset(server: str, policy: Json = ALWAYS_ASK, configs: list[Json] | None = None) -> Json:
    default = {"enabled": True, "permission_policy": policy}
    return {"type": "mcp_toolset", "mcp_server_name": server, "default_config": default, "configs": configs or []}


def mcp_tool(server: str, name: str) -> McpTool:
    return McpTool(server, name, f"{server}__{name}", f"The {name} tool.", {"type": "object", "properties": {}})


def call_record(event: NewEvent) -> EventRecord:
    return EventRecord(event.id, "sesn_test", event.type, event.body, position=1, processed_at=None)


# -- classification ---------------------------------------------------------------------------------


def test_a_custom_tool_call_goes_to_the_client_with_no_permission() -> None:
    catalog = ToolCatalog([toolset(), custom_tool("lookup")], RUNNABLE)

    event = catalog.call_event("lookup", {"q": 1})

    assert (event.type, event.body) == ("agent.custom_tool_use", {"name": "lookup", "input": {"q": 1}})


def test_an_mcp_tool_call_names_the_server_and_the_tools_own_name() -> None:
    catalog = ToolCatalog([mcp_toolset("docs")], RUNNABLE, {"docs__search": mcp_tool("docs", "search")})

    event = catalog.call_event("docs__search", {"query": "x"})

    assert event.type == "agent.mcp_tool_use"
    assert event.body == {
        "name": "search",
        "mcp_server_name": "docs",
        "input": {"query": "x"},
        "evaluated_permission": "ask",
        "evaluation": {"type": "always_ask"},
    }


def test_a_custom_tool_takes_precedence_over_an_mcp_tool_of_the_same_name() -> None:
    agent_tools = [mcp_toolset("docs"), custom_tool("docs__search")]
    catalog = ToolCatalog(agent_tools, RUNNABLE, {"docs__search": mcp_tool("docs", "search")})

    assert catalog.call_event("docs__search", {}).type == "agent.custom_tool_use"


def test_an_enabled_built_in_tool_runs_under_its_policy() -> None:
    event = ToolCatalog([toolset()], RUNNABLE).call_event("bash", {"command": "ls"})

    assert event.type == "agent.tool_use"
    assert event.body == {
        "name": "bash",
        "input": {"command": "ls"},
        "evaluated_permission": "allow",
        "evaluation": {"type": "always_allow"},
    }


def test_a_disabled_built_in_tool_is_denied() -> None:
    catalog = ToolCatalog([toolset(configs=[{"name": "bash", "enabled": False}])], RUNNABLE)

    event = catalog.call_event("bash", {})

    assert event.body == {"name": "bash", "input": {}, "evaluated_permission": "deny"}


def test_a_built_in_tool_the_hands_cannot_run_is_denied() -> None:
    event = ToolCatalog([toolset()], RUNNABLE).call_event("web_search", {"query": "x"})

    assert event.body["evaluated_permission"] == "deny"


def test_a_name_no_source_offers_is_a_denied_built_in_call() -> None:
    event = ToolCatalog([toolset()], RUNNABLE).call_event("launch_rockets", {})

    assert (event.type, event.body["evaluated_permission"]) == ("agent.tool_use", "deny")


def test_without_a_toolset_every_built_in_tool_is_denied() -> None:
    event = ToolCatalog([custom_tool("lookup")], RUNNABLE).call_event("bash", {"command": "ls"})

    assert event.body["evaluated_permission"] == "deny"


# -- permission ---------------------------------------------------------------------------------------


def test_always_allow_allows() -> None:
    assert evaluate_policy("always_allow") == ("allow", {"type": "always_allow"})


def test_always_ask_asks() -> None:
    assert evaluate_policy("always_ask") == ("ask", {"type": "always_ask"})


def test_auto_asks_because_no_classifier_decides_yet() -> None:
    assert evaluate_policy("auto") == (
        "ask",
        {"type": "auto", "evaluated_permission": {"type": "ask", "reason_code": "indeterminate"}},
    )


def test_a_built_in_tools_own_policy_overrides_the_toolset_default() -> None:
    agent_tools = [
        toolset(
            default_config={"permission_policy": ALWAYS_ASK},
            configs=[{"name": "read", "permission_policy": ALWAYS_ALLOW}],
        )
    ]
    catalog = ToolCatalog(agent_tools, RUNNABLE)

    assert catalog.call_event("read", {}).body["evaluated_permission"] == "allow"
    assert catalog.call_event("write", {}).body["evaluated_permission"] == "ask"


def test_an_mcp_tools_own_policy_overrides_its_toolsets_default() -> None:
    configs = [{"name": "search", "enabled": True, "permission_policy": ALWAYS_ALLOW}]
    tools = {"docs__search": mcp_tool("docs", "search"), "docs__delete": mcp_tool("docs", "delete")}
    catalog = ToolCatalog([mcp_toolset("docs", ALWAYS_ASK, configs)], RUNNABLE, tools)

    assert catalog.call_event("docs__search", {}).body["evaluated_permission"] == "allow"
    assert catalog.call_event("docs__delete", {}).body["evaluated_permission"] == "ask"


# -- what the model is offered ----------------------------------------------------------------------


def test_definitions_are_built_in_and_custom_tools_in_the_agents_order_then_mcp_tools() -> None:
    grep_alone = toolset(default_config={"enabled": False}, configs=[{"name": "grep", "enabled": True}])
    agent_tools = [custom_tool("first"), grep_alone, mcp_toolset("docs")]
    catalog = ToolCatalog(agent_tools, RUNNABLE, {"docs__search": mcp_tool("docs", "search")})

    assert [definition["name"] for definition in catalog.definitions()] == ["first", "grep", "docs__search"]


# -- results and dispatch -----------------------------------------------------------------------------


def test_an_mcp_calls_result_answers_it_as_an_mcp_result() -> None:
    event = result_event("sevt_1", "agent.mcp_tool_use", {"content": [], "is_error": False})

    assert (event.type, event.body) == (
        "agent.mcp_tool_result",
        {"mcp_tool_use_id": "sevt_1", "content": [], "is_error": False},
    )


def test_a_built_in_calls_result_answers_it_as_a_tool_result() -> None:
    event = result_event("sevt_1", "agent.tool_use", {"content": [], "is_error": True})

    assert (event.type, event.body) == ("agent.tool_result", {"tool_use_id": "sevt_1", "content": [], "is_error": True})


@pytest.fixture
async def hands(tmp_path: Path) -> AsyncIterator[LocalHands]:
    local = LocalHands(tmp_path / "workspace")
    yield local
    await local.close()


def router(agent: Json, hands: LocalHands) -> ToolRouter:
    return ToolRouter(
        agent,
        hands=hands,
        runnable=RUNNABLE,
        mcp=McpHub(McpSettings(), None),
        session_id="sesn_test",
        workspace_id="wrkspc_test",
        vault_ids=[],
    )


async def test_a_denied_call_is_refused_and_never_reaches_the_hands(hands: LocalHands) -> None:
    agent = {"tools": [toolset(configs=[{"name": "write", "enabled": False}])]}
    tools = router(agent, hands)
    call = call_record(tools.catalog.call_event("write", {"file_path": "notes.txt", "content": "x"}))

    result = await tools.execute(call)

    assert result == {
        "content": [{"type": "text", "text": "The tool 'write' is not enabled for this agent."}],
        "is_error": True,
    }
    assert not hands.workspace.exists()


async def test_an_allowed_built_in_call_runs_in_the_hands(hands: LocalHands) -> None:
    tools = router({"tools": [toolset()]}, hands)
    call = call_record(tools.catalog.call_event("write", {"file_path": "notes.txt", "content": "hello"}))

    result = await tools.execute(call)

    assert result["is_error"] is False
    assert (hands.workspace / "notes.txt").read_text() == "hello"


async def test_a_call_to_an_mcp_server_the_agent_no_longer_has_is_an_error_result(hands: LocalHands) -> None:
    agent = {"tools": [mcp_toolset("docs")], "mcp_servers": []}
    tools = router(agent, hands)
    offered = ToolCatalog(agent["tools"], RUNNABLE, {"docs__search": mcp_tool("docs", "search")})
    call = call_record(offered.call_event("docs__search", {}))

    result = await tools.execute(call)

    assert result["is_error"] is True
    assert result["content"][0]["text"] == "MCP server 'docs' is no longer part of this agent."
