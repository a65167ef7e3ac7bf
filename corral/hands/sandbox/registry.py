"""The sandbox backends by name, as `--sandbox` chooses them.

A new backend (a container runtime, a remote host) is one module with its launcher and an opening function
of the `SandboxBackend` shape, plus its line here.
"""

from __future__ import annotations

from pathlib import Path

from corral.config import SandboxLimits
from corral.hands.sandbox.backend import SandboxBackend, Sandboxes
from corral.hands.sandbox.bubblewrap import open_bubblewrap
from corral.hands.sandbox.none import open_unconfined

SANDBOX_BACKENDS: dict[str, SandboxBackend] = {
    "bubblewrap": open_bubblewrap,
    "none": open_unconfined,
}


def open_sandboxes(name: str, workspaces: Path, limits: SandboxLimits) -> Sandboxes:
    """The backend called `name`, opened; ValueError names the known ones when there is no such backend."""
    backend = SANDBOX_BACKENDS.get(name)
    if backend is None:
        raise ValueError(f"unknown sandbox backend {name!r}; known: {', '.join(sorted(SANDBOX_BACKENDS))}")
    return backend(workspaces, limits)
