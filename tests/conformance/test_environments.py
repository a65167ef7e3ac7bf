"""`/v1/environments` (spec §4): resolved cloud config, unique names, patch-style updates, list, delete, archive."""

from __future__ import annotations

import uuid

import anthropic
import pytest

PACKAGE_MANAGERS = ["apt", "cargo", "gem", "go", "npm", "pip"]
LIMITED_WITH_PIP = {
    "type": "cloud",
    "networking": {"type": "limited", "allowed_hosts": ["api.example.com"], "allow_package_managers": True},
    "packages": {"pip": ["pandas==2.2.3"]},
}


def _name() -> str:
    return f"env-{uuid.uuid4().hex[:12]}"


def _create(client: anthropic.Anthropic, **fields):  # type: ignore[no-untyped-def]
    fields.setdefault("name", _name())
    return client.beta.environments.create(**fields)


def _create_raw(client: anthropic.Anthropic, **fields) -> dict:  # type: ignore[no-untyped-def]
    fields.setdefault("name", _name())
    response = client.beta.environments.with_raw_response.create(**fields)
    assert response.status_code == 200
    body = response.json()
    assert isinstance(body, dict)
    return body


def _config(environment) -> dict:  # type: ignore[no-untyped-def]
    return environment.config.model_dump(exclude_unset=False)


# --- create -------------------------------------------------------------------------------------------


def test_create_returns_an_environment_with_every_required_field(client: anthropic.Anthropic) -> None:
    name = _name()
    body = _create_raw(client, name=name, description="sandbox", metadata={"team": "infra"})
    assert {"id", "type", "name", "config", "metadata", "created_at", "updated_at"} <= body.keys()
    assert body["id"].startswith("env_")
    assert body["type"] == "environment"
    assert body["name"] == name
    assert body["description"] == "sandbox"
    assert body["metadata"] == {"team": "infra"}
    assert body["archived_at"] is None


def test_create_without_config_resolves_a_cloud_config_with_default_networking(client: anthropic.Anthropic) -> None:
    config = _create_raw(client)["config"]
    assert config["type"] == "cloud"
    assert config["networking"] == {
        "type": "limited",
        "allowed_hosts": [],
        "allow_mcp_servers": False,
        "allow_package_managers": False,
    }


def test_create_resolves_packages_with_all_six_arrays(client: anthropic.Anthropic) -> None:
    packages = _create_raw(client, config={"type": "cloud"})["config"]["packages"]
    assert packages.get("type", "packages") == "packages"
    assert {manager: packages[manager] for manager in PACKAGE_MANAGERS} == {key: [] for key in PACKAGE_MANAGERS}


def test_create_resolves_limited_networking_fields_and_listed_packages(client: anthropic.Anthropic) -> None:
    config = _create_raw(client, config=LIMITED_WITH_PIP)["config"]
    assert config["networking"] == {
        "type": "limited",
        "allowed_hosts": ["api.example.com"],
        "allow_mcp_servers": False,
        "allow_package_managers": True,
    }
    assert config["packages"]["pip"] == ["pandas==2.2.3"]
    assert all(config["packages"][manager] == [] for manager in PACKAGE_MANAGERS if manager != "pip")


def test_create_keeps_unrestricted_networking(client: anthropic.Anthropic) -> None:
    config = _create_raw(client, config={"type": "cloud", "networking": {"type": "unrestricted"}})["config"]
    assert config["networking"] == {"type": "unrestricted"}


def test_create_accepts_a_self_hosted_config(client: anthropic.Anthropic) -> None:
    environment = _create(client, config={"type": "self_hosted"})
    assert environment.config.type == "self_hosted"
    assert client.beta.environments.retrieve(environment.id).config.type == "self_hosted"


def test_create_with_a_taken_name_is_a_409_conflict(client: anthropic.Anthropic) -> None:
    name = _name()
    _create(client, name=name)
    with pytest.raises(anthropic.ConflictError):
        _create(client, name=name)


def test_create_with_a_taken_name_tells_the_sdk_not_to_retry(client: anthropic.Anthropic) -> None:
    name = _name()
    _create(client, name=name)
    with pytest.raises(anthropic.ConflictError) as caught:
        client.beta.environments.with_raw_response.create(name=name)
    assert caught.value.response.headers.get("x-should-retry") == "false"


def test_create_with_a_taken_name_is_attempted_once_by_a_retrying_client(server, client) -> None:  # type: ignore[no-untyped-def]
    name = _name()
    _create(client, name=name)
    attempts = []
    with anthropic.Anthropic(base_url=server.url, api_key=server.api_key, max_retries=2) as retrying:
        with pytest.raises(anthropic.ConflictError) as caught:
            retrying.beta.environments.create(name=name)
        attempts.append(caught.value.response.request.headers.get("x-stainless-retry-count"))
    assert attempts == ["0"]


# --- retrieve -----------------------------------------------------------------------------------------


def test_retrieve_returns_the_created_environment(client: anthropic.Anthropic) -> None:
    created = _create(client, config=LIMITED_WITH_PIP, metadata={"k": "v"})
    fetched = client.beta.environments.retrieve(created.id)
    assert fetched.model_dump() == created.model_dump()


