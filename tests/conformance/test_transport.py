"""Transport conventions shared by every resource (spec §1): auth, request ids, the error envelope, body and query
parsing, validation, and workspace isolation between API keys."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator

import anthropic
import httpx
import pytest

from tests.support.server import CorralServer

MODEL = "claude-sonnet-4-6"


@pytest.fixture
def http(server: CorralServer) -> Iterator[httpx.Client]:
    """A raw HTTP client authenticated the way SDK 2.x authenticates (Bearer)."""
    headers = {"Authorization": f"Bearer {server.api_key}", "anthropic-version": "2026-10-21"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as raw:
        yield raw


@pytest.fixture(scope="module")
def other_key(server: CorralServer) -> str:
    """A key of a second, brand-new workspace."""
    return server.corral("keys", "create").splitlines()[0].strip()


@pytest.fixture
def other(server: CorralServer, other_key: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.url, api_key=other_key, max_retries=0) as sdk:
        yield sdk


def _assert_envelope(response: httpx.Response, status: int, error_type: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["request_id"] == response.headers["request-id"]
    return body


def _message(response: httpx.Response) -> str:
    return str(response.json()["error"]["message"])


# --- authentication -----------------------------------------------------------------------------------


def test_a_request_without_a_key_is_401(server: CorralServer) -> None:
    with httpx.Client(base_url=server.url) as anonymous:
        _assert_envelope(anonymous.get("/v1/agents"), 401, "authentication_error")


def test_the_sdk_raises_authentication_error_for_a_wrong_key(server: CorralServer) -> None:
    with (
        anthropic.Anthropic(base_url=server.url, api_key="sk-corral-wrong", max_retries=0) as wrong,
        pytest.raises(anthropic.AuthenticationError),
    ):
        wrong.beta.agents.list()


def test_a_wrong_bearer_key_is_401(server: CorralServer) -> None:
    response = httpx.get(f"{server.url}/v1/agents", headers={"Authorization": "Bearer sk-corral-wrong"})
    _assert_envelope(response, 401, "authentication_error")


def test_a_wrong_x_api_key_is_401(server: CorralServer) -> None:
    response = httpx.get(f"{server.url}/v1/agents", headers={"x-api-key": "sk-corral-wrong"})
    _assert_envelope(response, 401, "authentication_error")


def test_x_api_key_header_authenticates(server: CorralServer) -> None:
    response = httpx.get(f"{server.url}/v1/agents", headers={"x-api-key": server.api_key})
    assert response.status_code == 200
    assert "data" in response.json()


def test_bearer_authorization_header_authenticates(server: CorralServer) -> None:
    response = httpx.get(f"{server.url}/v1/agents", headers={"Authorization": f"Bearer {server.api_key}"})
    assert response.status_code == 200


def test_health_needs_no_key(server: CorralServer) -> None:
    response = httpx.get(f"{server.url}/health")
    assert response.status_code == 200


# --- request ids and the error envelope ---------------------------------------------------------------


def test_every_success_carries_a_request_id_header(http: httpx.Client) -> None:
    for response in (http.get("/v1/agents"), http.get("/v1/environments"), http.get("/v1/sessions")):
        assert response.status_code == 200
        assert response.headers.get("request-id")


def test_request_ids_are_unique_per_request(http: httpx.Client) -> None:
    ids = {http.get("/v1/agents").headers["request-id"] for _ in range(3)}
    assert len(ids) == 3


def test_health_carries_a_request_id_header(server: CorralServer) -> None:
    assert httpx.get(f"{server.url}/health").headers.get("request-id")


def test_an_authentication_error_carries_the_request_id_in_header_and_body(server: CorralServer) -> None:
    response = httpx.get(f"{server.url}/v1/agents")
    body = _assert_envelope(response, 401, "authentication_error")
    assert body["request_id"]


def test_the_sdk_exposes_the_request_id_of_an_error(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.beta.agents.retrieve("agent_doesnotexist")
    assert caught.value.request_id
    assert isinstance(caught.value.body, dict) and caught.value.body["request_id"] == caught.value.request_id


def test_an_unknown_route_is_a_404_envelope(http: httpx.Client) -> None:
    _assert_envelope(http.get("/v1/no-such-resource"), 404, "not_found_error")


def test_a_wrong_method_is_an_error_envelope(http: httpx.Client) -> None:
    response = http.delete("/v1/agents")
    assert response.status_code in (404, 405)
    assert response.json()["type"] == "error"


@pytest.mark.parametrize(
    "path", ["/v1/agents/agent_doesnotexist", "/v1/environments/env_doesnotexist", "/v1/sessions/sesn_doesnotexist"]
)
def test_an_unknown_id_is_a_404_envelope(http: httpx.Client, path: str) -> None:
    _assert_envelope(http.get(path), 404, "not_found_error")


def test_events_of_an_unknown_session_are_404(http: httpx.Client) -> None:
    _assert_envelope(http.get("/v1/sessions/sesn_doesnotexist/events"), 404, "not_found_error")


# --- request bodies -----------------------------------------------------------------------------------


def test_a_bodiless_post_with_json_content_type_and_zero_length_works(http: httpx.Client, agent) -> None:  # type: ignore[no-untyped-def]
    response = http.post(
        f"/v1/agents/{agent.id}/archive", headers={"Content-Type": "application/json", "Content-Length": "0"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["archived_at"]


def test_malformed_json_is_400_mentioning_json(http: httpx.Client) -> None:
    response = http.post("/v1/agents", content=b'{"name": "x",', headers={"Content-Type": "application/json"})
    _assert_envelope(response, 400, "invalid_request_error")
    assert "json" in _message(response).lower()


def test_a_json_body_that_is_not_an_object_is_400(http: httpx.Client) -> None:
    response = http.post("/v1/agents", json=["name", "model"])
    _assert_envelope(response, 400, "invalid_request_error")


def test_a_field_of_the_wrong_type_is_400_naming_the_field(http: httpx.Client) -> None:
    response = http.post("/v1/agents", json={"name": 123, "model": MODEL})
    _assert_envelope(response, 400, "invalid_request_error")
    assert "name" in _message(response)


def test_an_unknown_field_is_400_naming_the_field(http: httpx.Client) -> None:
    response = http.post("/v1/agents", json={"name": "x", "model": MODEL, "colour": "blue"})
    _assert_envelope(response, 400, "invalid_request_error")
    assert "colour" in _message(response)


def test_a_missing_required_field_is_400_naming_the_field(http: httpx.Client) -> None:
    response = http.post("/v1/environments", json={"config": {"type": "cloud"}})
    _assert_envelope(response, 400, "invalid_request_error")
    assert "name" in _message(response)


@pytest.mark.parametrize(
    "metadata",
    [
        {f"k{index}": "v" for index in range(17)},
        {"k" * 65: "v"},
        {"key": "v" * 513},
    ],
    ids=["17-keys", "65-char-key", "513-char-value"],
)
@pytest.mark.parametrize("resource", ["agents", "environments", "sessions"])
def test_oversize_metadata_is_400_invalid_metadata(client, agent, environment, resource, metadata) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(anthropic.BadRequestError) as caught:
        if resource == "agents":
            client.beta.agents.create(name="x", model=MODEL, metadata=metadata)
        elif resource == "environments":
            client.beta.environments.create(name=f"env-{uuid.uuid4().hex[:12]}", metadata=metadata)
        else:
            client.beta.sessions.create(agent=agent.id, environment_id=environment.id, metadata=metadata)
    assert caught.value.error_code == "invalid_metadata"


def test_metadata_at_the_limits_is_accepted(client: anthropic.Anthropic) -> None:
    metadata = {f"{index:02d}" + "k" * 62: "v" * 512 for index in range(16)}
    assert client.beta.agents.create(name="x", model=MODEL, metadata=metadata).metadata == metadata


def test_a_metadata_patch_that_would_exceed_16_keys_is_400_invalid_metadata(client: anthropic.Anthropic) -> None:
    agent = client.beta.agents.create(name="x", model=MODEL, metadata={f"k{index}": "v" for index in range(16)})
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.beta.agents.update(agent.id, metadata={"one-more": "v"})
    assert caught.value.error_code == "invalid_metadata"


# --- query strings ------------------------------------------------------------------------------------


@pytest.fixture
def updated_session(client, session):  # type: ignore[no-untyped-def]
    """A session whose log holds exactly two `session.updated` events."""
    client.beta.sessions.update(session.id, title="first")
    client.beta.sessions.update(session.id, title="second")
    return session


@pytest.mark.parametrize(
    "query",
    [
        "types[]=user.message&types[]=session.updated",
        "types=user.message&types=session.updated",
        "types=user.message,session.updated",
    ],
    ids=["brackets", "repeated", "comma"],
)
def test_events_list_accepts_every_array_form(http: httpx.Client, updated_session, query: str) -> None:  # type: ignore[no-untyped-def]
    response = http.get(f"/v1/sessions/{updated_session.id}/events?{query}")
    assert response.status_code == 200, response.text
    assert [event["type"] for event in response.json()["data"]] == ["session.updated", "session.updated"]


def test_events_list_types_filter_excludes_other_types(http: httpx.Client, updated_session) -> None:  # type: ignore[no-untyped-def]
    response = http.get(f"/v1/sessions/{updated_session.id}/events?types[]=user.message")
    assert response.status_code == 200
    assert response.json()["data"] == []


def test_events_list_with_an_unknown_type_is_400(http: httpx.Client, session) -> None:  # type: ignore[no-untyped-def]
    response = http.get(f"/v1/sessions/{session.id}/events?types[]=not.a.type")
    _assert_envelope(response, 400, "invalid_request_error")


def test_the_sdk_sends_types_in_a_form_the_server_accepts(client, updated_session) -> None:  # type: ignore[no-untyped-def]
    listed = client.beta.sessions.events.list(updated_session.id, types=["user.message", "session.updated"])
    assert [event.type for event in listed] == ["session.updated", "session.updated"]


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "101"])
def test_a_bad_limit_is_400(http: httpx.Client, limit: str) -> None:
    response = http.get(f"/v1/agents?limit={limit}")
    _assert_envelope(response, 400, "invalid_request_error")
    assert "limit" in _message(response)


@pytest.mark.parametrize("cursor", ["not-a-cursor", "%%%", "MQ", base64.urlsafe_b64encode(b'{"s":"x"}').decode()])
def test_a_bad_page_cursor_is_400(http: httpx.Client, cursor: str) -> None:
    response = http.get("/v1/agents", params={"page": cursor})
    _assert_envelope(response, 400, "invalid_request_error")


def test_a_cursor_from_another_listing_is_400(client: anthropic.Anthropic, http: httpx.Client) -> None:
    for index in range(2):
        client.beta.environments.create(name=f"env-{uuid.uuid4().hex[:12]}-{index}")
    cursor = client.beta.environments.list(limit=1).next_page
    assert cursor
    _assert_envelope(http.get("/v1/agents", params={"page": cursor}), 400, "invalid_request_error")


def test_a_tampered_page_cursor_is_400_not_500(client: anthropic.Anthropic, http: httpx.Client) -> None:
    for _ in range(2):
        client.beta.agents.create(name="x", model=MODEL)
    cursor = client.beta.agents.list(limit=1).next_page
    assert cursor
    decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    decoded["k"] = "tampered"
    tampered = base64.urlsafe_b64encode(json.dumps(decoded).encode()).decode().rstrip("=")
    _assert_envelope(http.get("/v1/agents", params={"page": tampered}), 400, "invalid_request_error")


def test_a_bad_boolean_query_parameter_is_400(http: httpx.Client) -> None:
    _assert_envelope(http.get("/v1/agents?include_archived=maybe"), 400, "invalid_request_error")


def test_a_bad_timestamp_query_parameter_is_400(http: httpx.Client) -> None:
    _assert_envelope(http.get("/v1/agents?created_at[gte]=yesterday"), 400, "invalid_request_error")


@pytest.mark.parametrize("version", ["2026-10-21", "2023-06-01", "banana"])
def test_any_anthropic_version_header_is_accepted(server: CorralServer, version: str) -> None:
    headers = {"Authorization": f"Bearer {server.api_key}", "anthropic-version": version}
    assert httpx.get(f"{server.url}/v1/agents", headers=headers).status_code == 200


def test_a_missing_anthropic_version_header_is_accepted(server: CorralServer) -> None:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    assert httpx.get(f"{server.url}/v1/agents", headers=headers).status_code == 200


def test_accept_application_json_on_a_list_is_answered_with_json(http: httpx.Client) -> None:
    response = http.get("/v1/sessions", headers={"Accept": "application/json"})
    assert response.headers["content-type"].startswith("application/json")


# --- workspace isolation ------------------------------------------------------------------------------


def test_another_workspace_cannot_retrieve_an_agent(other: anthropic.Anthropic, agent) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(anthropic.NotFoundError):
        other.beta.agents.retrieve(agent.id)


def test_another_workspace_cannot_retrieve_an_environment(other: anthropic.Anthropic, environment) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(anthropic.NotFoundError):
        other.beta.environments.retrieve(environment.id)


def test_another_workspace_cannot_retrieve_a_session(other: anthropic.Anthropic, session) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(anthropic.NotFoundError):
        other.beta.sessions.retrieve(session.id)


def test_another_workspace_lists_none_of_the_objects(other: anthropic.Anthropic, session) -> None:  # type: ignore[no-untyped-def]
    assert session.agent.id not in {a.id for a in other.beta.agents.list(include_archived=True)}
    assert session.environment_id not in {e.id for e in other.beta.environments.list(include_archived=True)}
    assert session.id not in {s.id for s in other.beta.sessions.list(include_archived=True)}


def test_another_workspace_cannot_send_events_to_a_session(client, other: anthropic.Anthropic, session) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(anthropic.NotFoundError):
        other.beta.sessions.events.send(
            session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": "hi"}]}]
        )
    assert list(client.beta.sessions.events.list(session.id, types=["user.message"])) == []


def test_another_workspace_cannot_list_a_sessions_events(other: anthropic.Anthropic, session) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(anthropic.NotFoundError):
        other.beta.sessions.events.list(session.id)


def test_another_workspace_cannot_modify_an_agent(client, other: anthropic.Anthropic, agent) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(anthropic.NotFoundError):
        other.beta.agents.update(agent.id, system="hijacked")
    with pytest.raises(anthropic.NotFoundError):
        other.beta.agents.archive(agent.id)
    stored = client.beta.agents.retrieve(agent.id)
    assert stored.version == agent.version and stored.archived_at is None


def test_another_workspace_cannot_delete_an_environment_or_session(client, other, session) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(anthropic.NotFoundError):
        other.beta.sessions.delete(session.id)
    with pytest.raises(anthropic.NotFoundError):
        other.beta.environments.delete(session.environment_id)
    assert client.beta.sessions.retrieve(session.id).id == session.id
    assert client.beta.environments.retrieve(session.environment_id).id == session.environment_id


def test_another_workspace_cannot_start_a_session_with_foreign_agent_or_environment(other, session) -> None:  # type: ignore[no-untyped-def]
    own_agent = other.beta.agents.create(name="mine", model=MODEL)
    own_env = other.beta.environments.create(name=f"env-{uuid.uuid4().hex[:12]}")
    with pytest.raises(anthropic.NotFoundError):
        other.beta.sessions.create(agent=session.agent.id, environment_id=own_env.id)
    with pytest.raises(anthropic.NotFoundError):
        other.beta.sessions.create(agent=own_agent.id, environment_id=session.environment_id)


def test_environment_names_are_unique_per_workspace_only(client, other: anthropic.Anthropic) -> None:  # type: ignore[no-untyped-def]
    name = f"env-{uuid.uuid4().hex[:12]}"
    client.beta.environments.create(name=name)
    assert other.beta.environments.create(name=name).name == name


# --- failed requests leave no trace -------------------------------------------------------------------


def test_a_rejected_agent_update_leaves_the_agent_unchanged(client: anthropic.Anthropic, agent) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(anthropic.BadRequestError):
        client.beta.agents.update(
            agent.id, system="never stored", tools=[{"type": "mcp_toolset", "mcp_server_name": "missing"}]
        )
    stored = client.beta.agents.retrieve(agent.id)
    assert stored.version == agent.version and stored.system == agent.system
    assert [v.version for v in client.beta.agents.versions.list(agent.id)] == [agent.version]


def test_a_rejected_metadata_patch_leaves_the_agent_unchanged(client: anthropic.Anthropic) -> None:
    agent = client.beta.agents.create(name="x", model=MODEL, metadata={"a": "1"})
    with pytest.raises(anthropic.BadRequestError):
        client.beta.agents.update(agent.id, description="never stored", metadata={"b": "v" * 513})
    stored = client.beta.agents.retrieve(agent.id)
    assert (stored.version, stored.description, stored.metadata) == (1, None, {"a": "1"})


def test_a_rejected_environment_update_leaves_the_environment_unchanged(client, environment) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(anthropic.BadRequestError):
        client.beta.environments.update(environment.id, description="never stored", config={"type": "self_hosted"})
    stored = client.beta.environments.retrieve(environment.id)
    assert stored.description == environment.description and stored.updated_at == environment.updated_at


def test_a_rejected_session_create_stores_no_session(client, agent, environment) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.create(agent=agent.id, environment_id=environment.id, metadata={"k" * 65: "v"})
    assert list(client.beta.sessions.list(agent_id=agent.id, include_archived=True)) == []
