"""Where traffic leaving Corral on a session's behalf may go: the checks shared by the egress proxy and web_fetch.

Two questions, asked in this order:

1. **Is the host allowed?** `HostRules` answers from the session environment's `config.networking`
   (`unrestricted`, or `limited` with `allowed_hosts`, `allow_package_managers`, `allow_mcp_servers`).
   web_fetch asks its own per-tool domain lists instead (see `domain_matches`).
2. **Is the address safe?** `AddressPolicy` resolves the name itself and keeps only addresses that are
   public: never loopback, link-local (cloud metadata lives there), private, unique-local, site-local,
   multicast, reserved or unspecified ranges, nor any address of this host's own interfaces. An IPv6 address
   that carries an IPv4 address (IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64, 6to4, Teredo) is
   judged by the IPv4 address it carries, which is where traffic to it goes. Callers connect to the
   address returned here, so a name cannot resolve to something else between the check and the connection
   (no DNS rebinding).

The only way past (2) is `CORRAL_EGRESS_ALLOW_ADDRESSES`: exact `ip:port` pairs, meant for tests that run a
local HTTP server as "the internet" on a machine without one. It is off by default and logged when set.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("corral.egress")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> the addresses the name resolves to, as strings; tests can swap in their own.
Resolver = Callable[[str, int], Awaitable[list[str]]]

ALLOW_ADDRESSES_ENV = "CORRAL_EGRESS_ALLOW_ADDRESSES"

# Public package registries reachable under `allow_package_managers` (spec §4.2: "PyPI, npm, ...").
PACKAGE_MANAGER_HOSTS = (
    "pypi.org",
    "files.pythonhosted.org",
    "registry.npmjs.org",
    "registry.yarnpkg.com",
    "deb.debian.org",
    "security.debian.org",
    "archive.ubuntu.com",
    "security.ubuntu.com",
    "ports.ubuntu.com",
    "crates.io",
    "index.crates.io",
    "static.crates.io",
    "rubygems.org",
    "index.rubygems.org",
    "proxy.golang.org",
    "sum.golang.org",
)

_METADATA = (ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"))
# IPv6 ranges whose low 32 bits are an IPv4 address that the host, a translator or a tunnel sends the traffic to.
# (IPv4-mapped `::ffff:0:0/96`, 6to4 and Teredo are recognised by `ipaddress` itself.)
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated (RFC 4291 §2.5.5.1); `::` and `::1` are IPv6's own
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # SIIT (RFC 2765)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known NAT64 prefix (RFC 6052)
# Local-use NAT64 (RFC 8215): where the IPv4 address sits depends on the prefix length the local translator
# was given (RFC 6052 §2.2 allows /48 to /96 here), so what an address in it reaches cannot be told from outside.
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")
_HOST_ADDRESSES_TTL_S = 30.0


class EgressRefused(Exception):
    """A destination that policy refuses; the message says why and is safe to show to the model."""


def normalize_host(host: str) -> str:
    """Lower-case ASCII (IDNA) form of a host name without a trailing dot or IPv6 brackets."""
    host = host.strip().strip("[]").rstrip(".").lower()
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def _ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries, which is where traffic to it really goes: a Teredo address
    carries two (its relay server and its client), the other forms one, a plain IPv6 address none."""
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        return list(address.teredo)
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _NAT64 or address in _IPV4_TRANSLATED:
        return [low32]
    if address in _IPV4_COMPATIBLE and int(address) > 1:
        return [low32]
    return []


