"""LocalHands dispatch and validation, and LocalHandsProvider's per-session workspaces."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.hands.base import HandsProvider, ToolResult
from corral.hands.builtin.files import FileTools
from corral.hands.local import LocalHands, LocalHandsProvider


@pytest.fixture
async def provider(tmp_path: Path) -> AsyncIterator[LocalHandsProvider]:
    p = LocalHandsProvider(tmp_path / "workspaces")
    yield p
    await p.close()


@pytest.fixture
async def hands(tmp_path: Path) -> AsyncIterator[LocalHands]:
    h = LocalHands(tmp_path / "ws")
    yield h
    await h.close()


def text(result: ToolResult) -> str:
    return str(result.content[0]["text"])


def shell_pid(hands: LocalHands) -> int | None:
    return hands._shell.pid


def process_exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


# -- validation ----------------------------------------------------------------------------------


async def test_unknown_tool_is_error(hands: LocalHands) -> None:
    result = await hands.execute("web_fetch", {"url": "https://example.com"})
    assert result.is_error and "unknown tool" in text(result)


async def test_ill_typed_field_names_it(hands: LocalHands) -> None:
    result = await hands.execute("bash", {"command": 5})
    assert result.is_error and text(result) == "bash: 'command' must be a string"


async def test_missing_field_names_it(hands: LocalHands) -> None:
    result = await hands.execute("write", {"file_path": "a.txt"})
    assert result.is_error and text(result) == "write: 'content' is required"


async def test_bash_needs_command_or_restart(hands: LocalHands) -> None:
    result = await hands.execute("bash", {})
    assert result.is_error and "'command'" in text(result)


async def test_boolean_is_not_an_integer(hands: LocalHands) -> None:
    result = await hands.execute("bash", {"command": "true", "timeout_ms": True})
    assert result.is_error and "'timeout_ms' must be an integer" in text(result)


async def test_view_range_must_be_a_pair(hands: LocalHands) -> None:
    result = await hands.execute("read", {"file_path": "a.txt", "view_range": [1]})
    assert result.is_error and "'view_range'" in text(result)


async def test_null_optional_fields_count_as_absent(hands: LocalHands) -> None:
    await hands.execute("write", {"file_path": "a.txt", "content": "x\n"})
    result = await hands.execute("read", {"file_path": "a.txt", "view_range": None})
    assert text(result) == "     1\tx"


async def test_non_object_input_is_error(hands: LocalHands) -> None:
    result = await hands.execute("bash", ["ls"])
    assert result.is_error


async def test_unexpected_exception_becomes_error_result(hands: LocalHands, monkeypatch: pytest.MonkeyPatch) -> None:
    async def boom(self: FileTools, *args: object) -> ToolResult:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(FileTools, "glob", boom)
    result = await hands.execute("glob", {"pattern": "*"})
    assert result.is_error and "internal error (RuntimeError)" in text(result)
    # The exception's text may name host paths: it goes to the server's log, not to the model.
    assert "disk on fire" not in text(result)


async def test_dispatches_each_file_tool(hands: LocalHands) -> None:
    assert not (await hands.execute("write", {"file_path": "a.txt", "content": "one\n"})).is_error
    edit = {"file_path": "a.txt", "old_string": "one", "new_string": "two", "replace_all": None}
    assert not (await hands.execute("edit", edit)).is_error
    assert text(await hands.execute("glob", {"pattern": "*.txt"})) == "a.txt"
    assert text(await hands.execute("grep", {"pattern": "two"})) == "a.txt:1:two"


# -- provider ------------------------------------------------------------------------------------


def test_provider_satisfies_protocol(tmp_path: Path) -> None:
    provider: HandsProvider = LocalHandsProvider(tmp_path)
    assert provider.for_session("sesn_1") is provider.for_session("sesn_1")


async def test_workspace_is_created_lazily_with_mode_0700(provider: LocalHandsProvider) -> None:
    hands = provider.for_session("sesn_a")
    workspace = provider.root / "sesn_a"
    assert not workspace.exists()
    await hands.execute("bash", {"command": "true"})
    assert stat.S_IMODE(workspace.stat().st_mode) == 0o700


def test_session_id_cannot_escape_root(provider: LocalHandsProvider) -> None:
    for bad in ("../x", "a/b", "", "."):
        with pytest.raises(ValueError):
            provider.for_session(bad)


async def test_sessions_get_separate_workspaces(provider: LocalHandsProvider) -> None:
    await provider.for_session("sesn_a").execute("write", {"file_path": "f.txt", "content": "a"})
    result = await provider.for_session("sesn_b").execute("read", {"file_path": "f.txt"})
    assert result.is_error


async def test_release_stops_shell_and_keeps_workspace(provider: LocalHandsProvider) -> None:
    hands = provider.for_session("sesn_a")
    await hands.execute("bash", {"command": "echo kept > f.txt"})
    pid = shell_pid(hands)
    assert pid is not None
    await provider.release("sesn_a")
    assert shell_pid(hands) is None
    assert not process_exists(pid)
    assert (provider.root / "sesn_a" / "f.txt").read_text() == "kept\n"


async def test_destroy_deletes_workspace(provider: LocalHandsProvider) -> None:
    await provider.for_session("sesn_a").execute("bash", {"command": "mkdir -p d && touch d/f"})
    await provider.destroy("sesn_a")
    assert not (provider.root / "sesn_a").exists()


async def test_close_stops_every_shell(provider: LocalHandsProvider) -> None:
    sessions = [provider.for_session(s) for s in ("sesn_a", "sesn_b")]
    for hands in sessions:
        await hands.execute("bash", {"command": "true"})
    await provider.close()
    assert all(shell_pid(h) is None for h in sessions)
