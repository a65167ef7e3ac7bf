"""Input that once crashed a handler (a 500) is a 4xx in the error envelope, saying what to fix, on both stores.

Each case was found by an attacker's probe or by the fuzz (test_api_fuzz.py): JSON nested past the recursion
limit, integers past what the store's columns hold, NUL characters and unpaired surrogates (PostgreSQL refuses
both in text), numbers JSON cannot carry back, and timestamps outside the range a datetime holds.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.server import CorralServer

MODEL = "claude-sonnet-4-6"


@pytest.fixture
def http(server: CorralServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"x-api-key": server.api_key}, timeout=30) as raw:
        yield raw


@pytest.fixture
def agent_id(http: httpx.Client) -> str:
    return str(http.post("/v1/agents", json={"name": "bad input", "model": MODEL}).json()["id"])


@pytest.fixture
def environment_id(http: httpx.Client) -> str:
    return str(http.post("/v1/environments", json={"name": f"bad-input-{id(http)}"}).json()["id"])


def assert_rejected(response: httpx.Response, *mentions: str, status: int = 400) -> str:
    """`response` is a `status` error envelope whose message names each of `mentions`; returns the message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    message = str(body["error"]["message"])
    for mention in mentions:
        assert mention in message, message
    return message


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def custom_tool(input_schema_properties: Any) -> dict[str, Any]:
    return {
        "type": "custom",
        "name": "lookup",
        "description": "looks things up",
        "input_schema": {"type": "object", "properties": input_schema_properties},
    }


# --- nesting -------------------------------------------------------------------------------------------


def test_a_body_nested_past_the_parser_recursion_limit_is_400(http: httpx.Client) -> None:
    body = b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"

    response = http.post("/v1/agents", content=body, headers={"content-type": "application/json"})

    assert_rejected(response, "levels deep")


def test_a_body_nested_past_128_levels_inside_a_field_is_400_naming_where(http: httpx.Client) -> None:
    response = http.post("/v1/agents", json={"name": "x", "model": MODEL, "tools": [custom_tool(nested(200))]})

    assert_rejected(response, "128 levels", "tools.0.input_schema.properties")


def test_a_body_nested_within_the_limit_is_stored(http: httpx.Client) -> None:
    tool = custom_tool(nested(100))
    response = http.post("/v1/agents", json={"name": "x", "model": MODEL, "tools": [tool]})

    assert response.status_code == 200, response.text
    assert response.json()["tools"][0]["input_schema"] == tool["input_schema"]


# --- integers past the store's columns -----------------------------------------------------------------


def test_a_session_of_an_agent_version_past_the_store_columns_is_400(
    http: httpx.Client, agent_id: str, environment_id: str
) -> None:
    agent = {"type": "agent", "id": agent_id, "version": 10**20}

    response = http.post("/v1/sessions", json={"agent": agent, "environment_id": environment_id})

    assert_rejected(response, "agent.version", "2147483647")


def test_retrieving_an_agent_at_a_version_past_the_store_columns_is_400(http: httpx.Client, agent_id: str) -> None:
    response = http.get(f"/v1/agents/{agent_id}", params={"version": str(10**20)})

    assert_rejected(response, "query parameter 'version'", "2147483647")


def test_updating_an_agent_at_a_version_past_the_store_columns_is_400(http: httpx.Client, agent_id: str) -> None:
    response = http.post(f"/v1/agents/{agent_id}", json={"version": 10**20, "system": "x"})

    assert_rejected(response, "version", "2147483647")


def test_listing_sessions_of_an_agent_version_past_the_store_columns_is_400(http: httpx.Client, agent_id: str) -> None:
    response = http.get("/v1/sessions", params={"agent_id": agent_id, "agent_version": str(10**20)})

    assert_rejected(response, "query parameter 'agent_version'")


@pytest.mark.parametrize(
    ("number", "mention"),
    [("9" * 5000, "5000 digits"), ("1e999", "too large"), ("NaN", "NaN"), ("-Infinity", "-Infinity")],
    ids=["5000-digit-integer", "1e999", "NaN", "-Infinity"],
)
def test_a_number_json_cannot_carry_back_is_400(http: httpx.Client, number: str, mention: str) -> None:
    # Accepted into a custom tool's input schema, these could be stored but never sent back as JSON (or, past
    # 4300 digits, not even parsed).
    tool = json.dumps(custom_tool({"a": {"type": "number", "maximum": 0}})).replace(
        '"maximum": 0', f'"maximum": {number}'
    )
    body = f'{{"name": "x", "model": "{MODEL}", "tools": [{tool}]}}'

    response = http.post("/v1/agents", content=body, headers={"content-type": "application/json"})

    assert_rejected(response, mention)


def test_a_forged_page_cursor_with_an_integer_past_64_bits_is_400(
    http: httpx.Client, agent_id: str, environment_id: str
) -> None:
    session = http.post("/v1/sessions", json={"agent": agent_id, "environment_id": environment_id}).json()
    forged = json.dumps({"k": 10**30, "s": f"events:{session['id']}:asc"}).encode()
    cursor = base64.urlsafe_b64encode(forged).decode().rstrip("=")

    response = http.get(f"/v1/sessions/{session['id']}/events", params={"page": cursor})

    assert_rejected(response, "query parameter 'page'")