def address_refusal(address: IPAddress, own_addresses: frozenset[IPAddress] = frozenset()) -> str | None:
    """Why `address` must not be reached on a session's behalf, or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _LOCAL_NAT64:
            return "a local-use NAT64 address (64:ff9b:1::/48), which reaches whatever the local translator maps it to"
        carried = embedded_ipv4(address)
        for ipv4 in carried:
            reason = address_refusal(ipv4, own_addresses)
            if reason is not None:
                return f"{reason} ({ipv4} embedded in {address})"
        if carried:
            # Judged by where it goes: the IPv6 form itself is often in a range `ipaddress` calls reserved.
            return "an address of this host" if address in own_addresses else None
    if address in _METADATA:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "a site-local address"
    if address.is_private or address.is_reserved:
        return "a private or reserved address"
    if not address.is_global:
        return "a non-public address"
    if address in own_addresses:
        return "an address of this host"
    return None


def _read_host_addresses() -> frozenset[IPAddress]:
    """Every address configured on this host's interfaces (IPv4 from fib_trie, IPv6 from if_inet6)."""
    found: set[IPAddress] = set()
    try:
        with open("/proc/net/fib_trie") as handle:
            previous = ""
            for line in handle:
                stripped = line.strip()
                if stripped.startswith("/32 host LOCAL") and previous.startswith("|-- "):
                    found.add(ipaddress.IPv4Address(previous[4:]))
                previous = stripped
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/net/if_inet6") as handle:
            for line in handle:
                raw = line.split()[0]
                found.add(ipaddress.IPv6Address(int(raw, 16)))
    except (OSError, ValueError, IndexError):
        pass
    return frozenset(found)


