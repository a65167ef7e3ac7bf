"""Vault `environment_variable` credentials through the egress proxy (spec §10), from inside a real sandbox.

The sandbox's variable holds a placeholder; in a plain-HTTP request to a host both the environment and the
credential allow, the proxy puts the value where the placeholder is (headers, and the body when the credential
says so). A local HTTP server plays "the internet" and records what actually arrived. The credentials come from
a small in-test source with the shape `VaultAccess.session_environment_secrets` has.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from corral.hands.local import LocalHandsProvider
from corral.hands.net.egress import EgressProxy
from corral.hands.net.policy import AddressPolicy, HostRules, parse_allow_addresses
from corral.hands.sandbox.bubblewrap import BubblewrapLauncher
from corral.hands.sandbox.provision import Provisioner, credential_host_errors
from corral.vault.credentials import EnvironmentSecret, placeholder_for
from tests.support.local_web import LocalWeb, Response, static_resolver

SESSION = "sesn_creds"


def credential(
    value: str,
    *,
    hosts: tuple[str, ...] | None = ("allowed.test",),
    name: str = "EXAMPLE_API_KEY",
    header: bool = True,
    body: bool = False,
    credential_id: str = "vcrd_011CExampleCredential000",
) -> EnvironmentSecret:
    return EnvironmentSecret(
        credential_id=credential_id,
        vault_id="vlt_011CExampleVault000000000",
        secret_name=name,
        placeholder=placeholder_for(credential_id),
        value=value,
        allowed_hosts=hosts,
        header=header,
        body=body,
    )


class Vault:
    """The session's credentials as the proxy reads them, at each request; errors reported on the session."""

    def __init__(self) -> None:
        self.secrets: list[EnvironmentSecret] = []
        self.reported: list[tuple[str, dict[str, Any]]] = []

    async def read(self, session_id: str) -> list[EnvironmentSecret]:
        return list(self.secrets) if session_id == SESSION else []

    async def report(self, session_id: str, error: dict[str, Any]) -> None:
        self.reported.append((session_id, error))


@pytest.fixture
def internet() -> Iterator[LocalWeb]:
    with LocalWeb({"/hello": Response(b"hello\n"), "/upload": Response(b"stored\n")}).running() as web:
        yield web


@pytest.fixture
def vault() -> Vault:
    return Vault()


@pytest.fixture
async def provider(internet: LocalWeb, vault: Vault, data_dir: Path) -> AsyncIterator[LocalHandsProvider]:
    launcher = BubblewrapLauncher.detect(data_dir / "workspaces")
    owner = (launcher.identity.uid, launcher.identity.gid)
    addresses = AddressPolicy(
        allow_addresses=parse_allow_addresses(internet.address),
        resolver=static_resolver({"allowed.test": "127.0.0.1", "other.test": "127.0.0.1"}),
    )
    provisioner = Provisioner(
        egress=EgressProxy(data_dir / "egress", addresses, owner=owner),
        credentials=vault.read,
        report=vault.report,
    )
    provider = LocalHandsProvider(data_dir / "workspaces", launcher=launcher, owner=owner, provisioner=provisioner)
    yield provider
    await provider.close()


def limited(*hosts: str) -> dict[str, Any]:
    return {"type": "cloud", "networking": {"type": "limited", "allowed_hosts": list(hosts)}}


async def bash(provider: LocalHandsProvider, command: str, environment: dict[str, Any] | None = None) -> str:
    hands = provider.for_session(SESSION, environment or limited("allowed.test", "other.test"))
    result = await hands.execute("bash", {"command": command})
    return str(result.content[0]["text"])


def new_value() -> str:
    return f"value-{secrets.token_hex(16)}"


def sent_header(web: LocalWeb, name: str = "authorization") -> str:
    (request,) = web.requests
    return request.headers.get(name, "")


