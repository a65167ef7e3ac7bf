"""A session's sandbox: created lazily, limited by its own cgroup and workspace cap, stopped when idle,
archived or deleted, and contained when it misbehaves, while every other session keeps working.

These run real bubblewrap sandboxes in real cgroups and loop-mounted workspaces (the machine's defaults, as
root), with small limits so that hitting them is quick.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from corral.config import SandboxLimits, Settings
from corral.hands.base import ToolResult
from corral.hands.local import LocalHands, LocalHandsProvider
from corral.hands.sandbox.bubblewrap import BubblewrapLauncher
from corral.hands.sandbox.cgroups import CgroupTree, Limits, SessionCgroup, find_mounts
from corral.hands.sandbox.volumes import ImageVolumes
from corral.server import build_hands

MiB = 1024**2
LIMITS = Limits(memory_bytes=128 * MiB, pids=64, cpus=0.5)
WORKSPACE_SIZE = 32 * MiB
DISK_RESERVE = 16 * MiB  # not the default 1 GiB: CI disks may have less than that free
TMP_SIZE = 16 * MiB


@pytest.fixture
def cgroups() -> Iterator[CgroupTree]:
    # No skip: a machine where sandboxes cannot be limited must fail this suite loudly.
    tree = CgroupTree.detect("corral", LIMITS)
    yield tree
    tree.remove()


def make_provider(data_dir: Path, cgroups: CgroupTree, idle_timeout_s: float | None = None) -> LocalHandsProvider:
    root = data_dir / "workspaces"
    launcher = BubblewrapLauncher.detect(root, cgroups=cgroups, tmp_size=TMP_SIZE)
    owner = (launcher.identity.uid, launcher.identity.gid)
    volumes = ImageVolumes.detect(root, WORKSPACE_SIZE, owner, DISK_RESERVE)
    return LocalHandsProvider(root, launcher=launcher, owner=owner, volumes=volumes, idle_timeout_s=idle_timeout_s)


@pytest.fixture
async def provider(data_dir: Path, cgroups: CgroupTree) -> AsyncIterator[LocalHandsProvider]:
    provider = make_provider(data_dir, cgroups)
    yield provider
    await provider.close()


def text(result: ToolResult) -> str:
    return str(result.content[0]["text"])


async def bash(hands: LocalHands, command: str, **extra: object) -> ToolResult:
    return await hands.execute("bash", {"command": command, **extra})


async def eventually(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def read_limit(cgroup: SessionCgroup, v1: tuple[str, str], v2: tuple[str, str]) -> str:
    controller, name = v1 if cgroup.version == 1 else v2
    return (cgroup.dirs[controller] / name).read_text().strip()


def memory_usage(cgroup: SessionCgroup) -> int:
    try:
        return int(read_limit(cgroup, ("memory", "memory.usage_in_bytes"), ("memory", "memory.current")))
    except OSError:
        return 0


def process_count(cgroup: SessionCgroup) -> int:
    try:
        return int(read_limit(cgroup, ("pids", "pids.current"), ("pids", "pids.current")))
    except OSError:
        return 0


def running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (this machine's init may not reap orphans)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def mounted(path: Path) -> bool:
    return os.path.ismount(path)


# -- lazy ----------------------------------------------------------------------------------------


async def test_nothing_exists_before_the_first_tool_call(provider: LocalHandsProvider, cgroups: CgroupTree) -> None:
    provider.for_session("sesn_lazy")
    assert not provider.workspace("sesn_lazy").exists()
    assert not cgroups.session("sesn_lazy").dirs["memory"].exists()


async def test_file_tools_run_in_the_sessions_sandbox(provider: LocalHandsProvider, cgroups: CgroupTree) -> None:
    result = await provider.for_session("sesn_files").execute("write", {"file_path": "a.txt", "content": "x"})
    assert not result.is_error
    assert mounted(provider.workspace("sesn_files"))
    assert cgroups.session("sesn_files").dirs["memory"].exists()


# -- limits --------------------------------------------------------------------------------------


async def test_the_shell_runs_in_the_sessions_cgroup(provider: LocalHandsProvider, cgroups: CgroupTree) -> None:
    hands = provider.for_session("sesn_cg")
    await bash(hands, "true")
    assert hands._shell.pid in cgroups.session("sesn_cg").pids()


async def test_the_sessions_cgroup_carries_the_memory_pids_and_cpu_limits(
    provider: LocalHandsProvider, cgroups: CgroupTree
) -> None:
    await bash(provider.for_session("sesn_cg"), "true")
    cgroup = cgroups.session("sesn_cg")
    assert read_limit(cgroup, ("memory", "memory.limit_in_bytes"), ("memory", "memory.max")) == str(128 * MiB)
    assert read_limit(cgroup, ("pids", "pids.max"), ("pids", "pids.max")) == "64"
    quota = read_limit(cgroup, ("cpu", "cpu.cfs_quota_us"), ("cpu", "cpu.max")).split()[0]
    assert quota == "50000"


async def test_memory_hog_is_killed_and_the_result_names_the_memory_limit(provider: LocalHandsProvider) -> None:
    result = await bash(provider.for_session("sesn_hog"), "python3 -c \"x = b'x' * (512 << 20)\"")
    assert result.is_error
    assert "memory limit (128 MiB)" in text(result)


async def test_another_session_answers_while_one_runs_a_memory_hog(
    provider: LocalHandsProvider, cgroups: CgroupTree
) -> None:
    grow = "import time\nx = []\nwhile True:\n    x.append(b'x' * (1 << 20)); time.sleep(0.002)"
    hog = asyncio.create_task(bash(provider.for_session("sesn_hog"), f"python3 -c {shlex.quote(grow)}"))
    assert await eventually(lambda: memory_usage(cgroups.session("sesn_hog")) > 48 * MiB)
    other = await bash(provider.for_session("sesn_other"), "echo still here")
    assert text(other) == "still here\n"
    assert "memory limit" in text(await hog)


@pytest.mark.slow
async def test_fork_bomb_stops_at_the_process_limit_while_another_session_answers(
    provider: LocalHandsProvider, cgroups: CgroupTree
) -> None:
    bomber = provider.for_session("sesn_bomb")
    bomb = asyncio.create_task(bash(bomber, ":(){ :|:& };:; sleep 30", timeout_ms=3000))
    assert await eventually(lambda: process_count(cgroups.session("sesn_bomb")) >= 60)
    other = await bash(provider.for_session("sesn_other"), "echo still here")
    assert text(other) == "still here\n"
    assert process_count(cgroups.session("sesn_bomb")) <= 64
    assert "timed out" in text(await bomb)
    assert text(await bash(bomber, "echo recovered")) == "recovered\n"


@pytest.mark.slow
async def test_endless_loop_times_out_while_another_session_answers(provider: LocalHandsProvider) -> None:
    looper = provider.for_session("sesn_loop")
    await bash(looper, "cd /tmp")
    loop = asyncio.create_task(bash(looper, "python3 -c 'while True: pass'", timeout_ms=1000))
    other = await bash(provider.for_session("sesn_other"), "echo still here")
    assert text(other) == "still here\n"
    assert "timed out" in text(await loop)
    assert text(await bash(looper, "pwd")) == "/tmp\n"  # the shell itself survived the timeout


async def test_disk_filler_stops_at_the_workspace_cap(provider: LocalHandsProvider) -> None:
    hands = provider.for_session("sesn_disk")
    result = await bash(hands, "head -c 100M /dev/zero > /workspace/fill")
    assert "No space left on device" in text(result)
    image = provider.workspace("sesn_disk").with_name("sesn_disk.ext4")
    assert image.stat().st_blocks * 512 <= WORKSPACE_SIZE


async def test_tmp_is_size_limited(provider: LocalHandsProvider) -> None:
    result = await bash(provider.for_session("sesn_tmp"), "head -c 100M /dev/zero > /tmp/fill")
    assert "No space left on device" in text(result)


# -- faults --------------------------------------------------------------------------------------


async def test_sandbox_killed_mid_command_gives_an_error_result_that_says_so(provider: LocalHandsProvider) -> None:
    hands = provider.for_session("sesn_kill")
    await bash(hands, "true")
    bwrap = hands._shell.pid
    assert bwrap is not None
    started = provider.workspace("sesn_kill") / "started"
    call = asyncio.create_task(bash(hands, "touch /workspace/started; sleep 30"))
    assert await eventually(started.exists)
    os.kill(bwrap, signal.SIGKILL)
    result = await call
    assert result.is_error
    assert "the sandbox was killed by signal 9" in text(result)


async def test_the_call_after_a_killed_sandbox_gets_a_fresh_one_with_the_workspace(
    provider: LocalHandsProvider, cgroups: CgroupTree
) -> None:
    hands = provider.for_session("sesn_kill")
    await bash(hands, "echo kept > /workspace/notes.txt")
    bwrap = hands._shell.pid
    assert bwrap is not None
    os.kill(bwrap, signal.SIGKILL)
    assert await eventually(lambda: not cgroups.session("sesn_kill").pids())
    result = await bash(hands, "cat /workspace/notes.txt")
    assert not result.is_error
    assert text(result).startswith("kept\n")
    assert hands._shell.pid not in (None, bwrap)


async def test_timeout_keeps_the_shell_and_its_state(provider: LocalHandsProvider) -> None:
    hands = provider.for_session("sesn_timeout")
    await bash(hands, "cd /tmp && export MARK=1")
    assert "timed out" in text(await bash(hands, "sleep 30", timeout_ms=200))
    assert text(await bash(hands, 'pwd; echo "$MARK"')) == "/tmp\n1\n"


# -- lifecycle -----------------------------------------------------------------------------------


async def test_idle_sandbox_stops_and_detaches_its_workspace(data_dir: Path, cgroups: CgroupTree) -> None:
    provider = make_provider(data_dir, cgroups, idle_timeout_s=0.2)
    try:
        hands = provider.for_session("sesn_idle")
        await bash(hands, "true")
        assert await eventually(lambda: hands._shell.pid is None)
        assert await eventually(lambda: not mounted(provider.workspace("sesn_idle")))
        assert not cgroups.session("sesn_idle").dirs["memory"].exists()
    finally:
        await provider.close()


async def test_the_call_after_an_idle_stop_says_its_shell_is_fresh(data_dir: Path, cgroups: CgroupTree) -> None:
    provider = make_provider(data_dir, cgroups, idle_timeout_s=0.2)
    try:
        hands = provider.for_session("sesn_idle")
        await bash(hands, "cd /tmp && echo kept > /workspace/notes.txt")
        assert await eventually(lambda: hands._shell.pid is None)
        output = text(await bash(hands, "pwd; cat /workspace/notes.txt"))
        assert output.startswith("/workspace\nkept\n")
        assert "fresh shell because the previous one was stopped after 0.2 s without a call" in output
    finally:
        await provider.close()


async def test_release_kills_the_sandbox_and_keeps_the_files(provider: LocalHandsProvider, cgroups: CgroupTree) -> None:
    await bash(provider.for_session("sesn_arch"), "echo kept > notes.txt; sleep 1000 >/dev/null 2>&1 &")
    processes = cgroups.session("sesn_arch").pids()
    await provider.release("sesn_arch")
    assert not any(running(pid) for pid in processes)
    assert not cgroups.session("sesn_arch").dirs["memory"].exists()
    assert not mounted(provider.workspace("sesn_arch"))
    assert text(await bash(provider.for_session("sesn_arch"), "cat notes.txt")) == "kept\n"


async def test_destroy_deletes_the_workspace(provider: LocalHandsProvider) -> None:
    await bash(provider.for_session("sesn_del"), "echo gone > notes.txt")
    await provider.destroy("sesn_del")
    workspace = provider.workspace("sesn_del")
    assert not workspace.exists()
    assert not workspace.with_name("sesn_del.ext4").exists()


async def test_close_stops_every_sandbox_and_removes_the_servers_cgroups(data_dir: Path, cgroups: CgroupTree) -> None:
    provider = make_provider(data_dir, cgroups)
    await bash(provider.for_session("sesn_a"), "sleep 1000 >/dev/null 2>&1 &")
    await bash(provider.for_session("sesn_b"), "true")
    processes = cgroups.session("sesn_a").pids()
    await provider.close()
    assert not any(running(pid) for pid in processes)
    assert not (cgroups.mounts.roots["memory"] / cgroups.parent / cgroups.instance).exists()
    assert not mounted(provider.workspace("sesn_a"))


# -- what a dead server left behind --------------------------------------------------------------


def dead_server_tree() -> CgroupTree:
    """A cgroup tree named for a server process that has exited."""
    gone = subprocess.Popen(["sleep", "100"])
    tree = CgroupTree(find_mounts(Path("/proc/self/mountinfo").read_text()), "corral", LIMITS)
    with open(f"/proc/{gone.pid}/stat") as f:
        start = f.read().rsplit(")", 1)[1].split()[19]
    gone.kill()
    gone.wait()
    tree.instance = f"{os.stat('/proc/self/ns/pid').st_ino}-{gone.pid}-{start}-0"
    tree.setup()
    return tree


@pytest.fixture
def orphan() -> Iterator[subprocess.Popen[bytes]]:
    """A process running in a sandbox cgroup of a server that is gone."""
    tree = dead_server_tree()
    cgroup = tree.create("sesn_orphan")
    process = subprocess.Popen([*cgroup.join_argv(), "sleep", "1000"])
    try:
        assert asyncio.run(eventually(lambda: process.pid in cgroup.pids()))
        yield process
    finally:
        process.kill()
        process.wait()
        tree.remove()


def test_sweep_kills_the_sandboxes_of_a_server_that_is_gone(
    orphan: subprocess.Popen[bytes], cgroups: CgroupTree
) -> None:
    assert cgroups.sweep_orphans() >= 1
    assert orphan.wait(timeout=5) == -signal.SIGKILL


async def test_sweep_leaves_a_live_servers_sandboxes_alone(provider: LocalHandsProvider, cgroups: CgroupTree) -> None:
    hands = provider.for_session("sesn_live")
    await bash(hands, "true")
    starting = CgroupTree.detect("corral", LIMITS)  # as a second server starting on this machine
    starting.sweep_orphans()
    starting.remove()
    assert text(await bash(hands, "echo alive")) == "alive\n"


def test_server_start_kills_the_sandboxes_a_crashed_server_left(
    orphan: subprocess.Popen[bytes], data_dir: Path
) -> None:
    limits = SandboxLimits(
        memory_bytes=LIMITS.memory_bytes, workspace_bytes=WORKSPACE_SIZE, disk_reserve_bytes=DISK_RESERVE
    )
    provider = build_hands(Settings(data_dir=data_dir, sandbox_limits=limits))
    try:
        assert orphan.wait(timeout=5) == -signal.SIGKILL
    finally:
        asyncio.run(provider.close())


def test_a_workspace_left_mounted_by_a_dead_server_is_unmounted_at_start(data_dir: Path) -> None:
    root = data_dir / "workspaces"
    crashed = ImageVolumes.detect(root, WORKSPACE_SIZE, reserve_bytes=DISK_RESERVE)
    crashed.attach(root / "sesn_left")
    os.close(crashed._held.pop(root / "sesn_left"))  # the server died: its lock went with it
    assert ImageVolumes.detect(root, WORKSPACE_SIZE, reserve_bytes=DISK_RESERVE).sweep() == 1
    assert not mounted(root / "sesn_left")


def test_a_workspace_cannot_be_attached_by_two_servers_at_once(data_dir: Path) -> None:
    root = data_dir / "workspaces"
    first = ImageVolumes.detect(root, WORKSPACE_SIZE, reserve_bytes=DISK_RESERVE)
    first.attach(root / "sesn_shared")
    try:
        with pytest.raises(RuntimeError, match="in use by another Corral server"):
            ImageVolumes.detect(root, WORKSPACE_SIZE, reserve_bytes=DISK_RESERVE).attach(root / "sesn_shared")
    finally:
        first.delete(root / "sesn_shared")


def test_a_workspace_made_before_the_cap_keeps_its_files(data_dir: Path) -> None:
    root = data_dir / "workspaces"
    (root / "sesn_old" / "src").mkdir(parents=True)
    (root / "sesn_old" / "src" / "main.py").write_text("print('kept')\n")
    volumes = ImageVolumes.detect(root, WORKSPACE_SIZE, reserve_bytes=DISK_RESERVE)
    volumes.attach(root / "sesn_old")
    try:
        assert mounted(root / "sesn_old")
        assert (root / "sesn_old" / "src" / "main.py").read_text() == "print('kept')\n"
    finally:
        volumes.delete(root / "sesn_old")
