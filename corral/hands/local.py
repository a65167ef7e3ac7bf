"""Hands that run the built-in tools in a per-session directory on this machine.

`LocalHands` validates the model's tool input and dispatches to the shell (`shell.py`) or the file tools
(`files.py`). `LocalHandsProvider` gives each session its own workspace `<root>/<session_id>`, created
with mode 0700 by the first tool call rather than when the session is made.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from corral.hands.base import ToolResult
from corral.hands.files import FileTools
from corral.hands.shell import DEFAULT_TIMEOUT_S, BashSession, SandboxUnavailable, ShellLauncher
from corral.hands.toolset import WORKSPACE_TOOLS

log = logging.getLogger(__name__)

TOOL_NAMES = ("bash", "read", "write", "edit", "glob", "grep")
_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


class InvalidInput(Exception):
    """The tool input does not match the tool's schema; the message is shown to the model."""


class _Input:
    """Typed access to one tool call's input; None counts as absent (clients send nulls for optionals)."""

    def __init__(self, tool: str, data: dict[str, Any]) -> None:
        self._tool = tool
        self._data = data

    def _get(self, key: str, kind: str, check: Callable[[Any], bool], required: bool) -> Any:
        value = self._data.get(key)
        if value is None:
            if required:
                raise InvalidInput(f"{self._tool}: '{key}' is required")
            return None
        if not check(value):
            raise InvalidInput(f"{self._tool}: '{key}' must be {kind}")
        return value

    def string(self, key: str, *, required: bool = True) -> Any:
        """A string field."""
        return self._get(key, "a string", lambda v: isinstance(v, str), required)

    def boolean(self, key: str) -> bool:
        """An optional boolean field (absent is False)."""
        return bool(self._get(key, "a boolean", lambda v: isinstance(v, bool), False))

    def integer(self, key: str) -> int | None:
        """An optional integer field (JSON booleans are not integers here)."""
        value = self._get(key, "an integer", _is_int, False)
        return None if value is None else int(value)

    def line_range(self, key: str) -> tuple[int, int] | None:
        """An optional `[start, end]` pair of integers."""
        value = self._get(
            key,
            "a list of two integers [start, end]",
            lambda v: isinstance(v, list | tuple) and len(v) == 2 and all(_is_int(x) for x in v),
            False,
        )
        return None if value is None else (int(value[0]), int(value[1]))


def _is_int(value: Any) -> bool:
    # Models sometimes send 2.0 for 2; accept integral floats but never bools.
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


