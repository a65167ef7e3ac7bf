"""From inside a sandbox, the network is the egress proxy and only what the environment allows.

A local HTTP server in the test process plays "the internet": its exact address:port is allowed past the
public-address rule (as CORRAL_EGRESS_ALLOW_ADDRESSES would), and a resolver maps test host names to it.
A second server on another port plays a host-local service that must stay unreachable.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.hands.local import LocalHandsProvider
from corral.hands.net.egress import EgressProxy
from corral.hands.net.policy import AddressPolicy, parse_allow_addresses
from corral.hands.sandbox.bubblewrap import BubblewrapLauncher
from corral.hands.sandbox.provision import Provisioner
from tests.support.local_web import LocalWeb, Response, static_resolver

PAGE = b"hello from the internet\n"


@pytest.fixture
def internet() -> Iterator[LocalWeb]:
    with LocalWeb({"/hello": Response(PAGE)}).running() as web:
        yield web


@pytest.fixture
def host_service() -> Iterator[LocalWeb]:
    """A service on the host's loopback (as the Corral API or a database would be), never allowed."""
    with LocalWeb({"/secret": Response(b"host secret\n")}).running() as web:
        yield web


@pytest.fixture
async def provider(internet: LocalWeb, data_dir: Path) -> AsyncIterator[LocalHandsProvider]:
    launcher = BubblewrapLauncher.detect(data_dir / "workspaces")
    owner = (launcher.identity.uid, launcher.identity.gid)
    addresses = AddressPolicy(
        allow_addresses=parse_allow_addresses(internet.address),
        resolver=static_resolver(
            {
                "allowed.test": "127.0.0.1",
                "other.test": "127.0.0.1",
                "localhost": "127.0.0.1",
                "metadata.test": "169.254.169.254",
            }
        ),
    )
    provisioner = Provisioner(egress=EgressProxy(data_dir / "egress", addresses, owner=owner))
    provider = LocalHandsProvider(data_dir / "workspaces", launcher=launcher, owner=owner, provisioner=provisioner)
    yield provider
    await provider.close()


def limited(*hosts: str) -> dict[str, Any]:
    return {"type": "cloud", "networking": {"type": "limited", "allowed_hosts": list(hosts)}}


UNRESTRICTED = {"type": "cloud", "networking": {"type": "unrestricted"}}


async def bash(provider: LocalHandsProvider, environment: dict[str, Any], command: str) -> str:
    result = await provider.for_session("sesn_net", environment).execute("bash", {"command": command})
    return str(result.content[0]["text"])


def curl(url: str, *options: str) -> str:
    """The HTTP status (000: no connection) and body of a GET, as curl sees them from inside the sandbox."""
    return f"curl -s -m 10 {' '.join(options)} -w ' status=%{{http_code}}' {url}; echo"


async def test_an_allowed_host_is_reached_through_the_proxy(provider: LocalHandsProvider, internet: LocalWeb) -> None:
    output = await bash(provider, limited("allowed.test"), curl(f"http://allowed.test:{internet.port}/hello"))
    assert PAGE.decode().strip() in output
    assert "status=200" in output


async def test_a_host_not_on_the_allowlist_gets_403_naming_the_setting(
    provider: LocalHandsProvider, internet: LocalWeb
) -> None:
    output = await bash(provider, limited("allowed.test"), curl(f"http://other.test:{internet.port}/hello"))
    assert "status=403" in output
    assert "config.networking.allowed_hosts" in output
    assert internet.paths() == []


async def test_https_style_connect_tunnels_are_checked_the_same_way(
    provider: LocalHandsProvider, internet: LocalWeb
) -> None:
    tunnel = "curl -s -m 10 --proxytunnel -o /dev/null -w 'connect=%{{http_connect}}\\n' http://{}:{}/hello"
    allowed, refused = (tunnel.format(host, internet.port) for host in ("allowed.test", "other.test"))
    output = await bash(provider, limited("allowed.test"), f"{allowed}; {refused}")
    assert re.findall(r"connect=(\d+)", output) == ["200", "403"]
    assert internet.paths() == ["/hello"]