# --- NUL characters and unpaired surrogates ------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/agents/agent_%00x",
        "/v1/environments/env_%00x",
        "/v1/sessions/sesn_%00x",
        "/v1/sessions/sesn_%00x/events",
        "/v1/vaults/vlt_%00x/credentials/vcrd_x",
    ],
)
def test_a_nul_in_a_path_id_is_400(http: httpx.Client, path: str) -> None:
    assert_rejected(http.get(path), "NUL")


def test_a_nul_in_a_path_id_of_a_write_is_400(http: httpx.Client) -> None:
    assert_rejected(http.post("/v1/agents/agent_%00x", json={"system": "x"}), "NUL")


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/v1/sessions?agent_id=agent_%00x", "agent_id"),
        ("/v1/sessions?statuses[]=idle%00", "statuses[]"),
        ("/v1/agents?page=abc%00", "page"),
    ],
)
def test_a_nul_in_a_filter_is_400_naming_the_parameter(http: httpx.Client, path: str, parameter: str) -> None:
    assert_rejected(http.get(path), f"query parameter '{parameter}'", "NUL")


def test_a_nul_in_a_body_string_is_400_naming_the_field(http: httpx.Client) -> None:
    response = http.post("/v1/agents", json={"name": "a\x00b", "model": MODEL})

    assert_rejected(response, "name", "NUL")


def test_a_nul_in_a_message_is_400_naming_where(http: httpx.Client, agent_id: str, environment_id: str) -> None:
    session = http.post("/v1/sessions", json={"agent": agent_id, "environment_id": environment_id}).json()
    events = [{"type": "user.message", "content": [{"type": "text", "text": "hello\x00"}]}]

    response = http.post(f"/v1/sessions/{session['id']}/events", json={"events": events})

    assert_rejected(response, "events.0.content.0.text", "NUL")
    assert http.get(f"/v1/sessions/{session['id']}/events").json()["data"] == []


def test_a_nul_in_a_metadata_key_is_400(http: httpx.Client) -> None:
    response = http.post("/v1/vaults", json={"display_name": "v", "metadata": {"k\x00": "v"}})

    assert_rejected(response, "a key of metadata", "NUL")


def test_an_unpaired_surrogate_in_a_body_string_is_400(http: httpx.Client) -> None:
    body = b'{"name": "bad \\ud800 text", "model": "' + MODEL.encode() + b'"}'

    response = http.post("/v1/agents", content=body, headers={"content-type": "application/json"})

    assert_rejected(response, "name", "unpaired surrogate")


# --- timestamps outside what a datetime holds ----------------------------------------------------------


def test_a_created_at_filter_before_year_one_in_utc_is_400(http: httpx.Client) -> None:
    response = http.get("/v1/agents", params={"created_at[gte]": "0001-01-01T00:00:00+01:00"})

    assert_rejected(response, "query parameter 'created_at[gte]'", "RFC 3339")


def test_a_created_at_filter_before_year_1000_still_filters_in_order(http: httpx.Client, agent_id: str) -> None:
    listed = http.get("/v1/agents", params={"created_at[gte]": "0999-01-01T00:00:00Z", "limit": "100"})

    assert listed.status_code == 200, listed.text
    assert agent_id in {agent["id"] for agent in listed.json()["data"]}


def test_a_credential_expiring_before_year_one_in_utc_is_400(http: httpx.Client) -> None:
    vault = http.post("/v1/vaults", json={"display_name": "v"}).json()
    auth = {
        "type": "mcp_oauth",
        "access_token": "t",
        "mcp_server_url": "https://mcp.example.com/mcp",
        "expires_at": "0001-01-01T00:00:00+01:00",
    }

    response = http.post(f"/v1/vaults/{vault['id']}/credentials", json={"auth": auth})

    assert_rejected(response, "auth.expires_at")


# --- URLs the URL parser refuses -----------------------------------------------------------------------


def test_a_credential_for_an_mcp_url_with_an_unbalanced_bracket_is_400(http: httpx.Client) -> None:
    vault = http.post("/v1/vaults", json={"display_name": "v"}).json()
    auth = {"type": "static_bearer", "token": "t", "mcp_server_url": "http://[::1"}

    response = http.post(f"/v1/vaults/{vault['id']}/credentials", json={"auth": auth})

    assert_rejected(response, "auth.mcp_server_url", "not a valid URL")


def test_updating_a_credential_to_an_mcp_url_with_an_unbalanced_bracket_is_400(http: httpx.Client) -> None:
    vault = http.post("/v1/vaults", json={"display_name": "v"}).json()
    auth = {"type": "static_bearer", "token": "t", "mcp_server_url": "https://mcp.example.com/mcp"}
    credential = http.post(f"/v1/vaults/{vault['id']}/credentials", json={"auth": auth}).json()

    response = http.post(
        f"/v1/vaults/{vault['id']}/credentials/{credential['id']}",
        json={"auth": {"type": "static_bearer", "mcp_server_url": "http://["}},
    )

    assert_rejected(response, "auth.mcp_server_url", "not a valid URL")
