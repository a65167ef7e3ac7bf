"""Moving bytes between a client of the egress proxy and its upstream, and ending the client's connection.

A relayed connection holds a bounded amount of memory whatever it carries (a chunk each way and asyncio's
stream buffers): bodies stream through, a chunk at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from corral.hands.net.http1 import CHUNK, Reject, end_to_end, message_head

_HALF_CLOSE_GRACE_S = 60.0
# How long a connection is read (and dropped) after its answer.
_LINGER_S = 2.0


async def exchange(
    up_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    send_body: Callable[[], Awaitable[None]],
) -> None:
    """Send the request's body upstream (the head is sent) while passing the response back, until it ends.

    The upstream may answer before it has read the whole body (an early error): that answer still reaches the
    client. A malformed body is the client's 400 when no response has begun."""
    response = UpstreamResponse()
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
        await cancel(upward, downward)
        # An error raised from here keeps this frame in its traceback; without these names, no reference cycle
        # (frame -> task -> error -> traceback -> frame) keeps the request's buffers alive until a GC pass.
        del upward, downward


class UpstreamResponse:
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
                raise Reject(
                    502, "Bad Gateway", "Corral egress proxy: the upstream closed the connection without a response"
                ) from exc
            except asyncio.LimitOverrunError as exc:
                if self.started:
                    return
                raise Reject(
                    502, "Bad Gateway", "Corral egress proxy: the upstream's response head is too large"
                ) from exc
            self.started = True
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            status = status_line.split(" ", 2)
            if len(status) >= 2 and status[1].startswith("1") and status[1] != "101":
                writer.write(head)  # an interim response (100 Continue, 103 Early Hints): the final one follows
                await writer.drain()
                continue
            writer.write(message_head(status_line, end_to_end(header_lines)))
            await writer.drain()
            break
        await copy_until_eof(reader, writer)


async def tunnel(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """Copy both ways until both sides are done, or one is and the other has had a grace period."""
    upward = asyncio.ensure_future(copy_until_eof(client_reader, up_writer))
    downward = asyncio.ensure_future(copy_until_eof(up_reader, client_writer))
    try:
        await asyncio.wait({upward, downward}, return_when=asyncio.FIRST_COMPLETED)
        if not (upward.done() and downward.done()):
            await asyncio.wait({upward, downward}, timeout=_HALF_CLOSE_GRACE_S)
    finally:
        await cancel(upward, downward)
        del upward, downward  # see exchange
        up_writer.close()


async def cancel(*tasks: asyncio.Future[None]) -> None:
    """Stop the tasks and wait until they have stopped (their errors are theirs: not raised here)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def copy_until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until the reader ends, then half-close the writer (so that the other side sees the end too)."""
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()


async def write_pieces(writer: asyncio.StreamWriter, pieces: Sequence[memoryview | bytes]) -> None:
    """Send the pieces a chunk at a time, so that the transport never copies more than a chunk of them."""
    for piece in pieces:
        for offset in range(0, len(piece), CHUNK):
            writer.write(piece[offset : offset + CHUNK])
            await writer.drain()


async def linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Say this side is done (half-close), then read and drop what the client still sends, for a moment: a unix
    socket closed with unread data resets the connection, and the client would lose the answer it has not read
    yet (a refusal sent before its request, or its body, was read)."""
    with contextlib.suppress(OSError, RuntimeError, TimeoutError):
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()
        async with asyncio.timeout(_LINGER_S):
            while await reader.read(CHUNK):
                pass


async def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
