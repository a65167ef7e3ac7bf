"""The egress proxy: the only way out of a session's sandbox, run inside the server process.

A sandbox has no network interface but `lo`. When its environment allows any egress, the session gets its
own unix socket (`<data>/egress/<session>/proxy.sock`, reachable only by the sandbox user), bind-mounted
into the sandbox, where `socat` bridges `127.0.0.1:3128` to it and `HTTP(S)_PROXY` point there. The
socket a connection arrives on is what identifies the session, so the sandbox holds no proxy credential.

The proxy speaks HTTP/1.1 proxying: `CONNECT host:port` (HTTPS and any other TLS: an opaque tunnel) and
absolute-URI requests (`GET http://host/path`, plain HTTP, one request per connection). For each it checks
the host against the session's `HostRules`, resolves the name itself, keeps only public addresses
(`AddressPolicy`) and connects to exactly the address it checked. A refusal is a `403` whose body says
why and how to allow it, and a log line.

Vault credentials of type `environment_variable` (spec §10): the sandbox's variable holds only a placeholder
(`corral.vault.credentials.placeholder_for`). In a plain-HTTP request to a host that both the environment
and the credential's `networking` allow, the proxy puts the real value where the placeholder appears: in
header values (`injection_location.header`) and in the body (`.body`; bodies up to `_BODY_LIMIT` are read
whole and re-sent with a new Content-Length, larger ones pass unchanged). It reads the credentials at each
request, so an updated value applies at once. A CONNECT tunnel is never opened: HTTPS carries the
placeholder unchanged (substituting there would mean intercepting TLS), so the real value never reaches
anything the sandbox can read, but it is only applied to plain-HTTP requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from corral.hands.netpolicy import AddressPolicy, EgressRefused, HostRules, IPAddress, normalize_host
from corral.vault.credentials import EnvironmentSecret

log = logging.getLogger("corral.egress")

# Session id -> its `environment_variable` credentials, read when asked (`VaultAccess.session_environment_secrets`).
CredentialSource = Callable[[str], Awaitable[Sequence[EnvironmentSecret]]]

SANDBOX_SOCKET = "/run/corral/egress.sock"
SANDBOX_PROXY_PORT = 3128
_HEAD_LIMIT = 64 * 1024
_HEAD_TIMEOUT_S = 30.0
_CONNECT_TIMEOUT_S = 10.0
_HALF_CLOSE_GRACE_S = 60.0
_CHUNK = 64 * 1024
# Headers that belong to one hop (RFC 9110 §7.6.1) and never travel on.
_HOP_BY_HOP = {
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
}
_MAX_SOCKET_PATH = 107
# A request body a credential is substituted in is read whole first, up to this size; a larger one with a
# Content-Length passes unchanged, a larger chunked one is refused (413).
_BODY_LIMIT = 8 * 1024 * 1024
_BODY_TIMEOUT_S = 60.0


class _Reject(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass
class _Listener:
    server: asyncio.Server
    path: Path
    rules: HostRules
    connections: set[asyncio.Task[None]] = field(default_factory=set)


class EgressProxy:
    """Per-session proxy sockets under `directory`; `owner` (uid, gid) is the sandbox user that connects."""

    def __init__(
        self,
        directory: Path,
        addresses: AddressPolicy,
        *,
        owner: tuple[int, int] | None = None,
        connect_timeout_s: float = _CONNECT_TIMEOUT_S,
        credentials: CredentialSource | None = None,
    ) -> None:
        self.directory = directory
        self.addresses = addresses
        # Where the sessions' `environment_variable` credentials come from (None: never substituted).
        self.credentials = credentials
        self._owner = owner
        self._connect_timeout_s = connect_timeout_s
        self._listeners: dict[str, _Listener] = {}
        self._lock = asyncio.Lock()

    def socket_path(self, session_id: str) -> Path:
        return self.directory / session_id / "proxy.sock"

    async def open(self, session_id: str, rules: HostRules) -> Path:
        """Start (or keep) the session's socket with these rules; returns its path on the host."""
        async with self._lock:
            listener = self._listeners.get(session_id)
            if listener is not None and listener.server.is_serving():
                listener.rules = rules
                return listener.path
            path = self.socket_path(session_id)
            if len(str(path)) > _MAX_SOCKET_PATH:
                raise OSError(
                    f"the egress socket path {path} is longer than unix sockets allow ({_MAX_SOCKET_PATH} bytes); "
                    "choose a shorter --data-dir"
                )
            await asyncio.to_thread(self._prepare_directory, path.parent)
            state: dict[str, _Listener] = {}

            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await self._serve(session_id, state["listener"], reader, writer)

            server = await asyncio.start_unix_server(handle, path=str(path), limit=_HEAD_LIMIT)
            os.chmod(path, 0o600)
            if self._owner is not None:
                os.chown(path, *self._owner)
            listener = _Listener(server, path, rules)
            state["listener"] = listener
            self._listeners[session_id] = listener
            return path

    def _prepare_directory(self, directory: Path) -> None:
        # The parent is traversable (the sandbox user must reach its socket to mount it) but not listable;
        # each session's directory belongs to the sandbox user alone.
        self.directory.mkdir(mode=0o711, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o711)
        shutil.rmtree(directory, ignore_errors=True)  # a socket left by a crashed predecessor
        directory.mkdir(mode=0o700)
        if self._owner is not None:
            os.chown(directory, *self._owner)

    def is_open(self, session_id: str) -> bool:
        listener = self._listeners.get(session_id)
        return listener is not None and listener.server.is_serving()

    async def close_session(self, session_id: str) -> None:
        """Stop the session's socket and cut its open connections."""
        async with self._lock:
            listener = self._listeners.pop(session_id, None)
        if listener is None:
            return
        listener.server.close()
        for task in list(listener.connections):
            task.cancel()
        if listener.connections:
            await asyncio.wait(listener.connections, timeout=5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(listener.server.wait_closed(), 5)
        await asyncio.to_thread(shutil.rmtree, listener.path.parent, True)

    async def close(self) -> None:
        for session_id in list(self._listeners):
            await self.close_session(session_id)

    # -- one client connection ------------------------------------------------------------------

    async def _serve(
        self, session_id: str, listener: _Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        listener.connections.add(task)
        try:
            await self._handle(session_id, listener.rules, reader, writer)
        except _Reject as rejection:
            await _respond(writer, rejection.status, rejection.reason, str(rejection))
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, asyncio.LimitOverrunError):
            pass
        except Exception:
            log.exception("egress proxy connection failed (session %s)", session_id)
        finally:
            listener.connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handle(
        self, session_id: str, rules: HostRules, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _HEAD_TIMEOUT_S)
        except asyncio.LimitOverrunError as exc:
            raise _Reject(431, "Request Header Fields Too Large", "the request head is too large") from exc
        except asyncio.IncompleteReadError:
            return  # the client went away (or only probed the port)
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3:
            raise _Reject(400, "Bad Request", "malformed request line")
        method, target, version = parts
        if method.upper() == "CONNECT":
            host, port = _split_authority(target)
            upstream = await self._connect(session_id, rules, host, port)
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await writer.drain()
            await _relay(reader, writer, *upstream, tunnel=True)
            return
        if not target.lower().startswith("http://"):
            hint = "use CONNECT for https" if target.lower().startswith("https://") else "send an absolute http:// URI"
            raise _Reject(400, "Bad Request", f"this is the session's egress proxy: {hint}")
        url = urlsplit(target)
        if not url.hostname:
            raise _Reject(400, "Bad Request", f"no host in {target!r}")
        try:
            port = url.port or 80
        except ValueError as exc:
            raise _Reject(400, "Bad Request", f"bad port in {target!r}") from exc
        up_reader, up_writer = await self._connect(session_id, rules, url.hostname, port)
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        # The target's authority is the Host (RFC 9112 §3.2.2): what was checked is what the upstream is told.
        headers = [f"Host: {url.netloc.rsplit('@', 1)[-1]}"]
        headers += [line for line in header_lines if line and _name(line) not in _HOP_BY_HOP and _name(line) != "host"]
        body = b""
        try:
            secrets = await self._secrets_for(session_id, url.hostname)
            if secrets:
                headers, body = await _substitute(session_id, url.hostname, secrets, headers, reader, writer)
        except BaseException:
            up_writer.close()
            raise
        upstream_head = "\r\n".join([f"{method} {path} {version}", *headers, "Connection: close", "", ""])
        up_writer.write(upstream_head.encode("latin-1") + body)
        await up_writer.drain()
        await _relay(reader, writer, up_reader, up_writer, tunnel=False)

    async def _secrets_for(self, session_id: str, host: str) -> list[EnvironmentSecret]:
        """The session's credentials whose value may be sent to `host`, read now (a rotated value applies)."""
        if self.credentials is None:
            return []
        try:
            secrets = await self.credentials(session_id)
        except Exception as exc:
            log.exception("egress: session %s: its vault credentials could not be read", session_id)
            raise _Reject(
                503,
                "Service Unavailable",
                f"Corral egress proxy: the session's vault credentials could not be read ({type(exc).__name__}); "
                "try again",
            ) from exc
        target = normalize_host(host)
        return [secret for secret in secrets if secret.applies_to(target)]

    async def _connect(
        self, session_id: str, rules: HostRules, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The checked upstream connection for host:port, or a _Reject saying why not."""
        target = f"{host}:{port}"
        if not rules.allows(host, port):
            log.warning("egress denied: session %s -> %s (not in the environment's networking)", session_id, target)
            raise _Reject(
                403,
                "Forbidden",
                f"Corral egress proxy: {target} is not allowed by this session's environment "
                "(config.networking is 'limited'). Add the host to config.networking.allowed_hosts, "
                "or use networking {'type': 'unrestricted'}.",
            )
        try:
            addresses = await self.addresses.resolve(host, port)
        except EgressRefused as exc:
            log.warning("egress denied: session %s -> %s (%s)", session_id, target, exc)
            raise _Reject(403, "Forbidden", f"Corral egress proxy: {target} refused: {exc}") from exc
        errors: list[str] = []
        for address in addresses:
            try:
                return await self._open(address, port)
            except (OSError, TimeoutError) as exc:
                errors.append(f"{address}: {exc or type(exc).__name__}")
        log.info("egress failed: session %s -> %s (%s)", session_id, target, "; ".join(errors))
        raise _Reject(502, "Bad Gateway", f"Corral egress proxy: could not connect to {target} ({'; '.join(errors)})")

    async def _open(self, address: IPAddress, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(asyncio.open_connection(str(address), port), self._connect_timeout_s)


def _name(header_line: str) -> str:
    return header_line.split(":", 1)[0].strip().lower()


def _fits_in_header(value: str) -> bool:
    """A value that can stand in a header field as it is: Latin-1, no line breaks or other control characters."""
    return all(char == "\t" or (" " <= char <= "\xff" and char != "\x7f") for char in value)


async def _substitute(
    session_id: str,
    host: str,
    secrets: Sequence[EnvironmentSecret],
    headers: list[str],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> tuple[list[str], bytes]:
    """The request's headers (and its body, when it was read here) with each credential's placeholder replaced
    by its value where the credential allows it. Logs which credentials were used, never their values."""
    used: list[str] = []
    substituted: list[str] = []
    for line in headers:
        name, sep, value = line.partition(":")
        for secret in secrets:
            if not secret.header or secret.placeholder not in value:
                continue
            if not _fits_in_header(secret.value):
                log.warning(
                    "egress: session %s -> %s: credential %s holds characters a header cannot carry; its placeholder "
                    "was sent unchanged",
                    session_id,
                    host,
                    secret.credential_id,
                )
                continue
            value = value.replace(secret.placeholder, secret.value)
            used.append(f"{secret.credential_id} in header {name.strip()}")
        substituted.append(name + sep + value)
    body = b""
    in_body = [secret for secret in secrets if secret.body]
    if in_body:
        substituted, read = await _read_body(session_id, host, substituted, reader, writer)
        if read is not None:
            for secret in in_body:
                placeholder = secret.placeholder.encode()
                if placeholder in read:
                    read = read.replace(placeholder, secret.value.encode())
                    used.append(f"{secret.credential_id} in the body")
            body = read
            substituted.append(f"Content-Length: {len(body)}")
    if used:
        log.info("egress: session %s -> %s: substituted credential %s", session_id, host, ", ".join(used))
    return substituted, body


async def _read_body(
    session_id: str, host: str, headers: list[str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[list[str], bytes | None]:
    """Read the request's body whole, for substitution: the headers to send without its framing (the caller
    adds the new Content-Length) and the body; None when it is left to follow as it comes (none, or too large)."""
    values = {_name(line): line.split(":", 1)[1].strip() for line in headers if ":" in line}
    chunked = values.get("transfer-encoding", "").lower().rsplit(",", 1)[-1].strip() == "chunked"
    length_text = values.get("content-length")
    if not chunked:
        if "transfer-encoding" in values or length_text is None:
            return headers, None  # no body (or one only the end of the connection delimits): leave it be
        if not length_text.isdigit():
            raise _Reject(400, "Bad Request", f"bad Content-Length {length_text[:40]!r}")
        if int(length_text) > _BODY_LIMIT:
            log.warning(
                "egress: session %s -> %s: a %s-byte body is too large to substitute credentials in; sent unchanged",
                session_id,
                host,
                length_text,
            )
            return headers, None
    if "100-continue" in values.get("expect", "").lower():
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the client may be waiting for it before it sends
        await writer.drain()
    framing = {"content-length", "transfer-encoding", "expect"}
    kept = [line for line in headers if _name(line) not in framing]
    async with asyncio.timeout(_BODY_TIMEOUT_S):
        if not chunked:
            return kept, await reader.readexactly(int(length_text or 0))
        return kept, await _read_chunked(reader)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = (await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError as exc:
            raise _Reject(400, "Bad Request", "malformed chunked request body") from exc
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailer fields: dropped
            return bytes(body)
        if len(body) + size > _BODY_LIMIT:
            raise _Reject(
                413,
                "Content Too Large",
                f"Corral egress proxy: a chunked body over {_BODY_LIMIT} bytes cannot carry a vault credential; "
                "send it with a Content-Length",
            )
        chunk = await reader.readexactly(size + 2)
        body += chunk[:-2]


def _split_authority(target: str) -> tuple[str, int]:
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = target.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _Reject(400, "Bad Request", f"CONNECT needs host:port, not {target!r}")
    return host, int(port_text)


async def _respond(writer: asyncio.StreamWriter, status: int, reason: str, message: str) -> None:
    body = (message + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nX-Corral-Egress: refused\r\nConnection: close\r\n\r\n"
    )
    with contextlib.suppress(ConnectionError):
        writer.write(head.encode() + body)
        await writer.drain()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(_CHUNK):
            writer.write(chunk)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()


async def _relay(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
    *,
    tunnel: bool,
) -> None:
    """Copy both ways until the upstream is done (plain HTTP) or both sides are done (tunnels)."""
    upward = asyncio.ensure_future(_copy(client_reader, up_writer))
    downward = asyncio.ensure_future(
        _copy(up_reader, client_writer) if tunnel else _copy_response(up_reader, client_writer)
    )
    try:
        await asyncio.wait({upward, downward}, return_when=asyncio.FIRST_COMPLETED)
        if tunnel and not downward.done():
            await asyncio.wait({downward}, timeout=_HALF_CLOSE_GRACE_S)
        elif tunnel and not upward.done():
            await asyncio.wait({upward}, timeout=_HALF_CLOSE_GRACE_S)
        elif not tunnel and not downward.done():
            await asyncio.wait({downward})
    finally:
        for task in (upward, downward):
            task.cancel()
        await asyncio.gather(upward, downward, return_exceptions=True)
        up_writer.close()


async def _copy_response(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Pass the response on, telling the client the connection closes after it (one request per connection)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        writer.write(exc.partial)
        await writer.drain()
        return
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ")
    if len(status) >= 2 and status[1].startswith("1"):
        writer.write(head)  # an interim response: pass everything through as it comes
    else:
        kept = [line for line in lines[1:] if line and line.split(":", 1)[0].strip().lower() not in _HOP_BY_HOP]
        writer.write("\r\n".join([lines[0], *kept, "Connection: close", "", ""]).encode("latin-1"))
    await writer.drain()
    await _copy(reader, writer)
