"""Vault credentials in HTTPS requests: the egress proxy ends TLS for the hosts a credential names (and only them).

A local HTTPS server stands in for an API: on loopback (admitted the way CORRAL_EGRESS_ALLOW_ADDRESSES does),
its certificate signed by a test CA that the proxy trusts upstream (as CORRAL_EGRESS_UPSTREAM_CA does), and it
echoes what it received. curl, Python and Node inside a real sandbox reach it through the proxy unchanged.
"""

from __future__ import annotations

import http.server
import json
import os
import secrets
import shlex
import shutil
import ssl
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from corral.hands.local import LocalHandsProvider
from corral.hands.net.ca import CAError, EgressCA
from corral.hands.net.egress import EgressProxy
from corral.hands.net.policy import AddressPolicy, parse_allow_addresses
from corral.hands.sandbox.bubblewrap import BubblewrapLauncher
from corral.hands.sandbox.provision import Provisioner
from corral.vault.credentials import EnvironmentSecret, placeholder_for
from corral.vault.crypto import SecretBox
from tests.support.local_web import static_resolver

SESSION = "sesn_tls"
CREDENTIAL_ID = "vcrd_011CTlsCredential00000000"
HOSTS = {"api.test": "127.0.0.1", "other.test": "127.0.0.1", "impostor.test": "127.0.0.1"}


class EchoServer:
    """An HTTPS server on loopback that answers each request with what it received, as JSON, and records it."""

    def __init__(self, issued_pem: bytes) -> None:
        self.received: list[dict[str, str]] = []
        echo = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._echo(b"")

            def do_POST(self) -> None:
                self._echo(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def _echo(self, body: bytes) -> None:
                seen = {"path": self.path, "body": body.decode(), **{k.lower(): v for k, v in self.headers.items()}}
                echo.received.append(seen)
                answer = json.dumps(seen).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.NamedTemporaryFile(suffix=".pem") as chain:
            chain.write(issued_pem)
            chain.flush()
            context.load_cert_chain(chain.name)
        # The handshake happens in each request's thread, so a client that never speaks blocks nobody.
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True, do_handshake_on_connect=False)
        self.port = int(self._server.server_address[1])

    def values_seen(self, value: str) -> int:
        return sum(value in json.dumps(request) for request in self.received)

    @contextmanager
    def running(self) -> Iterator[EchoServer]:
        thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(timeout=5)


def credential(value: str, hosts: tuple[str, ...] | None = ("api.test",)) -> EnvironmentSecret:
    return EnvironmentSecret(
        credential_id=CREDENTIAL_ID,
        vault_id="vlt_011CTlsVault000000000000",
        secret_name="API_KEY",
        placeholder=placeholder_for(CREDENTIAL_ID),
        value=value,
        allowed_hosts=hosts,
        header=True,
        body=True,
    )


class Vault:
    def __init__(self) -> None:
        self.secrets: list[EnvironmentSecret] = []

    async def read(self, session_id: str) -> list[EnvironmentSecret]:
        return list(self.secrets) if session_id == SESSION else []


@pytest.fixture(scope="module")
def upstream_ca() -> EgressCA:
    """The test's stand-in for a public root: it signs the echo server's certificate."""
    return EgressCA.generate("Corral test upstream CA")


@pytest.fixture
def api(upstream_ca: EgressCA) -> Iterator[EchoServer]:
    issued = upstream_ca.issue("api.test", "other.test")  # not impostor.test: its certificate does not verify
    with EchoServer(issued.cert_pem + issued.key_pem).running() as server:
        yield server


@pytest.fixture
def vault() -> Vault:
    return Vault()


@pytest.fixture
async def provider(
    api: EchoServer, vault: Vault, data_dir: Path, upstream_ca: EgressCA
) -> AsyncIterator[LocalHandsProvider]:
    launcher = BubblewrapLauncher.detect(data_dir / "workspaces")
    owner = (launcher.identity.uid, launcher.identity.gid)
    upstream_roots = data_dir / "upstream-ca.pem"
    upstream_roots.write_bytes(upstream_ca.cert_pem)
    addresses = AddressPolicy(
        allow_addresses=parse_allow_addresses(f"127.0.0.1:{api.port}"), resolver=static_resolver(HOSTS)
    )
    egress = EgressProxy(
        data_dir / "egress",
        addresses,
        owner=owner,
        ca=EgressCA.load_or_create(data_dir, SecretBox(os.urandom(32))),
        upstream_ca=upstream_roots,
    )
    provisioner = Provisioner(egress=egress, credentials=vault.read)
    provider = LocalHandsProvider(data_dir / "workspaces", launcher=launcher, owner=owner, provisioner=provisioner)
    yield provider
    await provider.close()


