"""The bash tool: a persistent shell per session, with timeouts, restarts and a scrubbed environment."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.hands.base import ToolResult
from corral.hands.local import LocalHands


@pytest.fixture
async def hands(tmp_path: Path) -> AsyncIterator[LocalHands]:
    h = LocalHands(tmp_path / "ws")
    yield h
    await h.close()


def text(result: ToolResult) -> str:
    assert len(result.content) == 1 and result.content[0]["type"] == "text"
    return str(result.content[0]["text"])


async def bash(hands: LocalHands, command: str, **extra: object) -> ToolResult:
    return await hands.execute("bash", {"command": command, **extra})


def running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (this container's init may not reap orphans)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


async def wait_gone(pid: int) -> bool:
    for _ in range(100):
        if not running(pid):
            return True
        await asyncio.sleep(0.02)
    return False


async def test_cwd_and_env_persist_across_calls(hands: LocalHands) -> None:
    await bash(hands, "mkdir sub && cd sub && export GREETING=hello")
    result = await bash(hands, 'pwd; echo "$GREETING"')
    assert not result.is_error
    assert text(result) == f"{hands.workspace / 'sub'}\nhello\n"


async def test_shell_starts_in_workspace(hands: LocalHands) -> None:
    assert text(await bash(hands, "pwd")) == f"{hands.workspace}\n"


async def test_nonzero_exit_is_error_with_output(hands: LocalHands) -> None:
    result = await bash(hands, "echo to-stdout; echo to-stderr >&2; exit_with() { return $1; }; exit_with 4")
    assert result.is_error
    assert text(result) == "to-stdout\nto-stderr\nexit code 4"


async def test_command_reading_stdin_gets_eof_instead_of_the_protocol(hands: LocalHands) -> None:
    result = await bash(hands, "cat; echo done")
    assert text(result) == "done\n"
    assert text(await bash(hands, "echo next")) == "next\n"


async def test_timeout_kills_background_children_holding_the_pipe(hands: LocalHands) -> None:
    result = await bash(hands, "echo started; sleep 100 & echo $! > bg.pid; sleep 100", timeout_ms=300)
    assert result.is_error
    assert "started" in text(result)
    assert "timed out" in text(result)
    assert await wait_gone(int((hands.workspace / "bg.pid").read_text()))
    assert text(await bash(hands, "echo ok")) == "ok\n"


async def test_timeout_kills_setsid_child_that_left_the_tree(hands: LocalHands) -> None:
    # setsid forks, so the sleeper is reparented away from the shell but still holds the output pipe.
    command = (
        "setsid sh -c 'echo $$ > esc.pid; exec sleep 100' & while [ ! -s esc.pid ]; do sleep 0.01; done; sleep 100"
    )
    result = await bash(hands, command, timeout_ms=300)
    assert result.is_error and "timed out" in text(result)
    assert await wait_gone(int((hands.workspace / "esc.pid").read_text()))
    assert text(await bash(hands, "echo ok")) == "ok\n"


async def test_exit_then_next_call_runs_in_fresh_shell(hands: LocalHands) -> None:
    result = await bash(hands, "cd /tmp; echo bye; exit 3")
    assert result.is_error
    assert text(result).startswith("bye\n")
    assert "exited with code 3" in text(result)
    assert text(await bash(hands, "pwd")) == f"{hands.workspace}\n"


async def test_exit_with_background_job_holding_pipe_returns(hands: LocalHands) -> None:
    result = await bash(hands, "sleep 100 & echo $! > bg.pid; exit 0")
    assert not result.is_error
    assert await wait_gone(int((hands.workspace / "bg.pid").read_text()))


async def test_restart_gives_fresh_shell(hands: LocalHands) -> None:
    await bash(hands, "export FOO=1; cd /tmp")
    result = await hands.execute("bash", {"restart": True})
    assert not result.is_error and text(result) == "bash session restarted"
    assert text(await bash(hands, 'echo "${FOO:-unset}"; pwd')) == f"unset\n{hands.workspace}\n"


async def test_output_is_capped_keeping_the_head(hands: LocalHands) -> None:
    result = await bash(hands, "echo first; head -c 300000 /dev/zero | tr '\\0' a")
    out = text(result)
    assert out.startswith("first\naaa")
    assert "truncated" in out
    assert len(out) < 101 * 1024


async def test_empty_output_is_reported_not_blank(hands: LocalHands) -> None:
    assert text(await bash(hands, "true")) == "(no output)"


async def test_shell_env_contains_none_of_the_server_env(hands: LocalHands, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_FAKE_SECRET", "sk-fake-0123456789")
    out = text(await bash(hands, "env"))
    assert "sk-fake-0123456789" not in out
    assert "CORRAL_FAKE_SECRET" not in out
    names = {line.split("=", 1)[0] for line in out.splitlines()}
    assert names <= {"PATH", "HOME", "LANG", "TERM", "PWD", "OLDPWD", "SHLVL", "_"}
    assert f"HOME={hands.workspace}" in out.splitlines()
    assert "CORRAL_FAKE_SECRET" in os.environ


def file_text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def wait_for_file(path: Path) -> None:
    for _ in range(250):
        if file_text(path).strip():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


async def test_cancelled_call_kills_its_processes(hands: LocalHands) -> None:
    call = asyncio.ensure_future(bash(hands, "sleep 100 & echo $! > bg.pid; sleep 100"))
    await wait_for_file(hands.workspace / "bg.pid")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await wait_gone(int((hands.workspace / "bg.pid").read_text()))
    assert text(await bash(hands, "echo ok")) == "ok\n"


async def test_close_during_a_command_ends_it_promptly(hands: LocalHands) -> None:
    call = asyncio.ensure_future(bash(hands, "echo $$ > shell.pid; sleep 100"))
    await wait_for_file(hands.workspace / "shell.pid")
    await hands.close()
    result = await asyncio.wait_for(call, 5)
    assert result.is_error
    assert await wait_gone(int((hands.workspace / "shell.pid").read_text()))
