"""The egress proxy: the only way out of a session's sandbox, run inside the server process.

A sandbox has no network interface but `lo`. When its environment allows any egress, the session gets its
own unix socket (`<data>/egress/<session>/proxy.sock`, reachable only by the sandbox user), bind-mounted
into the sandbox, where `socat` bridges `127.0.0.1:3128` to it and `HTTP(S)_PROXY` point there. The
socket a connection arrives on is what identifies the session, so the sandbox holds no proxy credential.

The proxy speaks HTTP/1.1 proxying: `CONNECT host:port` (HTTPS and any other TLS: an opaque tunnel) and
absolute-URI requests (`GET http://host/path`, plain HTTP). For each it checks the host against the session's
`HostRules`, resolves the name itself, keeps only public addresses (`AddressPolicy`) and connects to exactly
the address it checked. A refusal is an HTTP error whose body says why (and how to allow it), and a log line.

**One request per connection.** A plain-HTTP connection carries exactly one request: the proxy reads its head,
forwards its body as the head frames it (Content-Length or chunked, re-framed here; both at once is refused),
answers with `Connection: close` and closes. Nothing the client sends after that body is ever read, so a
second request on a kept-alive connection can never reach the upstream unchecked; clients see the
`Connection: close` and open a new connection, which gets its own checks and its own credentials. (Checking
each request on a kept connection would need a new upstream connection per request anyway whenever the host
changes; one request per connection keeps the proxy a simple, obviously-correct state machine.)

**Bounded per session.** At most `max_connections` connections of one session are open at once (tunnels
included); one more is answered `503` with `Retry-After` before anything of it is read (then, briefly, read and
dropped so that the answer is not lost to a reset: `_linger`; past 4 x `max_connections` such, they are cut).
A relayed connection holds a bounded amount of memory whatever it carries (a chunk each way and asyncio's
stream buffers: a few hundred KiB at most): bodies stream through. The one exception is credential
substitution below, which holds a body whole: those bodies count against the session's `max_buffered_bytes`,
and a body waits for room (its bytes still unread, in the kernel's socket buffers) rather than growing the
server; one that cannot get room within `_BODY_TIMEOUT_S` gets `503`. `EgressProxy.usage` reports both.

Vault credentials of type `environment_variable` (spec §10): the sandbox's variable holds only a placeholder
(`corral.vault.credentials.placeholder_for`). In a plain-HTTP request to a host that both the environment
and the credential's `networking` allow, the proxy puts the real value where the placeholder appears: in
header values (`injection_location.header`) and in the body (`.body`; bodies up to `max_body_bytes` are read
whole and re-sent with a new Content-Length, larger ones stream through unchanged). It reads the credentials at
each request, so an updated value applies at once. A CONNECT tunnel is never opened: HTTPS carries the
placeholder unchanged (substituting there would mean intercepting TLS), so the real value never reaches
anything the sandbox can read, but it is only applied to plain-HTTP requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from corral.hands.net.policy import AddressPolicy, EgressRefused, HostRules, IPAddress, normalize_host
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
# Headers that belong to one hop (RFC 9110 §7.6.1) and never travel on; so do those a `Connection` header names.
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
# How a request body is framed; the proxy frames what it forwards itself.
_FRAMING = {"content-length", "transfer-encoding"}
_MAX_SOCKET_PATH = 107
# Per session: connections open at once (package managers open 10-20 in parallel), and bytes of request bodies
# held whole for credential substitution at once; one such body is at most `_BODY_LIMIT` (larger ones with a
# Content-Length stream through unsubstituted, larger chunked ones are refused with 413).
_MAX_CONNECTIONS = 64
_MAX_BUFFERED_BYTES = 16 * 1024 * 1024
_BODY_LIMIT = 8 * 1024 * 1024
_BODY_TIMEOUT_S = 60.0
_RETRY_AFTER_S = 1
# How long a connection is read (and dropped) after its answer, and how many refused ones may be at once.
_LINGER_S = 2.0
_LINGERING_PER_CONNECTION = 4
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class _Reject(Exception):
    def __init__(self, status: int, reason: str, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class EgressUsage:
    """What one session's proxy holds now, and the most request-body bytes it has held at once."""

    connections: int = 0
    buffered_bytes: int = 0
    peak_buffered_bytes: int = 0


