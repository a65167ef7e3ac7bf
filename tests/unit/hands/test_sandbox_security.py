"""From inside a session's sandbox, the host stays out of reach: every attempt below must fail.

The sandboxes here are configured as the server configures them: bubblewrap as the sandbox user, a cgroup
each, and a loop-mounted workspace image each.
"""

from __future__ import annotations

import os
import shlex
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from corral.hands.local import LocalHandsProvider
from corral.hands.sandbox.bubblewrap import BubblewrapLauncher
from corral.hands.sandbox.cgroups import CgroupTree
from corral.hands.sandbox.volumes import ImageVolumes


@pytest.fixture
def cgroups() -> Iterator[CgroupTree]:
    tree = CgroupTree.detect()
    yield tree
    tree.remove()


@pytest.fixture
async def provider(data_dir: Path, cgroups: CgroupTree) -> AsyncIterator[LocalHandsProvider]:
    # No skip: a machine without a working bubblewrap must fail this suite loudly (scripts/setup installs it).
    root = data_dir / "workspaces"
    launcher = BubblewrapLauncher.detect(root, cgroups=cgroups, tmp_size=64 * 1024**2)
    owner = (launcher.identity.uid, launcher.identity.gid)
    (data_dir / "corral.db").write_text("the server database")
    (data_dir / "corral.db").chmod(0o600)
    (data_dir / "config.toml").write_text('[server]\napi_key = "sk-corral-config-secret"\n')
    volumes = ImageVolumes.detect(root, 64 * 1024**2, owner)
    provider = LocalHandsProvider(root, launcher=launcher, owner=owner, volumes=volumes)
    yield provider
    await provider.close()


async def bash(provider: LocalHandsProvider, command: str, session_id: str = "sesn_a") -> tuple[str, bool]:
    result = await provider.for_session(session_id).execute("bash", {"command": command})
    return result.content[0]["text"], result.is_error


