"""Fuzzing the API from its own OpenAPI document: whatever a client sends, the answer is never a 5xx.

Schemathesis generates requests for every operation of `GET /v1/openapi.json`, both ones the document allows
and ones it does not, and sends them to a real `corral serve` on each store. The budget is fixed (a seed
derived from this file, EXAMPLES_PER_OPERATION cases per operation, no shrinking) so that every run sends the
same requests and the whole fuzz stays cheap. Half the cases name objects that exist, so that handlers get past
their lookups into the code that acts on a body; archiving and deleting come last, so that the objects are there
for every other operation first.

Every failure is collected with a curl command that repeats it, and all are reported at the end. For a deeper
search than CI's, set CORRAL_FUZZ_EXAMPLES (say 500).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode, Response
from schemathesis.schemas import APIOperation

from corral.api.openapi import OPENAPI_PATH
from tests.conformance.conftest import StoreEnv
from tests.support.server import CorralServer

EXAMPLES_PER_OPERATION = int(os.environ.get("CORRAL_FUZZ_EXAMPLES", "25"))
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzz_server(new_store_env: StoreEnv) -> Iterator[CorralServer]:
    """A server of its own (what the fuzz creates must not show up in other tests' listings), with no model:
    a turn a fuzzed message starts ends at once in a session error."""
    with CorralServer(env=new_store_env()) as running:
        yield running


def _created(http: httpx.Client, path: str, body: dict[str, Any]) -> str:
    response = http.post(path, json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


@pytest.fixture(scope="module")
def existing_ids(fuzz_server: CorralServer) -> dict[str, list[str]]:
    """Ids of live objects of every kind, by the path parameter that names them."""
    headers = {"x-api-key": fuzz_server.api_key}
    with httpx.Client(base_url=fuzz_server.url, headers=headers, timeout=10) as http:
        agent = _created(
            http,
            "/v1/agents",
            {"name": "fuzzed", "model": "claude-sonnet-4-6", "tools": [{"type": "agent_toolset_20260401"}]},
        )
        environment = _created(http, "/v1/environments", {"name": "fuzzed", "config": {"type": "cloud"}})
        session = _created(http, "/v1/sessions", {"agent": agent, "environment_id": environment})
        vault = _created(http, "/v1/vaults", {"display_name": "fuzzed"})
        expires = (datetime.now(UTC) + timedelta(days=30)).isoformat()
        credentials = [
            _created(http, f"/v1/vaults/{vault}/credentials", {"auth": auth})
            for auth in (
                {"type": "static_bearer", "token": "t", "mcp_server_url": "https://a.example.com/mcp"},
                {
                    "type": "mcp_oauth",
                    "access_token": "t",
                    # A closed local port: mcp_oauth_validate probes it, and fails at once without leaving the host.
                    "mcp_server_url": "http://127.0.0.1:9/mcp",
                    "expires_at": expires,
                    "refresh": {
                        "client_id": "c",
                        "refresh_token": "r",
                        "token_endpoint": "https://b.example.com/token",
                        "token_endpoint_auth": {"type": "client_secret_post", "client_secret": "s"},
                    },
                },
                {
                    "type": "environment_variable",
                    "secret_name": "FUZZ_KEY",
                    "secret_value": "v",
                    "networking": {"type": "limited", "allowed_hosts": ["api.example.com"]},
                },
            )
        ]
    return {
        "agent_id": [agent],
        "environment_id": [environment],
        "session_id": [session],
        "vault_id": [vault],
        "credential_id": credentials,
    }


def _run_order(operation: APIOperation) -> tuple[int, int]:
    """Everything else, then archiving, then deleting (a vault's credentials before the vault)."""
    if operation.method.upper() == "DELETE":
        return (2, -len(operation.path))
    if operation.path.endswith("/archive"):
        return (1, -len(operation.path))
    return (0, 0)


def _strategy(operation: APIOperation, existing_ids: dict[str, list[str]]) -> st.SearchStrategy[Case]:
    strategies = [operation.as_strategy(mode) for mode in MODES]
    names = [parameter.name for parameter in operation.path_parameters]
    if names:
        choices = st.fixed_dictionaries({name: st.sampled_from(existing_ids[name]) for name in names})
        strategies += [
            choices.flatmap(lambda ids, mode=mode: operation.as_strategy(mode, path_parameters=ids))  # type: ignore[misc]
            for mode in MODES
        ]
    return st.one_of(strategies)


def _problem(response: Response) -> str | None:
    """What is wrong with an answer: a 5xx, or an error outside the API's error envelope."""
    if response.status_code >= 500:
        return f"{response.status_code}: {response.text[:300]}"
    if response.status_code < 400:
        return None
    try:
        body = response.json()
        error = body["error"]
        if body["type"] == "error" and isinstance(error["type"], str) and error["message"]:
            return None
    except (ValueError, KeyError, TypeError):
        pass
    return f"{response.status_code} outside the error envelope: {response.text[:300]}"


def _fuzz(operation: APIOperation, strategy: st.SearchStrategy[Case], server: CorralServer) -> list[str]:
    failures: list[str] = []
    auth = {"x-api-key": server.api_key}

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def send(case: Case) -> None:
        response = case.call(base_url=server.url, headers=auth, timeout=10)
        problem = _problem(response)
        if problem is not None:
            failures.append(f"{operation.label} -> {problem}\n    {case.as_curl_command(headers=auth)[:2000]}")

    send()
    return failures


def test_no_request_gets_a_server_error(fuzz_server: CorralServer, existing_ids: dict[str, list[str]]) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}{OPENAPI_PATH}")
    operations = [result.ok() for result in schema.get_all_operations()]
    # A stream that opens never ends; its query is validated as every other is, before the session is looked up.
    operations = [operation for operation in operations if not operation.path.endswith("/stream")]
    assert len(operations) >= 30
    failures: list[str] = []
    for operation in sorted(operations, key=_run_order):
        failures += _fuzz(operation, _strategy(operation, existing_ids), fuzz_server)
    assert not failures, f"{len(failures)} bad answers:\n" + "\n".join(failures[:20])
