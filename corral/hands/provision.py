"""Applies a session's environment to its sandbox when the sandbox is first started.

`Provisioner` (one per server) holds the egress proxy and the package cache; `SessionSandbox` (one per
session) turns the environment's resolved `config` into `SandboxExtras`: the installed packages mounted
read-only, and, when `config.networking` allows any egress, the session's proxy socket with the `socat`
bridge and proxy variables. Packages install lazily, on the first command, never when the session is made.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from corral.hands.bubblewrap import BubblewrapLauncher
from corral.hands.egress import SANDBOX_PROXY_PORT, SANDBOX_SOCKET, EgressProxy
from corral.hands.netpolicy import HostRules
from corral.hands.packages import SANDBOX_MOUNT, PackageCache, PackageInstallError
from corral.hands.sandbox_extras import SandboxExtras
from corral.hands.shell import SAFE_PATH, LaunchSpec, LocalShellLauncher, SandboxUnavailable, ShellLauncher

log = logging.getLogger("corral.hands")

_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# socat bridges the sandbox's 127.0.0.1:3128 to the session's proxy socket. It runs beside the shell, in a
# session of its own (a child of the sandbox's init, not of bash) and holds none of the shell's output pipe,
# and it is there when the shell becomes ready, so stopping a command's processes leaves it alone (see
# shell._Proc.keep); it dies with the sandbox. The loop waits until it listens (its probe reaches the proxy
# as an empty connection) so that the first command finds it; every process it starts is waited for, so the
# shell starts with no children.
_BRIDGE = f"""\
(setsid socat TCP-LISTEN:{SANDBOX_PROXY_PORT},bind=127.0.0.1,fork,reuseaddr,nodelay UNIX-CONNECT:{SANDBOX_SOCKET} \
</dev/null >/dev/null 2>&1 &)
for ((i = 0; i < 1000; i++)); do
  {{ : </dev/tcp/127.0.0.1/{SANDBOX_PROXY_PORT}; }} 2>/dev/null && break
  sleep 0.002
done"""


class ProvisionError(SandboxUnavailable):
    """The session's environment could not be applied; the message names what failed and the fix."""


class Provisioner:
    """Server-wide: the egress proxy (None: sandboxes never get network) and the package cache (None: none)."""

    def __init__(self, *, egress: EgressProxy | None = None, packages: PackageCache | None = None) -> None:
        self.egress = egress
        self.packages = packages

    def for_session(
        self, session_id: str, environment: dict[str, Any] | None, mcp_hosts: Iterable[str] = ()
    ) -> SessionSandbox:
        return SessionSandbox(self, session_id, environment or {}, frozenset(mcp_hosts))

    async def close(self) -> None:
        if self.egress is not None:
            await self.egress.close()


class SessionSandbox:
    """What one session's environment adds to its sandbox.

    `launcher(base)` is the launcher the session's shell uses; `prepare()`, awaited before each command,
    makes sure the packages are installed and the egress socket is open, for the next sandbox start.
    """

    def __init__(
        self, provisioner: Provisioner, session_id: str, environment: dict[str, Any], mcp_hosts: frozenset[str]
    ) -> None:
        self._provisioner = provisioner
        self.session_id = session_id
        self.rules = HostRules.from_networking(environment.get("networking"), mcp_hosts)
        self._packages = environment.get("packages")
        self._launcher: _SessionLauncher | None = None
        self._prepared: SandboxExtras | None = None

    def launcher(self, base: ShellLauncher | None) -> ShellLauncher:
        self._launcher = _SessionLauncher(base or LocalShellLauncher())
        return self._launcher

    async def prepare(self) -> None:
        """Apply the environment to the next sandbox start; ProvisionError (naming the failure) if it cannot be."""
        egress = self._provisioner.egress
        ready = self._prepared is not None and (
            egress is None or not self.rules.allows_anything or egress.is_open(self.session_id)
        )
        if not ready:
            self._prepared = await self.extras()  # the warm path (every later command) skips this
        if self._launcher is not None:
            self._launcher.extras = self._prepared

    async def extras(self) -> SandboxExtras:
        """Install the packages (first time only) and open the egress socket; ProvisionError names a failure."""
        binds: list[tuple[str, str]] = []
        env: list[tuple[str, str]] = []
        setup = ""
        cache = self._provisioner.packages
        if cache is not None:
            try:
                installed = await cache.ensure(self._packages)
            except PackageInstallError as exc:
                raise ProvisionError(f"the environment's packages could not be installed: {exc}") from exc
            if installed is not None:
                binds.append((str(installed.root), SANDBOX_MOUNT))
                env += installed.sandbox_env(SAFE_PATH)
        egress = self._provisioner.egress
        if egress is not None and self.rules.allows_anything:
            if shutil.which("socat", path=SAFE_PATH) is None:
                raise ProvisionError(
                    "this environment allows network access, which needs socat on the host: run scripts/setup "
                    "or `apt-get install socat`"
                )
            try:
                socket_path = await egress.open(self.session_id, self.rules)
            except OSError as exc:
                raise ProvisionError(f"the egress proxy socket could not be opened: {exc}") from exc
            binds.append((str(socket_path), SANDBOX_SOCKET))
            proxy = f"http://127.0.0.1:{SANDBOX_PROXY_PORT}"
            for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
                env.append((name, proxy))
            env += [("NO_PROXY", ""), ("no_proxy", "")]
            # Programs with their own CA lists (node, requests) trust the host's store, as curl and git do.
            env += [("NODE_EXTRA_CA_CERTS", _CA_BUNDLE), ("REQUESTS_CA_BUNDLE", _CA_BUNDLE)]
            setup = _BRIDGE
        return SandboxExtras(ro_binds=tuple(binds), env=tuple(env), setup=setup)

    async def close(self) -> None:
        """Stop the session's egress socket (the packages stay cached for the environment)."""
        self._prepared = None
        if self._provisioner.egress is not None:
            await self._provisioner.egress.close_session(self.session_id)


class _SessionLauncher:
    """The server's launcher with one session's extras; only a bubblewrap sandbox can take them.

    Under `--sandbox none` the shell runs on the host as it is: no egress policy applies there (the host's
    network is open) and the packages are not put on its paths.
    """

    def __init__(self, base: ShellLauncher) -> None:
        self.base = base
        self.extras: SandboxExtras | None = None

    def launch_spec(self, workspace: Path) -> LaunchSpec:
        if isinstance(self.base, BubblewrapLauncher):
            return self.base.launch_spec(workspace, self.extras)
        return self.base.launch_spec(workspace)

    def close(self) -> None:
        """The server's launcher is closed by its provider, not per session."""