class _BodyBudget:
    """Bytes of request bodies held in memory for one session, never more than `limit` at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0
        self._released = asyncio.Event()

    async def acquire(self, size: int) -> None:
        """Wait until `size` (at most `limit`) more bytes fit, then count them as held."""
        while self.held + size > self.limit:
            self._released.clear()  # no await between the check and the wait: no release can be missed
            await self._released.wait()
        self.held += size
        self.peak = max(self.peak, self.held)

    def release(self, size: int) -> None:
        self.held -= size
        self._released.set()


@dataclass
class _Listener:
    server: asyncio.Server
    path: Path
    rules: HostRules
    budget: _BodyBudget
    connections: set[asyncio.Task[None]] = field(default_factory=set)
    lingering: int = 0  # refused connections still being read to their end (see _linger)


class EgressProxy:
    """Per-session proxy sockets under `directory`; `owner` (uid, gid) is the sandbox user that connects.

    `max_connections`, `max_buffered_bytes` and `max_body_bytes` are the per-session bounds of the module
    docstring (the defaults suit package managers; tests use small ones)."""

    def __init__(
        self,
        directory: Path,
        addresses: AddressPolicy,
        *,
        owner: tuple[int, int] | None = None,
        connect_timeout_s: float = _CONNECT_TIMEOUT_S,
        credentials: CredentialSource | None = None,
        max_connections: int = _MAX_CONNECTIONS,
        max_buffered_bytes: int = _MAX_BUFFERED_BYTES,
        max_body_bytes: int = _BODY_LIMIT,
    ) -> None:
        if not 0 < max_body_bytes <= max_buffered_bytes:
            raise ValueError("max_body_bytes must be positive and at most max_buffered_bytes")
        self.directory = directory
        self.addresses = addresses
        # Where the sessions' `environment_variable` credentials come from (None: never substituted).
        self.credentials = credentials
        self._owner = owner
        self._connect_timeout_s = connect_timeout_s
        self._max_connections = max_connections
        self._max_buffered_bytes = max_buffered_bytes
        self._max_body_bytes = max_body_bytes
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
                # Cancelled by close_session (or at shutdown): the connection ends here, and nothing awaits it.
                with contextlib.suppress(asyncio.CancelledError):
                    await self._serve(session_id, state["listener"], reader, writer)

            server = await asyncio.start_unix_server(handle, path=str(path), limit=_HEAD_LIMIT)
            os.chmod(path, 0o600)
            if self._owner is not None:
                os.chown(path, *self._owner)
            listener = _Listener(server, path, rules, _BodyBudget(self._max_buffered_bytes))
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

    def usage(self, session_id: str) -> EgressUsage:
        listener = self._listeners.get(session_id)
        if listener is None:
            return EgressUsage()
        return EgressUsage(len(listener.connections), listener.budget.held, listener.budget.peak)

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
        if len(listener.connections) >= self._max_connections:
            # Refused without looking at the request, so that refused connections cost (almost) nothing.
            log.warning(
                "egress refused: session %s already has %d connections open (the most it may)",
                session_id,
                len(listener.connections),
            )
            await _respond(
                writer,
                _Reject(
                    503,
                    "Service Unavailable",
                    f"Corral egress proxy: this session already has {len(listener.connections)} connections open "
                    "through the proxy, the most it may; close some (or open fewer in parallel) and retry",
                    retry_after_s=_RETRY_AFTER_S,
                ),
            )
            # A refused client still gets its answer whole (see _linger), up to a bound: past it, a flood's
            # connections are simply cut, so that refused connections cannot pile up in memory either.
            if listener.lingering < _LINGERING_PER_CONNECTION * self._max_connections:
                listener.lingering += 1
                try:
                    await _linger(reader, writer)
                finally:
                    listener.lingering -= 1
            await _close(writer)
            return
        listener.connections.add(task)
        try:
            try:
                await self._handle(session_id, listener, reader, writer)
            except _Reject as rejection:
                await _respond(writer, rejection)
            except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, asyncio.LimitOverrunError):
                pass
            except Exception:
                log.exception("egress proxy connection failed (session %s)", session_id)
            await _linger(reader, writer)
        finally:
            listener.connections.discard(task)
            await _close(writer)

    async def _handle(
        self, session_id: str, listener: _Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
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
            upstream = await self._connect(session_id, listener.rules, host, port)
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await writer.drain()
            await _tunnel(reader, writer, *upstream)
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
        body = _BodyFraming.of(header_lines)
        up_reader, up_writer = await self._connect(session_id, listener.rules, url.hostname, port)
        try:
            path = (url.path or "/") + (f"?{url.query}" if url.query else "")
            # The target's authority is the Host (RFC 9112 §3.2.2): what was checked is what the upstream is told.
            headers = [
                f"Host: {url.netloc.rsplit('@', 1)[-1]}",
                *_end_to_end(header_lines, dropped=frozenset({"host", *_FRAMING})),
            ]
            secrets = await self._secrets_for(session_id, url.hostname)
            headers, used = _substitute_headers(session_id, url.hostname, secrets, headers)
            in_body = [secret for secret in secrets if secret.body]
            start_line = f"{method} {path} {version}"
            if in_body and body.present and body.length is not None and body.length > self._max_body_bytes:
                log.warning(
                    "egress: session %s -> %s: a %d-byte body is too large to substitute credentials in; sent "
                    "unchanged",
                    session_id,
                    url.hostname,
                    body.length,
                )
            elif in_body and body.present:
                async with self._room_for(session_id, listener, body):
                    if body.expects_continue:
                        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the client may wait for it to send
                        await writer.drain()
                    async with asyncio.timeout(_BODY_TIMEOUT_S):
                        whole = await body.read_whole(reader, self._max_body_bytes)
                    pieces, size, used_in_body = _substitute_body(whole, in_body)
                    _log_substitution(session_id, url.hostname, used + used_in_body)
                    headers = [line for line in headers if _name(line) != "expect"]  # answered above
                    up_writer.write(_head(start_line, [*headers, f"Content-Length: {size}"]))
                    await _exchange(up_reader, writer, lambda: _write_pieces(up_writer, pieces))
                return
            _log_substitution(session_id, url.hostname, used)
            up_writer.write(_head(start_line, headers + body.framing_headers()))
            await _exchange(up_reader, writer, lambda: body.stream(reader, up_writer))
        finally:
            up_writer.close()

    @contextlib.asynccontextmanager
    async def _room_for(self, session_id: str, listener: _Listener, body: _BodyFraming) -> AsyncIterator[None]:
        """Room in the session's budget for a body held whole: its Content-Length, or the most a chunked one may be."""
        size = body.length if body.length is not None else self._max_body_bytes
        try:
            async with asyncio.timeout(_BODY_TIMEOUT_S):
                await listener.budget.acquire(size)
        except TimeoutError as exc:
            log.warning("egress refused: session %s: no room to hold a %d-byte request body", session_id, size)
            raise _Reject(
                503,
                "Service Unavailable",
                f"Corral egress proxy: this session's requests already hold {listener.budget.held} bytes of bodies "
                f"for credential substitution, the most they may ({listener.budget.limit}); retry",
                retry_after_s=_RETRY_AFTER_S,
            ) from exc
        try:
            yield
        finally:
            listener.budget.release(size)

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


