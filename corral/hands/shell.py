"""A persistent bash per session, driven over pipes with an unguessable end-of-command sentinel.

Protocol (see the sandbox research notes): the shell runs `set -m` once so every command gets its own
process group, then each command is sent as

    eval '<cmd>' </dev/null 2>&1; builtin printf '\\n<token>:%d\\n' $?

and we read until the sentinel line. `</dev/null` keeps a command from eating the next request, and the
random token means the command's own output cannot fake the end of the command.

Where the shell process runs is deliberately one small piece, `ShellLauncher`: today `LocalShellLauncher`
starts bash directly in the workspace; a bubblewrap launcher can return a different argv later without
the tools noticing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shlex
import shutil
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from corral.hands.base import ToolResult

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
OUTPUT_LIMIT = 100 * 1024
DEFAULT_TIMEOUT_S = 120.0
MAX_TIMEOUT_S = 600.0
# After killing a timed-out command's processes, how long to wait for the shell to print the sentinel
# (which means it survived and keeps its cwd/env) before giving up on it and killing it too.
_KILL_GRACE_S = 2.0
_STARTUP_TIMEOUT_S = 10.0
_READ_CHUNK = 64 * 1024


def scrubbed_env(workspace: Path) -> dict[str, str]:
    """The complete environment for processes run on the model's behalf.

    Built from scratch on purpose: the server's own environment holds API keys, and anything the model
    can run can print its environment.
    """
    return {
        "PATH": SAFE_PATH,
        "HOME": str(workspace),
        "PWD": str(workspace),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
    }


class SandboxUnavailable(RuntimeError):
    """The shell cannot be started in a sandbox here; the message names the fix."""


@dataclass(frozen=True)
class LaunchSpec:
    """How to spawn the shell: the argv, its whole environment, and its starting directory."""

    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str | None = None


class ShellLauncher(Protocol):
    """Decides where the shell process runs (plain host process, sandbox, ...)."""

    def launch_spec(self, workspace: Path) -> LaunchSpec:
        """The argv/env/cwd that starts `bash --noprofile --norc` reading commands from stdin."""
        ...


class LocalShellLauncher:
    """Runs bash directly on the host, in the workspace directory, with a scrubbed environment."""

    def launch_spec(self, workspace: Path) -> LaunchSpec:
        """Spawn the host's bash in `workspace`."""
        bash = shutil.which("bash", path=SAFE_PATH) or "/bin/bash"
        return LaunchSpec(
            argv=(bash, "--noprofile", "--norc"),
            env=scrubbed_env(workspace),
            cwd=str(workspace),
        )


class _Capture:
    """Accumulates one command's output up to a cap while watching for the sentinel line."""

    def __init__(self, token: str, limit: int) -> None:
        self._marker = f"\n{token}:".encode()
        self._limit = limit
        self._head = bytearray()
        self._window = bytearray()
        self.total = 0
        self.exit_code: int | None = None
        self.leftover = b""

    def feed(self, chunk: bytes) -> bool:
        """Take more output; True once the sentinel line has been seen completely."""
        self._window += chunk
        idx = self._window.find(self._marker)
        if idx >= 0:
            start = idx + len(self._marker)
            nl = self._window.find(b"\n", start)
            if nl < 0:
                return False
            self._keep(self._window[:idx])
            self.exit_code = int(self._window[start:nl])
            self.leftover = bytes(self._window[nl + 1 :])
            self._window.clear()
            return True
        # Hold back a possible partial marker at the end; everything before it is plain output.
        safe = len(self._window) - (len(self._marker) - 1)
        if safe > 0:
            self._keep(self._window[:safe])
            del self._window[:safe]
        return False

    def flush(self) -> None:
        """No sentinel is coming (EOF or timeout): everything held back is output."""
        self._keep(self._window)
        self._window.clear()

    def _keep(self, data: bytes | bytearray) -> None:
        self.total += len(data)
        room = self._limit - len(self._head)
        if room > 0:
            self._head += data[:room]

    def text(self) -> str:
        """The captured output, with a note when it was cut."""
        out = self._head.decode("utf-8", errors="replace")
        if self.total > self._limit:
            out += f"\n[output truncated: showing the first {self._limit // 1024} KiB of {self.total} bytes]"
        return out


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in _children(stack.pop()):
            if child not in found:
                found.append(child)
                stack.append(child)
    return found


