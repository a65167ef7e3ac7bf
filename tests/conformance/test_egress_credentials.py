"""Vault `environment_variable` credentials applied by the egress proxy (spec §10), through the official SDK.

A real `corral serve` (logging at debug level, so a secret in any log line would show) reaches a local HTTP
server in this process, allowed past the public-address rule with CORRAL_EGRESS_ALLOW_ADDRESSES as in
test_network.py. The model is the scripted fake: `bash: <command>` runs the command in the session's sandbox.
The upstream records every request, so the tests see exactly what left the proxy.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import pytest

from tests.support.fake_model import FakeModel
from tests.support.live_events import run_turn, user_message
from tests.support.local_web import LocalWeb, Response
from tests.support.server import CorralServer

# Commands in the sandbox (a sandbox start included) get this long; every wait is bounded by it.
TURN_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def upstream() -> Iterator[LocalWeb]:
    with LocalWeb({"/api": Response(b"ok\n")}).running() as web:
        yield web


@pytest.fixture(autouse=True)
def _fresh_upstream(upstream: LocalWeb) -> None:
    upstream.requests.clear()


@pytest.fixture(scope="module")
def proxied(fake_model: FakeModel, upstream: LocalWeb) -> Iterator[CorralServer]:
    env = {"CORRAL_EGRESS_ALLOW_ADDRESSES": upstream.address, "CORRAL_LOG_LEVEL": "debug"}
    with CorralServer(model_url=fake_model.url, env=env) as running:
        yield running


@pytest.fixture
def client(proxied: CorralServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=proxied.url, api_key=proxied.api_key, max_retries=0) as sdk:
        yield sdk


@dataclass
class SecretSession:
    id: str
    vault_id: str
    credential_id: str
    secret: str


def new_secret() -> str:
    return f"secret-{secrets.token_hex(16)}"


def secret_session(
    client: anthropic.Anthropic, *, credential_hosts: list[str], environment_hosts: list[str]
) -> SecretSession:
    """A session whose vault holds EXAMPLE_API_KEY for `credential_hosts`, in an environment allowing
    `environment_hosts`."""
    secret = new_secret()
    vault = client.beta.vaults.create(display_name="Egress user")
    credential = client.beta.vaults.credentials.create(
        vault.id,
        auth={
            "type": "environment_variable",
            "secret_name": "EXAMPLE_API_KEY",
            "secret_value": secret,
            "networking": {"type": "limited", "allowed_hosts": credential_hosts},
        },
    )
    agent = client.beta.agents.create(
        name="Egress credential agent", model="claude-sonnet-4-6", tools=[{"type": "agent_toolset_20260401"}]
    )
    environment = client.beta.environments.create(
        name=f"env-{uuid.uuid4().hex[:12]}",
        config={"type": "cloud", "networking": {"type": "limited", "allowed_hosts": environment_hosts}},
    )
    session = client.beta.sessions.create(agent=agent.id, environment_id=environment.id, vault_ids=[vault.id])
    return SecretSession(session.id, vault.id, credential.id, secret)


def bash(client: anthropic.Anthropic, session_id: str, command: str) -> tuple[str, list[Any]]:
    """Run `command` in the session's sandbox: its output, and the events of the turn."""
    seen = run_turn(client, session_id, [user_message(f"bash: {command}")], timeout=TURN_TIMEOUT_S)
    (result,) = [event for event in seen if event.type == "agent.tool_result"]
    return "".join(block.text for block in result.content if block.type == "text"), seen


def call_api(url: str) -> str:
    """curl through the sandbox's proxy, sending the placeholder variable as a bearer token."""
    return f'curl -s -m 10 -w " status=%{{http_code}}" -H "Authorization: Bearer $EXAMPLE_API_KEY" {url}; echo'


