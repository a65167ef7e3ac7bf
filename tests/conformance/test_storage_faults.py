"""SQLite faults surface as clear errors: a database locked by another process, or a full disk, answers a write
with 503 `api_error` saying what is wrong (never a 500, never a hang), and the server writes again once the
condition clears.

The full-disk tests put the server's data directory on a tmpfs of its own (mounting one needs root, as the
sandbox does) and fill it with a file; the lock is another connection's `BEGIN EXCLUSIVE`, held longer than
the server's busy timeout.
"""

from __future__ import annotations

import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anthropic
import pytest

from tests.support.server import CorralServer

pytestmark = pytest.mark.slow

MODEL = "claude-sonnet-4-6"
SMALL_DISK = "16m"
FILLER = "filler"
# Agents with a 100 KB system prompt: a few of them outgrow whatever room the database's files had left.
BIG_SYSTEM = "x" * 100_000
WRITE_ATTEMPTS = 20
CLIENT_TIMEOUT_S = 30.0  # far above the server's busy timeout: a request that hangs fails the test


def sdk(server: CorralServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=server.api_key, max_retries=0, timeout=CLIENT_TIMEOUT_S)


@pytest.fixture
def server() -> Iterator[CorralServer]:
    """A server on SQLite in a data directory of its own (no turns run here: no model, no sandbox)."""
    with CorralServer(args=["--sandbox", "none"]) as running:
        yield running


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A tmpfs of `SMALL_DISK` to put a data directory on; unmounted afterwards."""
    mount_point = Path(tempfile.mkdtemp(prefix="corral-small-disk-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK},mode=0711", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        mount_point.rmdir()
        pytest.fail(f"the full-disk tests mount a tmpfs, which needs root: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False)
        mount_point.rmdir()


@pytest.fixture
def server_on_small_disk(small_disk: Path, tmp_path: Path) -> Iterator[CorralServer]:
    """A server whose data directory (database and all) is on the small disk; its log is elsewhere."""
    running = CorralServer(data_dir=small_disk, args=["--sandbox", "none"])
    running.log_path = tmp_path / "server.log"
    with running:
        yield running


def fill(directory: Path) -> Path:
    """Write a file into `directory` until its filesystem has no room left; returns the file."""
    filler = directory / FILLER
    with filler.open("wb", buffering=0) as handle:
        for chunk in (b"\0" * (1 << 20), b"\0" * 4096):
            try:
                while True:
                    handle.write(chunk)
            except OSError:
                continue  # ENOSPC: fill what is left with smaller chunks
    return filler


def write_until_refused(client: anthropic.Anthropic) -> anthropic.APIStatusError:
    """The error of the first write the server refuses (writes may fit in room the database files already had)."""
    for attempt in range(WRITE_ATTEMPTS):
        try:
            client.beta.agents.create(name=f"big-{attempt}", model=MODEL, system=BIG_SYSTEM)
        except anthropic.APIStatusError as exc:
            return exc
    raise AssertionError(f"{WRITE_ATTEMPTS} writes of 100 KB each all succeeded on a full disk")


@contextmanager
def exclusive_lock(database: Path) -> Iterator[None]:
    """Another process's connection holding the database's write lock until the block ends."""
    connection = sqlite3.connect(database, isolation_level=None)
    try:
        connection.execute("BEGIN EXCLUSIVE")
        yield
        connection.execute("ROLLBACK")
    finally:
        connection.close()


def assert_unavailable(error: anthropic.APIStatusError, reason: str) -> None:
    assert error.status_code == 503
    body = error.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == "api_error"
    assert reason in body["error"]["message"]


def test_a_write_on_a_full_disk_answers_503_saying_the_disk_is_full(server_on_small_disk: CorralServer) -> None:
    client = sdk(server_on_small_disk)
    fill(server_on_small_disk.data_dir)

    error = write_until_refused(client)

    assert_unavailable(error, "disk is full")


def test_reads_are_served_while_the_disk_is_full(server_on_small_disk: CorralServer) -> None:
    client = sdk(server_on_small_disk)
    agent = client.beta.agents.create(name="before", model=MODEL)
    fill(server_on_small_disk.data_dir)
    write_until_refused(client)

    assert client.beta.agents.retrieve(agent.id).name == "before"


def test_the_server_writes_again_once_the_disk_has_room(server_on_small_disk: CorralServer) -> None:
    client = sdk(server_on_small_disk)
    filler = fill(server_on_small_disk.data_dir)
    write_until_refused(client)

    filler.unlink()
    agent = client.beta.agents.create(name="after", model=MODEL, system=BIG_SYSTEM)

    assert client.beta.agents.retrieve(agent.id).system == BIG_SYSTEM


def test_a_write_to_a_database_locked_by_another_process_answers_503_saying_it_is_locked(
    server: CorralServer,
) -> None:
    client = sdk(server)

    with exclusive_lock(server.data_dir / "corral.db"), pytest.raises(anthropic.APIStatusError) as refused:
        client.beta.agents.create(name="locked out", model=MODEL)

    assert_unavailable(refused.value, "database is locked")


def test_the_server_writes_again_once_the_lock_is_released(server: CorralServer) -> None:
    client = sdk(server)
    with exclusive_lock(server.data_dir / "corral.db"), pytest.raises(anthropic.APIStatusError):
        client.beta.agents.create(name="locked out", model=MODEL)

    agent = client.beta.agents.create(name="after the lock", model=MODEL)

    assert client.beta.agents.retrieve(agent.id).name == "after the lock"