async def test_the_sandbox_variable_holds_only_the_placeholder(provider: LocalHandsProvider, vault: Vault) -> None:
    value = new_value()
    vault.secrets = [credential(value)]

    output = await bash(provider, 'echo "[$EXAMPLE_API_KEY]"')

    assert output.strip() == f"[{placeholder_for('vcrd_011CExampleCredential000')}]"


async def test_a_placeholder_in_a_header_becomes_the_value_for_an_allowed_host(
    provider: LocalHandsProvider, vault: Vault, internet: LocalWeb
) -> None:
    value = new_value()
    vault.secrets = [credential(value)]

    output = await bash(
        provider, f'curl -s -H "Authorization: Bearer $EXAMPLE_API_KEY" http://allowed.test:{internet.port}/hello'
    )

    assert output.strip() == "hello"
    assert sent_header(internet) == f"Bearer {value}"


async def test_a_host_the_credential_does_not_name_gets_the_placeholder(
    provider: LocalHandsProvider, vault: Vault, internet: LocalWeb
) -> None:
    vault.secrets = [credential(new_value(), hosts=("allowed.test",))]

    await bash(provider, f'curl -s -H "Authorization: Bearer $EXAMPLE_API_KEY" http://other.test:{internet.port}/hello')

    assert sent_header(internet) == f"Bearer {vault.secrets[0].placeholder}"


async def test_a_host_the_environment_does_not_allow_is_refused_before_any_substitution(
    provider: LocalHandsProvider, vault: Vault, internet: LocalWeb
) -> None:
    vault.secrets = [credential(new_value(), hosts=("allowed.test", "other.test"))]

    output = await bash(
        provider,
        f'curl -s -w " status=%{{http_code}}" -H "X-Key: $EXAMPLE_API_KEY" http://other.test:{internet.port}/hello',
        limited("allowed.test"),
    )

    assert "status=403" in output
    assert internet.requests == []


async def test_unrestricted_credential_networking_follows_the_environment(
    provider: LocalHandsProvider, vault: Vault, internet: LocalWeb
) -> None:
    value = new_value()
    vault.secrets = [credential(value, hosts=None)]

    await bash(provider, f'curl -s -H "X-Key: $EXAMPLE_API_KEY" http://other.test:{internet.port}/hello')

    assert sent_header(internet, "x-key") == value


async def test_an_updated_value_applies_to_the_next_request(
    provider: LocalHandsProvider, vault: Vault, internet: LocalWeb
) -> None:
    first, second = new_value(), new_value()
    vault.secrets = [credential(first)]
    request = f'curl -s -H "X-Key: $EXAMPLE_API_KEY" http://allowed.test:{internet.port}/hello'
    await bash(provider, request)

    vault.secrets = [replace(vault.secrets[0], value=second)]
    await bash(provider, request)

    assert [r.headers["x-key"] for r in internet.requests] == [first, second]


async def test_a_body_placeholder_is_substituted_only_when_the_credential_allows_bodies(
    provider: LocalHandsProvider, vault: Vault, internet: LocalWeb
) -> None:
    in_body, header_only = new_value(), new_value()
    vault.secrets = [
        credential(in_body, name="BODY_KEY", header=False, body=True, credential_id="vcrd_011CBodyCredential0000000"),
        credential(header_only, name="HEADER_KEY", credential_id="vcrd_011CHeaderCredential00000"),
    ]

    await bash(
        provider,
        f'curl -s -H "X-Body-Key: $BODY_KEY" -d "a=$BODY_KEY&b=$HEADER_KEY" http://allowed.test:{internet.port}/upload',
    )

    (request,) = internet.requests
    assert request.body == f"a={in_body}&b={placeholder_for('vcrd_011CHeaderCredential00000')}".encode()
    assert request.headers["content-length"] == str(len(request.body))
    assert request.headers["x-body-key"] == placeholder_for("vcrd_011CBodyCredential0000000")


