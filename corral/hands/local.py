"""Hands that run the built-in tools in a per-session directory on this machine.

`LocalHands` validates the model's tool input and dispatches to the shell (`builtin/bash.py`), the file tools
(`builtin/files.py`) or the web tools (`builtin/web.py`). The shell runs in the sandbox backend the server
opened (`sandbox/`), with the session's environment applied (`sandbox/provision.py`). `LocalHandsProvider` gives
each session its own workspace `<root>/<session_id>`, created with mode 0700 by the first tool call rather than
when the session is made (`sandbox/volumes.py`: a plain directory, or a size-capped filesystem image mounted
there).

Lifecycle: nothing exists before the first tool call. After `idle_timeout_s` without a tool call the
session's shell (its sandbox) stops and its workspace is detached; the next call brings both back, and its
result says that the shell is a fresh one. Archiving (`release`) stops them too; deleting (`destroy`) also
deletes the workspace.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from corral.hands.base import ToolResult
from corral.hands.builtin.bash import DEFAULT_TIMEOUT_S, BashSession
from corral.hands.builtin.file_channel import FileHelper
from corral.hands.builtin.files import FileTools
from corral.hands.builtin.toolset import WORKSPACE_TOOLS
from corral.hands.builtin.web import WebTools
from corral.hands.sandbox.launcher import SandboxUnavailable, ShellLauncher
from corral.hands.sandbox.provision import Provisioner, SessionSandbox
from corral.hands.sandbox.volumes import DirectoryVolumes, WorkspaceVolumes

log = logging.getLogger(__name__)

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
    is started (default: plain bash on the host); the file tools run beside it, in the same sandbox.
    `volumes` provides the workspace (default: a plain directory); `idle_timeout_s` (None: never) stops
    the shell and detaches the workspace after that long without a tool call.
    """

    def __init__(
        self,
        workspace: Path,
        *,
        launcher: ShellLauncher | None = None,
        owner: tuple[int, int] | None = None,
        volumes: WorkspaceVolumes | None = None,
        idle_timeout_s: float | None = None,
        sandbox: SessionSandbox | None = None,
        web: WebTools | None = None,
    ) -> None:
        self.workspace = workspace
        self._workspace_ready = False
        # The session's environment (packages, network), applied to its sandbox at the first command.
        self._sandbox = sandbox
        self._shell = BashSession(workspace, sandbox.launcher(launcher) if sandbox is not None else launcher)
        # web_fetch / web_search run in the server and need no workspace.
        self._web = web.handlers() if web is not None else {}
        self._owner = owner
        self._volumes: WorkspaceVolumes = volumes or DirectoryVolumes(owner)
        self._idle_timeout_s = idle_timeout_s
        # Attaching and detaching the workspace (and the idle stop) happen one at a time.
        self._lifecycle = asyncio.Lock()
        self._active = 0
        self._last_used = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_stop: asyncio.Task[None] | None = None
        self._files = FileTools(self._file_helper)
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
        web = self._web.get(name)
        if web is not None:
            return await web(tool_input, config)
        tool = self._tools.get(name)
        if tool is None:
            return ToolResult.error(f"unknown tool: {name}")
        if not isinstance(tool_input, dict):
            return ToolResult.error(f"{name}: input must be a JSON object")
        self._active += 1
        try:
            if not self._workspace_ready:
                async with self._lifecycle:
                    if not self._workspace_ready:
                        await asyncio.to_thread(self._volumes.attach, self.workspace)
                        self._workspace_ready = True
            return await tool(_Input(name, tool_input))
        except InvalidInput as exc:
            return ToolResult.error(str(exc))
        except SandboxUnavailable as exc:
            return ToolResult.error(f"{name}: {self._without_host_paths(str(exc))}")
        except Exception as exc:
            log.exception("tool %s failed", name)
            # The details (which may name host paths) go to the server's log, not to the model.
            return ToolResult.error(f"{name}: internal error ({type(exc).__name__}); the server's log has the details")
        finally:
            self._active -= 1
            self._last_used = time.monotonic()
            if self._idle_timeout_s is not None and self._idle_timer is None:
                self._arm_idle_timer(self._idle_timeout_s)

    def _without_host_paths(self, message: str) -> str:
        """`message` with the workspace's host path, and the directory holding every workspace, taken out."""
        message = message.replace(str(self.workspace), "/workspace")
        return message.replace(str(self.workspace.parent), "<the server's workspaces directory>")

    async def close(self) -> None:
        """Stop the shell and everything it started, and detach the workspace; its files stay."""
        self._cancel_idle_stop()
        await self._shell.close()
        if self._sandbox is not None:
            await self._sandbox.close()
        self._workspace_ready = False
        await asyncio.to_thread(self._volumes.detach, self.workspace)

    # -- idle stop -------------------------------------------------------------------------------

    def _arm_idle_timer(self, delay: float) -> None:
        self._idle_timer = asyncio.get_running_loop().call_later(delay, self._on_idle_timer)

    def _cancel_idle_stop(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._idle_stop is not None:
            self._idle_stop.cancel()
            self._idle_stop = None

    def _on_idle_timer(self) -> None:
        # One timer per session, re-armed for the rest of the time instead of reset on every call.
        assert self._idle_timeout_s is not None
        self._idle_timer = None
        remaining = self._last_used + self._idle_timeout_s - time.monotonic()
        if self._active:
            self._arm_idle_timer(self._idle_timeout_s)
        elif remaining > 0:
            self._arm_idle_timer(remaining)
        elif self._workspace_ready:
            self._idle_stop = asyncio.ensure_future(self._stop_idle(self._idle_timeout_s))

    async def _stop_idle(self, timeout_s: float) -> None:
        async with self._lifecycle:
            if self._active or not self._workspace_ready:
                return
            # From here on a new call waits for the lifecycle lock and attaches the workspace again.
            self._workspace_ready = False
            await self._shell.suspend(f"the previous one was stopped after {_duration(timeout_s)} without a call")
            await asyncio.to_thread(self._volumes.detach, self.workspace)
            log.debug("stopped the idle sandbox of %s", self.workspace)
        self._idle_stop = None

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
        if self._sandbox is not None:
            await self._sandbox.prepare()
        return await self._shell.run(command, timeout_s)

    async def _file_helper(self) -> FileHelper:
        if self._sandbox is not None:
            await self._sandbox.prepare()
        return await self._shell.file_helper()

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


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds:g} s"