def _pipe_holders(link: str) -> list[int]:
    """PIDs with an open fd on the pipe named `link` (e.g. 'pipe:[1234]').

    Catches processes that escaped the tree (setsid + reparenting) but still hold the output pipe.
    """
    pids: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return pids
    for entry in entries:
        if not entry.isdigit():
            continue
        fd_dir = f"/proc/{entry}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") == link and _is_write_end(entry, fd):
                    pids.append(int(entry))
                    break
            except OSError:
                continue
    return pids


def _is_write_end(pid: str, fd: str) -> bool:
    # Only writers matter (they are what keeps output coming); the server itself, or anything it
    # forked, holds the read end and must be left alone.
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("flags:"):
                return int(line.split()[1], 8) & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
    return False


def _sigkill(pids: Iterable[int], *, groups: bool, spare: set[int]) -> None:
    own_group = os.getpgrp()
    for pid in pids:
        if pid in spare or pid == os.getpid():
            continue
        if groups:
            with contextlib.suppress(OSError):
                pgid = os.getpgid(pid)
                if pgid != own_group and pgid not in spare:
                    os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _kill_processes(shell_pid: int | None, pipe_link: str | None, *, keep_shell: bool) -> list[int]:
    """SIGKILL everything the shell started, and the shell too unless `keep_shell`.

    `shell_pid` is None once the shell has been reaped: its PID may belong to someone else by then, so
    only the processes still holding our output pipe are hunted down. Returns the shell's direct
    children as they were, the processes the shell itself will reap.
    """
    spare = {shell_pid} if keep_shell and shell_pid is not None else set()
    children = _children(shell_pid) if shell_pid is not None else []
    if shell_pid is not None:
        # Two passes: a process may fork between reading the tree and the kill.
        for _ in range(2):
            _sigkill(_descendants(shell_pid), groups=True, spare=spare)
    if pipe_link is not None:
        _sigkill(_pipe_holders(pipe_link), groups=True, spare=spare)
    if shell_pid is not None and not keep_shell:
        _sigkill([shell_pid], groups=True, spare=set())
    return children


def _wait_gone(pids: list[int], timeout_s: float) -> None:
    """Block (in a worker thread) until none of `pids` exists any more, or the time is up."""
    deadline = time.monotonic() + timeout_s
    while any(os.path.exists(f"/proc/{pid}") for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.01)


@dataclass
class _Proc:
    """One running shell and the pipe ends we own."""

    process: asyncio.subprocess.Process
    exited: asyncio.Future[int]
    reader: asyncio.StreamReader
    read_transport: asyncio.ReadTransport
    write_transport: asyncio.WriteTransport
    token: str
    pipe_link: str
    pending: bytes = b""
    closed: bool = False

    def shell_pid(self) -> int | None:
        """The shell's PID while it is safe to signal (not yet reaped)."""
        return self.process.pid if self.process.returncode is None else None


