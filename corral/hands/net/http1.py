"""HTTP/1.1 message framing for the egress proxy (RFC 9112): request bodies, heads, hop-by-hop headers.

The proxy frames what it forwards itself: a request body is read as its head declares (Content-Length or
chunked, never both) and re-framed on the way out, and the headers that belong to one hop never travel on.
Anything malformed or ambiguous is a `Reject`, which the proxy answers with its status and reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

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
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class Reject(Exception):
    """A request the proxy answers itself, with this status, reason and message (and maybe a Retry-After)."""

    def __init__(self, status: int, reason: str, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class BodyFraming:
    """How a request's body is delimited (RFC 9112 §6): a Content-Length, chunked, or no body at all."""

    length: int | None = None  # the Content-Length; None when chunked or absent
    chunked: bool = False
    expects_continue: bool = False

    @classmethod
    def of(cls, header_lines: Sequence[str]) -> BodyFraming:
        """The framing a request head declares; a Reject (400) for one that is malformed or ambiguous."""
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
            raise Reject(
                400, "Bad Request", "Corral egress proxy: a request with both Transfer-Encoding and Content-Length"
            )
        if codings:
            if codings != ["chunked"]:
                raise Reject(
                    400,
                    "Bad Request",
                    f"Corral egress proxy: request bodies may only be chunked, not {', '.join(codings)[:80]!r}",
                )
            return cls(chunked=True, expects_continue=expects_continue)
        if not lengths:
            return cls(expects_continue=expects_continue)
        if len(lengths) > 1 or not next(iter(lengths)).isdigit():
            raise Reject(400, "Bad Request", f"Corral egress proxy: bad Content-Length {sorted(lengths)!r:.80}")
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
            while size := await next_chunk_size(reader):
                writer.write(b"%x\r\n" % size)
                await copy_exactly(reader, writer, size)
                await chunk_end(reader)
                writer.write(b"\r\n")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        elif self.length:
            await copy_exactly(reader, writer, self.length)

    async def read_whole(self, reader: asyncio.StreamReader, limit: int) -> bytearray:
        """The whole body, in one buffer of its size (a Content-Length body is at most `limit` by then; a chunked
        one over it is refused with 413)."""
        if not self.chunked:
            body = bytearray(self.length or 0)
            with memoryview(body) as view:
                filled = 0
                while filled < len(body):
                    chunk = await reader.read(min(CHUNK, len(body) - filled))
                    if not chunk:
                        raise asyncio.IncompleteReadError(b"", len(body))
                    view[filled : filled + len(chunk)] = chunk
                    filled += len(chunk)
            return body
        body = bytearray()
        while size := await next_chunk_size(reader):
            if len(body) + size > limit:
                raise Reject(
                    413,
                    "Content Too Large",
                    f"Corral egress proxy: a chunked body over {limit} bytes cannot carry a vault credential; "
                    "send it with a Content-Length",
                )
            body += await reader.readexactly(size)
            await chunk_end(reader)
        return body


async def next_chunk_size(reader: asyncio.StreamReader) -> int:
    """The size of the next chunk of a chunked body; after the last (0), its trailer fields are read and dropped."""
    size_text = (await reader.readuntil(b"\r\n"))[:-2].split(b";", 1)[0].strip()
    if not _CHUNK_SIZE.fullmatch(size_text):
        raise Reject(400, "Bad Request", "Corral egress proxy: malformed chunked request body")
    size = int(size_text, 16)
    if size == 0:
        while await reader.readuntil(b"\r\n") != b"\r\n":
            pass
    return size


async def chunk_end(reader: asyncio.StreamReader) -> None:
    if await reader.readexactly(2) != b"\r\n":
        raise Reject(400, "Bad Request", "Corral egress proxy: malformed chunked request body")


async def copy_exactly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: int) -> None:
    while count > 0:
        chunk = await reader.read(min(CHUNK, count))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", count)
        writer.write(chunk)
        await writer.drain()
        count -= len(chunk)


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
