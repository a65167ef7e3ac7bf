"""The file tools, attacked from inside a real sandbox: they act with the sandbox's privileges and no more,
answer promptly whatever the sandbox does to their helper, and never show the model a host path.

Sandboxes here are configured as the server configures them: bubblewrap as the sandbox user, a cgroup and a
loop-mounted workspace image each.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.hands.base import ToolResult
from corral.hands.builtin.file_helper import LINE_LIMIT
from corral.hands.local import LocalHands, LocalHandsProvider
from corral.hands.sandbox.bubblewrap import BubblewrapLauncher
from corral.hands.sandbox.cgroups import CgroupTree
from corral.hands.sandbox.volumes import ImageVolumes

MiB = 1024**2
HOST_SECRET = "host secret: root only"


@pytest.fixture
def data_dir(data_dir: Path) -> Path:
    """The data directory, holding a root-only directory with root-only files."""
    private = data_dir / "private"
    private.mkdir(mode=0o700)
    (private / "secret.txt").write_text(HOST_SECRET)
    (private / "secret.txt").chmod(0o600)
    (private / "victim.txt").write_text("untouched")
    return data_dir


@pytest.fixture
async def provider(data_dir: Path) -> AsyncIterator[LocalHandsProvider]:
    cgroups = CgroupTree.detect()
    root = data_dir / "workspaces"
    launcher = BubblewrapLauncher.detect(root, cgroups=cgroups, tmp_size=16 * MiB)
    owner = (launcher.identity.uid, launcher.identity.gid)
    provider = LocalHandsProvider(
        root, launcher=launcher, owner=owner, volumes=ImageVolumes.detect(root, 64 * MiB, owner)
    )
    yield provider
    await provider.close()
    cgroups.remove()


def text(result: ToolResult) -> str:
    return str(result.content[0]["text"])


async def bash(hands: LocalHands, command: str) -> str:
    result = await hands.execute("bash", {"command": command})
    assert not result.is_error, text(result)
    return text(result)


async def test_a_symlink_swapping_race_never_takes_the_file_tools_outside_the_sandbox(
    provider: LocalHandsProvider, data_dir: Path
) -> None:
    hands = provider.for_session("sesn_race")
    private = data_dir / "private"
    await bash(hands, "mkdir d && echo 'workspace copy' > d/secret.txt && echo 'workspace copy' > d/victim.txt")
    # As fast as it can, swap the directory `d` with a symlink to the host's root-only directory, atomically
    # (renameat2 RENAME_EXCHANGE), so that `d` is always one or the other.
    swapper = f"""
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
os.symlink({str(private)!r}, "d.link")
end = time.monotonic() + 3
swaps = 0
while time.monotonic() < end:
    if libc.syscall(316, -100, b"d", -100, b"d.link", 2) != 0:  # renameat2(..., RENAME_EXCHANGE)
        raise OSError(ctypes.get_errno(), "renameat2")
    swaps += 1
