"""Vaults and credentials (spec §10) and sessions' `vault_ids` (§6.2), through the official SDK.

Secrets are write-only: every test that stores one checks the raw JSON of the responses, not just the SDK's
parsed objects, so a secret in an unexpected field would still be caught.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types.beta.vaults.beta_managed_agents_credential_validation import (
    BetaManagedAgentsCredentialValidation,
)

from tests.support.mcp_server import McpTestServer
from tests.support.sdk_shapes import unknown_fields
from tests.support.server import CorralServer, free_port


def new_secret() -> str:
    return f"secret-{secrets.token_hex(16)}"


def raw(server: CorralServer, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    return httpx.request(method, f"{server.url}{path}", headers=headers, timeout=10, **kwargs)


@pytest.fixture
def vault(client: anthropic.Anthropic) -> Any:
    return client.beta.vaults.create(display_name="Alice", metadata={"external_user_id": "usr_abc123"})


@pytest.fixture(scope="module")
def other_key(server: CorralServer) -> str:
    """A key of a second, brand-new workspace."""
    return server.corral("keys", "create").splitlines()[0].strip()


@pytest.fixture
def other(server: CorralServer, other_key: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.url, api_key=other_key, max_retries=0) as sdk:
        yield sdk


def bearer(token: str, url: str = "https://mcp.example.com/mcp") -> dict[str, Any]:
    return {"type": "static_bearer", "token": token, "mcp_server_url": url}


def env_var(value: str, name: str = "EXAMPLE_API_KEY") -> dict[str, Any]:
    return {
        "type": "environment_variable",
        "secret_name": name,
        "secret_value": value,
        "networking": {"type": "limited", "allowed_hosts": ["api.example.com", "*.example.org"]},
    }


# --- vaults -------------------------------------------------------------------------------------------


def test_a_created_vault_has_the_wire_shape(vault: Any) -> None:
    assert vault.id.startswith("vlt_")
    assert vault.type == "vault"
    assert vault.display_name == "Alice"
    assert vault.metadata == {"external_user_id": "usr_abc123"}
    assert vault.archived_at is None
    assert vault.created_at == vault.updated_at


def test_a_vault_retrieves_as_created(client: anthropic.Anthropic, vault: Any) -> None:
    assert client.beta.vaults.retrieve(vault.id) == vault


def test_updating_a_vault_renames_it_and_patches_its_metadata(client: anthropic.Anthropic, vault: Any) -> None:
    updated = client.beta.vaults.update(
        vault.id, display_name="Alice B.", metadata={"external_user_id": None, "tier": "gold"}
    )

    assert updated.display_name == "Alice B."
    assert updated.metadata == {"tier": "gold"}
    assert updated.updated_at > vault.updated_at


def test_vaults_list_newest_first_without_archived_ones(client: anthropic.Anthropic) -> None:
    first = client.beta.vaults.create(display_name="first")
    second = client.beta.vaults.create(display_name="second")
    archived = client.beta.vaults.create(display_name="archived")
    client.beta.vaults.archive(archived.id)

    listed = [v.id for v in client.beta.vaults.list(limit=100)]
    everything = [v.id for v in client.beta.vaults.list(limit=100, include_archived=True)]

    assert listed.index(second.id) < listed.index(first.id)
    assert archived.id not in listed
    assert archived.id in everything


def test_vaults_page_with_next_page_cursors(client: anthropic.Anthropic) -> None:
    made = {client.beta.vaults.create(display_name=f"paged-{index}").id for index in range(3)}

    page = client.beta.vaults.list(limit=2)
    assert len(page.data) == 2 and page.next_page
    seen = {v.id for v in client.beta.vaults.list(limit=2)}  # auto-pagination follows next_page

    assert made <= seen


def test_archiving_a_vault_archives_its_credentials(client: anthropic.Anthropic, vault: Any) -> None:
    credential = client.beta.vaults.credentials.create(vault.id, auth=bearer(new_secret()))

    archived = client.beta.vaults.archive(vault.id)

    assert archived.archived_at is not None
    assert client.beta.vaults.credentials.retrieve(credential.id, vault_id=vault.id).archived_at is not None


def test_an_archived_vault_is_read_only(client: anthropic.Anthropic, vault: Any) -> None:
    client.beta.vaults.archive(vault.id)

    with pytest.raises(anthropic.ConflictError):
        client.beta.vaults.update(vault.id, display_name="renamed")
    with pytest.raises(anthropic.ConflictError):
        client.beta.vaults.credentials.create(vault.id, auth=bearer(new_secret()))


def test_deleting_a_vault_deletes_it_and_its_credentials(client: anthropic.Anthropic, vault: Any) -> None:
    credential = client.beta.vaults.credentials.create(vault.id, auth=bearer(new_secret()))

    deleted = client.beta.vaults.delete(vault.id)

    assert (deleted.id, deleted.type) == (vault.id, "vault_deleted")
    with pytest.raises(anthropic.NotFoundError):
        client.beta.vaults.retrieve(vault.id)
    with pytest.raises(anthropic.NotFoundError):
        client.beta.vaults.credentials.retrieve(credential.id, vault_id=vault.id)


@pytest.mark.parametrize(
    "body", [{}, {"display_name": ""}, {"display_name": "x" * 256}, {"display_name": "ok", "x": 1}]
)
def test_a_vault_needs_a_display_name_of_1_to_255_characters(server: CorralServer, body: dict[str, Any]) -> None:
    response = raw(server, "POST", "/v1/vaults", json=body)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_another_workspace_cannot_see_a_vault(other: anthropic.Anthropic, vault: Any) -> None:
    with pytest.raises(anthropic.NotFoundError):
        other.beta.vaults.retrieve(vault.id)
    assert vault.id not in [v.id for v in other.beta.vaults.list(limit=100)]


# --- credentials ----------------------------------------------------------------------------------------


def test_a_static_bearer_credential_shows_its_server_url_and_never_its_token(
    server: CorralServer, client: anthropic.Anthropic, vault: Any
) -> None:
    token = new_secret()
    created = raw(server, "POST", f"/v1/vaults/{vault.id}/credentials", json={"auth": bearer(token)})
    credential_id = created.json()["id"]
    responses = [
        created,
        raw(server, "GET", f"/v1/vaults/{vault.id}/credentials/{credential_id}"),
        raw(server, "GET", f"/v1/vaults/{vault.id}/credentials"),
        raw(server, "POST", f"/v1/vaults/{vault.id}/credentials/{credential_id}", json={"display_name": "renamed"}),
    ]

    assert all(response.status_code == 200 for response in responses)
    assert all(token not in response.text for response in responses)
    credential = client.beta.vaults.credentials.retrieve(credential_id, vault_id=vault.id)
    assert credential.id.startswith("vcrd_") and credential.type == "vault_credential"
    assert credential.vault_id == vault.id
    assert credential.auth.type == "static_bearer"
    assert credential.auth.mcp_server_url == "https://mcp.example.com/mcp"
    assert created.json()["auth"] == {"type": "static_bearer", "mcp_server_url": "https://mcp.example.com/mcp"}


def test_an_environment_variable_credential_shows_its_name_networking_and_injection_not_its_value(
    server: CorralServer, vault: Any
) -> None:
    value = new_secret()
    response = raw(server, "POST", f"/v1/vaults/{vault.id}/credentials", json={"auth": env_var(value)})

    assert response.status_code == 200, response.text
    assert value not in response.text
    assert response.json()["auth"] == {
        "type": "environment_variable",
        "secret_name": "EXAMPLE_API_KEY",
        "networking": {"type": "limited", "allowed_hosts": ["api.example.com", "*.example.org"]},
        "injection_location": {"header": True, "body": False},
    }


def test_an_mcp_oauth_credential_shows_its_refresh_settings_not_its_tokens_or_client_secret(
    server: CorralServer, vault: Any
) -> None:
    access, refresh, client_secret = new_secret(), new_secret(), new_secret()
    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    auth = {
        "type": "mcp_oauth",
        "access_token": access,
        "mcp_server_url": "https://mcp.notion.com/mcp",
        "expires_at": expires,
        "refresh": {
            "client_id": "cid",
            "refresh_token": refresh,
            "token_endpoint": "https://api.notion.com/v1/oauth/token",
            "token_endpoint_auth": {"type": "client_secret_basic", "client_secret": client_secret},
            "scope": "read",
        },
    }
    response = raw(server, "POST", f"/v1/vaults/{vault.id}/credentials", json={"auth": auth})

    assert response.status_code == 200, response.text
    assert all(secret not in response.text for secret in (access, refresh, client_secret))
    shown = response.json()["auth"]
    assert shown["refresh"] == {
        "client_id": "cid",
        "token_endpoint": "https://api.notion.com/v1/oauth/token",
        "token_endpoint_auth": {"type": "client_secret_basic"},
        "resource": None,
        "scope": "read",
    }
    assert shown["mcp_server_url"] == "https://mcp.notion.com/mcp" and shown["expires_at"].endswith("Z")


def test_updating_a_credential_token_changes_it_without_returning_it(
    server: CorralServer, client: anthropic.Anthropic, vault: Any
) -> None:
    credential = client.beta.vaults.credentials.create(vault.id, auth=bearer(new_secret()))
    token = new_secret()

    response = raw(
        server,
        "POST",
        f"/v1/vaults/{vault.id}/credentials/{credential.id}",
        json={"auth": {"type": "static_bearer", "token": token}},
    )

    assert response.status_code == 200, response.text
    assert token not in response.text
    assert response.json()["updated_at"] > credential.created_at.isoformat().replace("+00:00", "Z")


def test_a_credential_keeps_its_auth_type(client: anthropic.Anthropic, vault: Any) -> None:
    credential = client.beta.vaults.credentials.create(vault.id, auth=bearer(new_secret()))

    with pytest.raises(anthropic.BadRequestError, match=r"auth\.type"):
        client.beta.vaults.credentials.update(
            credential.id, vault_id=vault.id, auth={"type": "environment_variable", "secret_value": "x"}
        )


def test_a_credential_keeps_its_mcp_server_url(client: anthropic.Anthropic, vault: Any) -> None:
    credential = client.beta.vaults.credentials.create(vault.id, auth=bearer(new_secret()))

    with pytest.raises(anthropic.BadRequestError, match="mcp_server_url"):
        client.beta.vaults.credentials.update(
            credential.id,
            vault_id=vault.id,
            auth={"type": "static_bearer", "mcp_server_url": "https://elsewhere.example.com/mcp"},  # type: ignore[typeddict-unknown-key]
        )


def test_a_vault_holds_one_live_credential_per_mcp_server_url(client: anthropic.Anthropic, vault: Any) -> None:
    first = client.beta.vaults.credentials.create(vault.id, auth=bearer(new_secret()))

    with pytest.raises(anthropic.ConflictError):
        client.beta.vaults.credentials.create(vault.id, auth=bearer(new_secret(), "https://MCP.example.com:443/mcp/"))
    client.beta.vaults.credentials.archive(first.id, vault_id=vault.id)
    replacement = client.beta.vaults.credentials.create(vault.id, auth=bearer(new_secret()))

    assert replacement.id != first.id


def test_an_archived_credential_is_read_only_and_listed_only_on_request(
    client: anthropic.Anthropic, vault: Any
) -> None:
    credential = client.beta.vaults.credentials.create(vault.id, auth=bearer(new_secret()))

    archived = client.beta.vaults.credentials.archive(credential.id, vault_id=vault.id)

    assert archived.archived_at is not None
    with pytest.raises(anthropic.ConflictError):
        client.beta.vaults.credentials.update(credential.id, vault_id=vault.id, display_name="again")
    assert credential.id not in [c.id for c in client.beta.vaults.credentials.list(vault.id)]
    assert credential.id in [c.id for c in client.beta.vaults.credentials.list(vault.id, include_archived=True)]


def test_deleting_a_credential_removes_it(client: anthropic.Anthropic, vault: Any) -> None:
    credential = client.beta.vaults.credentials.create(vault.id, auth=bearer(new_secret()))

    deleted = client.beta.vaults.credentials.delete(credential.id, vault_id=vault.id)

    assert (deleted.id, deleted.type) == (credential.id, "vault_credential_deleted")
    with pytest.raises(anthropic.NotFoundError):
        client.beta.vaults.credentials.retrieve(credential.id, vault_id=vault.id)


BAD_AUTH = {
    "a server URL that is not http(s)": bearer("t", "ftp://mcp.example.com/mcp"),
    "a server URL with a password in it": bearer("t", "https://user:pw@mcp.example.com/mcp"),
    "an empty token": bearer(""),
    "no token": {"type": "static_bearer", "mcp_server_url": "https://mcp.example.com/mcp"},
    "an unknown auth type": {"type": "password", "password": "x"},
    "a host given as a URL": {**env_var("v"), "networking": {"type": "limited", "allowed_hosts": ["https://a.com"]}},
    "a host with a port": {**env_var("v"), "networking": {"type": "limited", "allowed_hosts": ["a.com:443"]}},
    "an IPv6 host": {**env_var("v"), "networking": {"type": "limited", "allowed_hosts": ["::1"]}},
    "no allowed hosts": {**env_var("v"), "networking": {"type": "limited", "allowed_hosts": []}},
    "a variable name with a dash": env_var("v", name="MY-KEY"),
    "a reserved variable name": env_var("v", name="PATH"),
    "no injection location": {**env_var("v"), "injection_location": {"header": False, "body": False}},
    "an expiry in the past": {
        "type": "mcp_oauth",
        "access_token": "t",
        "mcp_server_url": "https://mcp.example.com/mcp",
        "expires_at": "2020-01-01T00:00:00Z",
    },
}


@pytest.mark.parametrize("auth", BAD_AUTH.values(), ids=BAD_AUTH.keys())
def test_a_credential_with_bad_auth_is_400(server: CorralServer, vault: Any, auth: dict[str, Any]) -> None:
    response = raw(server, "POST", f"/v1/vaults/{vault.id}/credentials", json={"auth": auth})

    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["message"]


def test_a_bad_secret_is_not_echoed_in_the_error(server: CorralServer, vault: Any) -> None:
    token = new_secret()
    auth = {"type": "static_bearer", "token": token, "mcp_server_url": "not a url"}

    response = raw(server, "POST", f"/v1/vaults/{vault.id}/credentials", json={"auth": auth})

    assert response.status_code == 400
    assert token not in response.text


def test_credentials_of_an_unknown_vault_are_404(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        client.beta.vaults.credentials.create("vlt_011CNoSuchVault000000000", auth=bearer(new_secret()))
    with pytest.raises(anthropic.NotFoundError):
        client.beta.vaults.credentials.list("vlt_011CNoSuchVault000000000")


def test_another_workspace_cannot_see_a_credential(client: anthropic.Anthropic, other: Any, vault: Any) -> None:
    credential = client.beta.vaults.credentials.create(vault.id, auth=bearer(new_secret()))

    with pytest.raises(anthropic.NotFoundError):
        other.beta.vaults.credentials.retrieve(credential.id, vault_id=vault.id)


# --- encryption at rest ----------------------------------------------------------------------------------


def test_secrets_are_stored_encrypted(server: CorralServer, client: anthropic.Anthropic, vault: Any) -> None:
    token = new_secret()
    client.beta.vaults.credentials.create(vault.id, auth=bearer(token, f"https://{uuid.uuid4().hex}.example.com/mcp"))

    needle = token.encode()
    for path in server.data_dir.rglob("*"):
        if path.is_file() and "workspaces" not in path.parts:
            assert needle not in path.read_bytes(), f"the token is readable in {path}"


def test_the_server_generates_a_private_secret_key_when_none_is_configured(server: CorralServer) -> None:
    key_file = server.data_dir / "secret.key"

    assert key_file.stat().st_mode & 0o777 == 0o600
    assert "generated a new secret key" in server.log()


# --- sessions --------------------------------------------------------------------------------------------


def test_a_session_carries_the_vault_ids_it_was_created_with(
    client: anthropic.Anthropic, agent: Any, environment: Any, vault: Any
) -> None:
    second = client.beta.vaults.create(display_name="Bob")

    session = client.beta.sessions.create(
        agent=agent.id, environment_id=environment.id, vault_ids=[vault.id, second.id]
    )

    assert session.vault_ids == [vault.id, second.id]
    assert client.beta.sessions.retrieve(session.id).vault_ids == [vault.id, second.id]


def test_a_session_with_a_vault_of_another_workspace_is_404(
    other: anthropic.Anthropic, client: anthropic.Anthropic, agent: Any, environment: Any
) -> None:
    foreign = other.beta.vaults.create(display_name="not yours")

    with pytest.raises(anthropic.NotFoundError, match=foreign.id):
        client.beta.sessions.create(agent=agent.id, environment_id=environment.id, vault_ids=[foreign.id])


def test_a_session_with_an_archived_vault_is_400(
    client: anthropic.Anthropic, agent: Any, environment: Any, vault: Any
) -> None:
    client.beta.vaults.archive(vault.id)

    with pytest.raises(anthropic.BadRequestError, match="archived"):
        client.beta.sessions.create(agent=agent.id, environment_id=environment.id, vault_ids=[vault.id])


def test_a_session_cannot_change_its_vaults(client: anthropic.Anthropic, session: Any, vault: Any) -> None:
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.update(session.id, vault_ids=[vault.id])  # type: ignore[call-arg]


def test_a_session_object_shows_its_vault_ids_and_no_secret(
    server: CorralServer, client: anthropic.Anthropic, agent: Any, environment: Any, vault: Any
) -> None:
    token = new_secret()
    client.beta.vaults.credentials.create(vault.id, auth=bearer(token))

    session = client.beta.sessions.create(agent=agent.id, environment_id=environment.id, vault_ids=[vault.id])

    shown = json.dumps(raw(server, "GET", f"/v1/sessions/{session.id}").json())
    assert vault.id in shown and token not in shown


# --- mcp_oauth_validate ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[McpTestServer]:
    with McpTestServer() as running:
        yield running


def oauth(
    client: anthropic.Anthropic,
    vault: Any,
    url: str,
    token: str,
    *,
    refresh_token: str | None = None,
    endpoint: str = "",
) -> Any:
    auth: dict[str, Any] = {"type": "mcp_oauth", "access_token": token, "mcp_server_url": url}
    if refresh_token is not None:
        auth["refresh"] = {
            "client_id": "corral-tests",
            "refresh_token": refresh_token,
            "token_endpoint": endpoint,
            "token_endpoint_auth": {"type": "none"},
        }
    return client.beta.vaults.credentials.create(vault.id, auth=auth)  # type: ignore[arg-type]


def test_validating_an_oauth_credential_the_server_accepts_reports_it_valid(
    client: anthropic.Anthropic, vault: Any, mcp_server: McpTestServer
) -> None:
    credential = oauth(client, vault, mcp_server.guarded_url, mcp_server.token)

    validation = client.beta.vaults.credentials.mcp_oauth_validate(credential.id, vault_id=vault.id)

    assert validation.type == "vault_credential_validation"
    assert (validation.credential_id, validation.vault_id) == (credential.id, vault.id)
    assert validation.status == "valid"
    assert validation.has_refresh_token is False
    assert validation.mcp_probe is None and validation.refresh is None
    assert f"Bearer {mcp_server.token}" in mcp_server.authorizations


def test_validating_a_rejected_token_without_a_refresh_token_reports_it_invalid(
    client: anthropic.Anthropic, vault: Any, mcp_server: McpTestServer
) -> None:
    credential = oauth(client, vault, mcp_server.guarded_url, new_secret())

    validation = client.beta.vaults.credentials.mcp_oauth_validate(credential.id, vault_id=vault.id)

    assert validation.status == "invalid"
    assert validation.mcp_probe is not None and validation.mcp_probe.method == "initialize"
    assert validation.mcp_probe.http_response is not None
    assert validation.mcp_probe.http_response.status_code == 401
    assert "invalid_token" in validation.mcp_probe.http_response.body
    assert validation.refresh is not None and validation.refresh.status == "no_refresh_token"


def test_validating_an_expired_token_refreshes_it_and_stores_the_new_one(
    server: CorralServer, client: anthropic.Anthropic, vault: Any, mcp_server: McpTestServer
) -> None:
    expired = new_secret()
    mcp_server.tokens.add(expired)
    credential = oauth(
        client,
        vault,
        mcp_server.guarded_url,
        expired,
        refresh_token=mcp_server.refresh_token,
        endpoint=mcp_server.token_endpoint,
    )
    mcp_server.tokens.discard(expired)  # the server no longer takes it, as when a token expires
    path = f"/v1/vaults/{vault.id}/credentials/{credential.id}/mcp_oauth_validate"

    response = raw(server, "POST", path)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "valid"
    assert response.json()["refresh"] == {"status": "succeeded", "http_response": None}
    assert response.json()["has_refresh_token"] is True
    assert all(token not in response.text for token in (expired, mcp_server.refreshed_token, mcp_server.refresh_token))
    assert client.beta.vaults.credentials.retrieve(credential.id, vault_id=vault.id).auth.expires_at is not None
    again = client.beta.vaults.credentials.mcp_oauth_validate(credential.id, vault_id=vault.id)
    assert (again.status, again.refresh) == ("valid", None)  # the refreshed token was stored


@pytest.mark.parametrize("accepted", [True, False])
def test_a_validation_has_the_sdks_exact_shape(
    server: CorralServer, client: anthropic.Anthropic, vault: Any, mcp_server: McpTestServer, accepted: bool
) -> None:
    token = mcp_server.token if accepted else new_secret()
    credential = oauth(client, vault, mcp_server.guarded_url, token)

    response = raw(server, "POST", f"/v1/vaults/{vault.id}/credentials/{credential.id}/mcp_oauth_validate")

    assert response.status_code == 200, response.text
    validation = BetaManagedAgentsCredentialValidation.model_validate(response.json())
    assert unknown_fields(validation, "validation") == []
    assert validation.status == ("valid" if accepted else "invalid")


def test_a_refresh_the_token_endpoint_refuses_is_reported_with_its_answer(
    client: anthropic.Anthropic, vault: Any, mcp_server: McpTestServer
) -> None:
    credential = oauth(
        client,
        vault,
        mcp_server.guarded_url,
        new_secret(),
        refresh_token=new_secret(),
        endpoint=mcp_server.token_endpoint,
    )

    validation = client.beta.vaults.credentials.mcp_oauth_validate(credential.id, vault_id=vault.id)

    assert validation.status == "invalid"
    assert validation.refresh is not None and validation.refresh.status == "failed"
    assert validation.refresh.http_response is not None
    assert validation.refresh.http_response.status_code == 400
    assert "invalid_grant" in validation.refresh.http_response.body


def test_validating_against_an_unreachable_server_reports_unknown(client: anthropic.Anthropic, vault: Any) -> None:
    credential = oauth(client, vault, f"http://127.0.0.1:{free_port()}/mcp", new_secret())

    validation = client.beta.vaults.credentials.mcp_oauth_validate(credential.id, vault_id=vault.id)

    assert validation.status == "unknown"
    assert validation.mcp_probe is not None and validation.mcp_probe.method == "initialize"
    assert validation.mcp_probe.http_response is None
    assert validation.refresh is None


@pytest.mark.parametrize("auth", [bearer(new_secret()), env_var(new_secret())], ids=["static_bearer", "env_var"])
def test_validating_a_credential_of_another_kind_is_400(
    client: anthropic.Anthropic, vault: Any, auth: dict[str, Any]
) -> None:
    credential = client.beta.vaults.credentials.create(vault.id, auth=auth)  # type: ignore[arg-type]

    with pytest.raises(anthropic.BadRequestError, match="mcp_oauth credentials only"):
        client.beta.vaults.credentials.mcp_oauth_validate(credential.id, vault_id=vault.id)


def test_another_workspace_cannot_validate_a_credential(
    client: anthropic.Anthropic, other: anthropic.Anthropic, vault: Any, mcp_server: McpTestServer
) -> None:
    credential = oauth(client, vault, mcp_server.guarded_url, mcp_server.token)

    with pytest.raises(anthropic.NotFoundError):
        other.beta.vaults.credentials.mcp_oauth_validate(credential.id, vault_id=vault.id)


def test_validating_an_archived_credential_is_409(
    client: anthropic.Anthropic, vault: Any, mcp_server: McpTestServer
) -> None:
    credential = oauth(client, vault, mcp_server.guarded_url, mcp_server.token)
    client.beta.vaults.credentials.archive(credential.id, vault_id=vault.id)

    with pytest.raises(anthropic.ConflictError, match="archived"):
        client.beta.vaults.credentials.mcp_oauth_validate(credential.id, vault_id=vault.id)
