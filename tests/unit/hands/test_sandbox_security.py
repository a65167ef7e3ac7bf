"""From inside a session's sandbox, the host stays out of reach: every attempt below must fail."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from corral.hands.bubblewrap import BubblewrapLauncher
from corral.hands.local import LocalHandsProvider


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data directory the sandbox user can traverse, as /var/lib/corral is (pytest's tmp_path is not)."""
    with tempfile.TemporaryDirectory(prefix="corral-sbx-test-") as name:
        path = Path(name)
        path.chmod(0o711)
        yield path


@pytest.fixture
async def provider(data_dir: Path) -> AsyncIterator[LocalHandsProvider]:
    # No skip: a machine without a working bubblewrap must fail this suite loudly (scripts/setup installs it).
    launcher = BubblewrapLauncher.detect(data_dir / "workspaces")
    identity = launcher.identity
    (data_dir / "corral.db").write_text("the server database")
    (data_dir / "corral.db").chmod(0o600)
    provider = LocalHandsProvider(data_dir / "workspaces", launcher=launcher, owner=(identity.uid, identity.gid))
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
