"""A session cannot take the data disk from the database: its workspace fills up at its own cap (ENOSPC inside,
a clear tool result), a workspace the disk has no room for beside the reserve is refused with a clear tool error
(never a 500), and a session with a full workspace can still be deleted, which gives the disk its space back.

The tests share a real server per store whose data directory (the SQLite database included) is a small tmpfs,
shrunk after start to hold one workspace beside the reserve and a little more; each test deletes its sessions.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.conformance.conftest import StoreEnv
from tests.support.fake_model import FakeModel
from tests.support.live_events import run_turn, user_message
from tests.support.server import CorralServer

pytestmark = pytest.mark.slow

MiB = 1024**2
WORKSPACE_SIZE = 32 * MiB
RESERVE = 16 * MiB
# Room beyond one workspace and the reserve for what the test's sessions add to the database: far less than
# another workspace would need.
MARGIN = 4 * MiB
FILL = "head -c 64M /dev/zero > /workspace/filler"


def free_bytes(path: Path) -> int:
    disk = os.statvfs(path)
    return disk.f_bavail * disk.f_frsize


def shrink_to_fit_one_workspace(mount_point: Path) -> None:
    """Resize the tmpfs to what it holds now plus one workspace, the reserve and MARGIN."""
    disk = os.statvfs(mount_point)
    used = (disk.f_blocks - disk.f_bfree) * disk.f_frsize
    size = used + WORKSPACE_SIZE + RESERVE + MARGIN
    subprocess.run(["mount", "-o", f"remount,size={size}", "tmpfs", str(mount_point)], check=True)


@pytest.fixture(scope="module")
def small_disk() -> Iterator[Path]:
    mount_point = Path(tempfile.mkdtemp(prefix="corral-workspace-disk-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m,mode=0711", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False)
        mount_point.rmdir()


@pytest.fixture(scope="module")
def server(
    small_disk: Path, fake_model: FakeModel, new_store_env: StoreEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CorralServer]:
    env = {
        **new_store_env(),
        "CORRAL_SANDBOX_WORKSPACE_SIZE": str(WORKSPACE_SIZE),
        "CORRAL_SANDBOX_DISK_RESERVE": str(RESERVE),
    }
    running = CorralServer(model_url=fake_model.url, data_dir=small_disk, env=env)
    running.log_path = tmp_path_factory.mktemp("log") / "server.log"  # not on the small disk
    with running:
        shrink_to_fit_one_workspace(small_disk)
        yield running


@pytest.fixture
def client(server: CorralServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.url, api_key=server.api_key, max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def new_session(client: anthropic.Anthropic) -> Iterator[Callable[[], str]]:
    """Makes sessions with the toolset; deletes them (and so their workspaces) after the test."""
    agent = client.beta.agents.create(name="a", model="claude-sonnet-4-6", tools=[{"type": "agent_toolset_20260401"}])
    environment = client.beta.environments.create(name=f"env-{uuid.uuid4().hex[:12]}")
    made: list[str] = []

    def make() -> str:
        made.append(client.beta.sessions.create(agent=agent.id, environment_id=environment.id).id)
        return made[-1]

    yield make
    for session_id in made:
        with contextlib.suppress(anthropic.NotFoundError):
            client.beta.sessions.delete(session_id)


def tool_results(client: anthropic.Anthropic, session_id: str, *calls: str) -> list[Any]:
    """One turn per call (`tool: NAME {json}` or `bash: COMMAND`, which the fake model makes); their results."""
    seen: list[Any] = []
    for call in calls:
        seen += run_turn(client, session_id, [user_message(call)], timeout=30)
    return [event for event in seen if event.type == "agent.tool_result"]


def text(result: Any) -> str:
    return "".join(block.text for block in result.content or [] if block.type == "text")


def test_a_full_workspace_is_enospc_in_bash_and_a_clear_write_error(
    client: anthropic.Anthropic, new_session: Callable[[], str], server: CorralServer
) -> None:
    write = {"file_path": "/workspace/more.txt", "content": "x" * 100_000}
    filled, written = tool_results(client, new_session(), f"bash: {FILL}", f"tool: write {json.dumps(write)}")
    assert "No space left on device" in text(filled)
    assert written.is_error
    assert "disk is full" in text(written)
    assert str(server.data_dir) not in text(written)


def test_a_session_whose_workspace_filled_up_can_be_deleted_and_its_space_comes_back(
    client: anthropic.Anthropic, new_session: Callable[[], str], server: CorralServer
) -> None:
    session_id = new_session()
    (filled,) = tool_results(client, session_id, f"bash: {FILL}")
    assert "No space left on device" in text(filled)
    full = free_bytes(server.data_dir)
    assert client.beta.sessions.delete(session_id).type == "session_deleted"
    assert not (server.data_dir / "workspaces" / f"{session_id}.ext4").exists()
    assert free_bytes(server.data_dir) > full + WORKSPACE_SIZE // 2


def test_a_workspace_the_data_disk_has_no_room_for_is_a_tool_error_until_space_is_freed(
    client: anthropic.Anthropic, new_session: Callable[[], str], server: CorralServer
) -> None:
    first, second = new_session(), new_session()
    tool_results(client, first, "bash: true")  # its workspace takes the room there is
    (refused,) = tool_results(client, second, "bash: echo hello")
    assert refused.is_error
    assert "not enough free disk for a workspace" in text(refused)
    assert "lower --sandbox-workspace-size" in text(refused)
    assert str(server.data_dir) not in text(refused)
    client.beta.sessions.delete(first)
    (admitted,) = tool_results(client, second, "bash: echo hello")
    assert not admitted.is_error
    assert text(admitted).startswith("hello")
