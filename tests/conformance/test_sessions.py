"""`/v1/sessions` (spec §6): agent references and overrides, the session object, updates, listing, archive, delete."""

from __future__ import annotations

import anthropic
import pytest

TOOLSET = "agent_toolset_20260401"
WEATHER_TOOL = {
    "type": "custom",
    "name": "get_weather",
    "description": "Fetch current weather for a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
HELLO = {"type": "user.message", "content": [{"type": "text", "text": "hello"}]}


@pytest.fixture
def versioned_agent(client: anthropic.Anthropic):  # type: ignore[no-untyped-def]
    """An agent at version 2, whose version 1 had a different system prompt."""
    agent = client.beta.agents.create(
        name="Versioned", model="claude-sonnet-4-6", system="v1 prompt", tools=[{"type": TOOLSET}]
    )
    return client.beta.agents.update(agent.id, system="v2 prompt")


def _sessions(client: anthropic.Anthropic, agent, environment, count: int) -> list:  # type: ignore[no-untyped-def]
    return [
        client.beta.sessions.create(agent=agent.id, environment_id=environment.id, title=f"s{index}")
        for index in range(count)
    ]


# --- create -------------------------------------------------------------------------------------------


def test_create_with_an_agent_id_string_pins_the_latest_version(client, versioned_agent, environment) -> None:  # type: ignore[no-untyped-def]
    session = client.beta.sessions.create(agent=versioned_agent.id, environment_id=environment.id)
    assert session.agent.id == versioned_agent.id
    assert session.agent.version == 2
    assert session.agent.system == "v2 prompt"


def test_create_with_an_agent_reference_and_version_pins_that_version(client, versioned_agent, environment) -> None:  # type: ignore[no-untyped-def]
    session = client.beta.sessions.create(
        agent={"type": "agent", "id": versioned_agent.id, "version": 1}, environment_id=environment.id
    )
    assert session.agent.version == 1
    assert session.agent.system == "v1 prompt"


def test_create_with_an_agent_reference_without_version_uses_the_latest(client, versioned_agent, environment) -> None:  # type: ignore[no-untyped-def]
    session = client.beta.sessions.create(
        agent={"type": "agent", "id": versioned_agent.id}, environment_id=environment.id
    )
    assert session.agent.version == 2


def test_create_with_an_unknown_agent_version_is_404(client, versioned_agent, environment) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.create(
            agent={"type": "agent", "id": versioned_agent.id, "version": 9}, environment_id=environment.id
        )


def test_create_with_overrides_replaces_model_system_and_tools_in_the_snapshot(client, agent, environment) -> None:  # type: ignore[no-untyped-def]
    session = client.beta.sessions.create(
        agent={
            "type": "agent_with_overrides",
            "id": agent.id,
            "model": "claude-haiku-4-5",
            "system": "Override prompt.",
            "tools": [WEATHER_TOOL],
        },
        environment_id=environment.id,
    )
    assert session.agent.id == agent.id and session.agent.version == agent.version
    assert session.agent.model.id == "claude-haiku-4-5"
    assert session.agent.system == "Override prompt."
    assert [tool.model_dump() for tool in session.agent.tools] == [WEATHER_TOOL]


def test_create_with_overrides_leaves_the_agent_itself_unchanged(client, agent, environment) -> None:  # type: ignore[no-untyped-def]
    client.beta.sessions.create(
        agent={"type": "agent_with_overrides", "id": agent.id, "system": "Override prompt.", "tools": []},
        environment_id=environment.id,
    )
    stored = client.beta.agents.retrieve(agent.id)
    assert stored.version == agent.version
    assert stored.system == agent.system
    assert stored.model_dump() == agent.model_dump()


def test_create_with_overrides_keeps_fields_that_are_not_overridden(client, agent, environment) -> None:  # type: ignore[no-untyped-def]
    session = client.beta.sessions.create(
        agent={"type": "agent_with_overrides", "id": agent.id, "system": "Only the prompt changes."},
        environment_id=environment.id,
    )
    assert session.agent.model.model_dump() == agent.model.model_dump()
    assert [tool.model_dump() for tool in session.agent.tools] == [tool.model_dump() for tool in agent.tools]


def test_create_returns_an_idle_session_with_zero_usage_and_empty_collections(client, agent, environment) -> None:  # type: ignore[no-untyped-def]
    response = client.beta.sessions.with_raw_response.create(
        agent=agent.id, environment_id=environment.id, title="Fields", metadata={"ticket": "T-1"}
    )
    body = response.json()
    assert isinstance(body, dict)
    assert body["id"].startswith("sesn_") and body["type"] == "session"
    assert body["status"] == "idle"
    assert body["title"] == "Fields"
    assert body["environment_id"] == environment.id
    assert body["metadata"] == {"ticket": "T-1"}
    assert body["resources"] == [] and body["vault_ids"] == [] and body["outcome_evaluations"] == []
    assert body["archived_at"] is None
    assert {"active_seconds", "duration_seconds"} <= body["stats"].keys()
    usage = body["usage"]
    assert usage.get("input_tokens", 0) == 0 and usage.get("output_tokens", 0) == 0
    assert usage.get("cache_read_input_tokens", 0) == 0


def test_create_snapshots_the_agent_without_metadata_or_timestamps(client, agent, environment) -> None:  # type: ignore[no-untyped-def]
    body = client.beta.sessions.with_raw_response.create(agent=agent.id, environment_id=environment.id).json()
    assert isinstance(body, dict)
    snapshot = body["agent"]
    assert snapshot["id"] == agent.id and snapshot["type"] == "agent" and snapshot["version"] == agent.version
    assert {"name", "model", "tools", "mcp_servers", "skills", "execution_identity"} <= snapshot.keys()
    assert not {"metadata", "created_at", "updated_at", "archived_at"} & snapshot.keys()


def test_create_snapshot_does_not_follow_later_agent_updates(client, agent, environment) -> None:  # type: ignore[no-untyped-def]
    session = client.beta.sessions.create(agent=agent.id, environment_id=environment.id)
    client.beta.agents.update(agent.id, system="changed later")
    fetched = client.beta.sessions.retrieve(session.id)
    assert fetched.agent.version == agent.version and fetched.agent.system == agent.system


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("resources", [{"type": "file", "file_id": "file_011CNha8iCJcU1wXNR6q4V8w"}]),
        ("budget", {"type": "limit", "max_list_cost": {"amount": "2500", "currency": "USD"}}),
    ],
)
def test_create_with_an_unsupported_field_is_400_naming_it(client, agent, environment, field, value) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.beta.sessions.create(agent=agent.id, environment_id=environment.id, **{field: value})
    assert field in (caught.value.api_message or "")


