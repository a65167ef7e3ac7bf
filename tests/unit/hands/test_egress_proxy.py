"""The egress proxy's own rules, spoken to on a session's socket as the sandbox's bridge would.

What a process in the sandbox can try: keep a connection alive and send a second request on it, frame a body
two ways at once, open many connections, send many large bodies at once, name a loopback address in one of
IPv6's IPv4-carrying forms. Small caps (4 connections, 2 MiB of held bodies, 1 MiB per body) keep it cheap.
A local HTTP server plays "the internet"; a small in-test vault holds a body-substituted credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from corral.hands.net.egress import EgressProxy
from corral.hands.net.policy import AddressPolicy, HostRules, parse_allow_addresses
from corral.vault.credentials import EnvironmentSecret, placeholder_for
from tests.support.local_web import LocalWeb, Response, static_resolver

SESSION = "sesn_proxy"
MIB = 1024 * 1024
MAX_CONNECTIONS = 4
MAX_BUFFERED_BYTES = 2 * MIB
MAX_BODY_BYTES = 1 * MIB
CREDENTIAL_ID = "vcrd_011CProxyTestCredential00"
PLACEHOLDER = placeholder_for(CREDENTIAL_ID).encode()
VALUE = b"the-real-value"


class Vault:
    def __init__(self) -> None:
        self.secrets: list[EnvironmentSecret] = []

    async def read(self, session_id: str) -> list[EnvironmentSecret]:
        return list(self.secrets)

    def hold_body_credential(self) -> None:
        self.secrets = [
            EnvironmentSecret(
                credential_id=CREDENTIAL_ID,
                vault_id="vlt_011CProxyTestVault000000000",
                secret_name="BODY_KEY",
                placeholder=PLACEHOLDER.decode(),
                value=VALUE.decode(),
                allowed_hosts=("allowed.test",),
                header=False,
                body=True,
            )
        ]


@pytest.fixture
def internet() -> Iterator[LocalWeb]:
    with LocalWeb({"/hello": Response(b"hello\n"), "/upload": Response(b"stored\n")}).running() as web:
        yield web


@pytest.fixture
def vault() -> Vault:
    return Vault()


@pytest.fixture
async def proxy(internet: LocalWeb, vault: Vault) -> AsyncIterator[EgressProxy]:
    with tempfile.TemporaryDirectory(prefix="corral-proxy-") as name:  # short: a unix socket path is <= 107 bytes
        addresses = AddressPolicy(
            allow_addresses=parse_allow_addresses(internet.address),
            resolver=static_resolver({"allowed.test": "127.0.0.1", "other.test": "127.0.0.1"}),
        )
        proxy = EgressProxy(
            Path(name) / "egress",
            addresses,
            credentials=vault.read,
            max_connections=MAX_CONNECTIONS,
            max_buffered_bytes=MAX_BUFFERED_BYTES,
            max_body_bytes=MAX_BODY_BYTES,
        )
        yield proxy
        await proxy.close()


@pytest.fixture
async def socket_path(proxy: EgressProxy) -> Path:
    return await proxy.open(SESSION, HostRules.from_networking({"type": "limited", "allowed_hosts": ["allowed.test"]}))


def request(method: str, url: str, *headers: str, body: bytes = b"") -> bytes:
    host = url.split("/")[2]
    lines = [f"{method} {url} HTTP/1.1", f"Host: {host}", *headers, "", ""]
    return "\r\n".join(lines).encode() + body


def post(internet: LocalWeb, body: bytes) -> bytes:
    return request("POST", f"http://allowed.test:{internet.port}/upload", f"Content-Length: {len(body)}", body=body)


async def exchange(socket_path: Path, data: bytes) -> bytes:
    """Send `data` on one connection and read until the proxy closes it."""
    reader, writer = await asyncio.open_unix_connection(str(socket_path))
    writer.write(data)
    with contextlib.suppress(ConnectionError):  # refused before it was all read: the answer is still there
        await writer.drain()
    response = await reader.read()
    writer.close()
    return response


def statuses(response: bytes) -> list[str]:
    return re.findall(r"(?m)^HTTP/1\.[01] (\d{3})", response.decode("latin-1"))


async def until(condition: Callable[[], bool]) -> None:
    """Wait for the proxy to reach a state (a test that never gets there fails here, not later)."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the proxy never got there"
        await asyncio.sleep(0.005)


