"""What a sandbox backend gives the server: how shells start, who owns the workspaces, where they live.

A backend is a function `(workspaces, limits) -> Sandboxes` registered by name in `registry.py`
(`--sandbox NAME`). It runs once at server start: it checks that it can work here, sweeps what a crashed
predecessor left behind, and logs what it provides. What it cannot provide it refuses through its launcher
and volumes (every tool call then fails with the reason), never by running with less confinement.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from corral.config import SandboxLimits
from corral.hands.sandbox.launcher import ShellLauncher
from corral.hands.sandbox.volumes import WorkspaceVolumes


@dataclass(frozen=True)
class Sandboxes:
    """One backend, opened for this server.

    `owner` (uid, gid) owns the workspaces when the shells run as another user than the server (None: the
    server's user). `volumes` None keeps workspaces as plain directories. `applies_environments` says whether
    the backend can confine a session to its environment's networking and packages; only then does the server
    provision environments (egress proxy, package cache) for it.
    """

    launcher: ShellLauncher
    owner: tuple[int, int] | None = None
    volumes: WorkspaceVolumes | None = None
    applies_environments: bool = False


class SandboxBackend(Protocol):
    """Opens a backend for workspaces under `workspaces` with the operator's `limits`."""

    def __call__(self, workspaces: Path, limits: SandboxLimits) -> Sandboxes: ...
