"""What the egress proxy costs: one HTTP GET with and without it, and the sandbox start with the bridge.

A local HTTP server stands in for the internet (its address allowed as CORRAL_EGRESS_ALLOW_ADDRESSES
would). Each request opens a new TCP connection (as most CLI tools do). Measured:

- `direct`: the host's python to the server, no proxy (the floor);
- `proxy-host`: the host's python to the proxy's unix socket (absolute-URI GET): the proxy's own cost;
- `sandbox-http` / `sandbox-connect`: python inside a sandbox through socat and the proxy, plain HTTP and
  a CONNECT tunnel (what HTTPS clients do);
- `start`: a new session's first `true`, without egress and with it (socat bridge up, proxy socket open).

`--tls`: what intercepting HTTPS for a vault credential adds (no sandbox needed): the host's python through the
proxy's unix socket to a local HTTPS server (a certificate from a test CA the proxy trusts upstream), a new
connection per request, `CONNECT` then TLS then one GET; `tunnel` to a host no credential names (one TLS
handshake, end to end), `intercepted` to a host one names (the proxy's handshake with the client, its own
verified one upstream, the header substituted).

Run from the repository root (needs bubblewrap; root runs sandboxes as the sandbox user):

    . .venv/bin/activate
    python -m bench.bench_egress            # prints Markdown tables (latency, then the flood)
    python -m bench.bench_egress --flood    # the flood only (no sandbox needed)
    python -m bench.bench_egress --tls      # intercepted HTTPS vs a plain tunnel only (no sandbox needed)

The flood (`--flood`): the proxy runs alone in a child process, as in the server, for one session whose vault
holds a body-substituted credential for the target host; `--connections` clients (250) each open a connection
to the session's socket at once and POST an 8 MiB body (Content-Length) to a sink on loopback that reads and
discards it. Recorded: the child's RSS idle (after one warm-up request), its peak (VmHWM) and after, the
statuses the clients got, and the proxy's own peak of buffered body bytes where it reports one. A second row
does the same without the credential (bodies the proxy only streams).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import socket
import ssl
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from corral.hands.local import LocalHandsProvider
from corral.hands.net.ca import EgressCA, server_context
from corral.hands.net.egress import EgressProxy
from corral.hands.net.policy import AddressPolicy, HostRules, parse_allow_addresses
from corral.hands.sandbox.bubblewrap import BubblewrapLauncher
from corral.hands.sandbox.provision import Provisioner
from corral.vault.credentials import EnvironmentSecret, placeholder_for
from corral.vault.crypto import SecretBox
from tests.support.local_web import LocalWeb, Response, static_resolver

_IN_SANDBOX = """
import http.client, json, time
def run(n, tunnel):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        c = http.client.HTTPConnection("127.0.0.1", 3128, timeout=10)
        if tunnel:
            c.set_tunnel("{host}", {port})
            c.request("GET", "/hello")
        else:
            c.request("GET", "http://{host}:{port}/hello")
        assert c.getresponse().read()
        c.close()
        out.append((time.perf_counter() - t) * 1000)
    return out