def test_create_with_an_unknown_environment_is_404(client, agent) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.create(agent=agent.id, environment_id="env_doesnotexist")


# --- retrieve and update ------------------------------------------------------------------------------


def test_retrieve_returns_the_created_session(client, session) -> None:  # type: ignore[no-untyped-def]
    fetched = client.beta.sessions.retrieve(session.id)
    assert fetched.id == session.id
    assert fetched.agent.model_dump() == session.agent.model_dump()
    assert (fetched.title, fetched.environment_id, fetched.status) == (session.title, session.environment_id, "idle")
    assert fetched.created_at == session.created_at


def test_update_sets_the_title(client, session) -> None:  # type: ignore[no-untyped-def]
    updated = client.beta.sessions.update(session.id, title="Renamed")
    assert updated.title == "Renamed"
    assert client.beta.sessions.retrieve(session.id).title == "Renamed"


def test_update_metadata_upserts_strings_and_null_deletes(client, agent, environment) -> None:  # type: ignore[no-untyped-def]
    session = client.beta.sessions.create(
        agent=agent.id, environment_id=environment.id, metadata={"keep": "1", "drop": "2", "change": "old"}
    )
    updated = client.beta.sessions.update(session.id, metadata={"drop": None, "change": "new", "add": "3"})
    assert updated.metadata == {"keep": "1", "change": "new", "add": "3"}


def test_update_emits_a_session_updated_event(client, session) -> None:  # type: ignore[no-untyped-def]
    client.beta.sessions.update(session.id, title="Renamed", metadata={"k": "v"})
    events = list(client.beta.sessions.events.list(session.id, types=["session.updated"]))
    assert [event.type for event in events] == ["session.updated"]
    assert events[0].title == "Renamed"
    assert events[0].metadata == {"k": "v"}


def test_update_that_changes_nothing_emits_no_session_updated_event(client, session) -> None:  # type: ignore[no-untyped-def]
    client.beta.sessions.update(session.id, title=session.title)
    assert list(client.beta.sessions.events.list(session.id, types=["session.updated"])) == []


def test_update_with_vault_ids_is_400_naming_the_field(client, session) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.beta.sessions.update(session.id, vault_ids=["vlt_011CZkZDLs7fYzm1hXNPeRjv"])
    assert "vault_ids" in (caught.value.api_message or "")


# --- list ---------------------------------------------------------------------------------------------


def test_list_filters_by_agent_id(client, agent, environment) -> None:  # type: ignore[no-untyped-def]
    mine = {s.id for s in _sessions(client, agent, environment, 2)}
    other_agent = client.beta.agents.create(name="Other", model="claude-sonnet-4-6")
    client.beta.sessions.create(agent=other_agent.id, environment_id=environment.id)
    assert {s.id for s in client.beta.sessions.list(agent_id=agent.id)} == mine


def test_list_filters_by_statuses(client, agent, environment) -> None:  # type: ignore[no-untyped-def]
    mine = {s.id for s in _sessions(client, agent, environment, 2)}
    assert {s.id for s in client.beta.sessions.list(agent_id=agent.id, statuses=["idle"])} == mine
    assert list(client.beta.sessions.list(agent_id=agent.id, statuses=["running", "terminated"])) == []


