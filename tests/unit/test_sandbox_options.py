"""`corral serve`'s sandbox options: flags and CORRAL_* variables become one `SandboxLimits`."""

from __future__ import annotations

import click
from click.testing import CliRunner

from corral.cli.sandbox_options import sandbox_options
from corral.config import SandboxLimits


def parse(args: list[str], env: dict[str, str] | None = None) -> tuple[SandboxLimits | None, click.testing.Result]:
    seen: list[SandboxLimits] = []

    @click.command()
    @sandbox_options
    def command(sandbox_limits: SandboxLimits) -> None:
        seen.append(sandbox_limits)

    result = CliRunner().invoke(command, args, env=env)
    return (seen[0] if seen else None), result


def test_the_defaults_are_the_documented_ones() -> None:
    limits, _ = parse([])
    assert limits == SandboxLimits()


def test_flags_set_every_limit() -> None:
    limits, _ = parse(
        [
            "--sandbox-memory", "512M", "--sandbox-pids", "256", "--sandbox-cpus", "1.5",
            "--sandbox-tmp-size", "64M", "--sandbox-workspace-size", "1G", "--sandbox-idle-timeout", "30",
            "--sandbox-cgroup", "corral/sandboxes", "--sandbox-disk-reserve", "512M",
        ]
    )  # fmt: skip
    assert limits == SandboxLimits(
        memory_bytes=512 * 1024**2,
        pids=256,
        cpus=1.5,
        tmp_bytes=64 * 1024**2,
        workspace_bytes=1024**3,
        disk_reserve_bytes=512 * 1024**2,
        idle_timeout_s=30.0,
        cgroup_parent="corral/sandboxes",
    )


def test_zero_and_none_turn_limits_off() -> None:
    limits, _ = parse(
        ["--sandbox-memory", "none", "--sandbox-pids", "0", "--sandbox-cpus", "0", "--sandbox-idle-timeout", "0"]
    )
    assert limits is not None
    assert (limits.memory_bytes, limits.pids, limits.cpus, limits.idle_timeout_s) == (None, None, None, None)


def test_the_disk_reserve_is_auto_unless_given_and_none_is_no_reserve() -> None:
    assert parse([])[0] == SandboxLimits(disk_reserve_bytes=None)
    assert parse(["--sandbox-disk-reserve", "none"])[0] == SandboxLimits(disk_reserve_bytes=0)
    assert parse([], env={"CORRAL_SANDBOX_DISK_RESERVE": "2G"})[0] == SandboxLimits(disk_reserve_bytes=2 * 1024**3)


def test_environment_variables_are_read() -> None:
    limits, _ = parse([], env={"CORRAL_SANDBOX_WORKSPACE_SIZE": "none", "CORRAL_SANDBOX_CGROUP": "none"})
    assert limits is not None
    assert limits.workspace_bytes is None
    assert limits.cgroup_parent is None


def test_a_cgroup_parent_outside_the_hierarchy_is_refused() -> None:
    limits, result = parse(["--sandbox-cgroup", "../escape"])
    assert limits is None
    assert result.exit_code == 2
    assert "relative cgroup path" in result.output


def test_a_size_that_is_not_one_is_refused() -> None:
    _, result = parse(["--sandbox-memory", "lots"])
    assert result.exit_code == 2
    assert "such as 512M" in result.output