print(json.dumps({{"http": run({n}, False), "connect": run({n}, True)}}))
"""


def _percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95, statistics.fmean(ordered)


def _direct(port: int, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/hello")
        connection.getresponse().read()
        connection.close()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def _via_socket(socket_path: Path, port: int, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(socket_path))
            sock.sendall(f"GET http://127.0.0.1:{port}/hello HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            while sock.recv(65536):
                pass
        samples.append((time.perf_counter() - start) * 1000)
    return samples


async def main(n: int, starts: int) -> None:
    rows: list[tuple[str, list[float]]] = []
    with LocalWeb({"/hello": Response(b"x" * 512)}).running() as web, tempfile.TemporaryDirectory() as name:
        data = Path(name)
        await asyncio.to_thread(data.chmod, 0o711)  # the sandbox user must reach the workspaces below it
        launcher = BubblewrapLauncher.detect(data / "workspaces")
        owner = (launcher.identity.uid, launcher.identity.gid)
        policy = AddressPolicy(allow_addresses=parse_allow_addresses(web.address))
        egress = EgressProxy(data / "egress", policy, owner=owner)
        provider = LocalHandsProvider(
            data / "workspaces", launcher=launcher, owner=owner, provisioner=Provisioner(egress=egress)
        )
        open_env = {"type": "cloud", "networking": {"type": "unrestricted"}}
        closed_env = {"type": "cloud", "networking": {"type": "limited", "allowed_hosts": []}}
        try:
            rows.append(("direct (host, no proxy)", await asyncio.to_thread(_direct, web.port, n)))
            hands = provider.for_session("sesn_bench", open_env)
            script = _IN_SANDBOX.format(host="127.0.0.1", port=web.port, n=n)
            result = await hands.execute("bash", {"command": f"python3 -c '{script}'"})
            measured = json.loads(str(result.content[0]["text"]))
            socket_path = egress.socket_path("sesn_bench")
            rows.append(
                ("proxy-host (unix socket, no socat)", await asyncio.to_thread(_via_socket, socket_path, web.port, n))
            )
            rows.append(("sandbox-http (socat + proxy)", measured["http"]))
            rows.append(("sandbox-connect (socat + proxy, tunnel)", measured["connect"]))
            for label, env in (("start, no egress", closed_env), ("start, with egress", open_env)):
                samples = []
                for index in range(starts):
                    session = f"sesn_start_{label[7:9]}_{index}"
                    start = time.perf_counter()
                    await provider.for_session(session, env).execute("bash", {"command": "true"})
                    samples.append((time.perf_counter() - start) * 1000)
                    await provider.destroy(session)
                rows.append((f"first command of a new session ({label})", samples))
        finally:
            await provider.close()
    print("| measurement | n | p50 ms | p95 ms | mean ms |\n|---|---:|---:|---:|---:|")
    for label, samples in rows:
        p50, p95, mean = _percentiles(samples)
        print(f"| {label} | {len(samples)} | {p50:.2f} | {p95:.2f} | {mean:.2f} |")


# -- intercepted HTTPS vs a plain tunnel -------------------------------------------------------

_TLS_SESSION = "sesn_tls_bench"
_TLS_CREDENTIAL = "vcrd_011CBenchTlsCredential000"


def _https_gets(socket_path: Path, host: str, port: int, trusted: ssl.SSLContext, n: int) -> list[float]:
    """n GETs through the proxy's socket, each on a new connection: CONNECT, TLS, one request, read to the end."""
    placeholder = placeholder_for(_TLS_CREDENTIAL)
    request = (
        f"GET /hello HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {placeholder}\r\nConnection: close\r\n\r\n"
    ).encode()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        with socket.socket(socket.AF_UNIX) as raw:
            raw.connect(str(socket_path))
            raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            answer = b""
            while not answer.endswith(b"\r\n\r\n"):
                answer += raw.recv(1)
            assert answer.startswith(b"HTTP/1.1 200"), answer
            with trusted.wrap_socket(raw, server_hostname=host) as secure:
                secure.sendall(request)
                while secure.recv(65536):
                    pass
        samples.append((time.perf_counter() - start) * 1000)
    return samples