def test_retrieve_of_an_unknown_environment_is_404(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        client.beta.environments.retrieve("env_doesnotexist")


# --- update -------------------------------------------------------------------------------------------


def test_update_of_networking_preserves_omitted_packages(client: anthropic.Anthropic) -> None:
    environment = _create(client, config=LIMITED_WITH_PIP)
    updated = client.beta.environments.update(
        environment.id, config={"type": "cloud", "networking": {"type": "unrestricted"}}
    )
    assert updated.config.networking.type == "unrestricted"
    assert updated.config.packages.pip == ["pandas==2.2.3"]


def test_update_of_packages_preserves_omitted_networking(client: anthropic.Anthropic) -> None:
    environment = _create(client, config=LIMITED_WITH_PIP)
    updated = client.beta.environments.update(
        environment.id, config={"type": "cloud", "packages": {"npm": ["left-pad"]}}
    )
    assert _config(updated)["networking"] == _config(environment)["networking"]
    assert updated.config.packages.npm == ["left-pad"]


def test_update_without_config_preserves_the_config(client: anthropic.Anthropic) -> None:
    environment = _create(client, config=LIMITED_WITH_PIP)
    updated = client.beta.environments.update(environment.id, description="now described")
    assert updated.description == "now described"
    assert _config(updated) == _config(environment)


def test_update_renames_the_environment(client: anthropic.Anthropic) -> None:
    environment = _create(client)
    new_name = _name()
    assert client.beta.environments.update(environment.id, name=new_name).name == new_name
    assert client.beta.environments.retrieve(environment.id).name == new_name


def test_update_to_a_taken_name_is_a_409_conflict(client: anthropic.Anthropic) -> None:
    taken = _create(client)
    environment = _create(client)
    with pytest.raises(anthropic.ConflictError):
        client.beta.environments.update(environment.id, name=taken.name)
    assert client.beta.environments.retrieve(environment.id).name == environment.name


def test_update_metadata_null_or_empty_string_deletes_and_strings_upsert(client: anthropic.Anthropic) -> None:
    environment = _create(client, metadata={"keep": "1", "null": "2", "empty": "3", "change": "old"})
    updated = client.beta.environments.update(
        environment.id, metadata={"null": None, "empty": "", "change": "new", "add": "4"}
    )
    assert updated.metadata == {"keep": "1", "change": "new", "add": "4"}


def test_update_changing_config_type_is_400_invalid_config_type_change(client: anthropic.Anthropic) -> None:
    environment = _create(client, config={"type": "cloud"})
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.beta.environments.update(environment.id, config={"type": "self_hosted"})
    assert caught.value.error_code == "invalid_config_type_change"
    body = caught.value.body
    assert isinstance(body, dict) and body["error"]["details"]["error_code"] == "invalid_config_type_change"
    assert client.beta.environments.retrieve(environment.id).config.type == "cloud"


def test_update_after_archive_is_400(client: anthropic.Anthropic) -> None:
    environment = _create(client)
    client.beta.environments.archive(environment.id)
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.beta.environments.update(environment.id, description="too late")
    assert caught.value.error_code == "environment_archived"
    assert client.beta.environments.retrieve(environment.id).description is None


# --- list ---------------------------------------------------------------------------------------------


def test_list_auto_paginates_every_environment_once(client: anthropic.Anthropic) -> None:
    created = {_create(client).id for _ in range(3)}
    first_page = client.beta.environments.list(limit=2)
    assert len(first_page.data) == 2 and first_page.next_page
    listed = [environment.id for environment in client.beta.environments.list(limit=2)]
    assert len(listed) == len(set(listed))
    assert created <= set(listed)


def test_list_omits_archived_environments_by_default(client: anthropic.Anthropic) -> None:
    environment = _create(client)
    client.beta.environments.archive(environment.id)
    assert environment.id not in {env.id for env in client.beta.environments.list(limit=100)}


def test_list_with_include_archived_returns_archived_environments(client: anthropic.Anthropic) -> None:
    environment = _create(client)
    client.beta.environments.archive(environment.id)
    listed = {env.id for env in client.beta.environments.list(limit=100, include_archived=True)}
    assert environment.id in listed


# --- delete and archive -------------------------------------------------------------------------------


def test_delete_returns_200_with_an_environment_deleted_object(client: anthropic.Anthropic) -> None:
    environment = _create(client)
    response = client.beta.environments.with_raw_response.delete(environment.id)
    assert response.status_code == 200
    assert response.json() == {"id": environment.id, "type": "environment_deleted"}


def test_retrieve_after_delete_is_404(client: anthropic.Anthropic) -> None:
    environment = _create(client)
    client.beta.environments.delete(environment.id)
    with pytest.raises(anthropic.NotFoundError):
        client.beta.environments.retrieve(environment.id)


def test_a_deleted_environment_disappears_from_list(client: anthropic.Anthropic) -> None:
    environment = _create(client)
    client.beta.environments.delete(environment.id)
    assert environment.id not in {env.id for env in client.beta.environments.list(limit=100, include_archived=True)}


def test_the_name_of_a_deleted_environment_can_be_reused(client: anthropic.Anthropic) -> None:
    environment = _create(client)
    client.beta.environments.delete(environment.id)
    assert _create(client, name=environment.name).name == environment.name


def test_delete_of_an_unknown_environment_is_404(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        client.beta.environments.delete("env_doesnotexist")


def test_archive_sets_archived_at(client: anthropic.Anthropic) -> None:
    environment = _create(client)
    archived = client.beta.environments.archive(environment.id)
    assert archived.id == environment.id and archived.archived_at
    assert client.beta.environments.retrieve(environment.id).archived_at == archived.archived_at


def test_an_archived_environment_cannot_start_new_sessions(client: anthropic.Anthropic, agent) -> None:  # type: ignore[no-untyped-def]
    environment = _create(client)
    client.beta.environments.archive(environment.id)
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.beta.sessions.create(agent=agent.id, environment_id=environment.id)
    assert 400 <= caught.value.status_code < 500 and caught.value.status_code != 404