# -- request bodies ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _BodyFraming:
    """How a request's body is delimited (RFC 9112 §6): a Content-Length, chunked, or no body at all."""

    length: int | None = None  # the Content-Length; None when chunked or absent
    chunked: bool = False
    expects_continue: bool = False

    @classmethod
    def of(cls, header_lines: Sequence[str]) -> _BodyFraming:
        """The framing a request head declares; a _Reject (400) for one that is malformed or ambiguous."""
        lengths: set[str] = set()
        codings: list[str] = []
        expects_continue = False
        for line in header_lines:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                lengths.update(part.strip() for part in value.split(","))
            elif name == "transfer-encoding":
                codings += [part.strip().lower() for part in value.split(",") if part.strip()]
            elif name == "expect":
                expects_continue = "100-continue" in value.lower()
        if codings and lengths:
            # The classic request-smuggling shape (RFC 9112 §6.1): refused rather than guessed at.
            raise _Reject(
                400, "Bad Request", "Corral egress proxy: a request with both Transfer-Encoding and Content-Length"
            )
        if codings:
            if codings != ["chunked"]:
                raise _Reject(
                    400,
                    "Bad Request",
                    f"Corral egress proxy: request bodies may only be chunked, not {', '.join(codings)[:80]!r}",
                )
            return cls(chunked=True, expects_continue=expects_continue)
        if not lengths:
            return cls(expects_continue=expects_continue)
        if len(lengths) > 1 or not next(iter(lengths)).isdigit():
            raise _Reject(400, "Bad Request", f"Corral egress proxy: bad Content-Length {sorted(lengths)!r:.80}")
        return cls(length=int(next(iter(lengths))), expects_continue=expects_continue)

    @property
    def present(self) -> bool:
        return self.chunked or bool(self.length)

    def framing_headers(self) -> list[str]:
        if self.chunked:
            return ["Transfer-Encoding: chunked"]
        return [] if self.length is None else [f"Content-Length: {self.length}"]

    async def stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward the body as it arrives, a chunk at a time (chunk extensions and trailer fields dropped)."""
        if self.chunked:
            while size := await _next_chunk_size(reader):
                writer.write(b"%x\r\n" % size)
                await _copy_exactly(reader, writer, size)
                await _chunk_end(reader)
                writer.write(b"\r\n")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        elif self.length:
            await _copy_exactly(reader, writer, self.length)

    async def read_whole(self, reader: asyncio.StreamReader, limit: int) -> bytearray:
        """The whole body, in one buffer of its size (a Content-Length body is at most `limit` by then; a chunked
        one over it is refused with 413)."""
        if not self.chunked:
            body = bytearray(self.length or 0)
            with memoryview(body) as view:
                filled = 0
                while filled < len(body):
                    chunk = await reader.read(min(_CHUNK, len(body) - filled))
                    if not chunk:
                        raise asyncio.IncompleteReadError(b"", len(body))
                    view[filled : filled + len(chunk)] = chunk
                    filled += len(chunk)
            return body
        body = bytearray()
        while size := await _next_chunk_size(reader):
            if len(body) + size > limit:
                raise _Reject(
                    413,
                    "Content Too Large",
                    f"Corral egress proxy: a chunked body over {limit} bytes cannot carry a vault credential; "
                    "send it with a Content-Length",
                )
            body += await reader.readexactly(size)
            await _chunk_end(reader)
        return body


async def _next_chunk_size(reader: asyncio.StreamReader) -> int:
    """The size of the next chunk of a chunked body; after the last (0), its trailer fields are read and dropped."""
    size_text = (await reader.readuntil(b"\r\n"))[:-2].split(b";", 1)[0].strip()
    if not _CHUNK_SIZE.fullmatch(size_text):
        raise _Reject(400, "Bad Request", "Corral egress proxy: malformed chunked request body")
    size = int(size_text, 16)
    if size == 0:
        while await reader.readuntil(b"\r\n") != b"\r\n":
            pass
    return size


async def _chunk_end(reader: asyncio.StreamReader) -> None:
    if await reader.readexactly(2) != b"\r\n":
        raise _Reject(400, "Bad Request", "Corral egress proxy: malformed chunked request body")


async def _copy_exactly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: int) -> None:
    while count > 0:
        chunk = await reader.read(min(_CHUNK, count))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", count)
        writer.write(chunk)
        await writer.drain()
        count -= len(chunk)


# -- credentials --------------------------------------------------------------------------------


def _substitute_headers(
    session_id: str, host: str, secrets: Sequence[EnvironmentSecret], headers: list[str]
) -> tuple[list[str], list[str]]:
    """The headers with each header credential's placeholder replaced by its value, and what was used."""
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
    return substituted, used