async def tls(n: int) -> None:
    upstream_ca, proxy_box = EgressCA.generate("bench upstream CA"), SecretBox(os.urandom(32))
    with tempfile.TemporaryDirectory() as name:
        data = Path(name)
        (data / "upstream-ca.pem").write_bytes(upstream_ca.cert_pem)
        proxy_ca = EgressCA.load_or_create(data, proxy_box)
        trusted = ssl.create_default_context(cadata=(upstream_ca.cert_pem + proxy_ca.cert_pem).decode())
        issued = upstream_ca.issue("api.test", "plain.test")
        with LocalWeb({"/hello": Response(b"x" * 512)}).running() as web:
            web._server.socket = server_context(issued).wrap_socket(
                web._server.socket, server_side=True, do_handshake_on_connect=False
            )
            secret = EnvironmentSecret(
                credential_id=_TLS_CREDENTIAL,
                vault_id="vlt_011CBenchVault0000000000",
                secret_name="API_KEY",
                placeholder=placeholder_for(_TLS_CREDENTIAL),
                value="bench-secret-value",
                allowed_hosts=("api.test",),
                header=True,
                body=False,
            )

            async def credentials(session_id: str) -> list[EnvironmentSecret]:
                return [secret]

            policy = AddressPolicy(
                allow_addresses=parse_allow_addresses(web.address),
                resolver=static_resolver({"api.test": "127.0.0.1", "plain.test": "127.0.0.1"}),
            )
            egress = EgressProxy(
                data / "egress", policy, credentials=credentials, ca=proxy_ca, upstream_ca=data / "upstream-ca.pem"
            )
            try:
                path = await egress.open(_TLS_SESSION, HostRules.from_networking({"type": "unrestricted"}, ()))
                rows = []
                for label, host in (
                    ("tunnel (no credential names the host)", "plain.test"),
                    ("intercepted", "api.test"),
                ):
                    await asyncio.to_thread(_https_gets, path, host, web.port, trusted, 5)  # warm-up (leaf minted)
                    rows.append((label, await asyncio.to_thread(_https_gets, path, host, web.port, trusted, n)))
                assert web.requests[-1].headers["authorization"] == "Bearer bench-secret-value"
            finally:
                await egress.close()
    print("| HTTPS GET through the proxy (new connection each) | n | p50 ms | p95 ms | mean ms |")
    print("|---|---:|---:|---:|---:|")
    for label, samples in rows:
        p50, p95, mean = _percentiles(samples)
        print(f"| {label} | {len(samples)} | {p50:.2f} | {p95:.2f} | {mean:.2f} |")
    added = _percentiles(rows[1][1])[0] - _percentiles(rows[0][1])[0]
    print(f"\nadded by interception (p50): {added:.2f} ms")


# -- the flood ---------------------------------------------------------------------------------

_FLOOD_SESSION = "sesn_flood"
_FLOOD_HOST = "sink.test"
_CREDENTIAL_ID = "vcrd_011CBenchFloodCredential00"