@pytest.fixture
def host_service() -> Iterator[int]:
    """A TCP service on the host's loopback, as the server's own port would be."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield int(server.getsockname()[1])


async def test_commands_run_in_the_workspace_as_an_unprivileged_user(provider: LocalHandsProvider) -> None:
    output, failed = await bash(provider, "pwd; id -u")
    assert not failed
    cwd, uid = output.split()
    assert cwd == "/workspace"
    assert uid != "0"


async def test_the_server_database_is_not_visible(provider: LocalHandsProvider, data_dir: Path) -> None:
    output, failed = await bash(provider, f"cat {data_dir}/corral.db; ls {data_dir}")
    assert failed
    assert "the server database" not in output


async def test_root_home_and_shadow_files_are_not_readable(provider: LocalHandsProvider) -> None:
    output, failed = await bash(provider, "ls /root; cat /etc/shadow; cat /etc/gshadow; ls /home")
    assert failed
    assert "root:" not in output


async def test_another_sessions_workspace_is_not_reachable(provider: LocalHandsProvider) -> None:
    await bash(provider, "echo secret-of-a > /workspace/notes.txt", session_id="sesn_a")
    output, _ = await bash(provider, "cat /workspace/notes.txt 2>/dev/null; ls -A /workspace | wc -l", "sesn_b")
    assert "secret-of-a" not in output
    assert output.strip() == "0"


async def test_host_processes_are_not_visible(provider: LocalHandsProvider) -> None:
    output, _ = await bash(provider, "ls /proc | grep -E '^[0-9]+$'")
    visible = {int(pid) for pid in output.split()}
    assert os.getpid() not in visible
    assert len(visible) < 10


async def test_host_loopback_services_are_unreachable(provider: LocalHandsProvider, host_service: int) -> None:
    output, failed = await bash(provider, f"echo hello > /dev/tcp/127.0.0.1/{host_service} && echo connected")
    assert failed
    assert "connected" not in output


async def test_cloud_metadata_address_is_unreachable(provider: LocalHandsProvider) -> None:
    # The sandbox has only `lo`, so the connect fails at once without any packet leaving the machine.
    output, failed = await bash(provider, "echo > /dev/tcp/169.254.169.254/80 && echo connected")
    assert failed
    assert "connected" not in output


async def test_the_only_network_interface_is_loopback(provider: LocalHandsProvider) -> None:
    output, _ = await bash(provider, "tail -n +3 /proc/net/dev | cut -d: -f1")
    assert output.split() == ["lo"]


async def test_writes_outside_workspace_and_tmp_fail(provider: LocalHandsProvider) -> None:
    for target in ("/usr/evil", "/etc/evil", "/evil", "/bin/evil"):
        _, failed = await bash(provider, f"echo x > {target}")
        assert failed, target
    output, failed = await bash(provider, "echo ok > /tmp/scratch && cat /tmp/scratch")
    assert not failed and output.strip() == "ok"


async def test_server_environment_secrets_do_not_reach_the_sandbox(
    provider: LocalHandsProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-must-not-leak")
    monkeypatch.setenv("CORRAL_API_KEY", "sk-corral-must-not-leak")
    output, _ = await bash(provider, "env; cat /proc/1/environ | tr '\\0' '\\n'")
    assert "must-not-leak" not in output


async def test_capabilities_are_dropped(provider: LocalHandsProvider) -> None:
    output, _ = await bash(provider, "grep -E '^Cap(Eff|Prm)' /proc/self/status")
    assert all(line.split()[1] == "0000000000000000" for line in output.strip().splitlines())


async def test_setuid_binaries_do_not_grant_root(provider: LocalHandsProvider) -> None:
    output, _ = await bash(provider, "su -c id root </dev/null; sudo -n id; id -u")
    assert output.strip().splitlines()[-1] != "0"


async def test_proc_1_root_leads_only_to_the_sandboxs_own_root(provider: LocalHandsProvider, data_dir: Path) -> None:
    output, failed = await bash(
        provider, f"for p in /proc/[0-9]*; do cat $p/root{data_dir}/corral.db; ls $p/root/root; done"
    )
    assert failed
    assert "the server database" not in output


async def test_processes_outside_the_sandbox_cannot_be_traced(provider: LocalHandsProvider) -> None:
    await bash(provider, "true", session_id="sesn_b")
    neighbour = provider.for_session("sesn_b")._shell.pid
    trace = (
        "import ctypes, os, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "for pid in map(int, sys.argv[1:]):\n"
        "    print(pid, 'attached' if libc.ptrace(16, pid, 0, 0) == 0 else 'refused')\n"  # PTRACE_ATTACH
        "    try:\n"
        "        print(pid, 'mem', len(open(f'/proc/{pid}/mem', 'rb').read(1)))\n"
        "    except OSError as exc:\n"
        "        print(pid, 'mem refused', exc.errno)\n"
    )
    output, _ = await bash(provider, f"python3 -c {shlex.quote(trace)} {os.getpid()} {neighbour}")
    assert "attached" not in output
    assert " mem 1" not in output
    assert output.count("refused") == 4


async def test_nested_user_namespaces_are_refused(provider: LocalHandsProvider) -> None:
    output, failed = await bash(provider, "unshare --user --map-root-user id")
    assert failed
    assert "uid=0" not in output


async def test_sys_is_not_visible(provider: LocalHandsProvider) -> None:
    output, failed = await bash(provider, "ls /sys; cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
    assert failed
    assert "No such file or directory" in output


async def test_the_sandbox_cannot_change_its_own_limits(provider: LocalHandsProvider, cgroups: CgroupTree) -> None:
    attempts = (
        "echo max > /sys/fs/cgroup/pids/pids.max",
        "mkdir -p /tmp/cg && mount -t cgroup2 none /tmp/cg && echo max > /tmp/cg/pids.max",
        "mount -t cgroup -o pids none /tmp/cg && echo max > /tmp/cg/pids.max",
        "echo $$ > /proc/self/cgroup",
    )
    for attempt in attempts:
        _, failed = await bash(provider, attempt)
        assert failed, attempt
    limit = cgroups.session("sesn_a").dirs["pids"] / "pids.max"
    assert limit.read_text().strip() == str(cgroups.limits.pids)


async def test_block_devices_are_not_reachable(provider: LocalHandsProvider) -> None:
    # The workspaces are loop devices: a sandbox reading one would read another session's files.
    await bash(provider, "true", session_id="sesn_b")
    listing, _ = await bash(provider, "ls /dev")
    assert not any(name.startswith(("loop", "vd", "sd", "nvme")) for name in listing.split())
    output, failed = await bash(provider, "head -c 1 /dev/loop0 /dev/vda /dev/sda")
    assert failed
    assert output.count("No such file or directory") == 3


async def test_mounting_anything_is_refused(provider: LocalHandsProvider) -> None:
    output, failed = await bash(provider, "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m && echo mounted")
    assert failed
    assert "mounted" not in output.split()


async def test_the_server_config_file_is_not_readable(provider: LocalHandsProvider, data_dir: Path) -> None:
    output, failed = await bash(provider, f"cat {data_dir}/config.toml")
    assert failed
    assert "sk-corral-config-secret" not in output
