"""A real `corral serve` stops its sandboxes when it shuts down, and cleans up after a predecessor that crashed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from corral.hands.sandbox.cgroups import find_mounts
from tests.support.fake_model import FakeModel
from tests.support.live_events import all_events, user_message
from tests.support.server import CorralServer

pytestmark = pytest.mark.slow


@pytest.fixture
def own_server(fake_model: FakeModel) -> Iterator[CorralServer]:
    server = CorralServer(model_url=fake_model.url)
    with server:
        yield server


def run_bash(server: CorralServer, command: str) -> str:
    """A new session whose agent runs `command` in bash; returns the session id once it is idle again."""
    client = anthropic.Anthropic(base_url=server.url, api_key=server.api_key, max_retries=0)
    agent = client.beta.agents.create(name="a", model="claude-sonnet-4-6", tools=[{"type": "agent_toolset_20260401"}])
    environment = client.beta.environments.create(name=f"env-{time.monotonic_ns()}")
    session = client.beta.sessions.create(agent=agent.id, environment_id=environment.id)
    client.beta.sessions.events.send(session.id, events=[user_message(f"bash: {command}")])
    deadline = time.monotonic() + 20
    events: list[Any] = []
    while not any(event.type == "agent.tool_result" for event in events) or events[-1].type != "session.status_idle":
        assert time.monotonic() < deadline, f"the bash turn never finished: {[e.type for e in events]}"
        time.sleep(0.05)
        events = all_events(client, session.id)
    return str(session.id)


def server_cgroups(server_pid: int) -> list[Path]:
    """The server's instance directories in the memory hierarchy (named <pidns>-<pid>-<start>-<n>)."""
    parent = find_mounts(Path("/proc/self/mountinfo").read_text()).roots["memory"] / "corral"
    return [path for path in parent.iterdir() if path.is_dir() and path.name.split("-")[1:2] == [str(server_pid)]]


def mounts_below(path: Path) -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines() if f" {path}/" in line]


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_a_clean_shutdown_stops_every_sandbox_and_detaches_every_workspace(own_server: CorralServer) -> None:
    session_id = run_bash(own_server, "sleep 1000 >/dev/null 2>&1 & echo started")
    assert own_server.process is not None
    [instance] = server_cgroups(own_server.process.pid)
    processes = {int(pid) for pid in (instance / session_id / "cgroup.procs").read_text().split()}
    assert processes

    own_server.stop()

    assert not any(running(pid) for pid in processes)
    assert not instance.exists()
    assert mounts_below(own_server.data_dir) == []


def test_a_server_that_starts_removes_what_a_crashed_one_left(own_server: CorralServer) -> None:
    run_bash(own_server, "echo hi > /workspace/notes.txt")
    assert own_server.process is not None
    [instance] = server_cgroups(own_server.process.pid)

    own_server.kill()
    assert instance.exists()
    assert mounts_below(own_server.data_dir) != []
    own_server.start()

    assert not instance.exists()
    assert mounts_below(own_server.data_dir) == []
