"""The OpenAPI 3.1 document at `GET /v1/openapi.json`: public, valid, and made from the models that validate
requests, so that what it says is what the server accepts."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis

from tests.support.server import CorralServer

# Every operation of spec Appendix A that this server implements.
OPERATIONS = {
    "POST /v1/agents",
    "GET /v1/agents",
    "GET /v1/agents/{agent_id}",
    "POST /v1/agents/{agent_id}",
    "POST /v1/agents/{agent_id}/archive",
    "GET /v1/agents/{agent_id}/versions",
    "POST /v1/environments",
    "GET /v1/environments",
    "GET /v1/environments/{environment_id}",
    "POST /v1/environments/{environment_id}",
    "DELETE /v1/environments/{environment_id}",
    "POST /v1/environments/{environment_id}/archive",
    "POST /v1/sessions",
    "GET /v1/sessions",
    "GET /v1/sessions/{session_id}",
    "POST /v1/sessions/{session_id}",
    "DELETE /v1/sessions/{session_id}",
    "POST /v1/sessions/{session_id}/archive",
    "GET /v1/sessions/{session_id}/events",
    "POST /v1/sessions/{session_id}/events",
    "GET /v1/sessions/{session_id}/events/stream",
    "POST /v1/vaults",
    "GET /v1/vaults",
    "GET /v1/vaults/{vault_id}",
    "POST /v1/vaults/{vault_id}",
    "DELETE /v1/vaults/{vault_id}",
    "POST /v1/vaults/{vault_id}/archive",
    "POST /v1/vaults/{vault_id}/credentials",
    "GET /v1/vaults/{vault_id}/credentials",
    "GET /v1/vaults/{vault_id}/credentials/{credential_id}",
    "POST /v1/vaults/{vault_id}/credentials/{credential_id}",
    "DELETE /v1/vaults/{vault_id}/credentials/{credential_id}",
    "POST /v1/vaults/{vault_id}/credentials/{credential_id}/archive",
    "POST /v1/vaults/{vault_id}/credentials/{credential_id}/mcp_oauth_validate",
}


@pytest.fixture
def document(server: CorralServer) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/v1/openapi.json")
    assert response.status_code == 200, response.text
    return dict(response.json())


def parameters(document: dict[str, Any], method: str, path: str) -> dict[str, dict[str, Any]]:
    return {parameter["name"]: parameter for parameter in document["paths"][path][method]["parameters"]}


def test_the_document_is_served_as_json_without_an_api_key(server: CorralServer) -> None:
    response = httpx.get(f"{server.url}/v1/openapi.json")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["openapi"] == "3.1.0"


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    schemathesis.openapi.from_dict(document).validate()


def test_the_document_describes_every_endpoint(document: dict[str, Any]) -> None:
    described = {f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item}

    assert described == OPERATIONS


def test_a_request_body_is_the_model_that_validates_it(document: dict[str, Any]) -> None:
    body = document["paths"]["/v1/agents"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    agent_create = document["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]

    assert set(agent_create["required"]) == {"name", "model"}
    assert agent_create["additionalProperties"] is False
    assert agent_create["properties"]["name"]["maxLength"] == 256


def test_metadata_limits_are_in_the_document(document: dict[str, Any]) -> None:
    metadata = document["components"]["schemas"]["VaultCreate"]["properties"]["metadata"]["anyOf"][0]

    assert metadata["maxProperties"] == 16
    assert metadata["propertyNames"]["maxLength"] == 64
    assert metadata["additionalProperties"]["maxLength"] == 512


def test_query_parameters_are_named_as_the_sdk_sends_them(document: dict[str, Any]) -> None:
    listed = parameters(document, "get", "/v1/sessions")

    assert listed["statuses[]"]["schema"]["items"]["enum"] == ["rescheduling", "running", "idle", "terminated"]
    assert listed["created_at[gte]"]["schema"] == {"title": "Created At[Gte]", "type": "string", "format": "date-time"}
    assert listed["limit"]["schema"]["maximum"] == 1000
    assert listed["order"]["schema"]["default"] == "desc"


def test_event_types_a_listing_accepts_are_enumerated(document: dict[str, Any]) -> None:
    types = parameters(document, "get", "/v1/sessions/{session_id}/events")["types[]"]

    assert "agent.message" in types["schema"]["items"]["enum"]
    assert types["style"] == "form" and types["explode"] is True


def test_every_operation_documents_the_error_envelope(document: dict[str, Any]) -> None:
    for item in document["paths"].values():
        for operation in item.values():
            assert operation["responses"]["default"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorEnvelope"
            }
