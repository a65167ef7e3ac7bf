"""Finding and killing the processes of a session's shell through /proc.

A command may fork, leave the process tree (setsid, reparenting) or fill the sandbox with a fork bomb;
`kill_processes` hunts down both the shell's descendants and whatever still holds its output pipe. The PID
helpers translate between the host's PIDs and the ones a sandbox's own PID namespace shows its shell.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Collection, Iterable


def child_pids(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def descendant_pids(pid: int) -> list[int]:
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in child_pids(stack.pop()):
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


def sigkill(pids: Iterable[int], *, groups: bool, spare: set[int]) -> None:
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


def kill_processes(shell_pid: int | None, pipe_link: str | None, *, keep: Collection[int] = ()) -> list[int]:
    """SIGKILL everything the shell started, and the shell too unless it is in `keep`.

    `keep` holds the processes that must survive a timeout: the ones the sandbox had when its shell became
    ready (see `_Proc.keep` in `bash.py`). `shell_pid` is None once the shell has been reaped: its PID may belong to
    someone else by then, so only the processes still holding our output pipe are hunted down. Returns the
    shell's direct children as they were, the processes the shell itself will reap.
    """
    spare = set(keep)
    children = child_pids(shell_pid) if shell_pid is not None else []
    if shell_pid is not None:
        # Two passes: a process may fork between reading the tree and the kill.
        for _ in range(2):
            sigkill(descendant_pids(shell_pid), groups=True, spare=spare)
    if pipe_link is not None:
        sigkill(_pipe_holders(pipe_link), groups=True, spare=spare)
    if shell_pid is not None and shell_pid not in spare:
        sigkill([shell_pid], groups=True, spare=set())
    return children


def _innermost_pid(pid: int) -> int | None:
    """`pid` as seen in its own PID namespace (the last NSpid entry), None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def find_shell(root: int, own_pid: int | None) -> int:
    """The host PID of the process below `root` whose `$$` (PID in its own namespace) is `own_pid`."""
    if own_pid is not None:
        found = _find_below(root, own_pid)
        if found is not None:
            return found
    return root


def _find_below(root: int, own_pid: int) -> int | None:
    """The host PID of the process at or below `root` whose PID in its own namespace is `own_pid`."""
    for pid in (root, *descendant_pids(root)):
        if _innermost_pid(pid) == own_pid:
            return pid
    return None


def pidfd_below(root: int, own_pid: int) -> tuple[int, int] | None:
    """The host PID and a pidfd of the process below `root` that its namespace calls `own_pid`, checked again
    once the pidfd is open (so a PID reused in between cannot be mistaken for it); None if it is gone."""
    pid = _find_below(root, own_pid)
    if pid is None:
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    if _find_below(root, own_pid) != pid:
        os.close(pidfd)
        return None
    return pid, pidfd


def wait_gone(pids: list[int], timeout_s: float) -> None:
    """Block (in a worker thread) until none of `pids` exists any more, or the time is up."""
    deadline = time.monotonic() + timeout_s
    while any(os.path.exists(f"/proc/{pid}") for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.01)
