"""Sandbox benchmark: what a session's sandbox costs to start and per command, against raw bubblewrap.

Everything runs in this process, through `LocalHandsProvider` as the server builds it (`build_hands`), with
no HTTP and no model. Measured, in milliseconds:

* cold     a new session's first `bash true`: workspace attach, cgroup, bwrap + bash start, the command;
* parts    the cold start's pieces on their own: a new workspace image (sparse copy of the template +
           loop device + mount), a new cgroup (mkdir + limits), the join wrapper (`sh` writing cgroup.procs);
* warm     `true` (a builtin) and `/bin/echo hi` (fork + exec) in a running sandbox, through
           `LocalHands.execute` (validation, the per-session lock, the pipe protocol, the result);
* raw      the same against a bare `bwrap ... bash` driven over pipes with blocking reads and writes and
           the same protocol: the floor. Corral's own overhead = Corral p50 - raw p50.

Each is taken for three configurations: `limits` (the default: a cgroup per sandbox and a 10 GiB workspace
image), `cgroups` (cgroups, plain workspace directories) and `bare` (no cgroups, plain directories).

Run from the repository root, as root (the default configuration mounts workspaces and writes cgroups):

    . .venv/bin/activate
    python -m bench.bench_sandbox --quick      # smoke run
    python -m bench.bench_sandbox --write      # full counts; replaces today's section in bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvloop

from bench.bench_turns import Series, commit, load_average, machine, percentile, write_results
from corral.config import SandboxLimits, Settings
from corral.hands.local import LocalHandsProvider
from corral.hands.sandbox.bubblewrap import BubblewrapLauncher
from corral.hands.sandbox.cgroups import CgroupTree
from corral.hands.sandbox.volumes import ImageVolumes
from corral.server import build_hands

WARM_TARGET_MS = 2.0  # design target: a warm bash round trip costs <= 2 ms of Corral's own overhead
CONFIGS = {
    "limits": SandboxLimits(),
    "cgroups": SandboxLimits(workspace_bytes=None),
    "bare": SandboxLimits(workspace_bytes=None, cgroup_parent=None),
}
COMMANDS = {"true": "true", "echo": "/bin/echo hi"}


@dataclass(frozen=True)
class Counts:
    cold: int
    warm: int
    warmup: int


def cpu_now() -> float:
    times = os.times()
    return times.user + times.system


@contextmanager
def data_dir() -> Iterator[Path]:
    """A data directory the sandbox user can traverse, as /var/lib/corral is."""
    with tempfile.TemporaryDirectory(prefix="corral-bench-sandbox-") as name:
        path = Path(name)
        path.chmod(0o711)
        yield path


async def timed(series: Series, call: Awaitable[object]) -> None:
    """Time `call` (a coroutine not started yet) into `series`."""
    cpu = cpu_now()
    start = time.perf_counter()
    await call
    series.add_seconds(time.perf_counter() - start)
    series.add_cpu(cpu_now() - cpu)


# ---------------------------------------------------------------------------
# The floor: bwrap + bash over pipes, blocking, no asyncio, no cgroup


class RawShell:
    """bash in the same bwrap sandbox as Corral's, driven with the same protocol and nothing else."""

    def __init__(self, workspace: Path) -> None:
        launcher = BubblewrapLauncher.detect(workspace.parent)
        workspace.mkdir(mode=0o700, exist_ok=True)
        os.chown(workspace, launcher.identity.uid, launcher.identity.gid)
        self._launcher, self._workspace = launcher, workspace
        self._token = secrets.token_hex(16)
        self._marker = f"\n{self._token}:".encode()
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # Corral's own launch spec (with its seccomp filter), spawned without Corral's shell driver.
        spec = self._launcher.launch_spec(self._workspace)
        try:
            self._process = subprocess.Popen(
                spec.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=spec.env,
                pass_fds=spec.pass_fds,
                start_new_session=True,
            )
        finally:
            for fd in spec.pass_fds:
                os.close(fd)
        self._exchange(f"set -m 2>/dev/null; builtin printf '\\n{self._token}:%d\\n' 0\n")

    def run(self, command: str) -> bytes:
        line = f"eval {shlex.quote(command)} </dev/null 2>&1; builtin printf '\\n{self._token}:%d\\n' $?\n"
        return self._exchange(line)

    def _exchange(self, line: str) -> bytes:
        assert self._process is not None and self._process.stdin is not None and self._process.stdout is not None
        os.write(self._process.stdin.fileno(), line.encode())
        out = b""
        while True:
            out += os.read(self._process.stdout.fileno(), 65536)
            index = out.find(self._marker)
            if index >= 0 and out.find(b"\n", index + len(self._marker)) >= 0:
                return out[:index]

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


# ---------------------------------------------------------------------------
# Measurements; the configurations take turns, so that load from elsewhere hits them alike


def measure_parts(counts: Counts, series: dict[str, Series]) -> None:
    """The cold start's pieces, each on its own."""
    image = series.setdefault("part-image", Series("part-image", "new workspace image: copy + loop + mount"))
    cgroup = series.setdefault("part-cgroup", Series("part-cgroup", "new cgroup: mkdir + limits"))
    join = series.setdefault("part-join", Series("part-join", "`sh` joining the cgroups, exec `true`"))
    plain = series.setdefault("part-sh", Series("part-sh", "`sh` exec `true`, no join (its floor)"))
    with data_dir() as root:
        volumes = ImageVolumes.detect(root / "workspaces", SandboxLimits().workspace_bytes or 0)
        tree = CgroupTree.detect()
        try:
            for index in range(counts.cold):
                workspace = root / "workspaces" / f"sesn_part{index}"
                start = time.perf_counter()
                volumes.attach(workspace)
                image.add_seconds(time.perf_counter() - start)
                volumes.delete(workspace)
                start = time.perf_counter()
                group = tree.create(f"sesn_part{index}")
                cgroup.add_seconds(time.perf_counter() - start)
                for target, prefix in ((join, group.join_argv()), (plain, ("/bin/sh", "-c", 'exec "$@"', "sh"))):
                    start = time.perf_counter()
                    subprocess.run([*prefix, "true"], check=True)
                    target.add_seconds(time.perf_counter() - start)
                group.remove()
        finally:
            tree.remove()


