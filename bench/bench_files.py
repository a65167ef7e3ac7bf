"""File tools benchmark: what read and write cost now that they run inside the sandbox, and what the server's
memory does when the sandbox offers a huge file.

Everything runs in this process, through `LocalHandsProvider` as the server builds it (`build_hands`, default
limits: cgroups and workspace images), with no HTTP and no model. Measured, in milliseconds (p50 / p95):

* warm read / write   `read` of a 4 KiB text file and `write` of 4 KiB, in a session whose helper runs;
* in-server floor     the same read and write done the old way: `asyncio.to_thread` with plain file calls, in
                      the server process with the server's privileges (what the tools did before they moved);
* bash cat            `cat` of the same file through the session's shell, the other in-sandbox route;
* first call          a new session's first `read`: workspace attach, sandbox start, helper start, the read.

Memory: this process's peak RSS (ru_maxrss) before and after reads of a newline-free file of --huge-mib MiB
(`view_range` [1, 1] and [2, 2], which scan all of it), against the file's size.

Run from the repository root, as root:

    . .venv/bin/activate
    python -m bench.bench_files --quick      # smoke run
    python -m bench.bench_files --write      # full counts; replaces today's section in bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import resource
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

from bench.bench_sandbox import data_dir
from bench.bench_turns import Series, commit, load_average, machine, write_results
from corral.config import SandboxLimits, Settings
from corral.hands.local import LocalHandsProvider
from corral.server import build_hands

CONTENT = ("x" * 63 + "\n") * 64  # 4 KiB
TARGET_MS = 2.0  # issue #9: a warm read/write round trip in the file tools' new home, p50


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def series(name: str, description: str, count: int, call: Callable[[], Awaitable[object]]) -> Series:
    measured = Series(name, description, target_p50_ms=TARGET_MS if name.startswith("warm") else None)
    for _ in range(count):
        start = time.perf_counter()
        await call()
        measured.add_seconds(time.perf_counter() - start)
    return measured


def old_read(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def old_write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


async def run(warm: int, cold: int, huge_mib: int) -> str:
    with data_dir() as root:
        settings = Settings(data_dir=root, sandbox_limits=SandboxLimits(workspace_bytes=(huge_mib + 256) * 2**20))
        provider = build_hands(settings)
        assert isinstance(provider, LocalHandsProvider)
        try:
            hands = provider.for_session("sesn_bench")
            await hands.execute("write", {"file_path": "a.txt", "content": CONTENT})
            workspace = provider.workspace("sesn_bench")
            for _ in range(20):  # warm-up
                await hands.execute("read", {"file_path": "a.txt"})
            rows = [
                await series(
                    "warm read",
                    "4 KiB file, `read` via the helper in the sandbox",
                    warm,
                    lambda: hands.execute("read", {"file_path": "a.txt"}),
                ),
                await series(
                    "warm write",
                    "4 KiB, `write` via the helper in the sandbox",
                    warm,
                    lambda: hands.execute("write", {"file_path": "b.txt", "content": CONTENT}),
                ),
                await series(
                    "old read",
                    "in the server: asyncio.to_thread + open/read (before this change)",
                    warm,
                    lambda: asyncio.to_thread(old_read, workspace / "a.txt"),
                ),
                await series(
                    "old write",
                    "in the server: asyncio.to_thread + open/write (before this change)",
                    warm,
                    lambda: asyncio.to_thread(old_write, workspace / "c.txt", CONTENT.encode()),
                ),
                await series(
                    "bash cat",
                    "`cat` of the same file through the session's shell",
                    warm,
                    lambda: hands.execute("bash", {"command": "cat a.txt"}),
                ),
            ]
            counter = iter(range(cold))

            async def first_read() -> None:
                fresh = provider.for_session(f"sesn_cold{next(counter)}")
                result = await fresh.execute("read", {"file_path": "missing.txt"})
                assert result.is_error

            rows.append(
                await series("first read", "a new session's first `read`: workspace, sandbox, helper", cold, first_read)
            )
            for index in range(cold):
                await provider.destroy(f"sesn_cold{index}")

            before = peak_rss_mib()
            await hands.execute("bash", {"command": f"head -c {huge_mib}M /dev/zero | tr '\\0' a > huge.txt"})
            first = await hands.execute("read", {"file_path": "huge.txt", "view_range": [1, 1]})
            second = await hands.execute("read", {"file_path": "huge.txt", "view_range": [2, 2]})
            assert not first.is_error and second.is_error, (first, second)
            after = peak_rss_mib()
        finally:
            await provider.close()
    table = ["| | what | n | p50 ms | p95 ms | mean ms | cpu ms | target |", "|---|---|---|---|---|---|---|---|"]
    table += [row.row() for row in rows]
    memory = (
        f"Peak RSS of the server process: {before:.0f} MiB before, {after:.0f} MiB after reading a {huge_mib} MiB "
        "newline-free file with view_range [1, 1] and [2, 2] (each scans the whole file, in the sandbox)."
    )
    return "\n".join(
        [
            f"Commit {commit()}, {machine()}, load average {load_average()}, {dt.date.today().isoformat()}.",
            "",
            *table,
            "",
            memory,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warm", type=int, default=500)
    parser.add_argument("--cold", type=int, default=20)
    parser.add_argument("--huge-mib", type=int, default=2048)
    parser.add_argument("--quick", action="store_true", help="smoke run: few iterations, a 64 MiB file")
    parser.add_argument("--write", action="store_true", help="replace today's section in bench/RESULTS.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.warm, args.cold, args.huge_mib = 20, 3, 64
    report = uvloop.run(run(args.warm, args.cold, args.huge_mib))
    print(report)
    if args.write:
        write_results(f"{dt.date.today().isoformat()} — file tools in the sandbox (bench_files)", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
