"""`/v1/agents` (spec §2, §3): create with resolved defaults, versions, patch semantics, listing and archive."""

from __future__ import annotations

import uuid

import anthropic
import pytest

TOOLSET = "agent_toolset_20260401"
BUILTIN_TOOLS = ["bash", "read", "write", "edit", "glob", "grep", "web_fetch", "web_search"]
MODEL = "claude-sonnet-4-6"
WEATHER_TOOL = {
    "type": "custom",
    "name": "get_weather",
    "description": "Fetch current weather for a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
GITHUB_SERVER = {"type": "url", "name": "github", "url": "https://mcp.example.com/github"}


def _create(client: anthropic.Anthropic, **fields):  # type: ignore[no-untyped-def]
    fields.setdefault("name", f"agent-{uuid.uuid4().hex[:8]}")
    fields.setdefault("model", MODEL)
    return client.beta.agents.create(**fields)


def _create_raw(client: anthropic.Anthropic, **fields) -> dict:  # type: ignore[no-untyped-def]
    fields.setdefault("name", f"agent-{uuid.uuid4().hex[:8]}")
    fields.setdefault("model", MODEL)
    response = client.beta.agents.with_raw_response.create(**fields)
    assert response.status_code == 200
    body = response.json()
    assert isinstance(body, dict)
    return body


def _toolset(agent_json: dict) -> dict:
    return next(tool for tool in agent_json["tools"] if tool["type"] == TOOLSET)


# --- create -------------------------------------------------------------------------------------------


def test_create_returns_a_version_1_agent_with_every_required_field(client: anthropic.Anthropic) -> None:
    body = _create_raw(client, name="Coding Assistant", tools=[{"type": TOOLSET}])
    required = {
        "id", "type", "name", "model", "tools", "mcp_servers", "skills", "metadata",
        "execution_identity", "version", "created_at", "updated_at",
    }  # fmt: skip
    assert required <= body.keys()
    assert body["id"].startswith("agent_")
    assert body["type"] == "agent"
    assert body["name"] == "Coding Assistant"
    assert body["version"] == 1
    assert body["archived_at"] is None
    assert body["mcp_servers"] == [] and body["skills"] == [] and body["metadata"] == {}
    assert body["execution_identity"] == {"type": "service_account"}


def test_create_resolves_a_bare_model_string_into_a_model_object_with_effort(client: anthropic.Anthropic) -> None:
    body = _create_raw(client, model=MODEL)
    model = body["model"]
    assert model["id"] == MODEL
    assert model["effort"]["type"] in {"low", "medium", "high", "xhigh", "max"}
    assert "inference_geo" in model and "speed" in model


def test_create_keeps_an_explicit_model_effort_and_speed(client: anthropic.Anthropic) -> None:
    agent = _create(client, model={"id": MODEL, "effort": "low", "speed": "fast"})
    assert agent.model.id == MODEL
    assert agent.model.effort is not None and agent.model.effort.type == "low"
    assert agent.model.speed == "fast"


def test_create_resolves_the_toolset_default_config(client: anthropic.Anthropic) -> None:
    toolset = _toolset(_create_raw(client, tools=[{"type": TOOLSET}]))
    assert toolset["default_config"] == {"enabled": True, "permission_policy": {"type": "always_allow"}}


def test_create_resolves_the_toolset_into_all_eight_tool_configs(client: anthropic.Anthropic) -> None:
    toolset = _toolset(_create_raw(client, tools=[{"type": TOOLSET}]))
    assert [entry["name"] for entry in toolset["configs"]] == BUILTIN_TOOLS
    for entry in toolset["configs"]:
        assert entry["type"] == entry["name"]
        assert entry["enabled"] is True
        assert entry["permission_policy"] == {"type": "always_allow"}


def test_create_resolves_web_fetch_and_web_search_extras_to_null(client: anthropic.Anthropic) -> None:
    configs = {entry["name"]: entry for entry in _toolset(_create_raw(client, tools=[{"type": TOOLSET}]))["configs"]}
    web_fetch, web_search = configs["web_fetch"], configs["web_search"]
    for extra in ("url_sources", "allowed_domains", "blocked_domains", "max_content_tokens"):
        assert extra in web_fetch and web_fetch[extra] is None
    for extra in ("allowed_domains", "blocked_domains", "user_location"):
        assert extra in web_search and web_search[extra] is None


def test_create_applies_per_tool_configs_over_the_default_config(client: anthropic.Anthropic) -> None:
    toolset = _toolset(
        _create_raw(
            client,
            tools=[
                {
                    "type": TOOLSET,
                    "default_config": {"enabled": False},
                    "configs": [
                        {"name": "bash", "enabled": True, "permission_policy": {"type": "always_ask"}},
                        {
                            "name": "web_fetch",
                            "enabled": True,
                            "allowed_domains": ["example.com"],
                            "max_content_tokens": 1000,
                        },
                    ],
                }
            ],
        )
    )
    configs = {entry["name"]: entry for entry in toolset["configs"]}
    assert toolset["default_config"]["enabled"] is False
    assert configs["bash"]["enabled"] is True
    assert configs["bash"]["permission_policy"] == {"type": "always_ask"}
    assert configs["web_fetch"]["enabled"] is True
    assert configs["web_fetch"]["allowed_domains"] == ["example.com"]
    assert configs["web_fetch"]["max_content_tokens"] == 1000
    assert [name for name, entry in configs.items() if not entry["enabled"]] == [
        "read", "write", "edit", "glob", "grep", "web_search",
    ]  # fmt: skip


def test_create_echoes_a_custom_tool_unchanged(client: anthropic.Anthropic) -> None:
    body = _create_raw(client, tools=[WEATHER_TOOL])
    assert body["tools"] == [WEATHER_TOOL]


def test_create_pairs_an_mcp_toolset_with_its_server_and_defaults_to_always_ask(client: anthropic.Anthropic) -> None:
    body = _create_raw(
        client, tools=[{"type": "mcp_toolset", "mcp_server_name": "github"}], mcp_servers=[GITHUB_SERVER]
    )
    assert body["mcp_servers"] == [GITHUB_SERVER]
    assert body["tools"] == [
        {
            "type": "mcp_toolset",
            "mcp_server_name": "github",
            "default_config": {"enabled": True, "permission_policy": {"type": "always_ask"}},
            "configs": [],
        }
    ]


def test_create_rejects_an_mcp_server_no_toolset_uses(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        _create(client, tools=[{"type": TOOLSET}], mcp_servers=[GITHUB_SERVER])
    assert "github" in (caught.value.api_message or "")


def test_create_rejects_an_mcp_toolset_whose_server_is_missing(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        _create(client, tools=[{"type": "mcp_toolset", "mcp_server_name": "github"}])
    assert "github" in (caught.value.api_message or "")


def test_create_rejects_a_missing_name(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.post("/v1/agents", body={"model": MODEL}, cast_to=object)
    assert "name" in (caught.value.api_message or "")


# --- retrieve -----------------------------------------------------------------------------------------


def test_retrieve_returns_the_latest_version(client: anthropic.Anthropic) -> None:
    agent = _create(client, system="one")
    client.beta.agents.update(agent.id, system="two")
    latest = client.beta.agents.retrieve(agent.id)
    assert latest.version == 2 and latest.system == "two"


def test_retrieve_with_version_returns_that_version(client: anthropic.Anthropic) -> None:
    agent = _create(client, system="one")
    client.beta.agents.update(agent.id, system="two")
    first = client.beta.agents.retrieve(agent.id, version=1)
    assert first.version == 1 and first.system == "one"


def test_retrieve_of_a_version_that_does_not_exist_is_404(client: anthropic.Anthropic) -> None:
    agent = _create(client)
    with pytest.raises(anthropic.NotFoundError):
        client.beta.agents.retrieve(agent.id, version=2)


# --- update -------------------------------------------------------------------------------------------


def test_update_that_changes_something_creates_the_next_version(client: anthropic.Anthropic) -> None:
    agent = _create(client, system="before")
    updated = client.beta.agents.update(agent.id, system="after")
    assert updated.version == agent.version + 1
    assert updated.system == "after"
    assert updated.id == agent.id and updated.created_at == agent.created_at


def test_update_that_changes_nothing_keeps_the_version(client: anthropic.Anthropic) -> None:
    agent = _create(client, system="same", metadata={"team": "a"})
    unchanged = client.beta.agents.update(agent.id, system="same", metadata={"team": "a"}, name=agent.name)
    assert unchanged.version == agent.version
    assert client.beta.agents.retrieve(agent.id).version == agent.version


def test_update_with_the_current_version_succeeds(client: anthropic.Anthropic) -> None:
    agent = _create(client)
    assert client.beta.agents.update(agent.id, version=agent.version, description="d").version == agent.version + 1


def test_update_with_a_stale_version_is_a_409_conflict(client: anthropic.Anthropic) -> None:
    agent = _create(client)
    client.beta.agents.update(agent.id, description="first writer")
    with pytest.raises(anthropic.ConflictError):
        client.beta.agents.update(agent.id, version=agent.version, description="second writer")
    assert client.beta.agents.retrieve(agent.id).description == "first writer"


def test_update_metadata_upserts_string_values_and_keeps_omitted_keys(client: anthropic.Anthropic) -> None:
    agent = _create(client, metadata={"keep": "1", "change": "old"})
    updated = client.beta.agents.update(agent.id, metadata={"change": "new", "add": "2"})
    assert updated.metadata == {"keep": "1", "change": "new", "add": "2"}


def test_update_metadata_null_deletes_the_key(client: anthropic.Anthropic) -> None:
    agent = _create(client, metadata={"keep": "1", "drop": "2"})
    updated = client.beta.agents.update(agent.id, metadata={"drop": None})
    assert updated.metadata == {"keep": "1"}


def test_update_with_empty_system_clears_it(client: anthropic.Anthropic) -> None:
    agent = _create(client, system="You are terse.")
    updated = client.beta.agents.update(agent.id, system="")
    assert not updated.system
    assert not client.beta.agents.retrieve(agent.id).system


def test_update_with_null_system_clears_it(client: anthropic.Anthropic) -> None:
    agent = _create(client, system="You are terse.")
    assert not client.beta.agents.update(agent.id, system=None).system


def test_update_omitting_a_field_preserves_it(client: anthropic.Anthropic) -> None:
    agent = _create(client, system="keep me", description="and me", tools=[WEATHER_TOOL])
    updated = client.beta.agents.update(agent.id, name="renamed")
    assert updated.name == "renamed"
    assert updated.system == "keep me" and updated.description == "and me"
    assert [tool.model_dump() for tool in updated.tools] == [WEATHER_TOOL]


def test_update_replaces_the_tools_array_wholesale(client: anthropic.Anthropic) -> None:
    agent = _create(client, tools=[{"type": TOOLSET}, WEATHER_TOOL])
    updated = client.beta.agents.update(agent.id, tools=[WEATHER_TOOL])
    assert [tool.type for tool in updated.tools] == ["custom"]


def test_update_of_model_without_effort_keeps_the_stored_effort(client: anthropic.Anthropic) -> None:
    agent = _create(client, model={"id": MODEL, "effort": "low"})
    updated = client.beta.agents.update(agent.id, model={"id": MODEL, "speed": "fast"})
    assert updated.model.speed == "fast"
    assert updated.model.effort is not None and updated.model.effort.type == "low"


def test_update_of_model_replaces_the_whole_object_so_omitted_inference_geo_clears(
    client: anthropic.Anthropic,
) -> None:
    agent = _create(client, model={"id": MODEL, "inference_geo": "us"})
    updated = client.beta.agents.update(agent.id, model={"id": MODEL})
    assert updated.model.inference_geo is None


def test_update_cannot_clear_the_name(client: anthropic.Anthropic) -> None:
    agent = _create(client)
    with pytest.raises(anthropic.BadRequestError):
        client.beta.agents.update(agent.id, extra_body={"name": None})
    assert client.beta.agents.retrieve(agent.id).name == agent.name


# --- list ---------------------------------------------------------------------------------------------


def test_list_auto_paginates_with_limit_and_next_page(client: anthropic.Anthropic) -> None:
    created = [_create(client) for _ in range(3)]
    bounds = {"created_at_gte": created[0].created_at, "created_at_lte": created[-1].created_at}
    first_page = client.beta.agents.list(limit=1, **bounds)
    assert len(first_page.data) == 1 and first_page.next_page
    listed = [agent.id for agent in client.beta.agents.list(limit=1, **bounds)]
    assert sorted(listed) == sorted(agent.id for agent in created)


def test_list_created_at_bounds_are_inclusive_and_exclude_outside(client: anthropic.Anthropic) -> None:
    before, inside, after = (_create(client) for _ in range(3))
    listed = [
        agent.id
        for agent in client.beta.agents.list(created_at_gte=inside.created_at, created_at_lte=inside.created_at)
    ]
    assert listed == [inside.id]
    assert before.id not in listed and after.id not in listed


def test_list_omits_archived_agents_by_default(client: anthropic.Anthropic) -> None:
    live, archived = _create(client), _create(client)
    client.beta.agents.archive(archived.id)
    listed = [a.id for a in client.beta.agents.list(created_at_gte=live.created_at, created_at_lte=archived.created_at)]
    assert listed == [live.id]


def test_list_with_include_archived_returns_archived_agents(client: anthropic.Anthropic) -> None:
    live, archived = _create(client), _create(client)
    client.beta.agents.archive(archived.id)
    listed = client.beta.agents.list(
        created_at_gte=live.created_at, created_at_lte=archived.created_at, include_archived=True
    )
    assert sorted(agent.id for agent in listed) == sorted([live.id, archived.id])


def test_list_shows_each_agent_at_its_latest_version(client: anthropic.Anthropic) -> None:
    agent = _create(client)
    client.beta.agents.update(agent.id, description="v2")
    listed = list(client.beta.agents.list(created_at_gte=agent.created_at, created_at_lte=agent.created_at))
    assert [(a.id, a.version) for a in listed] == [(agent.id, 2)]


# --- archive ------------------------------------------------------------------------------------------


def test_archive_sets_archived_at(client: anthropic.Anthropic) -> None:
    agent = _create(client)
    archived = client.beta.agents.archive(agent.id)
    assert archived.id == agent.id
    assert archived.archived_at is not None
    assert client.beta.agents.retrieve(agent.id).archived_at == archived.archived_at


def test_an_archived_agent_cannot_start_new_sessions(client: anthropic.Anthropic, environment) -> None:  # type: ignore[no-untyped-def]
    agent = _create(client, tools=[{"type": TOOLSET}])
    client.beta.agents.archive(agent.id)
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.beta.sessions.create(agent=agent.id, environment_id=environment.id)
    assert 400 <= caught.value.status_code < 500
    assert caught.value.status_code != 404


# --- versions -----------------------------------------------------------------------------------------


def test_versions_list_has_one_entry_per_version_newest_first(client: anthropic.Anthropic) -> None:
    agent = _create(client, system="v1")
    client.beta.agents.update(agent.id, system="v2")
    client.beta.agents.update(agent.id, system="v3")
    versions = list(client.beta.agents.versions.list(agent.id))
    assert [(v.version, v.system) for v in versions] == [(3, "v3"), (2, "v2"), (1, "v1")]
    assert {v.id for v in versions} == {agent.id}


def test_versions_list_paginates(client: anthropic.Anthropic) -> None:
    agent = _create(client, system="v1")
    client.beta.agents.update(agent.id, system="v2")
    client.beta.agents.update(agent.id, system="v3")
    first_page = client.beta.agents.versions.list(agent.id, limit=2)
    assert [v.version for v in first_page.data] == [3, 2] and first_page.next_page
    assert [v.version for v in client.beta.agents.versions.list(agent.id, limit=2)] == [3, 2, 1]


def test_versions_list_of_a_noop_update_adds_no_version(client: anthropic.Anthropic) -> None:
    agent = _create(client, system="only")
    client.beta.agents.update(agent.id, system="only")
    assert [v.version for v in client.beta.agents.versions.list(agent.id)] == [1]
