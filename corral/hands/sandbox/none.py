"""The "none" sandbox backend: bash runs directly on the host, as the server's user (`--sandbox none`)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from corral.config import SandboxLimits
from corral.hands.sandbox.backend import Sandboxes
from corral.hands.sandbox.launcher import SAFE_PATH, LaunchSpec, scrubbed_env

# The server's startup messages, under the logger name they have always had.
log = logging.getLogger("corral")


class LocalShellLauncher:
    """Runs bash directly on the host, in the workspace directory, with a scrubbed environment."""

    def launch_spec(self, workspace: Path) -> LaunchSpec:
        """Spawn the host's bash in `workspace`."""
        bash = shutil.which("bash", path=SAFE_PATH) or "/bin/bash"
        return LaunchSpec(
            argv=(bash, "--noprofile", "--norc"),
            env=scrubbed_env(workspace),
            root=str(workspace),
            cwd=str(workspace),
        )

    def close(self) -> None:
        pass


def open_unconfined(workspaces: Path, limits: SandboxLimits) -> Sandboxes:
    """The "none" backend: host shells as the server's user, workspaces as plain directories."""
    log.warning("--sandbox none: tool commands run UNCONFINED on this host, as the server's user")
    log.warning("--sandbox none: environments' networking and packages are not applied to tool commands")
    return Sandboxes(launcher=LocalShellLauncher())