def get(series: dict[str, Series], name: str, description: str) -> Series:
    return series.setdefault(name, Series(name, description))


async def measure_cold(
    providers: dict[str, LocalHandsProvider], root: Path, counts: Counts, series: dict[str, Series]
) -> None:
    raw = get(series, "cold-raw", "bare bwrap + bash start, first `true`")
    for index in range(counts.cold):
        shell = RawShell(root / "raw" / f"raw{index}")
        start = time.perf_counter()
        shell.start()
        shell.run("true")
        raw.add_seconds(time.perf_counter() - start)
        shell.stop()
        for config, provider in providers.items():
            hands = provider.for_session(f"sesn_cold{index}")
            cold = get(series, f"cold-{config}", f"new session, first `true` ({config})")
            await timed(cold, hands.execute("bash", {"command": "true"}))
            await provider.destroy(f"sesn_cold{index}")


async def measure_warm(
    providers: dict[str, LocalHandsProvider], root: Path, counts: Counts, series: dict[str, Series]
) -> None:
    raw = RawShell(root / "raw" / "warm")
    raw.start()
    try:
        sessions = {config: provider.for_session("sesn_warm") for config, provider in providers.items()}
        for name, command in COMMANDS.items():
            raw_series = get(series, f"warm-{name}-raw", f"`{command}` round trip (raw)")
            for index in range(counts.warmup + counts.warm):
                record = index >= counts.warmup
                cpu, start = cpu_now(), time.perf_counter()
                raw.run(command)
                if record:
                    raw_series.add_seconds(time.perf_counter() - start)
                    raw_series.add_cpu(cpu_now() - cpu)
                for config, hands in sessions.items():
                    call = hands.execute("bash", {"command": command})
                    if record:
                        await timed(get(series, f"warm-{name}-{config}", f"`{command}` round trip ({config})"), call)
                    else:
                        await call
    finally:
        raw.stop()


async def run_all(counts: Counts) -> dict[str, Series]:
    series: dict[str, Series] = {}
    measure_parts(counts, series)
    with data_dir() as root:
        (root / "raw").mkdir(mode=0o711)
        providers = {
            config: build_hands(Settings(data_dir=root / config, sandbox_limits=limits))
            for config, limits in CONFIGS.items()
        }
        try:
            await measure_cold(providers, root, counts, series)
            await measure_warm(providers, root, counts, series)
        finally:
            for provider in providers.values():
                await provider.close()
    return series


# ---------------------------------------------------------------------------
# Reporting


def overheads(series: dict[str, Series]) -> list[str]:
    lines = []
    for name, command in COMMANDS.items():
        raw = percentile(series[f"warm-{name}-raw"].values, 50)
        for config in CONFIGS:
            ours = percentile(series[f"warm-{name}-{config}"].values, 50)
            verdict = "within" if ours - raw <= WARM_TARGET_MS else "OVER"
            lines.append(
                f"- `{command}`, {config}: p50 {ours:.2f} ms vs raw {raw:.2f} ms: Corral's own overhead "
                f"**{ours - raw:.2f} ms** ({verdict} the {WARM_TARGET_MS:g} ms target)"
            )
    raw_cold = percentile(series["cold-raw"].values, 50)
    for config in CONFIGS:
        ours = percentile(series[f"cold-{config}"].values, 50)
        lines.append(f"- cold start, {config}: p50 {ours:.2f} ms, {ours - raw_cold:+.2f} ms vs bare bwrap + bash")
    return lines


def report(series: dict[str, Series], counts: Counts, load: str) -> str:
    return "\n".join(
        [
            f"Machine: {machine()}; load average (1/5 min) at start {load}; commit {commit()} (plus uncommitted "
            f"changes, if any); event loop uvloop; sandboxes as `build_hands` makes them, as root.",
            f"Counts: cold {counts.cold} per configuration, warm {counts.warm} per command (after "
            f"{counts.warmup} untimed). Configurations: limits = cgroup per sandbox (2 GiB, 1024 pids, 1 CPU) "
            "+ 10 GiB workspace image (the default); cgroups = cgroup, plain workspace directory; bare = "
            "neither. CPU ms/iter is this process's CPU time (not the sandbox's).",
            "",
            "| id | measurement | n | p50 ms | p95 ms | mean ms | CPU ms/iter | design target |",
            "|---|---|---:|---:|---:|---:|---:|---|",
            *(s.row() for s in series.values()),
            "",
            *overheads(series),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", type=int, default=50, help="cold starts per configuration")
    parser.add_argument("--warm", type=int, default=500, help="warm round trips per command and configuration")
    parser.add_argument("--warmup", type=int, default=20, help="untimed round trips first")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 cold, 20 warm")
    parser.add_argument("--write", action="store_true", help="replace today's section in bench/RESULTS.md")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("run as root: the default sandbox configuration mounts workspaces and writes cgroups", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.ERROR)
    counts = Counts(5, 20, 2) if args.quick else Counts(args.cold, args.warm, args.warmup)
    load = load_average()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        series = runner.run(run_all(counts))
    body = report(series, counts, load)
    print(body)
    if args.write:
        write_results(f"{dt.date.today().isoformat()} — sandbox start and round trip (bench_sandbox)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