class BashSession:
    """A persistent bash for one workspace; calls are serialized.

    The shell starts on the first call and is replaced transparently after it died (e.g. the command ran
    `exit`) or after a timeout that it did not survive.
    """

    def __init__(
        self,
        workspace: Path,
        launcher: ShellLauncher | None = None,
        *,
        output_limit: int = OUTPUT_LIMIT,
    ) -> None:
        self._workspace = workspace
        self._launcher: ShellLauncher = launcher or LocalShellLauncher()
        self._output_limit = output_limit
        self._lock = asyncio.Lock()
        self._proc: _Proc | None = None

    @property
    def pid(self) -> int | None:
        """PID of the running shell process, if any (for diagnostics and tests)."""
        proc = self._proc
        return proc.shell_pid() if proc is not None and not proc.closed else None

    async def run(self, command: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> ToolResult:
        """Run `command` and return its merged stdout/stderr; a non-zero exit is an error result."""
        timeout_s = max(0.001, min(timeout_s, MAX_TIMEOUT_S))
        async with self._lock:
            proc = await self._ensure_started()
            if not self._send(proc, command):
                # The shell died after the last call and we had not noticed yet: one fresh try.
                await self._stop(proc)
                proc = await self._ensure_started()
                if not self._send(proc, command):
                    await self._stop(proc)
                    return ToolResult.error("bash: could not send the command to the shell")
            capture = _Capture(proc.token, self._output_limit)
            # Output that background jobs wrote after the previous sentinel belongs to this call.
            capture.feed(proc.pending)
            proc.pending = b""
            try:
                outcome = await self._read(proc, capture, time.monotonic() + timeout_s)
                if outcome == "timeout":
                    return await self._on_timeout(proc, capture, timeout_s)
                if outcome == "eof":
                    return await self._on_exit(proc, capture)
            except asyncio.CancelledError:
                # The caller gave up (e.g. an interrupt): nothing may keep running behind its back.
                self._kill_now(proc)
                raise
            return self._finish(proc, capture)

    async def restart(self) -> None:
        """Kill the shell and everything it started; the next call gets a fresh one."""
        async with self._lock:
            if self._proc is not None:
                await self._stop(self._proc)

    async def close(self) -> None:
        """Stop the shell and its processes at once, even mid-command (the workspace is left alone)."""
        proc = self._proc
        if proc is None:
            return
        # Not under the lock: a running command must not delay shutdown. Killing it makes that
        # command's read see end-of-file, so its call returns promptly.
        self._kill_now(proc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proc.exited), 5)

    # -- internals -------------------------------------------------------------------------------

    async def _ensure_started(self) -> _Proc:
        proc = self._proc
        if proc is not None and not proc.closed and proc.process.returncode is None:
            return proc
        if proc is not None:
            await self._stop(proc)
        self._proc = await self._spawn()
        return self._proc

    async def _spawn(self) -> _Proc:
        spec = self._launcher.launch_spec(self._workspace)
        loop = asyncio.get_running_loop()
        # We own both pipes instead of using asyncio's PIPE: a killed command's escaped grandchild can
        # keep the output pipe open indefinitely, and asyncio would then never close its transport.
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                *spec.argv,
                stdin=in_r,
                stdout=out_w,
                stderr=out_w,
                env=spec.env,
                cwd=spec.cwd,
                # Its own session and process group: killing groups can never hit the server's.
                start_new_session=True,
            )
        except BaseException:
            for fd in (in_r, in_w, out_r, out_w):
                os.close(fd)
            raise
        os.close(in_r)
        os.close(out_w)
        pipe_link = f"pipe:[{os.fstat(out_r).st_ino}]"
        reader = asyncio.StreamReader(limit=2 * _READ_CHUNK)
        read_transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(out_r, "rb", buffering=0)
        )
        write_transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(in_w, "wb", buffering=0))
        proc = _Proc(
            process=process,
            exited=asyncio.ensure_future(process.wait()),
            reader=reader,
            read_transport=read_transport,
            write_transport=write_transport,
            token=secrets.token_hex(16),
            pipe_link=pipe_link,
        )
        # Job control gives each command its own process group; the handshake also swallows any
        # startup noise so that the first command's output is clean.
        capture = _Capture(proc.token, self._output_limit)
        ok = self._write(proc, f"set -m 2>/dev/null; builtin printf '\\n{proc.token}:%d\\n' 0\n")
        if not ok or await self._read(proc, capture, time.monotonic() + _STARTUP_TIMEOUT_S) != "done":
            await self._stop(proc)
            raise RuntimeError(f"bash did not start: {capture.text()!r}")
        proc.pending = capture.leftover
        return proc

    def _write(self, proc: _Proc, text: str) -> bool:
        if proc.closed or proc.write_transport.is_closing():
            return False
        proc.write_transport.write(text.encode())
        # A dead reader makes the write fail at once, which closes the transport.
        return not proc.write_transport.is_closing()

    def _send(self, proc: _Proc, command: str) -> bool:
        line = f"eval {shlex.quote(command)} </dev/null 2>&1; builtin printf '\\n{proc.token}:%d\\n' $?\n"
        return self._write(proc, line)

    async def _read(self, proc: _Proc, capture: _Capture, deadline: float) -> str:
        """Read until the sentinel ("done"), the shell's end ("eof") or the deadline ("timeout")."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            read = asyncio.ensure_future(proc.reader.read(_READ_CHUNK))
            # Also watch the process: after `exit`, a background job may still hold the pipe open, so
            # end-of-file alone would never come.
            waiters: set[asyncio.Future[Any]] = {read, proc.exited}
            try:
                await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not read.done():
                    # StreamReader.read is cancellation-safe (unread data stays buffered), and the
                    # cancellation must complete before anyone reads again.
                    read.cancel()
                    await asyncio.wait({read})
            if read.cancelled():
                if proc.exited.done():
                    return await self._drain(proc, capture)
                return "timeout"
            chunk = read.result()
            if not chunk:
                return "eof"
            if capture.feed(chunk):
                return "done"

    async def _drain(self, proc: _Proc, capture: _Capture) -> str:
        """The shell has exited: collect what it wrote before, without waiting on stray pipe holders."""
        while True:
            try:
                chunk = await asyncio.wait_for(proc.reader.read(_READ_CHUNK), 0.2)
            except TimeoutError:
                return "eof"
            if not chunk:
                return "eof"
            if capture.feed(chunk):
                return "done"

    def _finish(self, proc: _Proc, capture: _Capture) -> ToolResult:
        proc.pending = capture.leftover
        out = capture.text()
        code = capture.exit_code or 0
        if code != 0:
            return ToolResult.error(_join(out, f"exit code {code}"))
        # The Messages API rejects empty text blocks, so say it explicitly.
        return ToolResult.text(out if out else "(no output)")

    async def _on_exit(self, proc: _Proc, capture: _Capture) -> ToolResult:
        capture.flush()
        await self._stop(proc)
        code = proc.process.returncode
        note = f"shell exited with code {code}; the next command starts a fresh shell in the workspace"
        return ToolResult.text(_join(capture.text(), note), is_error=code != 0)

    async def _on_timeout(self, proc: _Proc, capture: _Capture, timeout_s: float) -> ToolResult:
        children = await asyncio.to_thread(_kill_processes, proc.shell_pid(), proc.pipe_link, keep_shell=True)
        # With its foreground job gone the shell normally prints the sentinel and lives on, keeping
        # its cwd and environment.
        deadline = time.monotonic() + _KILL_GRACE_S
        survived = await self._read(proc, capture, deadline) == "done"
        notices = ""
        if survived:
            # Bash reports killed background jobs ("... Killed  sleep 100") only once it has reaped
            # them, at the start of the next command. Wait for the reaping, then run a no-op so those
            # notices land in this result instead of the model's next command.
            await asyncio.to_thread(_wait_gone, children, deadline - time.monotonic())
            flush = _Capture(proc.token, self._output_limit)
            survived = self._send(proc, ":") and await self._read(proc, flush, deadline) == "done"
            notices = flush.text()
            proc.pending = flush.leftover
        if survived:
            what = "its processes were killed"
        else:
            capture.flush()
            await self._stop(proc)
            what = "the shell was killed; the next command starts a fresh shell in the workspace"
        output = capture.text() + notices
        return ToolResult.error(_join(output, f"command timed out after {timeout_s:g} s; {what}"))

    def _kill_now(self, proc: _Proc) -> None:
        """Synchronous stop for paths that cannot await (cancellation) or must not wait (close)."""
        if not proc.closed:
            proc.closed = True
            _kill_processes(proc.shell_pid(), proc.pipe_link, keep_shell=False)
            proc.read_transport.close()
            proc.write_transport.close()
        if self._proc is proc:
            self._proc = None

    async def _stop(self, proc: _Proc) -> None:
        if not proc.closed:
            proc.closed = True
            await asyncio.to_thread(_kill_processes, proc.shell_pid(), proc.pipe_link, keep_shell=False)
            proc.read_transport.close()
            proc.write_transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proc.exited), 5)
        if self._proc is proc:
            self._proc = None


def _join(output: str, note: str) -> str:
    """Append a status note on its own line."""
    if not output:
        return note
    return f"{output}{'' if output.endswith(chr(10)) else chr(10)}{note}"