def raw_events(server: CorralServer, session_id: str) -> str:
    response = httpx.get(
        f"{server.url}/v1/sessions/{session_id}/events",
        params={"limit": 1000},
        headers={"Authorization": f"Bearer {server.api_key}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.text


@pytest.fixture
def used(client: anthropic.Anthropic, upstream: LocalWeb) -> SecretSession:
    """A session that has called the allowed upstream once with its credential."""
    session = secret_session(client, credential_hosts=["127.0.0.1"], environment_hosts=["127.0.0.1"])
    output, _ = bash(client, session.id, call_api(f"http://127.0.0.1:{upstream.port}/api"))
    assert "status=200" in output, output
    return session


def test_a_request_to_a_host_both_allow_reaches_it_with_the_secret(used: SecretSession, upstream: LocalWeb) -> None:
    (request,) = upstream.requests
    assert request.headers["authorization"] == f"Bearer {used.secret}"


def test_the_secret_is_nowhere_the_sandbox_can_read(client: anthropic.Anthropic, used: SecretSession) -> None:
    half = len(used.secret) // 2
    # The command holds the secret only in two pieces, so it cannot find itself (in /proc or in the events).
    search = (
        f"printf '%s%s' '{used.secret[:half]}' '{used.secret[half:]}' > /tmp/.needle; "
        "env | grep -c -F -f /tmp/.needle; "
        'for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do grep -l -a -F -f /tmp/.needle "$f" 2>/dev/null; done; '
        "grep -r -l -a -D skip -F -f /tmp/.needle --exclude=.needle /workspace /tmp /etc /run 2>/dev/null; "
        "grep -l -a -F -f /tmp/.needle /proc/self/environ /proc/self/cmdline 2>/dev/null; "
        'echo "variable=$EXAMPLE_API_KEY"; echo searched'
    )

    output, _ = bash(client, used.id, search)

    lines = output.split()
    assert lines[0] == "0" and lines[-1] == "searched", output
    assert lines[1:-1] == [f"variable=corral-placeholder-{used.credential_id}"], output


def test_the_secret_is_in_no_event_and_no_log_line(proxied: CorralServer, used: SecretSession) -> None:
    assert used.credential_id in proxied.log()  # the substitution is logged, by credential id
    assert used.secret not in raw_events(proxied, used.id)
    assert used.secret not in proxied.log()


def test_an_updated_secret_is_used_by_the_next_request(
    client: anthropic.Anthropic, used: SecretSession, upstream: LocalWeb
) -> None:
    rotated = new_secret()
    client.beta.vaults.credentials.update(
        used.credential_id, vault_id=used.vault_id, auth={"type": "environment_variable", "secret_value": rotated}
    )

    bash(client, used.id, call_api(f"http://127.0.0.1:{upstream.port}/api"))

    assert [r.headers["authorization"] for r in upstream.requests] == [f"Bearer {used.secret}", f"Bearer {rotated}"]


def test_a_host_the_environment_does_not_allow_is_refused_and_gets_nothing(
    client: anthropic.Anthropic, upstream: LocalWeb
) -> None:
    session = secret_session(client, credential_hosts=["127.0.0.1", "localhost"], environment_hosts=["127.0.0.1"])

    output, seen = bash(client, session.id, call_api(f"http://localhost:{upstream.port}/api"))

    assert "status=403" in output and "config.networking.allowed_hosts" in output
    assert upstream.requests == []
    # The credential names a host this environment never lets through: the session says so, by id only.
    (error,) = [event.error for event in seen if event.type == "session.error"]
    assert error.type == "credential_host_unreachable_error"
    assert (error.credential_id, error.vault_id) == (session.credential_id, session.vault_id)
    assert "localhost" in error.message and session.secret not in error.message


def test_a_host_the_credential_does_not_name_gets_only_the_placeholder(
    client: anthropic.Anthropic, upstream: LocalWeb
) -> None:
    session = secret_session(client, credential_hosts=["api.example.com"], environment_hosts=["127.0.0.1"])

    output, _ = bash(client, session.id, call_api(f"http://127.0.0.1:{upstream.port}/api"))

    assert "status=200" in output
    (request,) = upstream.requests
    assert request.headers["authorization"] == f"Bearer corral-placeholder-{session.credential_id}"
