"""What the egress proxy costs: one HTTP GET with and without it, and the sandbox start with the bridge.

A local HTTP server stands in for the internet (its address allowed as CORRAL_EGRESS_ALLOW_ADDRESSES
would). Each request opens a new TCP connection (as most CLI tools do). Measured:

- `direct`: the host's python to the server, no proxy (the floor);
- `proxy-host`: the host's python to the proxy's unix socket (absolute-URI GET): the proxy's own cost;
- `sandbox-http` / `sandbox-connect`: python inside a sandbox through socat and the proxy, plain HTTP and
  a CONNECT tunnel (what HTTPS clients do);
- `start`: a new session's first `true`, without egress and with it (socat bridge up, proxy socket open).

Run from the repository root (needs bubblewrap; root runs sandboxes as the sandbox user):

    . .venv/bin/activate
    python -m bench.bench_egress            # prints a Markdown table
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import socket
import statistics
import tempfile
import time
from pathlib import Path

from corral.hands.bubblewrap import BubblewrapLauncher
from corral.hands.egress import EgressProxy
from corral.hands.local import LocalHandsProvider
from corral.hands.netpolicy import AddressPolicy, parse_allow_addresses
from corral.hands.provision import Provisioner
from tests.support.local_web import LocalWeb, Response

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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=200, help="requests per measurement")
    parser.add_argument("--starts", type=int, default=30, help="new sessions per start measurement")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.starts))