open("swaps.part", "w").write(str(swaps))
os.rename("swaps.part", "swaps")
"""
    await hands.execute("write", {"file_path": "swap.py", "content": swapper})
    await bash(hands, "python3 swap.py >swap.log 2>&1 &")
    results: list[str] = []
    deadline = time.monotonic() + 60
    while not (provider.workspace("sesn_race") / "swaps").exists() and time.monotonic() < deadline:
        for call in (
            ("read", {"file_path": "d/secret.txt"}),
            ("write", {"file_path": "d/victim.txt", "content": "overwritten"}),
            ("write", {"file_path": "d/planted.txt", "content": "planted"}),
            ("edit", {"file_path": "d/victim.txt", "old_string": "overwritten", "new_string": "edited"}),
        ):
            results.append(text(await hands.execute(*call)))
    swaps = int((provider.workspace("sesn_race") / "swaps").read_text())
    assert swaps > 1000, "the race must really have run"
    assert len(results) > 100
    assert not any(HOST_SECRET in result for result in results)
    assert sorted(os.listdir(private)) == ["secret.txt", "victim.txt"]
    assert (private / "victim.txt").read_text() == "untouched"
    assert os.stat(private / "victim.txt").st_uid == 0


async def test_files_the_tools_write_belong_to_the_sandbox_user(provider: LocalHandsProvider) -> None:
    hands = provider.for_session("sesn_owner")
    assert not (await hands.execute("write", {"file_path": "new/dir/a.txt", "content": "x"})).is_error
    workspace = provider.workspace("sesn_owner")
    sandbox_uid = os.stat(workspace).st_uid
    assert sandbox_uid != 0
    assert os.stat(workspace / "new" / "dir").st_uid == sandbox_uid
    assert os.stat(workspace / "new" / "dir" / "a.txt").st_uid == sandbox_uid


@pytest.mark.parametrize(
    ("tool", "tool_input"),
    [
        ("read", {"file_path": "fifo"}),
        ("write", {"file_path": "fifo", "content": "x"}),
        ("edit", {"file_path": "fifo", "old_string": "a", "new_string": "b"}),
        ("read", {"file_path": "zero"}),
        ("write", {"file_path": "zero", "content": "x"}),
    ],
)
async def test_fifos_and_device_files_get_a_clear_error_not_a_hang(
    provider: LocalHandsProvider, tool: str, tool_input: dict[str, object]
) -> None:
    hands = provider.for_session("sesn_special")
    await bash(hands, "mkfifo fifo && ln -sf /dev/zero zero")
    result = await asyncio.wait_for(hands.execute(tool, tool_input), 10)
    assert result.is_error
    assert "not a regular file" in text(result) or "outside the workspace" in text(result)


async def test_grep_walks_past_a_fifo(provider: LocalHandsProvider) -> None:
    hands = provider.for_session("sesn_grep_fifo")
    await bash(hands, "mkfifo fifo && echo needle > a.txt")
    result = await asyncio.wait_for(hands.execute("grep", {"pattern": "needle"}), 30)
    assert text(result) == "a.txt:1:needle"


async def test_a_newline_free_file_is_read_a_bounded_line_at_a_time(provider: LocalHandsProvider) -> None:
    hands = provider.for_session("sesn_long_line")
    await bash(hands, "head -c 40M /dev/zero | tr '\\0' a > long.txt")
    first = await hands.execute("read", {"file_path": "long.txt", "view_range": [1, 1]})
    assert not first.is_error
    assert text(first).endswith(f" [line cut: {40 * MiB - LINE_LIMIT} more bytes]")
    past_end = await hands.execute("read", {"file_path": "long.txt", "view_range": [2, 2]})
    assert text(past_end) == "read: view_range starts at line 2 but long.txt has 1 lines"


async def test_nested_double_stars_over_a_deep_tree_answer_promptly(provider: LocalHandsProvider) -> None:
    hands = provider.for_session("sesn_deep")
    await bash(hands, "mkdir -p $(printf 'd%.0s/' $(seq 100)) && touch $(printf 'd%.0s/' $(seq 100))leaf.txt")
    pattern = "/".join(["**", "d"] * 20) + "/**/leaf.txt"
    result = await asyncio.wait_for(hands.execute("glob", {"pattern": pattern}), 30)
    assert text(result).endswith("leaf.txt")


async def test_a_helper_killed_between_calls_is_replaced(provider: LocalHandsProvider) -> None:
    hands = provider.for_session("sesn_kill")
    await hands.execute("write", {"file_path": "a.txt", "content": "still here\n"})
    await bash(hands, "pkill -KILL -f corral-files; sleep 0.1")
    assert text(await hands.execute("read", {"file_path": "a.txt"})) == "     1\tstill here"


async def test_pkill_python_leaves_the_helper_alone(provider: LocalHandsProvider) -> None:
    hands = provider.for_session("sesn_pkill")
    await hands.execute("write", {"file_path": "a.txt", "content": "x\n"})
    await hands.execute("bash", {"command": "pkill python3; pkill python; true"})
    assert "corral-files" in await bash(hands, "ps -eo args")


async def test_an_interrupted_call_to_a_stopped_helper_ends_at_once_and_kills_it(
    provider: LocalHandsProvider,
) -> None:
    hands = provider.for_session("sesn_stopped")
    other = provider.for_session("sesn_other")
    await hands.execute("write", {"file_path": "a.txt", "content": "x\n"})
    await other.execute("write", {"file_path": "b.txt", "content": "y\n"})
    await bash(hands, "pkill -STOP -f corral-files")
    stuck = asyncio.ensure_future(hands.execute("read", {"file_path": "a.txt"}))
    # Another session's file tools answer while this one's helper is stopped.
    assert text(await other.execute("read", {"file_path": "b.txt"})) == "     1\ty"
    assert not stuck.done()
    stuck.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(stuck, 5)
    # The stopped helper was killed, and the next call gets a new one.
    assert text(await hands.execute("read", {"file_path": "a.txt"})) == "     1\tx"
    assert (await bash(hands, "ps -eo stat,args | grep -c '^T.*corral-file[s]' || true")).strip() == "0"


async def test_garbage_on_the_helpers_socket_is_an_error_result_and_the_next_call_recovers(
    provider: LocalHandsProvider,
) -> None:
    hands = provider.for_session("sesn_garbage")
    await hands.execute("write", {"file_path": "a.txt", "content": "x\n"})
    # Commands never inherit the shell's end of the helper's socket, but one can take bash's saved copy of it
    # (pidfd_getfd, as ptrace allows between the sandbox's own processes) and answer the next request with nonsense.
    impostor = """
import ctypes, os, sys
shell, saved = int(sys.argv[1]), int(sys.argv[2])
fd = ctypes.CDLL(None, use_errno=True).syscall(438, os.pidfd_open(shell), saved, 0)  # pidfd_getfd
assert fd >= 0, os.strerror(ctypes.get_errno())
os.write(fd, b"99999999999\\n" + b"{" * 99999)
"""
    await hands.execute("write", {"file_path": "impostor.py", "content": impostor})
    await bash(hands, "python3 impostor.py $$ $(ls -l /proc/$$/fd | awk '/socket:/ {print $9}' | head -1)")
    result = await asyncio.wait_for(hands.execute("read", {"file_path": "a.txt"}), 20)
    assert result.is_error
    assert text(await hands.execute("read", {"file_path": "a.txt"})) == "     1\tx"


async def test_tool_errors_never_name_host_paths(provider: LocalHandsProvider, data_dir: Path) -> None:
    hands = provider.for_session("sesn_paths")
    await bash(hands, "mkdir dir && printf '\\377\\376' > latin.txt && mkfifo fifo")
    calls = [
        ("read", {"file_path": "missing.txt"}),
        ("read", {"file_path": "dir"}),
        ("read", {"file_path": "../../etc/passwd"}),
        ("write", {"file_path": "dir", "content": "x"}),
        ("write", {"file_path": "latin.txt/child", "content": "x"}),
        ("edit", {"file_path": "latin.txt", "old_string": "a", "new_string": "b"}),
        ("edit", {"file_path": "fifo", "old_string": "a", "new_string": "b"}),
        ("glob", {"pattern": "*", "path": "latin.txt"}),
        ("grep", {"pattern": "(", "path": "."}),
        ("grep", {"pattern": "x", "path": "nowhere"}),
    ]
    for tool, tool_input in calls:
        result = await hands.execute(tool, tool_input)
        assert result.is_error, (tool, tool_input)
        assert str(data_dir) not in text(result), (tool, tool_input, text(result))
