"""One running shell: the spawned process, the pipes and socket the server holds to it, and killing a command.

The process is started from a sandbox backend's `LaunchSpec` (`corral.hands.sandbox`), so nothing here knows
which backend runs it. Killing what a command left behind walks /proc from the shell and the output pipe
(`processes.py`), or sweeps the sandbox's cgroup when it has one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from dataclasses import dataclass

from corral.hands.builtin.file_channel import FileHelper
from corral.hands.builtin.processes import child_pids, kill_processes, sigkill
from corral.hands.sandbox.launcher import LaunchSpec, SandboxHandle

log = logging.getLogger(__name__)


class ShellChild:
    """The spawned process: started by `subprocess.Popen` (vfork + exec), its exit watched through a pidfd.

    Not `asyncio.create_subprocess_exec`: under uvloop, which the server runs on, that forks the whole
    server process and costs ~6 ms per sandbox start instead of ~2 ms (measured by bench/bench_sandbox.py).
    """

    def __init__(self, popen: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._popen = popen
        self._loop = loop
        self.pid = popen.pid
        self.exited: asyncio.Future[int] = loop.create_future()
        try:
            # We are the parent and nothing else reaps it, so the PID cannot be reused before this.
            self._pidfd: int | None = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):  # no pidfd (Linux < 5.3): a thread waits instead
            self._pidfd = None
            loop.run_in_executor(None, popen.wait).add_done_callback(lambda _: self._reap())
        else:
            loop.add_reader(self._pidfd, self._reap)

    @classmethod
    def spawn(cls, spec: LaunchSpec, *, stdin: int, output: int, pass_fds: tuple[int, ...] = ()) -> ShellChild:
        popen = subprocess.Popen(
            spec.argv,
            stdin=stdin,
            stdout=output,
            stderr=output,
            env=spec.env,
            cwd=spec.cwd,
            pass_fds=(*spec.pass_fds, *pass_fds),
            # Its own session and process group: killing groups can never hit the server's.
            start_new_session=True,
        )
        return cls(popen, asyncio.get_running_loop())

    @property
    def returncode(self) -> int | None:
        """The exit status once reaped (negative: killed by that signal), else None."""
        return self._popen.returncode

    def _reap(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        code = self._popen.wait()
        if not self.exited.done():
            self.exited.set_result(code)


@dataclass
class ShellProcess:
    """One running shell and the pipe ends we own."""

    process: ShellChild
    exited: asyncio.Future[int]
    reader: asyncio.StreamReader
    read_transport: asyncio.ReadTransport
    write_transport: asyncio.WriteTransport
    token: str
    pipe_link: str
    # The server's end of the file helper's socket, and the descriptor number of the shell's end (which commands
    # run by the shell never inherit).
    files: FileHelper
    files_fd: int
    root: str
    sandbox: SandboxHandle | None = None
    # The shell's own host PID (inside any sandbox), and every process there was when it became ready:
    # the launch chain (bwrap, its PID-namespace init, bash) and helpers the sandbox's setup started (the
    # egress bridge). Those survive a command's timeout; everything else goes.
    shell: int | None = None
    keep: frozenset[int] = frozenset()
    oom_seen: int = 0
    pending: bytes = b""
    closed: bool = False

    def shell_pid(self) -> int | None:
        """The spawned process's PID (the shell, or the sandbox around it) while it is safe to signal."""
        return self.process.pid if self.process.returncode is None else None

    def inner_pid(self) -> int | None:
        """The shell's own PID (inside any sandbox) while the spawned process has not been reaped."""
        if self.process.returncode is not None:
            return None
        return self.shell if self.shell is not None else self.process.pid


def kill_command(proc: ShellProcess) -> list[int]:
    """After a timeout: kill the command's processes but not the shell (blocking); returns the shell's
    children as they were (see `kill_processes`).

    In a sandbox with a cgroup that is every process of the sandbox but those in `proc.keep`, frozen first
    so that a fork bomb cannot outrun the kill (the signals land at the thaw). It also catches what left
    both the process tree and the output pipe.
    """
    sandbox = proc.sandbox
    inner = proc.inner_pid()
    if sandbox is None:
        return kill_processes(inner, proc.pipe_link, keep=proc.keep)
    children = child_pids(inner) if inner is not None else []
    sandbox.freeze()
    try:
        sigkill(sandbox.pids() - proc.keep, groups=False, spare=set(proc.keep))
    finally:
        sandbox.thaw()
    return children


def remove_sandbox(sandbox: SandboxHandle) -> None:
    try:
        sandbox.remove()
    except OSError:
        log.warning("could not remove a stopped sandbox", exc_info=True)