def _substitute_body(
    body: bytearray, secrets: Sequence[EnvironmentSecret]
) -> tuple[list[memoryview | bytes], int, list[str]]:
    """The body with each placeholder replaced by its credential's value, as pieces to send in order (views of
    `body` between the values, so that the body is never copied), their total size, and what was used."""
    values = {secret.placeholder.encode(): secret.value.encode() for secret in secrets}
    # Longest first, so that a placeholder that begins another one never cuts it short.
    pattern = re.compile(b"|".join(re.escape(placeholder) for placeholder in sorted(values, key=len, reverse=True)))
    view = memoryview(body)
    pieces: list[memoryview | bytes] = []
    found: set[bytes] = set()
    start = 0
    for match in pattern.finditer(body):
        found.add(match.group())
        pieces += [view[start : match.start()], values[match.group()]]
        start = match.end()
    pieces.append(view[start:])
    used = [f"{secret.credential_id} in the body" for secret in secrets if secret.placeholder.encode() in found]
    return pieces, sum(len(piece) for piece in pieces), used


def _log_substitution(session_id: str, host: str, used: list[str]) -> None:
    """Which credentials went where, never their values."""
    if used:
        log.info("egress: session %s -> %s: substituted credential %s", session_id, host, ", ".join(used))


def _fits_in_header(value: str) -> bool:
    """A value that can stand in a header field as it is: Latin-1, no line breaks or other control characters."""
    return all(char == "\t" or (" " <= char <= "\xff" and char != "\x7f") for char in value)


async def _write_pieces(writer: asyncio.StreamWriter, pieces: Sequence[memoryview | bytes]) -> None:
    """Send the pieces a chunk at a time, so that the transport never copies more than a chunk of them."""
    for piece in pieces:
        for offset in range(0, len(piece), _CHUNK):
            writer.write(piece[offset : offset + _CHUNK])
            await writer.drain()


# -- relaying -----------------------------------------------------------------------------------


def _name(header_line: str) -> str:
    return header_line.split(":", 1)[0].strip().lower()