async def bash(provider: LocalHandsProvider, command: str) -> str:
    environment = {"type": "cloud", "networking": {"type": "limited", "allowed_hosts": list(HOSTS)}}
    result = await provider.for_session(SESSION, environment).execute("bash", {"command": command})
    return str(result.content[0]["text"])


def new_value() -> str:
    return f"value-{secrets.token_hex(16)}"


async def test_curl_over_https_sends_the_value_where_the_placeholder_was(
    provider: LocalHandsProvider, vault: Vault, api: EchoServer
) -> None:
    value = new_value()
    vault.secrets = [credential(value)]

    out = await bash(provider, f'curl -sS -H "Authorization: Bearer $API_KEY" https://api.test:{api.port}/v1/me')

    assert api.received[-1]["authorization"] == f"Bearer {value}"
    assert json.loads(out)["host"] == f"api.test:{api.port}"


async def test_python_and_node_reach_an_intercepted_host_unchanged(
    provider: LocalHandsProvider, vault: Vault, api: EchoServer
) -> None:
    value = new_value()
    vault.secrets = [credential(value)]
    url = f"https://api.test:{api.port}/v1/python"
    python = (
        "import os, urllib.request; "
        f"request = urllib.request.Request({url!r}, data=os.environ['API_KEY'].encode(), method='POST'); "
        "print(urllib.request.urlopen(request).status)"
    )
    # Node has no proxy support of its own (before 24): CONNECT by hand, then TLS trusting NODE_EXTRA_CA_CERTS.
    node = f"""
const http = require('http'), tls = require('tls');
http.request({{host: '127.0.0.1', port: 3128, method: 'CONNECT', path: 'api.test:{api.port}'}})
  .on('connect', (res, socket) => {{
    const secure = tls.connect({{socket, servername: 'api.test'}}, () => secure.write(
      `GET /v1/node HTTP/1.1\\r\\nHost: api.test\\r\\nX-Key: ${{process.env.API_KEY}}\\r\\n\\r\\n`));
    let answer = '';
    secure.on('data', (data) => {{ answer += data; }});
    secure.on('end', () => console.log(answer.split('\\r\\n')[0]));
    secure.on('error', (error) => console.log('error', error.message));
  }}).end();
"""

    python_out = await bash(provider, f"python3 -c {shlex.quote(python)}")
    node_out = await bash(provider, f"node -e {shlex.quote(node)} 2>&1")

    assert python_out.strip() == "200"
    assert node_out.strip() == "HTTP/1.1 200 OK"
    assert [request["path"] for request in api.received] == ["/v1/python", "/v1/node"]
    assert api.received[0]["body"] == value
    assert api.received[1]["x-key"] == value


async def test_the_sandbox_never_holds_the_value_only_the_echo_of_it(
    provider: LocalHandsProvider, vault: Vault, api: EchoServer
) -> None:
    value = new_value()
    vault.secrets = [credential(value)]

    await bash(provider, f'curl -sS -o /workspace/echo.json -H "X-Key: $API_KEY" https://api.test:{api.port}/echo')
    # A pattern that matches the value without holding it, so that the search's own command line does not.
    pattern = f"[{value[0]}]{value[1:]}"
    found = await bash(
        provider,
        "echo in-processes: $( (env; cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline) 2>/dev/null "
        f"| grep -c '{pattern}'); "
        f"grep -rl '{pattern}' /workspace /tmp /run /etc 2>/dev/null; true",
    )

    assert api.values_seen(value) == 1
    assert found.split() == ["in-processes:", "0", "/workspace/echo.json"]


