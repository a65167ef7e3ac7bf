"""Finding the cgroup hierarchies from /proc/self/mountinfo, and the layout below them."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.hands.sandbox.cgroups import CgroupMounts, CgroupTree, Limits, find_mounts
from corral.hands.sandbox.launcher import SandboxUnavailable

# This machine's layout: every v1 controller on its own mount, plus a cgroup2 with no controllers ("hybrid").
HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

COMOUNTED = """\
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
"""


def test_v1_controllers_are_found_on_a_hybrid_host() -> None:
    mounts = find_mounts(HYBRID)
    assert mounts.version == 1
    assert mounts.roots == {
        "memory": Path("/sys/fs/cgroup/memory"),
        "pids": Path("/sys/fs/cgroup/pids"),
        "cpu": Path("/sys/fs/cgroup/cpu"),
        "freezer": Path("/sys/fs/cgroup/freezer"),
    }


def test_comounted_controllers_are_joined_through_one_directory() -> None:
    tree = CgroupTree(find_mounts(COMOUNTED))
    argv = tree.session("sesn_x").join_argv()
    procs = [arg for arg in argv if arg.endswith("cgroup.procs")]
    assert len(procs) == 4
    assert any("/cpu,cpuacct/corral/" in path for path in procs)


def test_the_unified_hierarchy_is_used_where_it_has_the_controllers(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    mounts = find_mounts(f"29 23 0:26 / {tmp_path} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n")
    assert mounts == CgroupMounts(2, {"memory": tmp_path, "pids": tmp_path, "cpu": tmp_path})


def test_a_v2_sandbox_joins_one_cgroup(tmp_path: Path) -> None:
    tree = CgroupTree(CgroupMounts(2, {"memory": tmp_path, "pids": tmp_path, "cpu": tmp_path}))
    argv = tree.session("sesn_x").join_argv()
    assert [arg for arg in argv if arg.endswith("cgroup.procs")] == [
        f"{tmp_path}/corral/{tree.instance}/sesn_x/cgroup.procs"
    ]


def test_missing_v1_controllers_are_named_with_the_fix() -> None:
    without_pids = "\n".join(line for line in HYBRID.splitlines() if "pids" not in line)
    with pytest.raises(SandboxUnavailable, match=r"controllers pids are not mounted.*--sandbox-cgroup none"):
        find_mounts(without_pids)


def test_no_usable_hierarchy_names_the_fix() -> None:
    with pytest.raises(SandboxUnavailable, match="--sandbox-cgroup none"):
        find_mounts("31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n")


@pytest.mark.parametrize("parent", ["/corral", "../corral", "corral/../x", ""])
def test_the_parent_must_be_a_relative_path_below_the_hierarchy_root(parent: str) -> None:
    with pytest.raises(ValueError, match="relative path"):
        CgroupTree(find_mounts(HYBRID), parent)


def test_sandboxes_live_below_the_parent_and_this_servers_instance() -> None:
    tree = CgroupTree(find_mounts(HYBRID), "corral/sandboxes")
    path = tree.session("sesn_x").dirs["memory"]
    assert path == Path("/sys/fs/cgroup/memory/corral/sandboxes") / tree.instance / "sesn_x"


def test_limits_describe_themselves() -> None:
    assert Limits(2 * 1024**3, 1024, 1.5).describe() == "memory 2 GiB, 1024 processes, 1.5 CPU"
    assert Limits(None, None, None).describe() == "unlimited memory, unlimited processes, unlimited CPU"
