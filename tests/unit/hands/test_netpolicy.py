"""Which hosts and addresses traffic on a session's behalf may reach (shared by the egress proxy and web_fetch)."""

from __future__ import annotations

import ipaddress

import pytest

from corral.hands.netpolicy import (
    PACKAGE_MANAGER_HOSTS,
    AddressPolicy,
    EgressRefused,
    HostRules,
    address_refusal,
    domain_matches,
    mcp_server_hosts,
    parse_allow_addresses,
)
from tests.support.local_web import static_resolver


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.3.4.5",
        "::1",
        "169.254.169.254",
        "fd00:ec2::254",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a00:1",  # NAT64 for 10.0.0.1
        "2002:7f00:1::",  # 6to4 for 127.0.0.1
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


def test_the_hosts_own_public_address_is_refused() -> None:
    own = ipaddress.ip_address("93.184.215.14")
    assert address_refusal(own, frozenset({own})) == "an address of this host"


async def test_a_name_resolving_only_to_loopback_is_refused_with_the_reason() -> None:
    policy = AddressPolicy(resolver=static_resolver({"evil.test": "127.0.0.1"}))
    with pytest.raises(EgressRefused, match=r"127\.0\.0\.1 is a loopback address"):
        await policy.resolve("evil.test", 80)


async def test_only_the_public_addresses_of_a_name_are_kept() -> None:
    async def two(host: str, port: int) -> list[str]:
        return ["169.254.169.254", "93.184.215.14"]

    assert await AddressPolicy(resolver=two).resolve("mixed.test", 443) == [ipaddress.ip_address("93.184.215.14")]


async def test_an_allowed_address_pair_is_exact_to_the_port() -> None:
    policy = AddressPolicy(allow_addresses=parse_allow_addresses("127.0.0.1:8080"))
    assert await policy.resolve("127.0.0.1", 8080) == [ipaddress.ip_address("127.0.0.1")]
    with pytest.raises(EgressRefused):
        await policy.resolve("127.0.0.1", 8081)


@pytest.mark.parametrize("entry", ["127.0.0.1", "localhost:80", "127.0.0.1:0", "[::1]"])
def test_malformed_allow_addresses_are_rejected_with_the_expected_form(entry: str) -> None:
    with pytest.raises(ValueError, match="address:port"):
        parse_allow_addresses(entry)


def test_limited_networking_with_nothing_allowed_allows_no_egress() -> None:
    rules = HostRules.from_networking({"type": "limited", "allowed_hosts": [], "allow_package_managers": False})
    assert not rules.allows_anything
    assert not HostRules.from_networking(None).allows_anything


def test_allowed_hosts_match_exactly_or_by_wildcard_and_port() -> None:
    rules = HostRules.from_networking(
        {"type": "limited", "allowed_hosts": ["api.example.com", "*.cdn.example.com", "git.example.com:8443"]}
    )
    assert rules.allows("API.example.com.", 443)
    assert not rules.allows("example.com", 443)
    assert not rules.allows("evil-api.example.com", 443)
    assert rules.allows("a.b.cdn.example.com", 443)
    assert not rules.allows("cdn.example.com", 443)
    assert rules.allows("git.example.com", 8443)
    assert not rules.allows("git.example.com", 443)


def test_package_managers_and_mcp_servers_are_added_only_when_allowed() -> None:
    mcp = mcp_server_hosts([{"type": "url", "name": "docs", "url": "https://mcp.example.com/sse"}])
    off = HostRules.from_networking({"type": "limited", "allowed_hosts": []}, mcp)
    on = HostRules.from_networking({"type": "limited", "allow_package_managers": True, "allow_mcp_servers": True}, mcp)
    for host in (PACKAGE_MANAGER_HOSTS[0], "mcp.example.com"):
        assert not off.allows(host, 443)
        assert on.allows(host, 443)


def test_unrestricted_networking_allows_every_host() -> None:
    assert HostRules.from_networking({"type": "unrestricted"}).allows("anything.example", 1234)


def test_web_tool_domains_match_themselves_and_their_subdomains() -> None:
    assert domain_matches("docs.python.org", "python.org")
    assert domain_matches("python.org", "python.org")
    assert not domain_matches("notpython.org", "python.org")
