"""Workspaces cannot overcommit the data disk: a workspace is attached only when it, grown to its cap, fits beside
what the attached ones may still grow and the reserve kept for the database; otherwise a clear refusal.

Each test puts the workspaces on a small tmpfs of its own (mounting one needs root, as the workspaces do), sized
for a number of workspaces, so that the admission decisions are made against a real filesystem's free space.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from corral.hands.sandbox.launcher import SandboxUnavailable
from corral.hands.sandbox.volumes import ImageVolumes, default_disk_reserve

MiB = 1024**2
GiB = 1024**3
WORKSPACE_SIZE = 32 * MiB
RESERVE = 8 * MiB
# Room on top of the workspaces and the reserve for the template image and each image's first blocks (~40 KiB
# each), and for what a full workspace's image never allocates (inode tables, journal): a few MiB.
SLACK = 8 * MiB


class SmallDisks:
    """Small tmpfs disks for workspaces, and the volumes (one per server) on them; all removed afterwards."""

    def __init__(self) -> None:
        self._mount_points: list[Path] = []
        self._servers: list[ImageVolumes] = []

    def room_for(self, count: int) -> Path:
        """A workspaces root on a new disk with room for `count` workspaces beside the reserve."""
        mount_point = Path(tempfile.mkdtemp(prefix="corral-workspace-disk-"))
        size = count * WORKSPACE_SIZE + RESERVE + SLACK
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0711", "tmpfs", str(mount_point)], check=True)
        self._mount_points.append(mount_point)
        return mount_point / "workspaces"

    def server(self, root: Path) -> ImageVolumes:
        """What one server has: workspaces of WORKSPACE_SIZE below `root`, RESERVE kept free."""
        volumes = ImageVolumes.detect(root, WORKSPACE_SIZE, reserve_bytes=RESERVE)
        self._servers.append(volumes)
        return volumes

    def remove(self) -> None:
        for volumes in self._servers:
            for workspace in volumes.attached():
                volumes.delete(workspace)  # each server lets go of its own
        for mount_point in self._mount_points:
            subprocess.run(["umount", "--lazy", str(mount_point)], check=False)
            mount_point.rmdir()


@pytest.fixture
def disks() -> Iterator[SmallDisks]:
    made = SmallDisks()
    yield made
    made.remove()


def free_bytes(path: Path) -> int:
    disk = os.statvfs(path)
    return disk.f_bavail * disk.f_frsize


def fill(workspace: Path) -> None:
    """Write into `workspace` until its filesystem has no room left."""
    with (workspace / "filler").open("wb", buffering=0) as handle:
        for chunk in (b"\0" * MiB, b"\0" * 4096, b"\0"):
            try:
                while True:
                    handle.write(chunk)
            except OSError as exc:
                assert "No space left on device" in str(exc)


def test_workspaces_are_admitted_while_they_fit_beside_the_reserve(disks: SmallDisks) -> None:
    root = disks.room_for(2)
    volumes = disks.server(root)
    volumes.attach(root / "sesn_a")
    volumes.attach(root / "sesn_b")
    assert os.path.ismount(root / "sesn_a") and os.path.ismount(root / "sesn_b")


def test_a_workspace_that_could_eat_into_the_reserve_is_refused_saying_why_and_what_to_do(disks: SmallDisks) -> None:
    root = disks.room_for(2)
    volumes = disks.server(root)
    volumes.attach(root / "sesn_a")
    volumes.attach(root / "sesn_b")
    with pytest.raises(SandboxUnavailable) as refused:
        volumes.attach(root / "sesn_c")
    message = str(refused.value)
    assert message.startswith("not enough free disk for a workspace: the data disk has ")
    assert "8 MiB of it kept for the database" in message
    assert "promised to the 2 workspace(s) in use, and this one may grow by 32 MiB" in message
    assert "lower --sandbox-workspace-size" in message
    assert str(root.parent) not in message  # the model reads it: no host paths
    assert not os.path.ismount(root / "sesn_c")
    assert not (root / "sesn_c.ext4").exists()


def test_a_filled_workspace_leaves_room_for_the_ones_admitted_beside_it(disks: SmallDisks) -> None:
    root = disks.room_for(2)
    volumes = disks.server(root)
    volumes.attach(root / "sesn_full")
    fill(root / "sesn_full")
    volumes.attach(root / "sesn_next")
    assert os.path.ismount(root / "sesn_next")


def test_a_detached_workspace_counts_only_by_what_it_holds(disks: SmallDisks) -> None:
    root = disks.room_for(2)
    volumes = disks.server(root)
    volumes.attach(root / "sesn_a")
    volumes.attach(root / "sesn_b")
    volumes.detach(root / "sesn_a")
    volumes.attach(root / "sesn_c")
    assert os.path.ismount(root / "sesn_c")


def test_a_full_workspace_is_reattached_where_a_new_one_would_not_fit(disks: SmallDisks) -> None:
    root = disks.room_for(2)
    volumes = disks.server(root)
    volumes.attach(root / "sesn_full")
    fill(root / "sesn_full")
    volumes.detach(root / "sesn_full")
    volumes.attach(root / "sesn_other")
    with pytest.raises(SandboxUnavailable, match="not enough free disk"):
        volumes.attach(root / "sesn_new")
    volumes.attach(root / "sesn_full")  # it can hardly grow any more
    assert (root / "sesn_full" / "filler").stat().st_size > WORKSPACE_SIZE // 2


def test_deleting_a_full_workspace_gives_the_disk_its_space_back(disks: SmallDisks) -> None:
    root = disks.room_for(1)
    volumes = disks.server(root)
    before = free_bytes(root)
    volumes.attach(root / "sesn_full")
    fill(root / "sesn_full")
    assert free_bytes(root) < before - WORKSPACE_SIZE // 2
    volumes.delete(root / "sesn_full")
    assert free_bytes(root) >= before


def test_servers_sharing_a_data_dir_share_one_budget(disks: SmallDisks) -> None:
    root = disks.room_for(2)
    first = disks.server(root)
    first.attach(root / "sesn_a")
    first.attach(root / "sesn_b")
    second = disks.server(root)
    with pytest.raises(SandboxUnavailable, match="promised to the 2 workspace"):
        second.attach(root / "sesn_c")


def test_workspaces_count_when_the_data_dir_is_reached_through_a_symlink(disks: SmallDisks, tmp_path: Path) -> None:
    (tmp_path / "data").symlink_to(disks.room_for(2).parent)
    root = tmp_path / "data" / "workspaces"
    volumes = disks.server(root)
    volumes.attach(root / "sesn_a")
    volumes.attach(root / "sesn_b")
    with pytest.raises(SandboxUnavailable, match="promised to the 2 workspace"):
        volumes.attach(root / "sesn_c")


def test_simultaneous_attaches_never_promise_more_than_the_disk_has(disks: SmallDisks) -> None:
    root = disks.room_for(2)
    volumes = disks.server(root)

    def attach(name: str) -> bool:
        try:
            volumes.attach(root / name)
        except SandboxUnavailable:
            return False
        return True

    with ThreadPoolExecutor(max_workers=6) as pool:
        admitted = list(pool.map(attach, [f"sesn_{index}" for index in range(6)]))
    assert admitted.count(True) == 2
    assert len(volumes.attached()) == 2


def test_the_default_reserve_is_1_gib_or_a_twentieth_of_a_smaller_disk() -> None:
    assert default_disk_reserve(100 * GiB) == GiB
    assert default_disk_reserve(20 * GiB) == GiB
    assert default_disk_reserve(4 * GiB) == 4 * GiB // 20
