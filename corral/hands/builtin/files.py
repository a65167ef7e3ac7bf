"""The file tools (read, write, edit, glob, grep): checked here, run inside the session's sandbox.

Nothing here touches a session's files with the server's privileges. Each call is validated, then sent to the
file helper that runs in the sandbox as the sandbox's user (`file_helper.py`, driven through
`file_channel.py`); its answer is checked like any untrusted input before it becomes a tool result.

Paths come from the model, which sees the workspace as `/workspace` (the sandbox's view), may use paths relative
to it, and without a sandbox may also learn the real path from `pwd`; the helper accepts all three forms.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from corral.hands.base import ToolResult
from corral.hands.builtin import file_helper as limits
from corral.hands.builtin.file_channel import FileHelper, HelperGone, HelperTimeout

# The server's deadline for one answer: past the helper's own deadline for a walk, so that a slow walk comes
# back with what it found, and only a stuck or stopped helper is killed.
ANSWER_TIMEOUT_S = limits.WALK_DEADLINE_S + 10.0
PATTERN_LIMIT = 4096  # characters of a glob or grep pattern
PATH_LIMIT = 4096
_TEXT_LIMIT = 2 * limits.READ_LIMIT  # the longest text answer taken from the helper
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_MEDIA_TYPES = {"image": frozenset(limits.IMAGE_TYPES.values()), "document": frozenset({limits.PDF_TYPE})}
_DATA_LIMITS = {"image": limits.IMAGE_LIMIT, "document": 4 * limits.PDF_LIMIT // 3 + 4}


class FileTools:
    """read / write / edit / glob / grep for one session, run by `helper()`: the session's file helper, started
    (with the sandbox) when needed."""

    def __init__(self, helper: Callable[[], Awaitable[FileHelper]]) -> None:
        self._helper = helper

    async def read(self, file_path: str, view_range: tuple[int, int] | None = None) -> ToolResult:
        """Text with `cat -n` style line numbers, or an image/document block for images and PDFs."""
        if view_range is not None:
            start, end = view_range
            if start < 1:
                return ToolResult.error("read: view_range start must be >= 1")
            if 0 < end < start:
                return ToolResult.error("read: view_range end must be >= start (or <= 0 for end of file)")
        request = {"op": "read", "path": file_path, "view_range": list(view_range) if view_range else None}
        return await self._call("read", request, file_path)

    async def write(self, file_path: str, content: str) -> ToolResult:
        """Create or overwrite a file (parent directories are created)."""
        size = len(content.encode("utf-8", errors="surrogatepass"))
        if size > limits.WRITE_LIMIT:
            return ToolResult.error(f"write: content is {size} bytes, over the 10 MiB limit; write it in parts")
        return await self._call("write", {"op": "write", "path": file_path, "content": content}, file_path)

    async def edit(self, file_path: str, old_string: str, new_string: str, replace_all: bool = False) -> ToolResult:
        """Replace `old_string`, which must be unique unless `replace_all`."""
        if len(old_string) + len(new_string) > limits.EDIT_LIMIT:
            return ToolResult.error("edit: old_string and new_string together are over the 10 MiB limit")
        request = {"op": "edit", "path": file_path, "old": old_string, "new": new_string, "replace_all": replace_all}
        return await self._call("edit", request, file_path)

    async def glob(self, pattern: str, path: str | None = None) -> ToolResult:
        """Files matching `pattern` (relative, `**` allowed) under `path`, newest first."""
        if len(pattern) > PATTERN_LIMIT:
            return ToolResult.error(f"glob: pattern is over {PATTERN_LIMIT} characters")
        return await self._call("glob", {"op": "glob", "pattern": pattern, "path": path}, path)

    async def grep(self, pattern: str, path: str | None = None) -> ToolResult:
        """Regex search with ripgrep; lines are `file:line:text`."""
        if len(pattern) > PATTERN_LIMIT:
            return ToolResult.error(f"grep: pattern is over {PATTERN_LIMIT} characters")
        return await self._call("grep", {"op": "grep", "pattern": pattern, "path": path}, path)

    async def _call(self, tool: str, request: dict[str, Any], path: str | None) -> ToolResult:
        if path is not None:
            if len(path) > PATH_LIMIT:
                return ToolResult.error(f"{tool}: path is over {PATH_LIMIT} characters")
            if "\0" in path:
                return ToolResult.error(f"{tool}: path must not contain NUL bytes")
        try:
            helper = await self._helper()
            answer = await helper.request(request, ANSWER_TIMEOUT_S)
        except HelperTimeout as exc:
            return ToolResult.error(
                f"{tool}: {exc}; the sandbox's file helper was stopped (a command may have "
                "stopped it); the next call starts a new one"
            )
        except HelperGone as exc:
            return ToolResult.error(f"{tool}: {exc}")
        return _result(tool, answer)


def _result(tool: str, answer: dict[str, Any]) -> ToolResult:
    """The helper's answer as a tool result, if it has one of the expected shapes (anything else is refused)."""
    ok = answer.get("ok")
    text = answer.get("text") if ok is True else answer.get("error") if ok is False else None
    if isinstance(text, str) and len(text) <= _TEXT_LIMIT:
        # Lone surrogates (from file names that are not UTF-8) would break JSON encoding further on.
        clean = text.encode("utf-8", errors="replace").decode("utf-8")
        return ToolResult.text(clean or "(no output)", is_error=ok is False)
    block = answer.get("block") if ok is True else None
    if isinstance(block, dict):
        kind, media_type, data = block.get("kind"), block.get("media_type"), block.get("data")
        if (
            isinstance(kind, str)
            and media_type in _MEDIA_TYPES.get(kind, ())
            and isinstance(data, str)
            and len(data) <= _DATA_LIMITS[kind]
            and _BASE64.fullmatch(data)
        ):
            source = {"type": "base64", "media_type": media_type, "data": data}
            return ToolResult(content=[{"type": kind, "source": source}])
    return ToolResult.error(f"{tool}: the sandbox's file helper gave an answer of the wrong shape")