async def _run_proxy_child(directory: Path, sink_port: int, with_credential: bool) -> None:
    """The child: one session's egress socket; prints its path, then its usage when stdin closes."""
    secret = EnvironmentSecret(
        credential_id=_CREDENTIAL_ID,
        vault_id="vlt_011CBenchFloodVault00000000",
        secret_name="FLOOD_KEY",
        placeholder=placeholder_for(_CREDENTIAL_ID),
        value="the-real-value",
        allowed_hosts=(_FLOOD_HOST,),
        header=False,
        body=True,
    )

    async def credentials(session_id: str) -> list[EnvironmentSecret]:
        return [secret] if with_credential else []

    policy = AddressPolicy(
        allow_addresses=parse_allow_addresses(f"127.0.0.1:{sink_port}"),
        resolver=static_resolver({_FLOOD_HOST: "127.0.0.1"}),
    )
    proxy = EgressProxy(directory, policy, credentials=credentials)
    print(await proxy.open(_FLOOD_SESSION, HostRules(unrestricted=True)), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    usage = getattr(proxy, "usage", None)  # absent before the proxy reported one
    with contextlib.suppress(BrokenPipeError):  # the parent gave up
        print(json.dumps(usage(_FLOOD_SESSION).__dict__ if usage else {}), flush=True)
    await proxy.close()


async def _sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An upstream that reads a request with a Content-Length, discards its body and answers 200."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        while length > 0:
            chunk = await reader.read(min(length, 1 << 20))
            if not chunk:
                break
            length -= len(chunk)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _post(socket_path: Path, port: int, body: bytes) -> str:
    """One client: POST `body` through the proxy, reading the answer while it sends (as curl does: it stops
    sending at an early answer); the status it got, or 'reset' when the connection was cut first."""
    try:
        # A blocking connect, as socat's in the sandbox: it waits while the listen backlog is full (asyncio's
        # non-blocking one would take EAGAIN on a unix socket for a connection in progress, and never connect).
        sock = socket.socket(socket.AF_UNIX)
        await asyncio.to_thread(sock.connect, str(socket_path))
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        head = (
            f"POST http://{_FLOOD_HOST}:{port}/upload HTTP/1.1\r\nHost: {_FLOOD_HOST}:{port}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )

        async def send() -> None:
            writer.write(head.encode())
            with memoryview(body) as view:
                for offset in range(0, len(body), 1 << 20):
                    writer.write(view[offset : offset + (1 << 20)])
                    await writer.drain()

        sending = asyncio.ensure_future(send())
        try:
            status_line = await reader.readline()
        finally:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            writer.close()
    except OSError:
        return "reset"
    status = status_line.split(b" ", 2)[1:2]
    return status[0].decode() if status else "reset"


def _memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


async def _flood_once(connections: int, body_bytes: int, with_credential: bool) -> dict[str, object]:
    sink = await asyncio.start_server(_sink, "127.0.0.1", 0)
    sink_port = sink.sockets[0].getsockname()[1]
    with tempfile.TemporaryDirectory() as name:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.bench_egress",
            "--proxy-child",
            name,
            str(sink_port),
            *(["--with-credential"] if with_credential else []),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert child.stdin is not None and child.stdout is not None
        try:
            socket_path = Path((await child.stdout.readline()).decode().strip())
            await _post(socket_path, sink_port, b"warm-up")
            idle = _memory_kib(child.pid)
            body = (placeholder_for(_CREDENTIAL_ID).encode() + b"x" * body_bytes)[:body_bytes]
            start = time.perf_counter()
            statuses = await asyncio.wait_for(
                asyncio.gather(*(_post(socket_path, sink_port, body) for _ in range(connections))), 300
            )
            elapsed = time.perf_counter() - start
            after = _memory_kib(child.pid)
            child.stdin.close()
            usage = json.loads((await child.stdout.readline()).decode() or "{}")
        finally:
            if not child.stdin.is_closing():
                child.stdin.close()
            await asyncio.wait_for(child.wait(), 30)
            sink.close()
    return {
        "idle_rss_mib": idle["VmRSS"] / 1024,
        "peak_rss_mib": after["VmHWM"] / 1024,
        "after_rss_mib": after["VmRSS"] / 1024,
        "statuses": dict(sorted(Counter(statuses).items())),
        "seconds": elapsed,
        "peak_buffered_mib": usage.get("peak_buffered_bytes", 0) / (1 << 20) if usage else None,
    }


async def flood(connections: int, body_mib: int) -> None:
    print(
        f"\nFlood: {connections} connections at once, each POSTing a {body_mib} MiB body (Content-Length) "
        "through one session's egress socket; the proxy alone in a child process.\n"
    )
    print(
        "| case | idle RSS MiB | peak RSS MiB | RSS after MiB | proxy's peak buffered MiB | statuses | seconds |\n"
        "|---|---:|---:|---:|---:|---|---:|"
    )
    for label, with_credential in (("body credential (bodies read to substitute)", True), ("no credential", False)):
        row = await _flood_once(connections, body_mib << 20, with_credential)
        statuses = ", ".join(f"{status}: {count}" for status, count in row["statuses"].items())  # type: ignore[attr-defined]
        buffered = row["peak_buffered_mib"]
        print(
            f"| {label} | {row['idle_rss_mib']:.0f} | {row['peak_rss_mib']:.0f} | {row['after_rss_mib']:.0f} | "
            f"{'n/a' if buffered is None else f'{buffered:.0f}'} | {statuses} | {row['seconds']:.1f} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=200, help="requests per measurement")
    parser.add_argument("--starts", type=int, default=30, help="new sessions per start measurement")
    parser.add_argument("--flood", action="store_true", help="run only the flood (no sandbox needed)")
    parser.add_argument("--connections", type=int, default=250, help="flood: connections at once")
    parser.add_argument("--body-mib", type=int, default=8, help="flood: MiB per request body")
    parser.add_argument("--tls", action="store_true", help="run only intercepted HTTPS vs a tunnel")
    parser.add_argument("--proxy-child", nargs=2, metavar=("DIR", "SINK_PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--with-credential", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.proxy_child:
        asyncio.run(_run_proxy_child(Path(args.proxy_child[0]), int(args.proxy_child[1]), args.with_credential))
    elif args.tls:
        asyncio.run(tls(args.n))
    else:
        if not args.flood:
            asyncio.run(main(args.n, args.starts))
        asyncio.run(flood(args.connections, args.body_mib))
