"""The server's end of the file helper (`file_helper.py`), which serves the file tools inside a sandbox.

The session's shell starts the helper (`BashSession.file_helper`) with one end of a socket pair as its stdin and
stdout; this module sends it its code, then one request at a time. Everything that comes back is treated as
hostile, since any process in the sandbox can kill, stop or impersonate the helper: every answer has a deadline,
a size cap and a death watch (a pidfd), and a helper that misbehaves is killed, never waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.hands.builtin import file_helper

# Run by `python3 -I -S -c BOOTSTRAP <nonce> <root>`: skips whatever an earlier helper left unread on the socket
# (up to the line holding the nonce), then reads and runs the helper's code.
BOOTSTRAP = (
    "import sys;b=sys.stdin.buffer;n=(sys.argv[1]+'\\n').encode();"
    "any(line==n for line in iter(b.readline,b''));"
    "exec(compile(b.read(int(b.readline())),'corral-files','exec'))"
)
# The largest answer: a PDF at the limit, base64-encoded, in JSON.
ANSWER_LIMIT = 4 * file_helper.PDF_LIMIT // 3 + 64 * 1024
STARTUP_TIMEOUT_S = 10.0
# What a new helper may have to skip (a killed predecessor's half-sent answer) before its ready line.
_RESYNC_LIMIT = 2 * ANSWER_LIMIT
_CODE = Path(file_helper.__file__).read_bytes()


class HelperGone(Exception):
    """The helper is not there to answer (it exited, was killed, or sent garbage); the message says which."""


class HelperTimeout(Exception):
    """The helper did not answer in time; it has been killed."""


@dataclass
class _Process:
    pidfd: int
    exited: asyncio.Future[None]


class FileHelper:
    """The file helper of one shell's sandbox: the server's end of its socket, and its process once started."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._process: _Process | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def running(self) -> bool:
        """Whether a helper has been started and has not exited (it may still be killed at any time)."""
        process = self._process
        return process is not None and not process.exited.done()

    async def adopt(self, pidfd: int, nonce: str) -> None:
        """Take the helper that the shell has just started (a pidfd of it, now owned here): send its code, await
        its ready line. Raises HelperGone when it does not come up."""
        self.kill()
        loop = asyncio.get_running_loop()
        process = _Process(pidfd, loop.create_future())
        loop.add_reader(pidfd, self._on_exit, process)
        self._process = process
        marker = json.dumps({"ready": nonce}).encode()
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT_S):
                reader, writer = await self._open()
                writer.write(b"\n%s\n%d\n%s" % (nonce.encode(), len(_CODE), _CODE))
                await self._race(process, self._resync(reader, writer, marker))
        except (TimeoutError, HelperGone, OSError, asyncio.IncompleteReadError) as exc:
            self.kill()
            raise HelperGone("the file helper did not start in the sandbox (is python3 installed there?)") from exc

    async def request(self, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send one request and return the helper's answer (a JSON object, not yet validated).

        Raises HelperGone or HelperTimeout; on cancellation (an interrupt) the helper is killed, so that nothing
        keeps running behind the caller's back.
        """
        async with self._lock:
            process = self._process
            if process is None or process.exited.done():
                raise HelperGone("the file helper is not running")
            try:
                async with asyncio.timeout(timeout_s):
                    answer: dict[str, Any] = await self._race(process, self._exchange(payload))
                    return answer
            except TimeoutError:
                self.kill()
                raise HelperTimeout(f"no answer after {timeout_s:g} s") from None
            except (ValueError, RecursionError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                self.kill()
                raise HelperGone("the file helper sent an unreadable answer and was stopped") from exc
            except BaseException:
                self.kill()
                raise

    def kill(self) -> None:
        """Kill the helper process, if any (the socket stays, for the next one)."""
        process, self._process = self._process, None
        if process is None or process.exited.done():
            return  # its pidfd is closed, and the number may already be another's
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(process.pidfd, signal.SIGKILL)
        self._forget(process)

    def close(self) -> None:
        """Kill the helper and close the socket (the shell is going away)."""
        self.kill()
        if not self._closed:
            self._closed = True
            if self._streams is not None:
                self._streams[1].close()
            else:
                self._sock.close()

    # -- internals -------------------------------------------------------------------------------

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._closed:
            raise HelperGone("the sandbox is shutting down")
        if self._streams is None:
            self._streams = await asyncio.open_unix_connection(sock=self._sock, limit=64 * 1024)
        return self._streams

    def _on_exit(self, process: _Process) -> None:
        self._forget(process)

    def _forget(self, process: _Process) -> None:
        if not process.exited.done():
            process.exited.get_loop().remove_reader(process.pidfd)
            os.close(process.pidfd)
            process.exited.set_result(None)

    @staticmethod
    async def _race(process: _Process, work: Any) -> Any:
        """Await `work` unless the helper exits first (then HelperGone)."""
        task = asyncio.ensure_future(work)
        try:
            await asyncio.wait({task, process.exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if task.cancelled():
            raise HelperGone("the file helper in the sandbox exited (did a command kill it?); try again")
        return task.result()

    @staticmethod
    async def _resync(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, marker: bytes) -> None:
        await writer.drain()
        skipped = 0
        while True:
            try:
                await reader.readuntil(marker)
                return
            except asyncio.LimitOverrunError as exc:
                skipped += exc.consumed
                if skipped > _RESYNC_LIMIT:
                    raise HelperGone("too much unexpected output on the file helper's socket") from exc
                await reader.readexactly(exc.consumed)

    async def _exchange(self, payload: dict[str, Any]) -> dict[str, Any]:
        reader, writer = await self._open()
        body = json.dumps(payload).encode()
        writer.write(b"%d\n%s" % (len(body), body))
        await writer.drain()
        header = await reader.readuntil(b"\n")
        length = int(header)
        if not 0 <= length <= ANSWER_LIMIT:
            raise ValueError(f"answer of {length} bytes")
        answer = json.loads(await reader.readexactly(length))
        if not isinstance(answer, dict):
            raise ValueError("answer is not an object")
        return answer
