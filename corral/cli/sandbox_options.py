"""`corral serve` options for the sandboxes' limits and lifecycle.

`sandbox_options` adds the options to the command and hands the command one `SandboxLimits` value
(`sandbox_limits=`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from corral.config import SandboxLimits, format_size, parse_size

SANDBOX_EPILOG = """\b
Sandboxes (bubblewrap): each session's runs in a cgroup of its own under
--sandbox-cgroup (memory, process and CPU limits; the tool result says when a
limit killed something), with a private /tmp and its own /workspace
filesystem of --sandbox-workspace-size (an ext4 image next to the workspace,
loop-mounted while in use; refused while the workspaces in use could fill
the data disk past --sandbox-disk-reserve). A sandbox starts at the
session's first tool call and stops after --sandbox-idle-timeout without
one, when the session is archived or deleted, and when the server stops; a
server that starts kills the sandboxes a crashed predecessor left behind.
"""


class _ByteSize(click.ParamType):
    """512M, 2G, 1.5GiB or a number of bytes; 0 or 'none' for no limit (None)."""

    name = "size"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int | None:
        if value is None:
            return None
        try:
            return parse_size(value if isinstance(value, int) else str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


BYTE_SIZE = _ByteSize()

# The options show the limits' defaults the way one would type them: None (no limit) as 0 or 'none'.
DEFAULTS = SandboxLimits()
DEFAULT_DISK_RESERVE = "auto" if DEFAULTS.disk_reserve_bytes is None else format_size(DEFAULTS.disk_reserve_bytes)


def _disk_reserve(ctx: click.Context, param: click.Parameter, value: object) -> int | None:
    """'auto' (None: the default reserve), else a size; 0 or 'none' for no reserve (0)."""
    if str(value).strip().lower() == "auto":
        return None
    return BYTE_SIZE.convert(value, param, ctx) or 0


def _cgroup_parent(_ctx: click.Context, _param: click.Parameter, value: str) -> str | None:
    if value.strip().lower() == "none":
        return None
    parts = Path(value).parts
    if not parts or value.startswith("/") or any(part in (".", "..") for part in parts):
        raise click.BadParameter(f"must be a relative cgroup path such as 'corral' or 'none', not {value!r}")
    return value


def sandbox_options(command: Callable[..., None]) -> Callable[..., None]:
    options = [
        click.option(
            "--sandbox-memory",
            envvar="CORRAL_SANDBOX_MEMORY",
            show_envvar=True,
            default=format_size(DEFAULTS.memory_bytes),
            show_default=True,
            type=BYTE_SIZE,
            help="Memory limit of each sandbox (its processes and its /tmp); beyond it the kernel kills a "
            "process and the tool result says so. 'none': no limit.",
        ),
        click.option(
            "--sandbox-pids",
            envvar="CORRAL_SANDBOX_PIDS",
            show_envvar=True,
            default=DEFAULTS.pids or 0,
            show_default=True,
            type=click.IntRange(0, 4_194_304),
            help="Processes and threads a sandbox may have at once (a fork bomb stops there). 0: no limit.",
        ),
        click.option(
            "--sandbox-cpus",
            envvar="CORRAL_SANDBOX_CPUS",
            show_envvar=True,
            default=DEFAULTS.cpus or 0,
            show_default=True,
            type=click.FloatRange(0, 1024),
            help="CPU time a sandbox may use, in cores (1.5 = one and a half). 0: no limit.",
        ),
        click.option(
            "--sandbox-tmp-size",
            envvar="CORRAL_SANDBOX_TMP_SIZE",
            show_envvar=True,
            default=format_size(DEFAULTS.tmp_bytes),
            show_default=True,
            type=BYTE_SIZE,
            help="Size of each sandbox's private /tmp (memory-backed, counted in --sandbox-memory).",
        ),
        click.option(
            "--sandbox-workspace-size",
            envvar="CORRAL_SANDBOX_WORKSPACE_SIZE",
            show_envvar=True,
            default=format_size(DEFAULTS.workspace_bytes),
            show_default=True,
            type=BYTE_SIZE,
            help="Size cap of each session's /workspace: an ext4 image of its own, loop-mounted (needs root), "
            "so a disk filler cannot reach the database's disk. 'none': plain directories on the data disk, "
            "uncapped.",
        ),
        click.option(
            "--sandbox-disk-reserve",
            envvar="CORRAL_SANDBOX_DISK_RESERVE",
            show_envvar=True,
            default=DEFAULT_DISK_RESERVE,
            show_default=True,
            callback=_disk_reserve,
            metavar="SIZE",
            help="Free space on the data disk kept for the database and the logs: a session's workspace is "
            "refused (a tool error) when the workspaces in use, each grown to --sandbox-workspace-size, would "
            "eat into it. 'auto': 1 GiB, or 1/20 of a disk smaller than 20 GiB. 'none': no reserve.",
        ),
        click.option(
            "--sandbox-idle-timeout",
            envvar="CORRAL_SANDBOX_IDLE_TIMEOUT",
            show_envvar=True,
            default=DEFAULTS.idle_timeout_s or 0,
            show_default=True,
            type=click.FloatRange(0, 30 * 86400),
            help="Seconds without a tool call after which a session's sandbox stops; the next call starts a "
            "fresh one on the same workspace (shell state resets, files stay). 0: never.",
        ),
        click.option(
            "--sandbox-cgroup",
            envvar="CORRAL_SANDBOX_CGROUP",
            show_envvar=True,
            default=DEFAULTS.cgroup_parent or "none",
            show_default=True,
            callback=_cgroup_parent,
            help="Parent cgroup of the sandboxes, below each hierarchy's root (a dedicated one: on start the "
            "server kills sandboxes a crashed predecessor left there). 'none': no cgroups, so no memory, "
            "process or CPU limits.",
        ),
    ]

    @functools.wraps(command)
    def with_sandbox_limits(*args: Any, **kwargs: Any) -> None:
        limits = SandboxLimits(
            memory_bytes=kwargs.pop("sandbox_memory"),
            pids=kwargs.pop("sandbox_pids") or None,
            cpus=kwargs.pop("sandbox_cpus") or None,
            tmp_bytes=kwargs.pop("sandbox_tmp_size"),
            workspace_bytes=kwargs.pop("sandbox_workspace_size"),
            disk_reserve_bytes=kwargs.pop("sandbox_disk_reserve"),
            idle_timeout_s=kwargs.pop("sandbox_idle_timeout") or None,
            cgroup_parent=kwargs.pop("sandbox_cgroup"),
        )
        command(*args, sandbox_limits=limits, **kwargs)

    decorated: Callable[..., None] = with_sandbox_limits
    for option in reversed(options):
        decorated = option(decorated)
    return decorated
