"""A persistent bash per session, driven over pipes with an unguessable end-of-command sentinel.

Protocol (see the sandbox research notes): the shell runs `set -m` once so every command gets its own
process group, then each command is sent as

    eval '<cmd>' </dev/null 2>&1; builtin printf '\\n<token>:%d\\n' $?

and we read until the sentinel line (`shell_output.py`). `</dev/null` keeps a command from eating the next
request, and the random token means the command's own output cannot fake the end of the command.

Where the shell process runs is not decided here: a sandbox backend's `ShellLauncher`
(`corral.hands.sandbox`) says how to start it, so the tools do not notice which backend runs them.
The spawned process and the pipes to it, and killing what a command left behind, are in `shell_process.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shlex
import signal
import socket
import time
from pathlib import Path
from typing import Any

from corral.hands.base import ToolResult
from corral.hands.builtin.file_channel import BOOTSTRAP, FileHelper, HelperGone
from corral.hands.builtin.processes import descendant_pids, find_shell, kill_processes, pidfd_below, wait_gone
from corral.hands.builtin.shell_output import OutputCapture, sentinel
from corral.hands.builtin.shell_process import ShellChild, ShellProcess, kill_command, remove_sandbox
from corral.hands.sandbox.launcher import LaunchSpec, SandboxUnavailable, ShellLauncher
from corral.hands.sandbox.none import LocalShellLauncher
from corral.observability import metrics

OUTPUT_LIMIT = 100 * 1024
DEFAULT_TIMEOUT_S = 120.0
MAX_TIMEOUT_S = 600.0
# After killing a timed-out command's processes, how long to wait for the shell to print the sentinel
# (which means it survived and keeps its cwd/env) before giving up on it and killing it too.
_KILL_GRACE_S = 2.0
_STARTUP_TIMEOUT_S = 10.0
_READ_CHUNK = 64 * 1024


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "an unknown status"
    if code < 0:
        return f"signal {-code} ({_signal_name(-code)})"
    if code > 128:
        return f"code {code} (as when killed by signal {code - 128}, {_signal_name(code - 128)})"
    return f"code {code}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"


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
        self._proc: ShellProcess | None = None
        # Why the last shell went away without a command being told (e.g. stopped while idle); the next
        # command's result says that its shell is a fresh one.
        self._gone_reason: str | None = None
        # The teardown of a shell that was stopped without waiting (cancellation); finished before the
        # next start, so it cannot touch its successor's sandbox.
        self._teardown: asyncio.Future[None] | None = None

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
                self._gone_reason = self._gone_reason or f"the previous shell had exited ({self._exit_of(proc)})"
                await self._stop(proc)
                proc = await self._ensure_started()
                if not self._send(proc, command):
                    await self._stop(proc)
                    return ToolResult.error("bash: could not send the command to the shell")
            capture = OutputCapture(proc.token, self._output_limit)
            # Output that background jobs wrote after the previous sentinel belongs to this call.
            capture.feed(proc.pending)
            proc.pending = b""
            try:
                outcome = await self._read(proc, capture, time.monotonic() + timeout_s)
                if outcome == "timeout":
                    result = await self._on_timeout(proc, capture, timeout_s)
                elif outcome == "eof":
                    result = await self._on_exit(proc, capture)
                else:
                    result = self._finish(proc, capture)
            except asyncio.CancelledError:
                # The caller gave up (e.g. an interrupt): nothing may keep running behind its back.
                self._kill_now(proc)
                raise
            return self._with_restart_note(result)

    async def file_helper(self) -> FileHelper:
        """The file tools' helper in this shell's sandbox, started (with the shell if need be) on first use and
        again after it died. Raises SandboxUnavailable or HelperGone when it cannot be started."""
        proc = self._proc
        if proc is not None and not proc.closed and proc.files.running:
            return proc.files
        async with self._lock:
            proc = await self._ensure_started()
            if not proc.files.running:
                await self._start_file_helper(proc)
            return proc.files

    async def suspend(self, reason: str) -> None:
        """Stop the shell and everything it started (e.g. idle); the next command's result says `reason`."""
        async with self._lock:
            if self._proc is not None:
                await self._stop(self._proc)
                self._gone_reason = reason

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
        await self._finish_teardown()

    # -- internals -------------------------------------------------------------------------------

    async def _ensure_started(self) -> ShellProcess:
        proc = self._proc
        if proc is not None and not proc.closed and proc.process.returncode is None:
            return proc
        if proc is not None:
            if not proc.closed:
                self._gone_reason = self._gone_reason or f"the previous shell had exited ({self._exit_of(proc)})"
            await self._stop(proc)
        self._proc = await self._spawn()
        return self._proc

    async def _start_file_helper(self, proc: ShellProcess) -> None:
        """Have the idle shell start the helper in the background, holding the socket as stdin and stdout, then
        hand it to `proc.files`. It is added to the processes that survive a command's timeout."""
        nonce = secrets.token_hex(16)
        fd = proc.files_fd
        # `exec -a`: `ps` shows it as corral-files (it renames its process too, so that `pkill python3` in the
        # sandbox leaves it alone); `disown`: its end is no job notice in the model's next command output.
        line = (
            f"exec -a corral-files python3 -I -S -c {shlex.quote(BOOTSTRAP)} {nonce} {shlex.quote(proc.root)}"
            f" <&{fd} >&{fd} {fd}>&- 2>/dev/null & builtin disown $!; {sentinel(proc.token, '$!')}\n"
        )
        capture = OutputCapture(proc.token, self._output_limit)
        if not self._write(proc, line):
            raise HelperGone("the sandbox's shell is gone; try again")
        if await self._read(proc, capture, time.monotonic() + _STARTUP_TIMEOUT_S) != "done":
            await self._stop(proc)
            raise HelperGone("the sandbox's shell did not start the file helper; try again")
        # What background jobs printed meanwhile belongs to the next command, as usual.
        proc.pending += capture.output() + capture.leftover
        found = pidfd_below(proc.process.pid, capture.exit_code) if capture.exit_code else None
        if found is None:
            raise HelperGone("the file helper exited as it started (is python3 installed in the sandbox?)")
        pid, pidfd = found
        proc.keep = proc.keep | {pid}
        await proc.files.adopt(pidfd, nonce)

    def _with_restart_note(self, result: ToolResult) -> ToolResult:
        """Tell the model when its command ran in a fresh shell for a reason it was not told before."""
        reason, self._gone_reason = self._gone_reason, None
        if reason is None:
            return result
        note = (
            f"(note: this command ran in a fresh shell because {reason}; the working directory, environment "
            "variables and background processes were reset, the files in the workspace are kept)"
        )
        text = "".join(block.get("text", "") for block in result.content if block.get("type") == "text")
        return ToolResult.text(_join(text, note), is_error=result.is_error)

    @staticmethod
    def _exit_of(proc: ShellProcess) -> str:
        return _describe_exit(proc.process.returncode)

    async def _finish_teardown(self) -> None:
        teardown, self._teardown = self._teardown, None
        if teardown is not None:
            with contextlib.suppress(Exception):
                await teardown

    async def _spawn(self) -> ShellProcess:
        await self._finish_teardown()
        # In a thread: a sandbox's launch spec may make its cgroup (a few file system calls).
        spec = await asyncio.to_thread(self._launcher.launch_spec, self._workspace)
        try:
            return await self._start(spec)
        except BaseException:
            if spec.sandbox is not None:
                await asyncio.to_thread(spec.sandbox.remove)
            raise
        finally:
            for fd in spec.pass_fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    async def _start(self, spec: LaunchSpec) -> ShellProcess:
        loop = asyncio.get_running_loop()
        # We own both pipes instead of using asyncio's PIPE: a killed command's escaped grandchild can
        # keep the output pipe open indefinitely, and asyncio would then never close its transport.
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        files_ours, files_theirs = socket.socketpair()
        files_fd = files_theirs.fileno()
        try:
            process = ShellChild.spawn(spec, stdin=in_r, output=out_w, pass_fds=(files_fd,))
        except BaseException:
            for fd in (in_r, in_w, out_r, out_w):
                os.close(fd)
            files_ours.close()
            raise
        finally:
            files_theirs.close()
        os.close(in_r)
        os.close(out_w)
        files_ours.setblocking(False)
        pipe_link = f"pipe:[{os.fstat(out_r).st_ino}]"
        reader = asyncio.StreamReader(limit=2 * _READ_CHUNK)
        read_transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(out_r, "rb", buffering=0)
        )
        write_transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(in_w, "wb", buffering=0))
        proc = ShellProcess(
            process=process,
            exited=process.exited,
            reader=reader,
            read_transport=read_transport,
            write_transport=write_transport,
            token=secrets.token_hex(16),
            pipe_link=pipe_link,
            files=FileHelper(files_ours),
            files_fd=files_fd,
            root=spec.root,
        )
        # Job control gives each command its own process group; the handshake also swallows any
        # startup noise so that the first command's output is clean, and tells the shell's own PID.
        capture = OutputCapture(proc.token, self._output_limit)
        ok = self._write(proc, f"set -m 2>/dev/null; {sentinel(proc.token, '$$')}\n")
        if not ok or await self._read(proc, capture, time.monotonic() + _STARTUP_TIMEOUT_S) != "done":
            capture.flush()
            # Without its sandbox: the caller removes that (the spec is its to clean up).
            proc.sandbox = None
            await self._stop(proc)
            detail = capture.text().strip() or "no output"
            raise SandboxUnavailable(f"the shell did not start (exit {self._exit_of(proc)}): {detail}")
        proc.pending = capture.leftover
        proc.shell = find_shell(process.pid, capture.exit_code)
        proc.keep = frozenset((process.pid, *descendant_pids(process.pid)))
        proc.sandbox = spec.sandbox
        if spec.sandbox is not None:
            proc.oom_seen = spec.sandbox.oom_kills()
        metrics.sandbox_started()  # observability: corral_sandbox_starts_total
        return proc

    def _write(self, proc: ShellProcess, text: str) -> bool:
        if proc.closed or proc.write_transport.is_closing():
            return False
        proc.write_transport.write(text.encode())
        # A dead reader makes the write fail at once, which closes the transport.
        return not proc.write_transport.is_closing()

    def _send(self, proc: ShellProcess, command: str) -> bool:
        line = f"eval {shlex.quote(command)} </dev/null 2>&1 {proc.files_fd}>&-; {sentinel(proc.token, '$?')}\n"
        return self._write(proc, line)

    async def _read(self, proc: ShellProcess, capture: OutputCapture, deadline: float) -> str:
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

    async def _drain(self, proc: ShellProcess, capture: OutputCapture) -> str:
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

    def _finish(self, proc: ShellProcess, capture: OutputCapture) -> ToolResult:
        proc.pending = capture.leftover
        out = capture.text()
        code = capture.exit_code or 0
        if code != 0:
            note = f"exit code {code}"
            if self._ran_out_of_memory(proc):
                assert proc.sandbox is not None
                note += (
                    f"; the sandbox reached its memory limit ({proc.sandbox.describe_memory_limit()}) and the "
                    "kernel killed a process to stay within it"
                )
            return ToolResult.error(_join(out, note))
        # The Messages API rejects empty text blocks, so say it explicitly.
        return ToolResult.text(out if out else "(no output)")

    @staticmethod
    def _ran_out_of_memory(proc: ShellProcess) -> bool:
        """Whether the kernel killed a process for the memory limit since we last looked."""
        if proc.sandbox is None:
            return False
        seen, proc.oom_seen = proc.oom_seen, proc.sandbox.oom_kills()
        return proc.oom_seen > seen

    async def _on_exit(self, proc: ShellProcess, capture: OutputCapture) -> ToolResult:
        capture.flush()
        sandbox = proc.sandbox
        out_of_memory = self._ran_out_of_memory(proc)
        await self._stop(proc)
        code = proc.process.returncode
        fresh = "the next command starts a fresh shell in the workspace, whose files are kept"
        if sandbox is not None and out_of_memory:
            limit = sandbox.describe_memory_limit()
            note = f"the sandbox ran out of memory (limit {limit}) and the kernel killed its shell; {fresh}"
        elif code is not None and code < 0:
            note = f"the {'sandbox' if sandbox else 'shell'} was killed by {_describe_exit(code)}; {fresh}"
        else:
            note = f"shell exited with {_describe_exit(code)}; {fresh}"
        return ToolResult.text(_join(capture.text(), note), is_error=code != 0)

    async def _on_timeout(self, proc: ShellProcess, capture: OutputCapture, timeout_s: float) -> ToolResult:
        children = await asyncio.to_thread(kill_command, proc)
        # With its foreground job gone the shell normally prints the sentinel and lives on, keeping
        # its cwd and environment.
        deadline = time.monotonic() + _KILL_GRACE_S
        survived = await self._read(proc, capture, deadline) == "done"
        notices = ""
        if survived and proc.sandbox is not None:
            # The shell is idle now, so anything else still running is the command's: a shell that was
            # retrying a fork for a fork bomb when the kill came has started it again by now.
            await asyncio.to_thread(kill_command, proc)
        if survived:
            # Bash reports killed background jobs ("... Killed  sleep 100") only once it has reaped
            # them, at the start of the next command. Wait for the reaping, then run a no-op so those
            # notices land in this result instead of the model's next command.
            await asyncio.to_thread(wait_gone, children, deadline - time.monotonic())
            flush = OutputCapture(proc.token, self._output_limit)
            survived = self._send(proc, "builtin :") and await self._read(proc, flush, deadline) == "done"
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

    def _kill_now(self, proc: ShellProcess) -> None:
        """Synchronous stop for paths that cannot await (cancellation) or must not wait (close)."""
        if not proc.closed:
            proc.closed = True
            proc.files.close()
            kill_processes(proc.shell_pid(), proc.pipe_link)
            proc.read_transport.close()
            proc.write_transport.close()
            if proc.sandbox is not None:
                # Sweeping the cgroup blocks; it finishes in a thread, before any next shell starts.
                previous = self._teardown
                sandbox = proc.sandbox

                async def teardown() -> None:
                    if previous is not None:
                        await previous
                    await asyncio.to_thread(remove_sandbox, sandbox)

                self._teardown = asyncio.ensure_future(teardown())
        if self._proc is proc:
            self._proc = None

    async def _stop(self, proc: ShellProcess) -> None:
        if not proc.closed:
            proc.closed = True
            proc.files.close()
            if proc.sandbox is not None:
                # Every process of the sandbox is in its cgroup, even one that left the process tree and
                # the output pipe: one sweep kills them all.
                await asyncio.to_thread(remove_sandbox, proc.sandbox)
            else:
                await asyncio.to_thread(kill_processes, proc.shell_pid(), proc.pipe_link)
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
