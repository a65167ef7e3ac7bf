"""Applies a session's environment to its sandbox when the sandbox is first started.

`Provisioner` (one per server) holds the egress proxy and the package cache; `SessionSandbox` (one per
session) turns the environment's resolved `config` into `SandboxExtras`: the installed packages mounted
read-only, and, when `config.networking` allows any egress, the session's proxy socket with the `socat`
bridge and proxy variables. Packages install lazily, on the first command, never when the session is made.

The session's vault credentials of type `environment_variable` become variables holding only their
placeholders (the egress proxy puts the values in). A credential naming a host the environment's networking
does not allow is reported once, as a `session.error` `credential_host_unreachable_error`, when the sandbox
is first provisioned.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from corral.hands.net.egress import SANDBOX_PROXY_PORT, SANDBOX_SOCKET, CredentialSource, EgressProxy
from corral.hands.net.policy import HostRules
from corral.hands.sandbox.bubblewrap import BubblewrapLauncher
from corral.hands.sandbox.extras import SandboxExtras
from corral.hands.sandbox.launcher import SAFE_PATH, LaunchSpec, SandboxUnavailable, ShellLauncher
from corral.hands.sandbox.none import LocalShellLauncher
from corral.hands.sandbox.packages import SANDBOX_MOUNT, PackageCache, PackageInstallError
from corral.vault.credentials import EnvironmentSecret

log = logging.getLogger("corral.hands")

# (session id, `error` object): appends a `session.error` to the session's log.
ErrorReporter = Callable[[str, dict[str, Any]], Awaitable[None]]
# Variables every sandbox gets from the launcher itself (bubblewrap.py); a credential cannot replace them.
_LAUNCHER_VARIABLES = frozenset({"PATH", "HOME", "LANG", "TERM"})

_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# Where a sandbox whose credentials need TLS interception finds the system's roots plus the egress CA.
SANDBOX_CA_BUNDLE = "/run/corral/ca-certificates.crt"
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


def credential_host_errors(secrets: Sequence[EnvironmentSecret], rules: HostRules | None) -> list[dict[str, Any]]:
    """`session.error` objects (`credential_host_unreachable_error`) for the credentials among `secrets` whose
    `networking.allowed_hosts` name a host that `rules` (the environment's networking; None: no egress at all)
    never let through. A credential with `unrestricted` networking names no host and is never reported."""
    errors: list[dict[str, Any]] = []
    for secret in secrets:
        blocked = [h for h in secret.allowed_hosts or () if rules is None or not rules.reaches(h)]
        if not blocked:
            continue
        errors.append(
            {
                "type": "credential_host_unreachable_error",
                "message": (
                    f"vault credential {secret.credential_id} ({secret.secret_name}) is for "
                    f"{', '.join(blocked)}, which this session's environment does not let the sandbox reach "
                    "(config.networking), so it is never used there: add the host to the environment's "
                    "networking.allowed_hosts, or remove it from the credential"
                ),
                "credential_id": secret.credential_id,
                "vault_id": secret.vault_id,
                "retry_status": {"type": "exhausted"},
            }
        )
    return errors


class Provisioner:
    """Server-wide: the egress proxy (None: sandboxes never get network) and the package cache (None: none).

    `credentials` gives a session's `environment_variable` credentials (None: sessions have none); `report`
    records a `session.error` on a session (None: such errors are only logged).
    """

    def __init__(
        self,
        *,
        egress: EgressProxy | None = None,
        packages: PackageCache | None = None,
        credentials: CredentialSource | None = None,
        report: ErrorReporter | None = None,
    ) -> None:
        self.egress = egress
        self.packages = packages
        self.credentials = credentials
        self.report = report
        if egress is not None and egress.credentials is None:
            egress.credentials = credentials

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
        self._reported: set[str] = set()  # credentials already reported unreachable by this server process

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
            setup = _BRIDGE
        secrets = await self._credentials()
        bundle = _CA_BUNDLE
        ca_bundle = egress.ca.bundle_path if setup and egress is not None and egress.ca is not None else None
        # A credential naming a host makes the proxy end TLS to that host with its own CA's certificates
        # (egress.py): only then does the sandbox trust that CA, through a bundle of the system's roots and it.
        if ca_bundle is not None and any(secret.allowed_hosts is not None for secret in secrets):
            binds.append((str(ca_bundle), SANDBOX_CA_BUNDLE))
            bundle = SANDBOX_CA_BUNDLE
            env += [(name, bundle) for name in ("SSL_CERT_FILE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO")]
        if setup:
            # Programs with their own CA lists (node, requests) trust the same store as curl and git do.
            env += [("NODE_EXTRA_CA_CERTS", bundle), ("REQUESTS_CA_BUNDLE", bundle)]
        env = self._credential_variables(secrets, {name for name, _ in env}) + env
        return SandboxExtras(ro_binds=tuple(binds), env=tuple(env), setup=setup)

    async def _credentials(self) -> list[EnvironmentSecret]:
        """The session's `environment_variable` credentials, read now; reports the ones the environment's
        networking leaves unusable (once per credential)."""
        source = self._provisioner.credentials
        if source is None:
            return []
        try:
            secrets = list(await source(self.session_id))
        except Exception as exc:
            raise ProvisionError(
                f"the session's vault credentials could not be read ({type(exc).__name__}); try again"
            ) from exc
        egress = self._provisioner.egress is not None and self.rules.allows_anything
        fresh = [secret for secret in secrets if secret.credential_id not in self._reported]
        for error in credential_host_errors(fresh, self.rules if egress else None):
            self._reported.add(error["credential_id"])
            log.warning("session %s: %s", self.session_id, error["message"])
            if self._provisioner.report is not None:
                try:
                    await self._provisioner.report(self.session_id, error)
                except Exception:
                    log.exception("session %s: could not record a credential_host_unreachable_error", self.session_id)
        return secrets

    def _credential_variables(self, secrets: Sequence[EnvironmentSecret], taken: set[str]) -> list[tuple[str, str]]:
        """Each `environment_variable` credential's variable, holding its placeholder (never its value)."""
        variables: list[tuple[str, str]] = []
        for secret in secrets:
            if secret.secret_name in taken or secret.secret_name.upper() in _LAUNCHER_VARIABLES:
                log.warning(
                    "session %s: vault credential %s is not given to the sandbox: it needs %s itself",
                    self.session_id,
                    secret.credential_id,
                    secret.secret_name,
                )
                continue
            variables.append((secret.secret_name, secret.placeholder))
        return variables

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
