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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from corral.hands.netpolicy import AddressPolicy, EgressRefused, HostRules, IPAddress

log = logging.getLogger("corral.egress")

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
    ) -> None:
        self.directory = directory
        self.addresses = addresses
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
        headers = [line for line in header_lines if line and line.split(":", 1)[0].strip().lower() not in _HOP_BY_HOP]
        if not any(line.lower().startswith("host:") for line in headers):
            headers.insert(0, f"Host: {url.netloc.rsplit('@', 1)[-1]}")
        upstream_head = "\r\n".join([f"{method} {path} {version}", *headers, "Connection: close", "", ""])
        up_writer.write(upstream_head.encode("latin-1"))
        await up_writer.drain()
        await _relay(reader, writer, up_reader, up_writer, tunnel=False)

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
