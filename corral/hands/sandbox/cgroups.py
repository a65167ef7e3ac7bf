"""Per-sandbox cgroups: memory, pids and CPU limits, and a way to stop every process of a sandbox.

Layout, in every hierarchy we use (cgroup v1: memory, pids, cpu and freezer, each mounted on its own or
co-mounted; cgroup v2: the one unified hierarchy, where it has the memory, pids and cpu controllers):

    <hierarchy>/<parent>/<instance>/<sandbox>      e.g. /sys/fs/cgroup/memory/corral/4026531836-812-90311-0/sesn_01

* `parent` is a dedicated directory (`corral`, the `--sandbox-cgroup` setting), never the hierarchy root;
* `instance` names the server process that owns the sandboxes below it (its PID namespace, PID, start time and
  a per-process counter), so a new server can tell which sandboxes a dead predecessor left behind
  (`CgroupTree.sweep_orphans`) without touching those of a live server on the same machine;
* `sandbox` is one running sandbox, named after its session.

Joining: the sandbox's first process moves *itself* into the cgroup before it execs the rest of the launch
chain (`SessionCgroup.join_argv`: a one-line `sh` that writes `$$` to each `cgroup.procs`, then `exec`s
setpriv → bwrap → bash). Every later process is forked from it, so nothing the sandbox ever runs starts
outside the cgroup. The alternatives are worse: Python's `preexec_fn` is not safe in a threaded server, and
writing the child's PID from the parent after spawn races with bwrap, which forks its PID-namespace init
(and so bash) at once; a process forked before the move stays in the old cgroup, unlimited.

Cost (bench/bench_sandbox.py): on cgroup v1 the first move of a process into a cgroup after ~100 ms without
one waits for an RCU grace period (the kernel's cgroup_threadgroup_rwsem), about 7-10 ms on the reference
machine; the moves right after it cost tens of microseconds. So a sandbox that starts on a quiet server
starts that much later; only the hierarchies that carry a limit or the freezer are joined (cpuacct only
where it is co-mounted with cpu). A pool of pre-joined spare cgroups, renamed to the session at start,
would take that off the first tool call; it is not built.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from corral.hands.sandbox.launcher import SandboxUnavailable

GiB = 1024**3
MiB = 1024**2
DEFAULT_MEMORY = 2 * GiB
DEFAULT_PIDS = 1024
DEFAULT_CPUS = 1.0
DEFAULT_PARENT = "corral"
_CPU_PERIOD_US = 100_000
_V1_CONTROLLERS = ("memory", "pids", "cpu", "freezer")
_V2_CONTROLLERS = ("memory", "pids", "cpu")
# The sandbox's first process joins its cgroup, then becomes the launch chain ("$@" after the `--`).
_JOIN_SCRIPT = 'while [ "$1" != -- ]; do echo $$ >"$1" || exit 125; shift; done; shift; exec "$@"'
JOIN_FAILED_EXIT = 125
_INSTANCE = re.compile(r"(\d+)-(\d+)-(\d+)-(\d+)")
_instance_counter = itertools.count()


def format_bytes(size: int) -> str:
    """1073741824 -> '1 GiB', 536870912 -> '512 MiB'."""
    for unit, factor in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f} {unit}" if value.is_integer() else f"{value:.1f} {unit}"
    return f"{size} bytes"


@dataclass(frozen=True)
class Limits:
    """What one sandbox may use; None means unlimited."""

    memory_bytes: int | None = DEFAULT_MEMORY
    pids: int | None = DEFAULT_PIDS
    cpus: float | None = DEFAULT_CPUS

    def describe(self) -> str:
        memory = "unlimited memory" if self.memory_bytes is None else f"memory {format_bytes(self.memory_bytes)}"
        pids = "unlimited processes" if self.pids is None else f"{self.pids} processes"
        cpus = "unlimited CPU" if self.cpus is None else f"{self.cpus:g} CPU"
        return f"{memory}, {pids}, {cpus}"


@dataclass(frozen=True)
class CgroupMounts:
    """Where the hierarchies we need are mounted: controller -> mount point (v2: the same for all)."""

    version: Literal[1, 2]
    roots: dict[str, Path]


def find_mounts(mountinfo: str) -> CgroupMounts:
    """The cgroup hierarchies to use, from /proc/self/mountinfo text.

    v1 wins where its memory controller is mounted (a "hybrid" host keeps a mostly empty cgroup2 beside it);
    otherwise the unified hierarchy must offer memory, pids and cpu.
    """
    v1: dict[str, Path] = {}
    v2: list[Path] = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, extra = left.split(), right.split()
        if not sep or len(fields) < 5 or len(extra) < 3:
            continue
        mount_point = Path(fields[4].replace("\\040", " "))
        if extra[0] == "cgroup":
            for option in extra[2].split(","):
                if option in _V1_CONTROLLERS:
                    v1.setdefault(option, mount_point)
        elif extra[0] == "cgroup2":
            v2.append(mount_point)
    if "memory" in v1:
        missing = [name for name in _V1_CONTROLLERS if name not in v1]
        if missing:
            raise SandboxUnavailable(
                f"cgroup v1 controllers {', '.join(missing)} are not mounted, so sandboxes cannot be limited; "
                "mount them (e.g. `mount -t cgroup -o pids cgroup /sys/fs/cgroup/pids`) or pass "
                "--sandbox-cgroup none to run sandboxes without memory, process and CPU limits"
            )
        return CgroupMounts(1, v1)
    for mount_point in v2:
        try:
            available = (mount_point / "cgroup.controllers").read_text().split()
        except OSError:
            continue
        if all(name in available for name in _V2_CONTROLLERS):
            return CgroupMounts(2, dict.fromkeys(_V2_CONTROLLERS, mount_point))
    raise SandboxUnavailable(
        "no cgroup hierarchy with the memory, pids and cpu controllers is mounted, so sandboxes cannot be "
        "limited; mount cgroup2 at /sys/fs/cgroup, or pass --sandbox-cgroup none to run sandboxes without "
        "memory, process and CPU limits"
    )


def _process_start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _pid_namespace() -> int:
    return os.stat("/proc/self/ns/pid").st_ino


def _write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _read_pids(path: Path) -> set[int]:
    try:
        return {int(pid) for pid in path.read_text().split()}
    except (OSError, ValueError):
        return set()


class SessionCgroup:
    """One sandbox's cgroup (a directory per hierarchy). Every method blocks: call it from a thread."""

    def __init__(self, version: Literal[1, 2], dirs: dict[str, Path], limits: Limits) -> None:
        self.version = version
        self.dirs = dirs
        self.limits = limits
        # One directory per distinct hierarchy (v1 controllers may be co-mounted; v2 has one).
        self._unique = tuple(dict.fromkeys(dirs.values()))
        self._freezer = dirs["freezer"] if version == 1 else self._unique[0]

    @property
    def name(self) -> str:
        return self._unique[0].name

    def describe_memory_limit(self) -> str:
        return "none" if self.limits.memory_bytes is None else format_bytes(self.limits.memory_bytes)

    def join_argv(self, sh: str = "/bin/sh") -> tuple[str, ...]:
        """The argv prefix that moves the sandbox's first process into this cgroup, then execs the rest."""
        procs = (str(path / "cgroup.procs") for path in self._unique)
        return (sh, "-c", _JOIN_SCRIPT, "corral-cgroup-join", *procs, "--")

    def create(self) -> None:
        """Make the directories and write the limits; processes left in a reused one are killed first."""
        existed = self._unique[0].is_dir()
        for path in self._unique:
            path.mkdir(exist_ok=True)
        if existed:
            self.kill_all()
        if self.version == 1:
            self._limit_v1()
        else:
            self._limit_v2()

    def _limit_v1(self) -> None:
        memory = self.dirs["memory"]
        limit = "-1" if self.limits.memory_bytes is None else str(self.limits.memory_bytes)
        memsw = memory / "memory.memsw.limit_in_bytes"
        has_swap_accounting = memsw.exists()
        if has_swap_accounting:
            _write(memsw, "-1")  # memsw may never be below the limit: lift it first, then set both
        _write(memory / "memory.limit_in_bytes", limit)
        if has_swap_accounting:
            # Equal limits: the sandbox cannot spill into swap beyond its memory limit.
            _write(memsw, limit)
        _write(self.dirs["pids"] / "pids.max", "max" if self.limits.pids is None else str(self.limits.pids))
        cpu = self.dirs["cpu"]
        _write(cpu / "cpu.cfs_period_us", str(_CPU_PERIOD_US))
        quota = "-1" if self.limits.cpus is None else str(max(1000, round(self.limits.cpus * _CPU_PERIOD_US)))
        _write(cpu / "cpu.cfs_quota_us", quota)

    def _limit_v2(self) -> None:
        path = self._unique[0]
        _write(path / "memory.max", "max" if self.limits.memory_bytes is None else str(self.limits.memory_bytes))
        swap = path / "memory.swap.max"
        if swap.exists():
            _write(swap, "max" if self.limits.memory_bytes is None else "0")
        _write(path / "pids.max", "max" if self.limits.pids is None else str(self.limits.pids))
        quota = "max" if self.limits.cpus is None else str(max(1000, round(self.limits.cpus * _CPU_PERIOD_US)))
        _write(path / "cpu.max", f"{quota} {_CPU_PERIOD_US}")

    def pids(self) -> set[int]:
        """Every process in the cgroup, in any of its hierarchies."""
        found: set[int] = set()
        for path in self._unique:
            found |= _read_pids(path / "cgroup.procs")
        return found

    def oom_kills(self) -> int:
        """How many processes the kernel has killed for exceeding the memory limit."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        try:
            text = (self.dirs["memory"] / name).read_text()
        except OSError:
            return 0
        match = re.search(r"^oom_kill (\d+)$", text, re.MULTILINE)
        return int(match.group(1)) if match else 0

    def freeze(self, timeout_s: float = 0.5) -> None:
        """Stop every process where it is (no forks, no exits), waiting at most `timeout_s` for it to settle."""
        if self.version == 1:
            state = self._freezer / "freezer.state"
            with contextlib.suppress(OSError):
                _write(state, "FROZEN")
                self._wait(lambda: state.read_text().strip() == "FROZEN", timeout_s)
        else:
            with contextlib.suppress(OSError):
                _write(self._freezer / "cgroup.freeze", "1")
                events = self._freezer / "cgroup.events"
                self._wait(lambda: "frozen 1" in events.read_text(), timeout_s)

    def thaw(self) -> None:
        with contextlib.suppress(OSError):
            if self.version == 1:
                _write(self._freezer / "freezer.state", "THAWED")
            else:
                _write(self._freezer / "cgroup.freeze", "0")

    def kill_all(self, timeout_s: float = 2.0) -> bool:
        """SIGKILL every process in the cgroup; True once it is empty (within `timeout_s`)."""
        kill_file = self._unique[0] / "cgroup.kill"
        if self.version == 2 and kill_file.exists():
            with contextlib.suppress(OSError):
                _write(kill_file, "1")
        else:
            # Frozen, no process can fork a new one between reading cgroup.procs and the kill, nor exit
            # and have its PID reused. The signals are delivered on thaw.
            self.freeze()
            try:
                for pid in self.pids():
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            finally:
                self.thaw()
        return self._wait(lambda: not self.pids(), timeout_s)

    def remove(self) -> None:
        """Kill whatever is left, then delete the directories."""
        if not any(path.exists() for path in self._unique):
            return
        self.kill_all()
        for path in self._unique:
            for attempt in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    # EBUSY while the last killed processes are still on their way out.
                    if exc.errno != errno.EBUSY or attempt == 49:
                        raise
                    time.sleep(0.01)

    @staticmethod
    def _wait(done: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if done():
                    return True
            except OSError:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)


class CgroupTree:
    """This server's cgroups: `<hierarchy>/<parent>/<instance>/<sandbox>`."""

    def __init__(self, mounts: CgroupMounts, parent: str = DEFAULT_PARENT, limits: Limits | None = None) -> None:
        parts = Path(parent).parts
        if not parts or Path(parent).is_absolute() or any(part in ("..", ".") for part in parts):
            raise ValueError(f"the sandbox cgroup parent must be a relative path such as 'corral', not {parent!r}")
        self.mounts = mounts
        self.parent = parent
        self.limits = limits or Limits()
        self.instance = f"{_pid_namespace()}-{os.getpid()}-{_process_start_time(os.getpid())}-{next(_instance_counter)}"

    @classmethod
    def detect(cls, parent: str = DEFAULT_PARENT, limits: Limits | None = None) -> CgroupTree:
        """The tree for this machine, with its directories made; else SandboxUnavailable naming the fix."""
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError as exc:
            raise SandboxUnavailable(f"cannot read /proc/self/mountinfo to find the cgroup hierarchies: {exc}") from exc
        tree = cls(find_mounts(mountinfo), parent, limits)
        tree.setup()
        return tree

    @property
    def version(self) -> Literal[1, 2]:
        return self.mounts.version

    def _parents(self) -> dict[str, Path]:
        return {name: root / self.parent for name, root in self.mounts.roots.items()}

    def _instance_dirs(self) -> dict[str, Path]:
        return {name: path / self.instance for name, path in self._parents().items()}

    def setup(self) -> None:
        """Create the parent and instance directories (v2: and delegate the controllers down to sandboxes)."""
        try:
            for path in dict.fromkeys(self._instance_dirs().values()):
                path.mkdir(parents=True, exist_ok=True)
            if self.version == 2:
                self._enable_v2_controllers()
        except OSError as exc:
            raise SandboxUnavailable(
                f"cannot create the sandbox cgroups ({exc}); run the server as root, or have root create and "
                f"hand over the parent once (e.g. `mkdir -p {self._example_parent()} && chown -R <server user> "
                f"{self._example_parent()}`), or pass --sandbox-cgroup none to run sandboxes without memory, "
                "process and CPU limits"
            ) from exc

    def _example_parent(self) -> str:
        if self.version == 2:
            return str(self.mounts.roots["memory"] / self.parent)
        return "/sys/fs/cgroup/{" + ",".join(_V1_CONTROLLERS) + "}/" + self.parent

    def _enable_v2_controllers(self) -> None:
        # Each level hands the controllers to its children: root -> parent ... -> instance -> sandboxes.
        path = self.mounts.roots["memory"]
        levels = [path]
        for part in (*Path(self.parent).parts, self.instance):
            path = path / part
            levels.append(path)
        wanted = " ".join(f"+{name}" for name in _V2_CONTROLLERS)
        for level in levels:
            enabled = (level / "cgroup.subtree_control").read_text().split()
            if not all(name in enabled for name in _V2_CONTROLLERS):
                _write(level / "cgroup.subtree_control", wanted)

    def session(self, name: str) -> SessionCgroup:
        """The cgroup for sandbox `name` (not created yet)."""
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"invalid sandbox cgroup name {name!r}")
        dirs = {controller: path / name for controller, path in self._instance_dirs().items()}
        return SessionCgroup(self.version, dirs, self.limits)

    def create(self, name: str) -> SessionCgroup:
        """Make sandbox `name`'s cgroup with the limits; SandboxUnavailable (naming the fix) if that fails."""
        cgroup = self.session(name)
        try:
            cgroup.create()
        except OSError as exc:
            with contextlib.suppress(OSError):
                cgroup.remove()
            raise SandboxUnavailable(
                f"cannot set up the sandbox's cgroup {cgroup.dirs['memory']} ({exc}); check that the server "
                "may write below it, or pass --sandbox-cgroup none to run sandboxes without limits"
            ) from exc
        return cgroup

    def sweep_orphans(self) -> int:
        """Kill and remove every sandbox whose server is gone; returns how many sandboxes had processes.

        Instances of live servers, and of servers in another PID namespace (whose liveness cannot be told
        from here), are left alone.
        """
        own_namespace = _pid_namespace()
        killed = 0
        parents = self._parents()
        for entry in _list_dirs(parents["memory"]):
            match = _INSTANCE.fullmatch(entry.name)
            if match is None:
                continue
            namespace, pid, start, _ = (int(group) for group in match.groups())
            if namespace != own_namespace or _process_start_time(pid) == start:
                continue
            instance = {name: path / entry.name for name, path in parents.items()}
            killed += _remove_instance(self.version, instance, self.limits)
        return killed

    def remove(self) -> None:
        """Kill what is left of this instance's sandboxes and delete its directories (server shutdown)."""
        _remove_instance(self.version, self._instance_dirs(), self.limits)


def _remove_instance(version: Literal[1, 2], instance: dict[str, Path], limits: Limits) -> int:
    """Kill and delete every sandbox cgroup below `instance`, then the instance; returns how many had processes."""
    killed = 0
    names = {entry.name for path in set(instance.values()) for entry in _list_dirs(path)}
    for name in sorted(names):
        cgroup = SessionCgroup(version, {controller: path / name for controller, path in instance.items()}, limits)
        if cgroup.pids():
            killed += 1
        with contextlib.suppress(OSError):
            cgroup.remove()
    for path in dict.fromkeys(instance.values()):
        with contextlib.suppress(OSError):
            path.rmdir()
    return killed


def _list_dirs(path: Path) -> list[Path]:
    try:
        return [entry for entry in path.iterdir() if entry.is_dir()]
    except OSError:
        return []
