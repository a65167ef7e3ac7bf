"""The sandbox interface: how a backend says where and how the session's shell process starts.

A backend (bubblewrap, none, ...) is a `ShellLauncher`: it turns a workspace into a `LaunchSpec` (argv,
environment, where the shell sees the workspace, and optionally a `SandboxHandle` for what the sandbox offers
beyond its processes, such as a cgroup's memory accounting). The persistent shell that runs the tool calls
(`corral.hands.builtin.bash`) only ever sees these types, so a new backend changes no tool.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


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


class SandboxHandle(Protocol):
    """What a sandbox offers beyond its processes (for bubblewrap: its cgroup). Every method blocks."""

    def oom_kills(self) -> int:
        """How many processes the kernel killed for exceeding the memory limit, so far."""
        ...

    def describe_memory_limit(self) -> str:
        """The memory limit for messages, e.g. '2 GiB'."""
        ...

    def pids(self) -> set[int]:
        """Every process in the sandbox (host PIDs)."""
        ...

    def freeze(self) -> None:
        """Stop every process where it is: no forks, no exits, until `thaw`."""
        ...

    def thaw(self) -> None: ...

    def remove(self) -> None:
        """Kill every process of the sandbox and release what it holds."""
        ...


@dataclass(frozen=True)
class LaunchSpec:
    """How to spawn the shell: the argv, its whole environment, its starting directory and its sandbox.

    `root` is where the shell sees the workspace. `pass_fds` are open descriptors the shell inherits under the
    same numbers (e.g. a seccomp program for bwrap). The spec owns them: they are closed in the server once the
    shell has been spawned.
    """

    argv: tuple[str, ...]
    env: dict[str, str]
    root: str
    cwd: str | None = None
    sandbox: SandboxHandle | None = None
    pass_fds: tuple[int, ...] = ()


class ShellLauncher(Protocol):
    """Decides where the shell process runs (plain host process, sandbox, ...)."""

    def launch_spec(self, workspace: Path) -> LaunchSpec:
        """The argv/env/cwd that starts `bash --noprofile --norc` reading commands from stdin."""
        ...

    def close(self) -> None:
        """Release what the launcher holds once no shell of it runs any more (server shutdown; blocking)."""
        ...