def _end_to_end(header_lines: Sequence[str], *, dropped: frozenset[str] = frozenset()) -> list[str]:
    """The header lines that travel on: not hop-by-hop, not named by `Connection`, not in `dropped`."""
    named = {
        token.strip().lower()
        for line in header_lines
        if _name(line) == "connection"
        for token in line.split(":", 1)[-1].split(",")
    }
    skip = _HOP_BY_HOP | named | dropped
    return [line for line in header_lines if line and _name(line) not in skip]


def _head(start_line: str, headers: Sequence[str]) -> bytes:
    """A message head that tells the other side the connection closes after this message."""
    return "\r\n".join([start_line, *headers, "Connection: close", "", ""]).encode("latin-1")


async def _exchange(
    up_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    send_body: Callable[[], Awaitable[None]],
) -> None:
    """Send the request's body upstream (the head is sent) while passing the response back, until it ends.

    The upstream may answer before it has read the whole body (an early error): that answer still reaches the
    client. A malformed body is the client's 400 when no response has begun."""
    response = _Response()
    upward = asyncio.ensure_future(send_body())
    downward = asyncio.ensure_future(response.relay(up_reader, client_writer))
    try:
        await asyncio.wait({upward, downward}, return_when=asyncio.FIRST_COMPLETED)
        if downward.done():
            downward.result()
        elif upward.exception() is None:
            await downward
        elif not response.started:
            upward.result()  # raises the body's error
    finally:
        await _cancel(upward, downward)
        # An error raised from here keeps this frame in its traceback; without these names, no reference cycle
        # (frame -> task -> error -> traceback -> frame) keeps the request's buffers alive until a GC pass.
        del upward, downward


class _Response:
    """Relays one upstream response to the client, telling it the connection closes after it."""

    def __init__(self) -> None:
        self.started = False  # whether anything has been written to the client

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if self.started:
                    return
                raise _Reject(
                    502, "Bad Gateway", "Corral egress proxy: the upstream closed the connection without a response"
                ) from exc
            except asyncio.LimitOverrunError as exc:
                if self.started:
                    return
                raise _Reject(
                    502, "Bad Gateway", "Corral egress proxy: the upstream's response head is too large"
                ) from exc
            self.started = True
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            status = status_line.split(" ", 2)
            if len(status) >= 2 and status[1].startswith("1") and status[1] != "101":
                writer.write(head)  # an interim response (100 Continue, 103 Early Hints): the final one follows
                await writer.drain()
                continue
            writer.write(_head(status_line, _end_to_end(header_lines)))
            await writer.drain()
            break
        await _copy(reader, writer)


async def _tunnel(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """Copy both ways until both sides are done, or one is and the other has had a grace period."""
    upward = asyncio.ensure_future(_copy(client_reader, up_writer))
    downward = asyncio.ensure_future(_copy(up_reader, client_writer))
    try:
        await asyncio.wait({upward, downward}, return_when=asyncio.FIRST_COMPLETED)
        if not (upward.done() and downward.done()):
            await asyncio.wait({upward, downward}, timeout=_HALF_CLOSE_GRACE_S)
    finally:
        await _cancel(upward, downward)
        del upward, downward  # see _exchange
        up_writer.close()


async def _cancel(*tasks: asyncio.Future[None]) -> None:
    """Stop the tasks and wait until they have stopped (their errors are theirs: not raised here)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(_CHUNK):
            writer.write(chunk)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()


def _split_authority(target: str) -> tuple[str, int]:
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = target.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _Reject(400, "Bad Request", f"CONNECT needs host:port, not {target!r}")
    return host, int(port_text)


async def _respond(writer: asyncio.StreamWriter, rejection: _Reject) -> None:
    body = (str(rejection) + "\n").encode()
    retry_after = f"Retry-After: {rejection.retry_after_s}\r\n" if rejection.retry_after_s is not None else ""
    head = (
        f"HTTP/1.1 {rejection.status} {rejection.reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n{retry_after}X-Corral-Egress: refused\r\nConnection: close\r\n\r\n"
    )
    with contextlib.suppress(ConnectionError):
        writer.write(head.encode() + body)
        await writer.drain()


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Say this side is done (half-close), then read and drop what the client still sends, for a moment: a unix
    socket closed with unread data resets the connection, and the client would lose the answer it has not read
    yet (a refusal sent before its request, or its body, was read)."""
    with contextlib.suppress(OSError, RuntimeError, TimeoutError):
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()
        async with asyncio.timeout(_LINGER_S):
            while await reader.read(_CHUNK):
                pass


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