async def test_chunked_and_expect_continue_bodies_are_substituted_too(
    provider: LocalHandsProvider, vault: Vault, internet: LocalWeb
) -> None:
    value = new_value()
    vault.secrets = [credential(value, header=False, body=True)]
    url = f"http://allowed.test:{internet.port}/upload"

    await bash(
        provider,
        f'printf "token=%s" "$EXAMPLE_API_KEY" > /tmp/form; '
        f'curl -s -H "Transfer-Encoding: chunked" --data-binary @/tmp/form {url}; '
        f'curl -s -H "Expect: 100-continue" --data-binary @/tmp/form {url}',
    )

    assert [r.body for r in internet.requests] == [f"token={value}".encode()] * 2
    assert all("transfer-encoding" not in r.headers and "expect" not in r.headers for r in internet.requests)


async def test_a_value_that_would_break_the_header_is_not_put_in_one(
    provider: LocalHandsProvider, vault: Vault, internet: LocalWeb
) -> None:
    vault.secrets = [credential("part\r\nX-Injected: yes")]

    await bash(provider, f'curl -s -H "X-Key: $EXAMPLE_API_KEY" http://allowed.test:{internet.port}/hello')

    (request,) = internet.requests
    assert request.headers["x-key"] == vault.secrets[0].placeholder
    assert "x-injected" not in request.headers


async def test_the_upstream_is_told_the_host_that_was_checked(
    provider: LocalHandsProvider, vault: Vault, internet: LocalWeb
) -> None:
    vault.secrets = [credential(new_value())]

    await bash(provider, f'curl -s -H "Host: elsewhere.test" http://allowed.test:{internet.port}/hello')

    assert sent_header(internet, "host") == f"allowed.test:{internet.port}"


async def test_https_style_tunnels_pass_the_placeholder_unopened(
    provider: LocalHandsProvider, vault: Vault, internet: LocalWeb
) -> None:
    vault.secrets = [credential(new_value())]

    await bash(
        provider,
        f'curl -s --proxytunnel -H "X-Key: $EXAMPLE_API_KEY" http://allowed.test:{internet.port}/hello',
    )

    assert sent_header(internet, "x-key") == vault.secrets[0].placeholder


async def test_a_credential_host_the_environment_never_allows_is_reported_once(
    provider: LocalHandsProvider, vault: Vault
) -> None:
    vault.secrets = [credential(new_value(), hosts=("allowed.test", "api.example.com", "*.example.org"))]

    await bash(provider, "true", limited("allowed.test"))
    await bash(provider, "true", limited("allowed.test"))

    ((session_id, error),) = vault.reported
    assert session_id == SESSION
    assert error["type"] == "credential_host_unreachable_error"
    assert (error["credential_id"], error["vault_id"]) == (
        "vcrd_011CExampleCredential000",
        "vlt_011CExampleVault000000000",
    )
    assert "api.example.com, *.example.org" in error["message"]
    assert "allowed.test" not in error["message"]
    assert error["retry_status"] == {"type": "exhausted"}


def test_credential_hosts_are_checked_against_the_environments_patterns() -> None:
    rules = HostRules.from_networking(
        {"type": "limited", "allowed_hosts": ["api.example.com:8443", "*.example.org", "10.0.0.7"]}
    )
    reachable = ["api.example.com", "example.com.example.org", "a.example.org", "*.example.org", "*.a.example.org"]
    unreachable = ["example.org", "other.example.com", "*.other.com", "10.0.0.8"]

    assert [host for host in reachable + unreachable if rules.reaches(host)] == reachable
    assert HostRules.from_networking({"type": "unrestricted"}).reaches("anything.test")
    assert rules.reaches("*.example.com")  # api.example.com is one of its subdomains


def test_no_egress_at_all_makes_every_named_host_unreachable_but_not_unrestricted_credentials() -> None:
    named, anywhere = credential("v", hosts=("api.example.com",)), credential("v", hosts=None)

    assert [e["credential_id"] for e in credential_host_errors([named, anywhere], None)] == [named.credential_id]
