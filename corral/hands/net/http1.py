"""HTTP/1.1 message framing for the egress proxy (RFC 9112): request bodies, heads, hop-by-hop headers.

Requests are read with `h11` (the HTTP/1.1 state machine under httpx and uvicorn): it parses and validates the
head (size bounded, 431 past it) and undoes the body's framing (Content-Length or chunked; any other transfer
coding is its 501). h11 rather than mitmproxy as a library: the proxy needs only to read one request per
connection, and h11 is a small pure-Python parser with no I/O of its own, already installed, where mitmproxy
would bring its own proxy server and event loop around the policy code. The proxy frames what it forwards
itself: a body framed both ways is refused (h11 would let Transfer-Encoding win), a body is re-framed on the way
out, and the headers that belong to one hop never travel on. Anything malformed or ambiguous is a `Reject`,
which the proxy answers with its status and reason. (Responses are not parsed beyond their head, in `relay.py`:
the upstream is told the connection closes, so a response body is simply everything until it does.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import h11

CHUNK = 64 * 1024
# Headers that belong to one hop (RFC 9110 §7.6.1) and never travel on; so do those a `Connection` header names.
HOP_BY_HOP = {
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
FRAMING = {"content-length", "transfer-encoding"}


class Reject(Exception):
    """A request the proxy answers itself, with this status, reason and message (and maybe a Retry-After)."""

    def __init__(self, status: int, reason: str, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Incoming:
    """A request head as `h11` parsed it, its header lines as received, and its body still to be read."""

    method: str
    target: str
    version: str  # "HTTP/1.1"
    header_lines: list[str]
    body: RequestBody


async def read_request(reader: asyncio.StreamReader, limit: int) -> tuple[h11.Connection, Incoming | None]:
    """The next request head on `reader`, parsed by `h11` (None: the client left before sending one), with the
    connection whose state machine reads its body; a Reject for a malformed head, or one framed both ways."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=limit)
    event = await _next_event(connection, reader)
    if not isinstance(event, h11.Request):
        return connection, None
    header_lines = [f"{name.decode('latin-1')}: {value.decode('latin-1')}" for name, value in event.headers.raw_items()]
    names = {header_name(line) for line in header_lines}
    if names >= FRAMING:
        # The classic request-smuggling shape (RFC 9112 §6.1): refused rather than guessed at (h11 lets
        # Transfer-Encoding win; the proxy does not guess).
        raise Reject(
            400, "Bad Request", "Corral egress proxy: a request with both Transfer-Encoding and Content-Length"
        )
    expects = any(header_name(line) == "expect" and "100-continue" in line.lower() for line in header_lines)
    length = next((int(line.split(":", 1)[1]) for line in header_lines if header_name(line) == "content-length"), None)
    framing = BodyFraming(length=length, chunked="transfer-encoding" in names, expects_continue=expects)
    incoming = Incoming(
        event.method.decode("latin-1"),
        event.target.decode("latin-1"),
        f"HTTP/{event.http_version.decode('latin-1')}",
        header_lines,
        RequestBody(connection, reader, framing),
    )
    return connection, incoming


async def _next_event(connection: h11.Connection, reader: asyncio.StreamReader) -> object:
    """The connection's next event, reading from `reader` as it needs; h11's protocol errors become Rejects."""
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            reason = {431: "Request Header Fields Too Large", 501: "Not Implemented"}.get(status, "Bad Request")
            raise Reject(status, reason, f"Corral egress proxy: malformed request ({exc})") from exc
        if event is not h11.NEED_DATA:
            return event
        connection.receive_data(await reader.read(CHUNK))


@dataclass(frozen=True)
class BodyFraming:
    """How a request's body is delimited (RFC 9112 §6): a Content-Length, chunked, or no body at all."""

    length: int | None = None  # the Content-Length; None when chunked or absent
    chunked: bool = False
    expects_continue: bool = False

    @property
    def present(self) -> bool:
        return self.chunked or bool(self.length)

    def framing_headers(self) -> list[str]:
        if self.chunked:
            return ["Transfer-Encoding: chunked"]
        return [] if self.length is None else [f"Content-Length: {self.length}"]


class RequestBody:
    """A request's body, read through `h11` (which undoes its framing) and framed again by the proxy."""

    def __init__(self, connection: h11.Connection, reader: asyncio.StreamReader, framing: BodyFraming) -> None:
        self.connection = connection
        self.reader = reader
        self.framing = framing

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's data as it arrives (chunk extensions and trailer fields dropped by h11)."""
        while True:
            event = await _next_event(self.connection, self.reader)
            if isinstance(event, h11.Data):
                if event.data:
                    yield event.data
            elif isinstance(event, h11.EndOfMessage):
                return
            else:  # ConnectionClosed mid-body (h11 reports it as an error in most states)
                raise asyncio.IncompleteReadError(b"", None)

    async def stream(self, writer: asyncio.StreamWriter) -> None:
        """Forward the body as it arrives, a chunk at a time, framed as `framing_headers` said."""
        async for data in self.chunks():
            writer.write(b"%x\r\n%b\r\n" % (len(data), data) if self.framing.chunked else data)
            await writer.drain()
        if self.framing.chunked:
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async def read_whole(self, limit: int) -> bytearray:
        """The whole body (a Content-Length body is at most `limit` by then; a chunked one over it is refused
        with 413)."""
        if self.framing.length is not None:
            # One buffer of the declared size, filled in place: the memory the body budget counted, no more.
            body = bytearray(self.framing.length)
            filled = 0
            async for data in self.chunks():
                body[filled : filled + len(data)] = data
                filled += len(data)
            return body
        body = bytearray()
        async for data in self.chunks():
            if len(body) + len(data) > limit:
                raise Reject(
                    413,
                    "Content Too Large",
                    f"Corral egress proxy: a chunked body over {limit} bytes cannot carry a vault credential; "
                    "send it with a Content-Length",
                )
            body += data
        return body


# -- heads -------------------------------------------------------------------------------------------


def header_name(header_line: str) -> str:
    return header_line.split(":", 1)[0].strip().lower()


def end_to_end(header_lines: Sequence[str], *, dropped: frozenset[str] = frozenset()) -> list[str]:
    """The header lines that travel on: not hop-by-hop, not named by `Connection`, not in `dropped`."""
    named = {
        token.strip().lower()
        for line in header_lines
        if header_name(line) == "connection"
        for token in line.split(":", 1)[-1].split(",")
    }
    skip = HOP_BY_HOP | named | dropped
    return [line for line in header_lines if line and header_name(line) not in skip]


def message_head(start_line: str, headers: Sequence[str]) -> bytes:
    """A message head that tells the other side the connection closes after this message."""
    return "\r\n".join([start_line, *headers, "Connection: close", "", ""]).encode("latin-1")


def split_authority(target: str) -> tuple[str, int]:
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = target.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise Reject(400, "Bad Request", f"CONNECT needs host:port, not {target!r}")
    return host, int(port_text)


async def respond(writer: asyncio.StreamWriter, rejection: Reject) -> None:
    body = (str(rejection) + "\n").encode()
    retry_after = f"Retry-After: {rejection.retry_after_s}\r\n" if rejection.retry_after_s is not None else ""
    head = (
        f"HTTP/1.1 {rejection.status} {rejection.reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n{retry_after}X-Corral-Egress: refused\r\nConnection: close\r\n\r\n"
    )
    with contextlib.suppress(ConnectionError):
        writer.write(head.encode() + body)
        await writer.drain()
