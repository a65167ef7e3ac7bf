"""What a session's environment adds to its sandbox: read-only mounts, environment variables, a setup step.

The bubblewrap launcher turns these into `--ro-bind` / `--setenv` arguments and runs `setup` (bash) inside
the sandbox before the session's shell replaces it. `provision.py` decides what goes in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SandboxExtras:
    ro_binds: tuple[tuple[str, str], ...] = ()  # (host path, path inside the sandbox)
    env: tuple[tuple[str, str], ...] = ()
    setup: str = ""  # bash run inside the sandbox before the shell starts; must not hold stdout/stderr open

    def bwrap_binds(self) -> list[str]:
        args: list[str] = []
        for source, target in self.ro_binds:
            args += ["--ro-bind", source, target]
        return args

    def bwrap_env(self) -> list[str]:
        args: list[str] = []
        for name, value in self.env:
            args += ["--setenv", name, value]
        return args

    def wrap(self, command: tuple[str, ...]) -> tuple[str, ...]:
        """`command`, preceded by the setup step when there is one (the setup's shell execs the command)."""
        if not self.setup:
            return command
        return ("bash", "--noprofile", "--norc", "-c", f'{self.setup}\nexec "$@"', "corral-setup", *command)