async def system_resolver(host: str, port: int) -> list[str]:
    """The system resolver's addresses for `host`, in its order of preference."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        if sockaddr[0] not in addresses:
            addresses.append(str(sockaddr[0]))
    return addresses


def parse_allow_addresses(raw: str | Iterable[str]) -> frozenset[tuple[IPAddress, int]]:
    """`127.0.0.1:8080,[::1]:8080` -> exact (address, port) pairs; a malformed entry raises ValueError."""
    entries = raw.split(",") if isinstance(raw, str) else list(raw)
    pairs: set[tuple[IPAddress, int]] = set()
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        host, sep, port = entry.rpartition(":")
        address = _ip(host)
        if not sep or address is None or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"{ALLOW_ADDRESSES_ENV}: {entry!r} is not an exact address:port pair "
                "such as 127.0.0.1:8080 or [::1]:8080"
            )
        pairs.add((address, int(port)))
    return frozenset(pairs)


@dataclass
class AddressPolicy:
    """Resolves names and keeps only the addresses a session may reach (see the module docstring).

    `allow_addresses` are exact (address, port) pairs that skip the public-address rule (tests only);
    `resolver` replaces the system resolver (tests use it to map names to addresses without /etc/hosts).
    """

    allow_addresses: frozenset[tuple[IPAddress, int]] = frozenset()
    resolver: Resolver = system_resolver
    _own: frozenset[IPAddress] = field(default=frozenset(), init=False)
    _own_read_at: float = field(default=float("-inf"), init=False)

    def __post_init__(self) -> None:
        if self.allow_addresses:
            listed = ", ".join(f"{_format(a)}:{p}" for a, p in sorted(self.allow_addresses, key=str))
            log.warning(
                "%s is set: sessions and web_fetch may reach %s although they are not public addresses "
                "(meant for tests only)",
                ALLOW_ADDRESSES_ENV,
                listed,
            )

    def own_addresses(self) -> frozenset[IPAddress]:
        now = time.monotonic()
        if now - self._own_read_at > _HOST_ADDRESSES_TTL_S:
            self._own = _read_host_addresses()
            self._own_read_at = now
        return self._own

    def refusal(self, address: IPAddress, port: int) -> str | None:
        """Why (address, port) may not be reached, or None."""
        if (address, port) in self.allow_addresses:
            return None
        return address_refusal(address, self.own_addresses())

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """The safe addresses for host:port, in preference order; EgressRefused when there are none."""
        literal = _ip(host)
        if literal is not None:
            candidates = [literal]
        else:
            try:
                resolved = await self.resolver(host, port)
            except OSError as exc:
                raise EgressRefused(f"cannot resolve {host}: {exc}") from exc
            candidates = [a for a in (_ip(r) for r in resolved) if a is not None]
            if not candidates:
                raise EgressRefused(f"cannot resolve {host}: no addresses")
        safe = [a for a in candidates if self.refusal(a, port) is None]
        if not safe:
            reasons = "; ".join(f"{a} is {self.refusal(a, port)}" for a in candidates)
            raise EgressRefused(f"{host} resolves only to addresses a session may never reach ({reasons})")
        return safe


def _format(address: IPAddress) -> str:
    return f"[{address}]" if address.version == 6 else str(address)


@dataclass(frozen=True)
class HostPattern:
    """One allowlist entry: `example.com` (that host), `*.example.com` (any subdomain), either with `:port`."""

    host: str
    subdomains: bool = False
    port: int | None = None

    @classmethod
    def parse(cls, entry: str) -> HostPattern | None:
        text = entry.strip()
        if "://" in text:
            text = urlsplit(text).netloc
        text = text.split("/", 1)[0].rsplit("@", 1)[-1]
        port: int | None = None
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            if rest.startswith(":") and rest[1:].isdigit():
                port = int(rest[1:])
        else:
            host, sep, tail = text.rpartition(":")
            if sep and tail.isdigit() and ":" not in host:
                port = int(tail)
            else:
                host = text
        subdomains = host.startswith("*.") or host.startswith(".")
        host = normalize_host(host.lstrip("*").lstrip("."))
        return cls(host, subdomains, port) if host else None

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.subdomains:
            return host.endswith("." + self.host)
        return host == self.host

    def overlaps(self, other: HostPattern) -> bool:
        """Whether some host matches both patterns, on some port (ports are ignored)."""
        if not self.subdomains and not other.subdomains:
            return self.host == other.host
        if not other.subdomains:
            return other.host.endswith("." + self.host)
        if not self.subdomains:
            return self.host.endswith("." + other.host)
        inner, outer = sorted((self.host, other.host), key=len, reverse=True)
        return inner == outer or inner.endswith("." + outer)


@dataclass(frozen=True)
class HostRules:
    """Which hosts a session's sandbox may reach through the egress proxy."""

    unrestricted: bool = False
    patterns: tuple[HostPattern, ...] = ()

    @classmethod
    def from_networking(cls, networking: dict[str, Any] | None, mcp_hosts: Iterable[str] = ()) -> HostRules:
        """The rules of an environment's resolved `config.networking`; None (no environment) allows nothing."""
        if not networking:
            return cls()
        if networking.get("type") == "unrestricted":
            return cls(unrestricted=True)
        entries = list(networking.get("allowed_hosts") or [])
        if networking.get("allow_package_managers"):
            entries += PACKAGE_MANAGER_HOSTS
        if networking.get("allow_mcp_servers"):
            entries += list(mcp_hosts)
        patterns = tuple(p for p in (HostPattern.parse(e) for e in entries) if p is not None)
        return cls(patterns=tuple(dict.fromkeys(patterns)))

    @property
    def allows_anything(self) -> bool:
        """False when no host at all is allowed: the sandbox then gets no egress socket."""
        return self.unrestricted or bool(self.patterns)

    def allows(self, host: str, port: int) -> bool:
        if self.unrestricted:
            return True
        host = normalize_host(host)
        return any(pattern.matches(host, port) for pattern in self.patterns)

    def reaches(self, entry: str) -> bool:
        """Whether any host an allowlist `entry` names (`api.example.com`, `*.example.com`) may be reached, on
        some port: how a vault credential's `networking.allowed_hosts` is checked against the environment."""
        if self.unrestricted:
            return True
        wanted = HostPattern.parse(entry)
        return wanted is not None and any(pattern.overlaps(wanted) for pattern in self.patterns)


def mcp_server_hosts(mcp_servers: Iterable[dict[str, Any]]) -> frozenset[str]:
    """The hosts (with ports when given) of an agent's MCP server URLs, for `allow_mcp_servers`."""
    hosts: set[str] = set()
    for server in mcp_servers:
        url = server.get("url")
        if isinstance(url, str):
            netloc = urlsplit(url).netloc.rsplit("@", 1)[-1]
            if netloc:
                hosts.add(netloc)
    return frozenset(hosts)


def domain_matches(host: str, domain: str) -> bool:
    """web tools' domain rule: `example.com` matches itself and every subdomain."""
    host, domain = normalize_host(host), normalize_host(domain)
    return bool(domain) and (host == domain or host.endswith("." + domain))