async def test_a_second_request_on_a_kept_alive_connection_never_reaches_the_upstream(
    socket_path: Path, internet: LocalWeb
) -> None:
    allowed = request("GET", f"http://allowed.test:{internet.port}/hello", "Connection: keep-alive")
    not_allowed = request("GET", f"http://other.test:{internet.port}/secret")
    origin_form = b"GET /secret HTTP/1.1\r\nHost: other.test\r\n\r\n"

    response = await exchange(socket_path, allowed + not_allowed + origin_form)

    assert statuses(response) == ["200"]
    assert b"\r\nConnection: close\r\n" in response
    assert internet.paths() == ["/hello"]


async def test_a_body_framed_both_ways_is_refused_before_anything_is_sent(
    socket_path: Path, internet: LocalWeb
) -> None:
    smuggling = request(
        "POST",
        f"http://allowed.test:{internet.port}/upload",
        "Content-Length: 4",
        "Transfer-Encoding: chunked",
        body=b"0\r\n\r\nGET /secret HTTP/1.1\r\n\r\n",
    )

    response = await exchange(socket_path, smuggling)

    assert statuses(response) == ["400"]
    assert b"both Transfer-Encoding and Content-Length" in response
    assert internet.requests == []


async def test_a_body_in_a_transfer_coding_other_than_chunked_is_refused_before_anything_is_sent(
    socket_path: Path, internet: LocalWeb
) -> None:
    gzipped = request(
        "POST", f"http://allowed.test:{internet.port}/upload", "Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"
    )

    response = await exchange(socket_path, gzipped)

    assert statuses(response) == ["501"]
    assert b"Only Transfer-Encoding: chunked is supported" in response
    assert internet.requests == []


async def test_a_malformed_request_head_is_refused_with_400_saying_why(socket_path: Path, internet: LocalWeb) -> None:
    folded = f"GET http://allowed.test:{internet.port}/hello HTTP/1.1\r\nHost allowed.test\r\n\r\n".encode()

    response = await exchange(socket_path, folded)

    assert statuses(response) == ["400"]
    assert b"Corral egress proxy: malformed request" in response
    assert internet.requests == []


async def test_a_chunked_body_streams_through_as_chunks(socket_path: Path, internet: LocalWeb) -> None:
    chunked = request(
        "POST",
        f"http://allowed.test:{internet.port}/upload",
        "Transfer-Encoding: chunked",
        body=b"6;ext=1\r\nhello \r\n5\r\nworld\r\n0\r\nX-Trailer: dropped\r\n\r\n",
    )

    response = await exchange(socket_path, chunked)

    assert statuses(response) == ["200"]
    (sent,) = internet.requests
    assert sent.body == b"hello world"
    assert sent.headers["transfer-encoding"] == "chunked"


async def test_connections_over_the_sessions_cap_get_503_at_once(
    proxy: EgressProxy, socket_path: Path, internet: LocalWeb
) -> None:
    held = [await asyncio.open_unix_connection(str(socket_path)) for _ in range(MAX_CONNECTIONS)]
    await until(lambda: proxy.usage(SESSION).connections == MAX_CONNECTIONS)

    refused = await exchange(socket_path, request("GET", f"http://allowed.test:{internet.port}/hello"))

    assert statuses(refused) == ["503"]
    assert f"already has {MAX_CONNECTIONS} connections open".encode() in refused
    assert b"\r\nRetry-After: 1\r\n" in refused
    for _, writer in held:
        writer.close()
    await until(lambda: proxy.usage(SESSION).connections == 0)
    assert statuses(await exchange(socket_path, request("GET", f"http://allowed.test:{internet.port}/hello"))) == [
        "200"
    ]