async def test_unrestricted_networking_reaches_any_host(provider: LocalHandsProvider, internet: LocalWeb) -> None:
    output = await bash(provider, UNRESTRICTED, curl(f"http://other.test:{internet.port}/hello"))
    assert "status=200" in output


async def test_clients_that_keep_connections_alive_get_every_response_one_request_per_connection(
    provider: LocalHandsProvider, internet: LocalWeb
) -> None:
    urls = " ".join(f"http://{host}:{internet.port}/hello" for host in ("allowed.test", "allowed.test", "other.test"))
    script = (
        "import urllib.request as u; "
        f"print(*[u.urlopen('http://allowed.test:{internet.port}/hello').status for _ in range(2)])"
    )
    output = await bash(
        provider,
        limited("allowed.test"),
        f"curl -s -o /dev/null -w 'curl=%{{http_code}}\\n' {urls}; python3 -c \"{script}\"",
    )
    assert re.findall(r"curl=(\d+)", output) == ["200", "200", "403"]
    assert "200 200" in output
    assert internet.paths() == ["/hello"] * 4


async def test_python_in_the_sandbox_uses_the_proxy_too(provider: LocalHandsProvider, internet: LocalWeb) -> None:
    script = f"import urllib.request; print(urllib.request.urlopen('http://allowed.test:{internet.port}/hello').read())"
    output = await bash(provider, limited("allowed.test"), f'python3 -c "{script}"')
    assert "hello from the internet" in output


async def test_an_allowlisted_name_resolving_to_loopback_is_refused(
    provider: LocalHandsProvider, host_service: LocalWeb
) -> None:
    output = await bash(provider, limited("localhost"), curl(f"http://localhost:{host_service.port}/secret"))
    assert "status=403" in output
    assert "loopback" in output
    assert host_service.paths() == []


async def test_an_allowlisted_name_resolving_to_the_metadata_address_is_refused(provider: LocalHandsProvider) -> None:
    output = await bash(provider, limited("metadata.test"), curl("http://metadata.test/latest/meta-data/"))
    assert "status=403" in output
    assert "metadata" in output


async def test_private_addresses_are_refused_even_when_unrestricted(
    provider: LocalHandsProvider, host_service: LocalWeb
) -> None:
    output = await bash(provider, UNRESTRICTED, curl(f"http://127.0.0.1:{host_service.port}/secret"))
    assert "status=403" in output
    assert host_service.paths() == []


async def test_direct_connections_bypassing_the_proxy_fail(provider: LocalHandsProvider, internet: LocalWeb) -> None:
    output = await bash(
        provider, UNRESTRICTED, curl(f"http://127.0.0.1:{internet.port}/hello", "--noproxy '*'") + "; ip -o link"
    )
    assert "status=000" in output
    assert internet.paths() == []


async def test_limited_networking_with_nothing_allowed_has_no_proxy_at_all(provider: LocalHandsProvider) -> None:
    output = await bash(provider, limited(), 'echo "proxy=${HTTPS_PROXY:-none}"; ls /run/corral 2>&1')
    assert "proxy=none" in output
    assert "No such file" in output


async def test_egress_keeps_working_after_a_command_times_out(provider: LocalHandsProvider, internet: LocalWeb) -> None:
    hands = provider.for_session("sesn_net", limited("allowed.test"))
    await hands.execute("bash", {"command": "export KEPT=yes"})
    timed_out = await hands.execute("bash", {"command": "sleep 30", "timeout_ms": 200})
    after = await hands.execute(
        "bash", {"command": "echo kept=$KEPT; " + curl(f"http://allowed.test:{internet.port}/hello")}
    )
    assert timed_out.is_error
    text = str(after.content[0]["text"])
    assert "kept=yes" in text
    assert "status=200" in text


async def test_releasing_the_session_removes_its_proxy_socket(provider: LocalHandsProvider) -> None:
    await bash(provider, limited("allowed.test"), "true")
    egress = provider._provisioner.egress if provider._provisioner else None
    assert egress is not None
    socket_path = egress.socket_path("sesn_net")
    assert socket_path.exists()
    await provider.release("sesn_net")
    assert not socket_path.exists()