class LocalHandsProvider:
    """Per-session `LocalHands` whose workspaces live under `root` (`<root>/<session_id>`).

    `volumes` provides the workspaces (default: plain directories owned by `owner`); `idle_timeout_s`
    (None: never) stops a session's sandbox after that long without a tool call.
    """

    tool_names = frozenset(WORKSPACE_TOOLS)

    def __init__(
        self,
        root: Path | str,
        *,
        launcher: ShellLauncher | None = None,
        owner: tuple[int, int] | None = None,
        volumes: WorkspaceVolumes | None = None,
        idle_timeout_s: float | None = None,
        provisioner: Provisioner | None = None,
        web: WebTools | None = None,
    ) -> None:
        self.root = Path(root)
        # `provisioner` applies environments (packages, egress) to sandboxes; `web` runs web_fetch/web_search.
        self._provisioner = provisioner
        self._web = web
        self.tool_names = frozenset(WORKSPACE_TOOLS) | (web.tool_names if web is not None else frozenset())
        self._launcher = launcher
        self._owner = owner
        self._volumes: WorkspaceVolumes = volumes or DirectoryVolumes(owner)
        self._idle_timeout_s = idle_timeout_s
        self._hands: dict[str, LocalHands] = {}

    def workspace(self, session_id: str) -> Path:
        """The session's workspace directory (which may not exist yet)."""
        # Session ids become directory names: refuse anything that could step out of the root.
        if not _SESSION_ID.fullmatch(session_id):
            raise ValueError(f"invalid session id for a workspace directory: {session_id!r}")
        return self.root / session_id

    def for_session(
        self, session_id: str, environment: dict[str, Any] | None = None, mcp_hosts: Iterable[str] = ()
    ) -> LocalHands:
        """The session's hands; cheap, nothing is created until the first tool call.

        `environment` is the environment's resolved config; `mcp_hosts` the agent's MCP server hosts, which
        its sandbox may reach when the environment sets `allow_mcp_servers`.
        """
        hands = self._hands.get(session_id)
        if hands is None:
            sandbox = None
            if self._provisioner is not None:
                sandbox = self._provisioner.for_session(session_id, environment, mcp_hosts)
            hands = LocalHands(
                self.workspace(session_id),
                launcher=self._launcher,
                owner=self._owner,
                volumes=self._volumes,
                idle_timeout_s=self._idle_timeout_s,
                sandbox=sandbox,
                web=self._web,
            )
            self._hands[session_id] = hands
        return hands

    async def release(self, session_id: str) -> None:
        """Stop the session's processes and detach its workspace, keeping its files."""
        hands = self._hands.pop(session_id, None)
        if hands is not None:
            await hands.close()
        else:
            # Attached by an earlier server process (one that crashed, say): let go of it all the same.
            await asyncio.to_thread(self._volumes.detach, self.workspace(session_id))

    async def destroy(self, session_id: str) -> None:
        """Stop the session's processes and delete its workspace."""
        await self.release(session_id)
        await asyncio.to_thread(self._volumes.delete, self.workspace(session_id))

    async def close(self) -> None:
        """Stop every session's processes (server shutdown); workspaces stay."""
        hands, self._hands = list(self._hands.values()), {}
        await asyncio.gather(*(h.close() for h in hands), return_exceptions=True)
        if self._launcher is not None:
            await asyncio.to_thread(self._launcher.close)
        if self._provisioner is not None:
            await self._provisioner.close()
        if self._web is not None:
            await self._web.close()