async def test_bodies_held_for_substitution_wait_for_room_in_the_sessions_budget(
    proxy: EgressProxy, socket_path: Path, internet: LocalWeb, vault: Vault
) -> None:
    vault.hold_body_credential()
    body = (PLACEHOLDER + b"x" * MAX_BODY_BYTES)[:MAX_BODY_BYTES]
    head, _, _ = post(internet, body).partition(b"\r\n\r\n")
    clients = [await asyncio.open_unix_connection(str(socket_path)) for _ in range(MAX_CONNECTIONS)]
    for _, writer in clients:
        writer.write(head + b"\r\n\r\n")  # the heads only: each body is held (or waits for room) until it is read
    await until(lambda: proxy.usage(SESSION).buffered_bytes == MAX_BUFFERED_BYTES)

    async def finish(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        writer.write(body)
        await writer.drain()
        return await reader.read()

    responses = await asyncio.gather(*(finish(reader, writer) for reader, writer in clients))

    assert [statuses(response) for response in responses] == [["200"]] * MAX_CONNECTIONS
    assert [sent.body[: len(VALUE)] for sent in internet.requests] == [VALUE] * MAX_CONNECTIONS
    assert proxy.usage(SESSION).peak_buffered_bytes == MAX_BUFFERED_BYTES
    assert proxy.usage(SESSION).buffered_bytes == 0


async def test_a_flood_of_large_bodies_is_refused_or_relayed_never_held_past_the_budget(
    proxy: EgressProxy, socket_path: Path, internet: LocalWeb, vault: Vault
) -> None:
    vault.hold_body_credential()
    body = (PLACEHOLDER + b"x" * MIB)[: MIB // 2]

    responses = await asyncio.gather(*(exchange(socket_path, post(internet, body)) for _ in range(12)))

    answers = [statuses(response) for response in responses]
    assert all(answer in (["200"], ["503"]) for answer in answers)
    assert len(internet.requests) == answers.count(["200"])
    assert all(b"connections open" in response for response in responses if statuses(response) == ["503"])
    assert proxy.usage(SESSION).peak_buffered_bytes <= MAX_BUFFERED_BYTES


async def test_a_body_over_the_substitution_limit_streams_through_unchanged(
    proxy: EgressProxy, socket_path: Path, internet: LocalWeb, vault: Vault
) -> None:
    vault.hold_body_credential()
    body = (PLACEHOLDER + b"x" * 2 * MAX_BODY_BYTES)[: MAX_BODY_BYTES + MAX_BODY_BYTES // 2]

    response = await exchange(socket_path, post(internet, body))

    assert statuses(response) == ["200"]
    (sent,) = internet.requests
    assert sent.body == body
    assert proxy.usage(SESSION).peak_buffered_bytes == 0


@pytest.mark.parametrize(
    "address",
    [
        "::7f00:1",  # IPv4-compatible
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:0:7f00:1",  # IPv4-translated
        "64:ff9b::7f00:1",  # NAT64
        "2002:7f00:1::1",  # 6to4
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    ],
)
async def test_loopback_in_every_ipv6_form_is_refused(proxy: EgressProxy, internet: LocalWeb, address: str) -> None:
    socket_path = await proxy.open(SESSION, HostRules(unrestricted=True))

    tunnel = await exchange(
        socket_path,
        f"CONNECT [{address}]:{internet.port} HTTP/1.1\r\nHost: [{address}]:{internet.port}\r\n\r\n".encode(),
    )
    plain = await exchange(socket_path, request("GET", f"http://[{address}]:{internet.port}/hello"))

    for response in (tunnel, plain):
        assert statuses(response) == ["403"]
        assert b"a loopback address (127.0.0.1 embedded in" in response
    assert internet.requests == []
