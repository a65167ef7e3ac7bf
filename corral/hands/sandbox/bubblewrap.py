"""Runs each session's shell inside a bubblewrap sandbox.

The sandbox sees a read-only /usr, a curated /etc (no shadow files, no keys), its own /proc, /dev and
/tmp, and the session's workspace at /workspace. It has its own PID, mount, IPC, UTS, user and network
namespaces (only `lo`), no capabilities, none of the server's environment, and a seccomp filter that refuses
kernel surface no tool needs (`seccomp.py`). When the server runs as root, the sandbox runs as a dedicated
unprivileged user, so nothing root-owned is readable inside.

With a `CgroupTree`, each sandbox runs in a cgroup of its own (memory, process and CPU limits; see
`cgroups.py` for how it joins it), and /tmp is a tmpfs of bounded size.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from corral.config import SandboxLimits
from corral.hands.sandbox.backend import Sandboxes
from corral.hands.sandbox.cgroups import JOIN_FAILED_EXIT, CgroupTree, Limits, SessionCgroup, format_bytes
from corral.hands.sandbox.extras import SandboxExtras
from corral.hands.sandbox.launcher import SAFE_PATH, LaunchSpec, SandboxUnavailable
from corral.hands.sandbox.seccomp import SeccompFilter, compile_sandbox_filter
from corral.hands.sandbox.volumes import DirectoryVolumes, ImageVolumes, RefusingVolumes, WorkspaceVolumes

# The server's startup messages, under the logger name they have always had.
log = logging.getLogger("corral")

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
    """A `ShellLauncher` that starts `bash --noprofile --norc` inside bubblewrap.

    `seccomp`: the filter every sandbox runs under; `cgroups`: where each sandbox gets its cgroup (None: no
    resource limits); `tmp_size`: the size cap of the sandbox's /tmp in bytes (None: tmpfs's default, half
    the RAM, charged to the sandbox's memory).
    """

    def __init__(
        self,
        identity: SandboxIdentity,
        bwrap: str,
        setpriv: str | None,
        *,
        seccomp: SeccompFilter,
        cgroups: CgroupTree | None = None,
        tmp_size: int | None = None,
        sh: str = "/bin/sh",
    ) -> None:
        self.identity = identity
        self.seccomp = seccomp
        self.cgroups = cgroups
        self.tmp_size = tmp_size
        self._bwrap = bwrap
        self._setpriv = setpriv
        self._sh = sh

    @classmethod
    def detect(
        cls, workspaces_root: Path, *, cgroups: CgroupTree | None = None, tmp_size: int | None = None
    ) -> BubblewrapLauncher:
        """A launcher for this machine, after checking that a sandbox starts on a directory below
        `workspaces_root` (which the sandbox user must be able to reach); else SandboxUnavailable."""
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxUnavailable("bubblewrap is not installed; run scripts/setup or `apt-get install bubblewrap`")
        identity = sandbox_identity()
        setpriv = shutil.which("setpriv")
        if identity.needs_switch and setpriv is None:
            raise SandboxUnavailable("setpriv (util-linux) is needed to drop to the sandbox user; install util-linux")
        sh = shutil.which("sh", path=SAFE_PATH) or "/bin/sh"
        # Compiled once: every sandbox of this launcher gets the same program.
        seccomp = compile_sandbox_filter()
        launcher = cls(identity, bwrap, setpriv, seccomp=seccomp, cgroups=cgroups, tmp_size=tmp_size, sh=sh)
        launcher.probe(workspaces_root)
        return launcher

    def argv(
        self,
        workspace: Path,
        command: tuple[str, ...],
        *,
        seccomp_fd: int,
        cgroup: SessionCgroup | None = None,
        extras: SandboxExtras | None = None,
    ) -> tuple[str, ...]:
        """The whole launch chain: [join `cgroup`] → [setpriv to the sandbox user] → bwrap → `command`.

        `seccomp_fd`: a descriptor from `self.seccomp.open()` that the chain inherits (`pass_fds`); bwrap
        reads the filter from it. `extras` adds what the session's environment brings (packages, the egress
        socket; see provision.py).
        """
        extras = extras or SandboxExtras()
        prefix: tuple[str, ...] = cgroup.join_argv(self._sh) if cgroup is not None else ()
        if self.identity.needs_switch:
            assert self._setpriv is not None
            uid, gid = str(self.identity.uid), str(self.identity.gid)
            prefix += (self._setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--")
        tmp_size = ("--size", str(self.tmp_size)) if self.tmp_size is not None else ()
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
            *tmp_size, "--tmpfs", "/tmp",
            "--bind", str(workspace), "/workspace",
            *extras.bwrap_binds(),
            # Everything but /workspace and /tmp (separate mounts) becomes read-only, /etc included.
            "--remount-ro", "/",
            "--chdir", "/workspace",
            "--unshare-all",
            # No user namespaces inside: they hand out capabilities over fresh namespaces, and with them
            # kernel surface (netfilter, mounts) that unprivileged escapes go through.
            "--unshare-user", "--disable-userns",
            "--die-with-parent",
            "--cap-drop", "ALL",
            "--seccomp", str(seccomp_fd),
            "--hostname", "sandbox",
            "--clearenv",
            "--setenv", "PATH", SAFE_PATH,
            "--setenv", "HOME", "/workspace",
            "--setenv", "LANG", "C.UTF-8",
            "--setenv", "TERM", "dumb",
            *extras.bwrap_env(),
            *extras.wrap(command),
        )  # fmt: skip

    def launch_spec(self, workspace: Path, extras: SandboxExtras | None = None) -> LaunchSpec:
        """A sandbox for `workspace`, in a new cgroup named after it (the session id) when limits apply."""
        env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8"}
        seccomp_fd = self.seccomp.open()
        try:
            cgroup = self.cgroups.create(workspace.name) if self.cgroups is not None else None
        except BaseException:
            os.close(seccomp_fd)
            raise
        command = ("bash", "--noprofile", "--norc")
        argv = self.argv(workspace, command, seccomp_fd=seccomp_fd, cgroup=cgroup, extras=extras)
        # The spec owns the descriptor from here: the shell's spawner closes it.
        return LaunchSpec(argv=argv, env=env, root="/workspace", cwd="/", sandbox=cgroup, pass_fds=(seccomp_fd,))

    def close(self) -> None:
        """Remove this server's cgroup directory (its sandboxes have been stopped by then)."""
        if self.cgroups is not None:
            self.cgroups.remove()

    def probe(self, workspaces_root: Path) -> None:
        """Start one sandbox on a scratch workspace, so a broken setup fails at start, not on a tool call."""
        workspaces_root.mkdir(mode=0o711, parents=True, exist_ok=True)
        probe_dir = workspaces_root / f".probe-{os.getpid()}"
        probe_dir.mkdir(mode=0o700, exist_ok=True)
        cgroup = None
        seccomp_fd = None
        # The probe's sandbox is a real one: a workspace it can write, and the filter in force.
        check = (
            "test -w /workspace || { echo 'the workspace is not writable' >&2; exit 1; }; "
            "grep -q '^Seccomp:[[:space:]]*2$' /proc/self/status || { echo 'no seccomp filter' >&2; exit 1; }"
        )
        try:
            if self.identity.needs_switch:
                os.chown(probe_dir, self.identity.uid, self.identity.gid)
            # The probe runs in a cgroup too, so a host where sandboxes cannot join one fails here.
            cgroup = self.cgroups.create(f"probe-{os.getpid()}") if self.cgroups is not None else None
            seccomp_fd = self.seccomp.open()
            result = subprocess.run(
                self.argv(probe_dir, ("bash", "-c", check), seccomp_fd=seccomp_fd, cgroup=cgroup),
                env={"PATH": SAFE_PATH},
                pass_fds=(seccomp_fd,),
                capture_output=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxUnavailable(f"bubblewrap failed to start: {exc}") from exc
        finally:
            if seccomp_fd is not None:
                os.close(seccomp_fd)
            if cgroup is not None:
                cgroup.remove()
            shutil.rmtree(probe_dir, ignore_errors=True)
        if result.returncode != 0:
            detail = result.stderr.decode(errors="replace").strip()
            if cgroup is not None and result.returncode == JOIN_FAILED_EXIT:
                raise SandboxUnavailable(
                    f"a sandbox could not join its cgroup ({detail}); check that the server may write "
                    f"{cgroup.dirs['memory'].parent}, or pass --sandbox-cgroup none to run sandboxes without limits"
                )
            if "seccomp" in detail.lower():
                raise SandboxUnavailable(f"the sandbox's seccomp filter could not be applied ({detail})")
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

    def close(self) -> None:
        pass


def open_bubblewrap(workspaces: Path, limits: SandboxLimits) -> Sandboxes:
    """The "bubblewrap" backend: shells in bubblewrap with per-session limits, workspaces of capped size.

    What cannot be provided as configured is refused with the reason and its fix, at start (logged) and in
    every tool call it affects. Sandboxes and workspace mounts that a crashed predecessor left are removed here.
    """
    launcher: BubblewrapLauncher | RefusingLauncher
    owner: tuple[int, int] | None = None
    try:
        cgroups = _session_cgroups(limits)
        launcher = BubblewrapLauncher.detect(workspaces, cgroups=cgroups, tmp_size=limits.tmp_bytes)
        owner = (launcher.identity.uid, launcher.identity.gid)
    except SandboxUnavailable as exc:
        log.error("sandbox unavailable, bash calls will fail until this is fixed: %s", exc)
        launcher = RefusingLauncher(str(exc))
    volumes: WorkspaceVolumes = DirectoryVolumes(owner)
    if limits.workspace_bytes is None:
        log.warning("--sandbox-workspace-size none: workspaces share the data disk; one session can fill it")
    else:
        try:
            volumes = ImageVolumes.detect(workspaces, limits.workspace_bytes, owner, limits.disk_reserve_bytes)
            stale = volumes.sweep()
            if stale:
                log.warning("unmounted %d workspace(s) left mounted by a server that is gone", stale)
        except SandboxUnavailable as exc:
            log.error("workspaces unavailable, tool calls will fail until this is fixed: %s", exc)
            volumes = RefusingVolumes(str(exc))
    if isinstance(launcher, BubblewrapLauncher):
        log.info(
            "sandboxes: bubblewrap, %s, /tmp %s, workspace %s, stopped after %s idle",
            launcher.cgroups.limits.describe() if launcher.cgroups else "no cgroup limits",
            "default size" if limits.tmp_bytes is None else format_bytes(limits.tmp_bytes),
            "uncapped" if limits.workspace_bytes is None else format_bytes(limits.workspace_bytes),
            "never" if limits.idle_timeout_s is None else f"{limits.idle_timeout_s:g} s",
        )
    return Sandboxes(launcher=launcher, owner=owner, volumes=volumes, applies_environments=True)


def _session_cgroups(limits: SandboxLimits) -> CgroupTree | None:
    """This server's cgroup tree, after killing the sandboxes of dead predecessors (None: limits off)."""
    if limits.cgroup_parent is None:
        log.warning("--sandbox-cgroup none: sandboxes run without memory, process and CPU limits")
        return None
    tree = CgroupTree.detect(limits.cgroup_parent, Limits(limits.memory_bytes, limits.pids, limits.cpus))
    swept = tree.sweep_orphans()
    if swept:
        log.warning("killed %d sandbox(es) left running by a server that is gone", swept)
    return tree
