"""Which hosts and addresses traffic on a session's behalf may reach (shared by the egress proxy and web_fetch)."""

from __future__ import annotations

import ipaddress

import pytest

from corral.hands.net.policy import (
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
        "fec0::1",  # site-local (deprecated, still routed by some networks)
        "64:ff9b:1::808:808",  # local-use NAT64: what it reaches depends on the local translator
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize(
    ("address", "carried", "reason"),
    [
        ("::7f00:1", "127.0.0.1", "a loopback address"),  # IPv4-compatible
        ("::a9fe:a9fe", "169.254.169.254", "a cloud metadata address"),
        ("::ffff:0:a00:1", "10.0.0.1", "a private or reserved address"),  # IPv4-translated
        ("::ffff:7f00:1", "127.0.0.1", "a loopback address"),  # IPv4-mapped
        ("64:ff9b::a9fe:a9fe", "169.254.169.254", "a cloud metadata address"),  # NAT64
        ("2002:c0a8:101::1", "192.168.1.1", "a private or reserved address"),  # 6to4
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1", "a loopback address"),  # Teredo client (inverted)
        ("2001:0:a00:1::f7f7:f7f7", "10.0.0.1", "a private or reserved address"),  # Teredo relay server
    ],
)
def test_an_ipv6_address_carrying_an_ipv4_one_is_judged_by_the_ipv4_one(
    address: str, carried: str, reason: str
) -> None:
    ipv6 = ipaddress.ip_address(address)
    assert address_refusal(ipv6) == f"{reason} ({carried} embedded in {ipv6})"


@pytest.mark.parametrize(
    "address",
    [
        "93.184.215.14",
        "2606:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
        "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo: relay 65.54.227.120, client 8.8.8.8
    ],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


def test_a_public_ipv4_address_of_this_host_is_refused_in_its_ipv6_forms_too() -> None:
    own = ipaddress.ip_address("93.184.215.14")
    for form in ("::ffff:5db8:d70e", "64:ff9b::5db8:d70e", "2002:5db8:d70e::1"):
        ipv6 = ipaddress.ip_address(form)
        assert address_refusal(ipv6, frozenset({own})) == f"an address of this host ({own} embedded in {ipv6})"


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