async def test_a_host_no_credential_names_gets_an_untouched_tunnel(
    provider: LocalHandsProvider, vault: Vault, api: EchoServer, upstream_ca: EgressCA
) -> None:
    vault.secrets = [credential(new_value())]
    # Verified against the test's upstream CA alone: only the server's own certificate passes.
    await bash(provider, f"cat > /workspace/upstream-ca.pem <<'EOF'\n{upstream_ca.cert_pem.decode()}EOF")
    python = (
        "import http.client, ssl; "
        "context = ssl.create_default_context(cafile='/workspace/upstream-ca.pem'); "
        "c = http.client.HTTPSConnection('127.0.0.1', 3128, context=context); "
        f"c.set_tunnel('other.test', {api.port}); "
        "c.request('GET', '/plain', headers={'X-Key': __import__('os').environ['API_KEY']}); "
        "print(c.getresponse().status, c.sock.getpeercert()['issuer'])"
    )

    out = await bash(provider, f"python3 -c {shlex.quote(python)}")

    assert out.startswith("200") and "Corral test upstream CA" in out
    assert api.received[-1]["x-key"] == placeholder_for(CREDENTIAL_ID)


async def test_an_upstream_whose_certificate_does_not_verify_is_refused_with_the_reason(
    provider: LocalHandsProvider, vault: Vault, api: EchoServer
) -> None:
    vault.secrets = [credential(new_value(), hosts=("impostor.test",))]

    out = await bash(
        provider,
        f"exec 3<>/dev/tcp/127.0.0.1/3128; authority=impostor.test:{api.port}; "
        "printf 'CONNECT %s HTTP/1.1\\r\\nHost: %s\\r\\n\\r\\n' $authority $authority >&3; cat <&3",
    )

    assert out.startswith("HTTP/1.1 502")
    assert "certificate that does not verify" in out and "Hostname mismatch" in out
    assert api.received == []


async def test_a_credential_removed_mid_session_is_not_injected_in_the_next_request(
    provider: LocalHandsProvider, vault: Vault, api: EchoServer
) -> None:
    value = new_value()
    vault.secrets = [credential(value)]
    command = f'curl -sS -o /dev/null -w "%{{http_code}}" -H "X-Key: $API_KEY" https://api.test:{api.port}/key'
    assert (await bash(provider, command)).strip() == "200"

    vault.secrets = []
    again = await bash(provider, f'{command}; echo " exit $?"')

    # An untouched tunnel now: the sandbox meets the server's own certificate, which it has no reason to trust.
    assert again.strip().endswith("exit 60")
    assert api.values_seen(value) == 1


async def test_a_session_without_a_named_host_credential_gets_the_system_trust_store_only(
    provider: LocalHandsProvider, vault: Vault
) -> None:
    vault.secrets = [credential(new_value(), hosts=None)]

    out = await bash(provider, 'echo "${SSL_CERT_FILE:-unset} $REQUESTS_CA_BUNDLE"; ls /run/corral')

    assert out.split() == ["unset", "/etc/ssl/certs/ca-certificates.crt", "egress.sock"]


def test_the_ca_key_is_stored_sealed_and_opens_only_with_the_vault_key(data_dir: Path) -> None:
    key = os.urandom(32)
    ca = EgressCA.load_or_create(data_dir, SecretBox(key))
    stored = (data_dir / "egress-ca" / "ca.key.sealed").read_text()

    assert "PRIVATE KEY" not in stored
    assert EgressCA.load_or_create(data_dir, SecretBox(key)).cert_pem == ca.cert_pem
    with pytest.raises(CAError, match="delete that directory"):
        EgressCA.load_or_create(data_dir, SecretBox(os.urandom(32)))


def test_a_deleted_ca_directory_is_replaced_by_a_new_ca(data_dir: Path) -> None:
    box = SecretBox(os.urandom(32))
    first = EgressCA.load_or_create(data_dir, box)
    shutil.rmtree(data_dir / "egress-ca")

    second = EgressCA.load_or_create(data_dir, box)

    assert second.cert_pem != first.cert_pem
    assert second.bundle_path is not None and second.bundle_path.read_bytes().endswith(second.cert_pem)


async def test_a_request_the_proxy_cannot_forward_is_answered_inside_the_clients_tls(
    provider: LocalHandsProvider, vault: Vault, api: EchoServer
) -> None:
    vault.secrets = [credential(new_value())]

    out = await bash(provider, f"curl -sS -X OPTIONS --request-target '*' https://api.test:{api.port}/")

    assert "expected an origin-form request" in out
    assert api.received == []