class LocalHands:
    """One session's tools, run in `workspace` on this machine.

    The directory is created (mode 0700) by the first `execute`. `launcher` decides how the shell process
    is started (default: plain bash on the host); `use_ripgrep=False` forces grep's Python fallback.
    """

    def __init__(
        self,
        workspace: Path,
        *,
        launcher: ShellLauncher | None = None,
        use_ripgrep: bool = True,
        owner: tuple[int, int] | None = None,
    ) -> None:
        self.workspace = workspace
        self._workspace_ready = False
        self._shell = BashSession(workspace, launcher)
        self._owner = owner
        self._files = FileTools(workspace, use_ripgrep=use_ripgrep, owner=owner)
        self._tools: dict[str, Callable[[_Input], Awaitable[ToolResult]]] = {
            "bash": self._bash,
            "read": self._read,
            "write": self._write,
            "edit": self._edit,
            "glob": self._glob,
            "grep": self._grep,
        }

    async def execute(self, name: str, tool_input: object, config: dict[str, Any] | None = None) -> ToolResult:
        """Run built-in tool `name`; every failure, expected or not, comes back as an error result.

        `tool_input` is typed loosely on purpose: it is whatever JSON the model produced.
        """
        tool = self._tools.get(name)
        if tool is None:
            return ToolResult.error(f"unknown tool: {name}")
        if not isinstance(tool_input, dict):
            return ToolResult.error(f"{name}: input must be a JSON object")
        try:
            if not self._workspace_ready:
                await asyncio.to_thread(_make_workspace, self.workspace, self._owner)
                self._workspace_ready = True
            return await tool(_Input(name, tool_input))
        except InvalidInput as exc:
            return ToolResult.error(str(exc))
        except SandboxUnavailable as exc:
            return ToolResult.error(f"{name}: {exc}")
        except Exception as exc:
            log.exception("tool %s failed", name)
            return ToolResult.error(f"{name}: internal error: {type(exc).__name__}: {exc}")

    async def close(self) -> None:
        """Stop the shell and everything it started; the workspace stays."""
        await self._shell.close()

    # -- tools -----------------------------------------------------------------------------------

    async def _bash(self, args: _Input) -> ToolResult:
        command = args.string("command", required=False)
        restart = args.boolean("restart")
        timeout_ms = args.integer("timeout_ms")
        if timeout_ms is not None and timeout_ms <= 0:
            raise InvalidInput("bash: 'timeout_ms' must be positive")
        if restart:
            await self._shell.restart()
            if command is None:
                return ToolResult.text("bash session restarted")
        if command is None:
            raise InvalidInput("bash: 'command' is required (or set 'restart': true)")
        timeout_s = DEFAULT_TIMEOUT_S if timeout_ms is None else timeout_ms / 1000
        return await self._shell.run(command, timeout_s)

    async def _read(self, args: _Input) -> ToolResult:
        return await self._files.read(args.string("file_path"), args.line_range("view_range"))

    async def _write(self, args: _Input) -> ToolResult:
        return await self._files.write(args.string("file_path"), args.string("content"))

    async def _edit(self, args: _Input) -> ToolResult:
        return await self._files.edit(
            args.string("file_path"),
            args.string("old_string"),
            args.string("new_string"),
            args.boolean("replace_all"),
        )

    async def _glob(self, args: _Input) -> ToolResult:
        return await self._files.glob(args.string("pattern"), args.string("path", required=False))

    async def _grep(self, args: _Input) -> ToolResult:
        return await self._files.grep(args.string("pattern"), args.string("path", required=False))


def _make_workspace(workspace: Path, owner: tuple[int, int] | None) -> None:
    if workspace.is_dir():
        return
    # The sandbox user must be able to reach its workspace to mount it, but not list its neighbours.
    workspace.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
    workspace.mkdir(mode=0o700, exist_ok=True)
    # mkdir's mode is filtered by the umask; make sure no one else can look in.
    os.chmod(workspace, 0o700)
    if owner is not None:
        os.chown(workspace, *owner)


class LocalHandsProvider:
    """Per-session `LocalHands` whose workspaces live under `root` (`<root>/<session_id>`)."""

    tool_names = frozenset(WORKSPACE_TOOLS)

    def __init__(
        self,
        root: Path | str,
        *,
        launcher: ShellLauncher | None = None,
        use_ripgrep: bool = True,
        owner: tuple[int, int] | None = None,
    ) -> None:
        self.root = Path(root)
        self._launcher = launcher
        self._use_ripgrep = use_ripgrep
        self._owner = owner
        self._hands: dict[str, LocalHands] = {}

    def workspace(self, session_id: str) -> Path:
        """The session's workspace directory (which may not exist yet)."""
        # Session ids become directory names: refuse anything that could step out of the root.
        if not _SESSION_ID.fullmatch(session_id):
            raise ValueError(f"invalid session id for a workspace directory: {session_id!r}")
        return self.root / session_id

    def for_session(self, session_id: str, environment: dict[str, Any] | None = None) -> LocalHands:
        """The session's hands; cheap, nothing is created until the first tool call."""
        hands = self._hands.get(session_id)
        if hands is None:
            hands = LocalHands(
                self.workspace(session_id), launcher=self._launcher, use_ripgrep=self._use_ripgrep, owner=self._owner
            )
            self._hands[session_id] = hands
        return hands

    async def release(self, session_id: str) -> None:
        """Stop the session's processes and keep its workspace."""
        hands = self._hands.pop(session_id, None)
        if hands is not None:
            await hands.close()

    async def destroy(self, session_id: str) -> None:
        """Stop the session's processes and delete its workspace."""
        await self.release(session_id)
        await asyncio.to_thread(shutil.rmtree, self.workspace(session_id), ignore_errors=True)

    async def close(self) -> None:
        """Stop every session's processes (server shutdown); workspaces stay."""
        hands, self._hands = list(self._hands.values()), {}
        await asyncio.gather(*(h.close() for h in hands), return_exceptions=True)
