"""Runs each session's shell inside a bubblewrap sandbox.

The sandbox sees a read-only /usr, a curated /etc (no shadow files, no keys), its own /proc, /dev and
/tmp, and the session's workspace at /workspace. It has its own PID, mount, IPC, UTS, user and network
namespaces (only `lo`), no capabilities, and none of the server's environment. When the server runs as
root, the sandbox runs as a dedicated unprivileged user, so nothing root-owned is readable inside.

This is the first slice of the hands' isolation; per-session cgroup limits and the egress proxy come next.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from corral.hands.shell import SAFE_PATH, LaunchSpec, SandboxUnavailable

SANDBOX_USER = "corral-sandbox"

# What programs need from /etc (name resolution, TLS roots, locale data, shells); nothing secret.
_ETC_ENTRIES = (
    "passwd",
    "group",
    "hosts",
    "nsswitch.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "localtime",
    "bash.bashrc",
    "profile",
    "inputrc",
    "gitconfig",
    "mime.types",
    "protocols",
    "services",
    "python3",
    "python3.11",
    "terminfo",
    "magic",
)


@dataclass(frozen=True)
class SandboxIdentity:
    """Who sandboxed processes run as: a dedicated user under a root server, else the server's own user."""

    uid: int
    gid: int

    @property
    def needs_switch(self) -> bool:
        return self.uid != os.geteuid()


def sandbox_identity() -> SandboxIdentity:
    if os.geteuid() != 0:
        return SandboxIdentity(os.geteuid(), os.getegid())
    try:
        entry = pwd.getpwnam(SANDBOX_USER)
    except KeyError as exc:
        raise SandboxUnavailable(
            f"the server runs as root but the sandbox user '{SANDBOX_USER}' does not exist; run scripts/setup "
            f"or `useradd --system --no-create-home --shell /usr/sbin/nologin {SANDBOX_USER}`"
        ) from exc
    return SandboxIdentity(entry.pw_uid, entry.pw_gid)


class BubblewrapLauncher:
    """A `ShellLauncher` that starts `bash --noprofile --norc` inside bubblewrap."""

    def __init__(self, identity: SandboxIdentity, bwrap: str, setpriv: str | None) -> None:
        self.identity = identity
        self._bwrap = bwrap
        self._setpriv = setpriv

    @classmethod
    def detect(cls, workspaces_root: Path) -> BubblewrapLauncher:
        """A launcher for this machine, after checking that a sandbox starts on a directory below
        `workspaces_root` (which the sandbox user must be able to reach); else SandboxUnavailable."""
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxUnavailable("bubblewrap is not installed; run scripts/setup or `apt-get install bubblewrap`")
        identity = sandbox_identity()
        setpriv = shutil.which("setpriv")
        if identity.needs_switch and setpriv is None:
            raise SandboxUnavailable("setpriv (util-linux) is needed to drop to the sandbox user; install util-linux")
        launcher = cls(identity, bwrap, setpriv)
        launcher.probe(workspaces_root)
        return launcher

    def argv(self, workspace: Path, command: tuple[str, ...]) -> tuple[str, ...]:
        prefix: tuple[str, ...] = ()
        if self.identity.needs_switch:
            assert self._setpriv is not None
            uid, gid = str(self.identity.uid), str(self.identity.gid)
            prefix = (self._setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--")
        binds: list[str] = []
        for name in _ETC_ENTRIES:
            path = Path("/etc") / name
            if path.exists():
                binds += ["--ro-bind", str(path), str(path)]
        return (
            *prefix,
            self._bwrap,
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/bin", "/bin",
            "--symlink", "usr/lib", "/lib",
            "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/sbin", "/sbin",
            "--dir", "/etc",
            *binds,
            "--proc", "/proc",
            "--dev", "/dev",
            "--tmpfs", "/tmp",
            "--bind", str(workspace), "/workspace",
            # Everything but /workspace and /tmp (separate mounts) becomes read-only, /etc included.
            "--remount-ro", "/",
            "--chdir", "/workspace",
            "--unshare-all",
            "--die-with-parent",
            "--cap-drop", "ALL",
            "--hostname", "sandbox",
            "--clearenv",
            "--setenv", "PATH", SAFE_PATH,
            "--setenv", "HOME", "/workspace",
            "--setenv", "LANG", "C.UTF-8",
            "--setenv", "TERM", "dumb",
            *command,
        )  # fmt: skip

    def launch_spec(self, workspace: Path) -> LaunchSpec:
        env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8"}
        return LaunchSpec(argv=self.argv(workspace, ("bash", "--noprofile", "--norc")), env=env, cwd="/")

    def probe(self, workspaces_root: Path) -> None:
        """Start one sandbox on a scratch workspace, so a broken setup fails at start, not on a tool call."""
        workspaces_root.mkdir(mode=0o711, parents=True, exist_ok=True)
        probe_dir = workspaces_root / f".probe-{os.getpid()}"
        probe_dir.mkdir(mode=0o700, exist_ok=True)
        try:
            if self.identity.needs_switch:
                os.chown(probe_dir, self.identity.uid, self.identity.gid)
            result = subprocess.run(
                self.argv(probe_dir, ("bash", "-c", "test -w /workspace")),
                env={"PATH": SAFE_PATH},
                capture_output=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxUnavailable(f"bubblewrap failed to start: {exc}") from exc
        finally:
            shutil.rmtree(probe_dir, ignore_errors=True)
        if result.returncode != 0:
            detail = result.stderr.decode(errors="replace").strip()
            if "Permission denied" in detail and self.identity.needs_switch:
                raise SandboxUnavailable(
                    f"the sandbox user '{SANDBOX_USER}' cannot reach the workspaces in {workspaces_root} ({detail}); "
                    "every directory above it must be searchable by others (chmod o+x), so choose a --data-dir "
                    "such as /var/lib/corral rather than one under /root"
                )
            raise SandboxUnavailable(
                f"bubblewrap could not start a sandbox ({detail or f'exit {result.returncode}'}); it needs "
                "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
                "user.max_user_namespaces > 0)"
            )


class RefusingLauncher:
    """Stands in when no sandbox can run: every shell start fails with the reason and its fix.

    Commands are never run unsandboxed unless the operator asked for that explicitly (`--sandbox none`).
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def launch_spec(self, workspace: Path) -> LaunchSpec:
        raise SandboxUnavailable(f"no sandbox is available, so commands cannot run: {self.reason}")