def test_list_orders_newest_first_by_default_and_oldest_first_with_asc(client, agent, environment) -> None:  # type: ignore[no-untyped-def]
    created = [s.id for s in _sessions(client, agent, environment, 3)]
    assert [s.id for s in client.beta.sessions.list(agent_id=agent.id)] == created[::-1]
    assert [s.id for s in client.beta.sessions.list(agent_id=agent.id, order="desc")] == created[::-1]
    assert [s.id for s in client.beta.sessions.list(agent_id=agent.id, order="asc")] == created


def test_list_omits_archived_sessions_unless_include_archived(client, agent, environment) -> None:  # type: ignore[no-untyped-def]
    live, archived = _sessions(client, agent, environment, 2)
    client.beta.sessions.archive(archived.id)
    assert [s.id for s in client.beta.sessions.list(agent_id=agent.id)] == [live.id]
    everything = {s.id for s in client.beta.sessions.list(agent_id=agent.id, include_archived=True)}
    assert everything == {live.id, archived.id}


def test_list_first_page_has_no_prev_page(client, agent, environment) -> None:  # type: ignore[no-untyped-def]
    _sessions(client, agent, environment, 3)
    first = client.beta.sessions.list(agent_id=agent.id, limit=2)
    assert first.next_page and not first.prev_page


def test_list_auto_paginates_forward_without_overlap_or_gap(client, agent, environment) -> None:  # type: ignore[no-untyped-def]
    created = [s.id for s in _sessions(client, agent, environment, 5)]
    listed = [s.id for s in client.beta.sessions.list(agent_id=agent.id, limit=2)]
    assert listed == created[::-1]


@pytest.mark.parametrize("order", ["desc", "asc"])
def test_list_pages_back_with_prev_page_to_the_same_pages(client, agent, environment, order) -> None:  # type: ignore[no-untyped-def]
    created = [s.id for s in _sessions(client, agent, environment, 5)]
    expected = created[::-1] if order == "desc" else created

    def page(cursor=None):  # type: ignore[no-untyped-def]
        extra = {"page": cursor} if cursor else {}
        return client.beta.sessions.list(agent_id=agent.id, limit=2, order=order, **extra)

    forward = [page()]
    while forward[-1].next_page:
        forward.append(page(forward[-1].next_page))
    forward_ids = [[s.id for s in p.data] for p in forward]
    assert forward_ids == [expected[0:2], expected[2:4], expected[4:5]]

    backward = [forward[-1]]
    while backward[-1].prev_page:
        backward.append(page(backward[-1].prev_page))
    assert [[s.id for s in p.data] for p in backward] == forward_ids[::-1]


def test_list_filters_by_agent_version(client, versioned_agent, environment) -> None:  # type: ignore[no-untyped-def]
    pinned = client.beta.sessions.create(
        agent={"type": "agent", "id": versioned_agent.id, "version": 1}, environment_id=environment.id
    )
    latest = client.beta.sessions.create(agent=versioned_agent.id, environment_id=environment.id)
    by_version = {
        version: [s.id for s in client.beta.sessions.list(agent_id=versioned_agent.id, agent_version=version)]
        for version in (1, 2)
    }
    assert by_version == {1: [pinned.id], 2: [latest.id]}


def test_list_cursor_from_one_order_is_rejected_for_the_other(client, agent, environment) -> None:  # type: ignore[no-untyped-def]
    _sessions(client, agent, environment, 3)
    first = client.beta.sessions.list(agent_id=agent.id, limit=1, order="desc")
    assert first.next_page
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.list(agent_id=agent.id, limit=1, order="asc", page=first.next_page)


# --- archive and delete -------------------------------------------------------------------------------


def test_archive_sets_archived_at(client, session) -> None:  # type: ignore[no-untyped-def]
    archived = client.beta.sessions.archive(session.id)
    assert archived.id == session.id and archived.archived_at is not None
    assert client.beta.sessions.retrieve(session.id).archived_at == archived.archived_at


def test_sending_an_event_to_an_archived_session_is_a_409_conflict(client, session) -> None:  # type: ignore[no-untyped-def]
    client.beta.sessions.archive(session.id)
    with pytest.raises(anthropic.ConflictError):
        client.beta.sessions.events.send(session.id, events=[HELLO])
    assert list(client.beta.sessions.events.list(session.id, types=["user.message"])) == []


def test_updating_an_archived_session_is_a_409_conflict(client, session) -> None:  # type: ignore[no-untyped-def]
    client.beta.sessions.archive(session.id)
    with pytest.raises(anthropic.ConflictError):
        client.beta.sessions.update(session.id, title="too late")


def test_delete_returns_a_session_deleted_object(client, session) -> None:  # type: ignore[no-untyped-def]
    response = client.beta.sessions.with_raw_response.delete(session.id)
    assert response.status_code == 200
    assert response.json() == {"id": session.id, "type": "session_deleted"}


def test_retrieve_after_delete_is_404(client, session) -> None:  # type: ignore[no-untyped-def]
    client.beta.sessions.delete(session.id)
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.retrieve(session.id)


def test_a_deleted_session_disappears_from_list(client, session) -> None:  # type: ignore[no-untyped-def]
    client.beta.sessions.delete(session.id)
    assert session.id not in {s.id for s in client.beta.sessions.list(agent_id=session.agent.id, include_archived=True)}
