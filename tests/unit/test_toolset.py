"""The built-in toolset resolves to the wire's full config and offers the model only what runs."""

from __future__ import annotations

from typing import Any

from corral.hands.builtin.toolset import TOOLSET_TYPE, model_tool_definitions, resolve_toolset

ALWAYS_ASK = {"type": "always_ask"}


def configs_by_name(resolved: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in resolved["configs"]}


def test_a_bare_toolset_resolves_to_enabled_always_allow_defaults() -> None:
    resolved = resolve_toolset({"type": TOOLSET_TYPE})

    assert resolved["type"] == "agent_toolset_20260401"
    assert resolved["default_config"] == {"enabled": True, "permission_policy": {"type": "always_allow"}}


def test_a_bare_toolset_lists_all_eight_tools_in_order_enabled_with_always_allow() -> None:
    resolved = resolve_toolset({"type": TOOLSET_TYPE})

    assert [entry["name"] for entry in resolved["configs"]] == [
        "bash",
        "read",
        "write",
        "edit",
        "glob",
        "grep",
        "web_fetch",
        "web_search",
    ]
    for entry in resolved["configs"]:
        assert entry["type"] == entry["name"]
        assert entry["enabled"] is True
        assert entry["permission_policy"] == {"type": "always_allow"}


def test_web_tools_carry_their_extra_fields_set_to_none() -> None:
    configs = configs_by_name(resolve_toolset({"type": TOOLSET_TYPE}))

    assert {key: value for key, value in configs["web_fetch"].items() if value is None} == {
        "url_sources": None,
        "allowed_domains": None,
        "blocked_domains": None,
        "max_content_tokens": None,
    }
    assert {key: value for key, value in configs["web_search"].items() if value is None} == {
        "allowed_domains": None,
        "blocked_domains": None,
        "user_location": None,
    }
    assert set(configs["bash"]) == {"name", "type", "enabled", "permission_policy"}


def test_web_tool_extras_given_in_a_config_are_kept() -> None:
    resolved = resolve_toolset(
        {"type": TOOLSET_TYPE, "configs": [{"name": "web_fetch", "allowed_domains": ["example.com"]}]}
    )

    assert configs_by_name(resolved)["web_fetch"]["allowed_domains"] == ["example.com"]


def test_default_enabled_false_disables_every_tool_except_those_a_config_enables() -> None:
    resolved = resolve_toolset(
        {"type": TOOLSET_TYPE, "default_config": {"enabled": False}, "configs": [{"name": "read", "enabled": True}]}
    )

    assert resolved["default_config"]["enabled"] is False
    assert [entry["name"] for entry in resolved["configs"] if entry["enabled"]] == ["read"]


def test_a_config_can_disable_one_tool_of_an_enabled_default() -> None:
    resolved = resolve_toolset({"type": TOOLSET_TYPE, "configs": [{"name": "bash", "enabled": False}]})

    assert [entry["name"] for entry in resolved["configs"] if not entry["enabled"]] == ["bash"]


def test_a_per_tool_permission_policy_overrides_the_default() -> None:
    resolved = resolve_toolset({"type": TOOLSET_TYPE, "configs": [{"name": "write", "permission_policy": ALWAYS_ASK}]})

    policies = {entry["name"]: entry["permission_policy"]["type"] for entry in resolved["configs"]}
    assert policies["write"] == "always_ask"
    assert {name for name, policy in policies.items() if policy != "always_allow"} == {"write"}


def test_a_default_permission_policy_applies_to_tools_without_their_own() -> None:
    resolved = resolve_toolset(
        {
            "type": TOOLSET_TYPE,
            "default_config": {"permission_policy": ALWAYS_ASK},
            "configs": [{"name": "read", "permission_policy": {"type": "always_allow"}}],
        }
    )

    policies = {entry["name"]: entry["permission_policy"]["type"] for entry in resolved["configs"]}
    assert policies["read"] == "always_allow"
    assert policies["bash"] == "always_ask"


def test_the_model_is_offered_only_enabled_workspace_tools() -> None:
    toolset = resolve_toolset({"type": TOOLSET_TYPE, "configs": [{"name": "edit", "enabled": False}]})

    definitions = model_tool_definitions([toolset])

    assert [definition["name"] for definition in definitions] == ["bash", "read", "write", "glob", "grep"]
    for definition in definitions:
        assert definition["description"]
        assert definition["input_schema"]["type"] == "object"


def web_toolset() -> dict[str, Any]:
    return resolve_toolset(
        {
            "type": TOOLSET_TYPE,
            "default_config": {"enabled": False},
            "configs": [{"name": "web_fetch", "enabled": True}, {"name": "web_search", "enabled": True}],
        }
    )


def test_enabled_web_tools_are_not_offered_when_the_hands_cannot_run_them() -> None:
    assert model_tool_definitions([web_toolset()]) == []


def test_web_search_is_offered_only_when_the_hands_can_run_it() -> None:
    fetch_only = model_tool_definitions([web_toolset()], frozenset({"web_fetch"}))
    both = model_tool_definitions([web_toolset()], frozenset({"web_fetch", "web_search"}))

    assert [definition["name"] for definition in fetch_only] == ["web_fetch"]
    assert [definition["name"] for definition in both] == ["web_fetch", "web_search"]
    assert both[0]["input_schema"]["required"] == ["url"]
    assert both[1]["input_schema"]["required"] == ["query"]


def test_custom_tools_are_offered_alongside_enabled_builtins_with_their_input_schema() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    custom = {"type": "custom", "name": "get_weather", "description": "Weather for a city.", "input_schema": schema}
    toolset = resolve_toolset(
        {"type": TOOLSET_TYPE, "default_config": {"enabled": False}, "configs": [{"name": "bash", "enabled": True}]}
    )

    definitions = model_tool_definitions([toolset, custom])

    assert [definition["name"] for definition in definitions] == ["bash", "get_weather"]
    assert definitions[1] == {"name": "get_weather", "description": "Weather for a city.", "input_schema": schema}
