"""The egress proxy: the only way out of a session's sandbox, run inside the server process.

A sandbox has no network interface but `lo`. When its environment allows any egress, the session gets its
own unix socket (`<data>/egress/<session>/proxy.sock`, reachable only by the sandbox user), bind-mounted
into the sandbox, where `socat` bridges `127.0.0.1:3128` to it and `HTTP(S)_PROXY` point there. The
socket a connection arrives on is what identifies the session, so the sandbox holds no proxy credential.

The proxy speaks HTTP/1.1 proxying: `CONNECT host:port` (HTTPS and any other TLS: an opaque tunnel, except
to a host a vault credential names, below) and absolute-URI requests (`GET http://host/path`, plain HTTP).
For each it checks the host against the session's `HostRules`, resolves the name itself, keeps only public
addresses (`AddressPolicy`) and connects to exactly the address it checked. A refusal is an HTTP error whose
body says why (and how to allow it), and a log line.

**One request per connection.** A plain-HTTP connection carries exactly one request: the proxy reads its head,
forwards its body as the head frames it (Content-Length or chunked, re-framed here; both at once is refused),
answers with `Connection: close` and closes. Nothing the client sends after that body is ever read, so a
second request on a kept-alive connection can never reach the upstream unchecked; clients see the
`Connection: close` and open a new connection, which gets its own checks and its own credentials. (Checking
each request on a kept connection would need a new upstream connection per request anyway whenever the host
changes; one request per connection keeps the proxy a simple, obviously-correct state machine.)

The parts: `http1.py` reads requests with `h11` (heads, Content-Length and chunked bodies) and frames what
is forwarded (hop-by-hop headers dropped, bodies re-framed),
`relay.py` moves the bytes (one exchange, or a CONNECT tunnel) and ends connections, `caps.py` bounds each
session (connections open at once, request-body bytes held whole), and `substitution.py` puts vault credentials
of type `environment_variable` into requests in place of their placeholders. This module is the proxy itself:
the sockets, each connection's checks, and which part handles it.

**TLS interception, only where a credential needs it.** A CONNECT to a host that the environment allows and
that one of the session's credentials names in its `allowed_hosts` (read at that moment: a removed credential
stops it at once) is not tunnelled: the proxy first opens its own TLS connection to the upstream, verified
against the system's roots (plus `CORRAL_EGRESS_UPSTREAM_CA`, for tests) for the host name it checked, and
refuses with a 502 saying why if it does not verify; then it answers the sandbox's TLS with a certificate for
that host from the data dir's CA (`ca.py`; only such sessions' sandboxes trust it), reads one request, puts the
credentials in as for plain HTTP, and relays the answer, closing after it like any other request. Only
`http/1.1` is offered in ALPN on both sides. A credential with `unrestricted` networking names no host, so it
is put into plain-HTTP requests and into intercepted ones, but never makes the proxy intercept by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from corral.hands.net.ca import EgressCA, upstream_context
from corral.hands.net.caps import (
    BODY_LIMIT,
    BODY_TIMEOUT_S,
    LINGERING_PER_CONNECTION,
    MAX_BUFFERED_BYTES,
    MAX_CONNECTIONS,
    RETRY_AFTER_S,
    BodyBudget,
    EgressUsage,
)
from corral.hands.net.http1 import (
    FRAMING,
    Incoming,
    Reject,
    end_to_end,
    header_name,
    message_head,
    read_request,
    respond,
    split_authority,
)
from corral.hands.net.policy import AddressPolicy, EgressRefused, HostRules, IPAddress, normalize_host
from corral.hands.net.relay import close_writer, exchange, linger, tunnel, write_pieces
from corral.hands.net.substitution import log_substitution, substitute_body, substitute_headers
from corral.vault.credentials import EnvironmentSecret

__all__ = ["SANDBOX_PROXY_PORT", "SANDBOX_SOCKET", "CredentialSource", "EgressProxy", "EgressUsage"]

log = logging.getLogger("corral.egress")

# Session id -> its `environment_variable` credentials, read when asked (`VaultAccess.session_environment_secrets`).
CredentialSource = Callable[[str], Awaitable[Sequence[EnvironmentSecret]]]

SANDBOX_SOCKET = "/run/corral/egress.sock"
SANDBOX_PROXY_PORT = 3128
_HEAD_LIMIT = 64 * 1024
_HEAD_TIMEOUT_S = 30.0
_CONNECT_TIMEOUT_S = 10.0
_MAX_SOCKET_PATH = 107


@dataclass
class _Listener:
    server: asyncio.Server
    path: Path
    rules: HostRules
    budget: BodyBudget
    connections: set[asyncio.Task[None]] = field(default_factory=set)
    lingering: int = 0  # refused connections still being read to their end (see relay.linger)


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
        max_connections: int = MAX_CONNECTIONS,
        max_buffered_bytes: int = MAX_BUFFERED_BYTES,
        max_body_bytes: int = BODY_LIMIT,
        ca: EgressCA | None = None,
        upstream_ca: Path | None = None,
    ) -> None:
        if not 0 < max_body_bytes <= max_buffered_bytes:
            raise ValueError("max_body_bytes must be positive and at most max_buffered_bytes")
        self.directory = directory
        self.addresses = addresses
        # Where the sessions' `environment_variable` credentials come from (None: never substituted).
        self.credentials = credentials
        # Mints the certificates of intercepted hosts (None: every CONNECT is an opaque tunnel).
        self.ca = ca
        self._upstream_tls = upstream_context(upstream_ca) if ca is not None else None
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
            listener = _Listener(server, path, rules, BodyBudget(self._max_buffered_bytes))
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
            await respond(
                writer,
                Reject(
                    503,
                    "Service Unavailable",
                    f"Corral egress proxy: this session already has {len(listener.connections)} connections open "
                    "through the proxy, the most it may; close some (or open fewer in parallel) and retry",
                    retry_after_s=RETRY_AFTER_S,
                ),
            )
            # A refused client still gets its answer whole (see linger), up to a bound: past it, a flood's
            # connections are simply cut, so that refused connections cannot pile up in memory either.
            if listener.lingering < LINGERING_PER_CONNECTION * self._max_connections:
                listener.lingering += 1
                try:
                    await linger(reader, writer)
                finally:
                    listener.lingering -= 1
            await close_writer(writer)
            return
        listener.connections.add(task)
        try:
            try:
                await self._handle(session_id, listener, reader, writer)
            except Reject as rejection:
                await respond(writer, rejection)
            except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, asyncio.LimitOverrunError):
                pass
            except Exception:
                log.exception("egress proxy connection failed (session %s)", session_id)
            await linger(reader, writer)
        finally:
            listener.connections.discard(task)
            await close_writer(writer)

    async def _handle(
        self, session_id: str, listener: _Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        connection, incoming = await asyncio.wait_for(read_request(reader, _HEAD_LIMIT), _HEAD_TIMEOUT_S)
        if incoming is None:
            return  # the client went away (or only probed the port)
        method, target = incoming.method, incoming.target
        if method.upper() == "CONNECT":
            host, port = split_authority(target)
            # What the client sent after the CONNECT head (h11 read it already): the tunnel's first bytes.
            early, _ = connection.trailing_data
            secrets = await self._intercepted_secrets(session_id, listener.rules, host, port)
            if secrets:
                if early:
                    raise Reject(400, "Bad Request", "Corral egress proxy: TLS sent before the CONNECT was answered")
                await self._intercept(session_id, listener, reader, writer, host, port, secrets)
                return
            up_reader, up_writer = await self._connect(session_id, listener.rules, host, port)
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await writer.drain()
            up_writer.write(early)
            await tunnel(reader, writer, up_reader, up_writer)
            return
        if not target.lower().startswith("http://"):
            hint = "use CONNECT for https" if target.lower().startswith("https://") else "send an absolute http:// URI"
            raise Reject(400, "Bad Request", f"this is the session's egress proxy: {hint}")
        url = urlsplit(target)
        if not url.hostname:
            raise Reject(400, "Bad Request", f"no host in {target!r}")
        try:
            port = url.port or 80
        except ValueError as exc:
            raise Reject(400, "Bad Request", f"bad port in {target!r}") from exc
        up_reader, up_writer = await self._connect(session_id, listener.rules, url.hostname, port)
        try:
            path = (url.path or "/") + (f"?{url.query}" if url.query else "")
            secrets = await self._secrets_for(session_id, url.hostname)
            # The target's authority is the Host (RFC 9112 §3.2.2): what was checked is what the upstream is told.
            authority = url.netloc.rsplit("@", 1)[-1]
            start_line = f"{method} {path} {incoming.version}"
            await self._forward(
                session_id, listener, writer, (up_reader, up_writer), url.hostname, authority, start_line, incoming,
                secrets,
            )  # fmt: skip
        finally:
            up_writer.close()

    async def _forward(
        self,
        session_id: str,
        listener: _Listener,
        writer: asyncio.StreamWriter,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        hostname: str,
        authority: str,
        start_line: str,
        incoming: Incoming,
        secrets: list[EnvironmentSecret],
    ) -> None:
        """Send one request upstream, its credentials substituted, and relay the response (one per connection)."""
        up_reader, up_writer = upstream
        body = incoming.body.framing
        headers = [f"Host: {authority}", *end_to_end(incoming.header_lines, dropped=frozenset({"host", *FRAMING}))]
        headers, used = substitute_headers(session_id, hostname, secrets, headers)
        in_body = [secret for secret in secrets if secret.body]
        if in_body and body.present and body.length is not None and body.length > self._max_body_bytes:
            log.warning(
                "egress: session %s -> %s: a %d-byte body is too large to substitute credentials in; sent unchanged",
                session_id,
                hostname,
                body.length,
            )
        elif in_body and body.present:
            # Room for the body held whole: its Content-Length, or the most a chunked one may be.
            room = body.length if body.length is not None else self._max_body_bytes
            async with listener.budget.room_for(session_id, room):
                if body.expects_continue:
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the client may wait for it to send
                    await writer.drain()
                async with asyncio.timeout(BODY_TIMEOUT_S):
                    whole = await incoming.body.read_whole(self._max_body_bytes)
                pieces, size, used_in_body = substitute_body(whole, in_body)
                log_substitution(session_id, hostname, used + used_in_body)
                headers = [line for line in headers if header_name(line) != "expect"]  # answered above
                up_writer.write(message_head(start_line, [*headers, f"Content-Length: {size}"]))
                await exchange(up_reader, writer, lambda: write_pieces(up_writer, pieces))
            return
        log_substitution(session_id, hostname, used)
        up_writer.write(message_head(start_line, headers + body.framing_headers()))
        await exchange(up_reader, writer, lambda: incoming.body.stream(up_writer))

    async def _secrets_for(self, session_id: str, host: str) -> list[EnvironmentSecret]:
        """The session's credentials whose value may be sent to `host`, read now (a rotated value applies)."""
        if self.credentials is None:
            return []
        try:
            secrets = await self.credentials(session_id)
        except Exception as exc:
            log.exception("egress: session %s: its vault credentials could not be read", session_id)
            raise Reject(
                503,
                "Service Unavailable",
                f"Corral egress proxy: the session's vault credentials could not be read ({type(exc).__name__}); "
                "try again",
            ) from exc
        target = normalize_host(host)
        return [secret for secret in secrets if secret.applies_to(target)]

    async def _intercepted_secrets(
        self, session_id: str, rules: HostRules, host: str, port: int
    ) -> list[EnvironmentSecret]:
        """The credentials to substitute in a CONNECT to host:port, when it is to be intercepted: only when the
        proxy has a CA, the environment allows the host, and a credential names it (one with `unrestricted`
        networking names no host, so never opens a tunnel by itself). Empty: an opaque tunnel."""
        if self.ca is None or not rules.allows(host, port):
            return []
        secrets = await self._secrets_for(session_id, host)
        return secrets if any(secret.allowed_hosts is not None for secret in secrets) else []

    async def _intercept(
        self,
        session_id: str,
        listener: _Listener,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        host: str,
        port: int,
        secrets: list[EnvironmentSecret],
    ) -> None:
        """A CONNECT whose TLS the proxy ends itself (see `ca.py`): one request, its credentials substituted, sent
        over a TLS connection to the upstream verified against the system's roots."""
        assert self.ca is not None and self._upstream_tls is not None
        # Upstream first: an unverifiable upstream is refused in plain text, before the client's TLS begins.
        up_reader, up_writer = await self._connect(session_id, listener.rules, host, port, tls=self._upstream_tls)
        try:
            context = await asyncio.to_thread(self.ca.server_context, normalize_host(host))
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await writer.drain()
            try:
                await writer.start_tls(context, ssl_handshake_timeout=_HEAD_TIMEOUT_S)
            except (ssl.SSLError, TimeoutError) as exc:
                # Most often a client that does not trust the CA: a sandbox started before its session had a
                # credential naming this host (only sandboxes started with one get the CA in their bundle).
                log.warning(
                    "egress: session %s -> %s:%d: the client's TLS handshake with the proxy failed (%s); a sandbox "
                    "trusts the egress CA only if it started with a credential naming a host",
                    session_id,
                    host,
                    port,
                    exc,
                )
                return
            log.info("egress: session %s -> %s:%d: TLS intercepted for its vault credentials", session_id, host, port)
            try:
                await self._intercepted_request(
                    session_id, listener, reader, writer, (up_reader, up_writer), host, port, secrets
                )
            except Reject as rejection:
                await respond(writer, rejection)  # inside the client's TLS, where it reads its answers
            finally:
                # TLS has no half-close to tell the client the answer is whole (see relay.linger): close it here.
                await close_writer(writer)
        finally:
            up_writer.close()

    async def _intercepted_request(
        self,
        session_id: str,
        listener: _Listener,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        host: str,
        port: int,
        secrets: list[EnvironmentSecret],
    ) -> None:
        """The one request of an intercepted connection, read from inside its TLS, forwarded upstream."""
        _, incoming = await asyncio.wait_for(read_request(reader, _HEAD_LIMIT), _HEAD_TIMEOUT_S)
        if incoming is None:
            return
        if not incoming.target.startswith("/"):
            raise Reject(400, "Bad Request", "Corral egress proxy: expected an origin-form request (GET /path ...)")
        name = f"[{host}]" if ":" in host else host
        authority = name if port == 443 else f"{name}:{port}"
        start_line = f"{incoming.method} {incoming.target} {incoming.version}"
        await self._forward(session_id, listener, writer, upstream, host, authority, start_line, incoming, secrets)

    async def _connect(
        self, session_id: str, rules: HostRules, host: str, port: int, *, tls: ssl.SSLContext | None = None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The checked upstream connection for host:port (over TLS verified for `host`, with `tls`), or a Reject
        saying why not."""
        target = f"{host}:{port}"
        if not rules.allows(host, port):
            log.warning("egress denied: session %s -> %s (not in the environment's networking)", session_id, target)
            raise Reject(
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
            raise Reject(403, "Forbidden", f"Corral egress proxy: {target} refused: {exc}") from exc
        errors: list[str] = []
        for address in addresses:
            try:
                return await self._open(address, port, tls, host)
            except ssl.SSLCertVerificationError as exc:
                log.warning("egress refused: session %s -> %s: certificate not verified (%s)", session_id, target, exc)
                raise Reject(
                    502,
                    "Bad Gateway",
                    f"Corral egress proxy: {target} presented a certificate that does not verify "
                    f"({exc.verify_message}); vault credentials are only sent to hosts whose certificate does",
                ) from exc
            except (OSError, TimeoutError) as exc:
                errors.append(f"{address}: {exc or type(exc).__name__}")
        log.info("egress failed: session %s -> %s (%s)", session_id, target, "; ".join(errors))
        raise Reject(502, "Bad Gateway", f"Corral egress proxy: could not connect to {target} ({'; '.join(errors)})")

    async def _open(
        self, address: IPAddress, port: int, tls: ssl.SSLContext | None = None, host: str = ""
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # The checked address, with the TLS certificate verified for the host name that was checked.
        opening = asyncio.open_connection(str(address), port, ssl=tls, server_hostname=host if tls else None)
        return await asyncio.wait_for(opening, self._connect_timeout_s)
