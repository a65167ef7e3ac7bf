"""The file tools (read, write, edit, glob, grep), run host-side on a session's workspace directory.

Paths come from the model. It sees the workspace as `/workspace` (the sandbox's view), may use paths
relative to it, and in the unsandboxed setup may also learn the real host path from `pwd`; all three
forms are accepted. Whatever the form, the path is resolved with symlinks followed and refused if it
lands outside the workspace: the model can create symlinks with bash, so a lexical check is not enough.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import shutil
import stat
from pathlib import Path, PurePosixPath

from corral.hands.base import ToolResult
from corral.hands.shell import scrubbed_env

MODEL_ROOT = PurePosixPath("/workspace")
READ_LIMIT = 256 * 1024
IMAGE_LIMIT = 5 * 1024 * 1024  # base64-encoded size
PDF_LIMIT = 20 * 1024 * 1024
GLOB_LIMIT = 1000
GREP_LIMIT = 100 * 1024
GREP_TIMEOUT_S = 120.0
IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}
# Opening with O_NOFOLLOW narrows the window in which a symlink swapped in after the check could redirect
# the final component; the sandbox, not this check, is the real boundary for code the model runs.
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class PathRefused(Exception):
    """A model-supplied path is malformed or resolves outside the workspace."""


class FileTools:
    """read / write / edit / glob / grep confined to one workspace directory.

    `use_ripgrep=False` makes grep use its pure-Python fallback even when `rg` is installed.
    """

    def __init__(self, workspace: Path, *, use_ripgrep: bool = True, owner: tuple[int, int] | None = None) -> None:
        self._workspace = workspace
        self._use_ripgrep = use_ripgrep
        # Files these tools create belong to the sandbox's user, so commands in the sandbox can change them.
        self._owner = owner

    # -- paths -----------------------------------------------------------------------------------

    def resolve(self, raw: str) -> Path:
        """Map a model-facing path to a real path inside the workspace, or raise `PathRefused`."""
        if not raw:
            raise PathRefused("path must not be empty")
        if "\0" in raw:
            raise PathRefused("path must not contain NUL bytes")
        root = os.path.realpath(self._workspace)
        given = PurePosixPath(raw)
        if raw == root or raw.startswith(root + "/"):
            # The real host path (what `pwd` shows when bash runs unsandboxed); checked first in case
            # the host's workspace root itself lies under /workspace.
            candidate = raw
        elif given == MODEL_ROOT or MODEL_ROOT in given.parents:
            candidate = os.path.join(root, str(given.relative_to(MODEL_ROOT)))
        elif given.is_absolute():
            candidate = raw
        else:
            candidate = os.path.join(root, raw)
        real = os.path.realpath(candidate)
        if real != root and not real.startswith(root + os.sep):
            raise PathRefused(f"{raw} is outside the workspace")
        return Path(real)

    def display(self, path: Path) -> str:
        """A path inside the workspace as shown to the model: relative to the workspace.

        Not resolved again, so a symlink inside the workspace shows under its own name.
        """
        return os.path.relpath(path, os.path.realpath(self._workspace))

    # -- tools -----------------------------------------------------------------------------------

    async def read(self, file_path: str, view_range: tuple[int, int] | None = None) -> ToolResult:
        """Text with `cat -n` style line numbers, or an image/document block for images and PDFs."""
        return await asyncio.to_thread(self._read, file_path, view_range)

    async def write(self, file_path: str, content: str) -> ToolResult:
        """Create or overwrite a file (parent directories are created)."""
        return await asyncio.to_thread(self._write, file_path, content)

    async def edit(self, file_path: str, old_string: str, new_string: str, replace_all: bool = False) -> ToolResult:
        """Replace `old_string`, which must be unique unless `replace_all`."""
        return await asyncio.to_thread(self._edit, file_path, old_string, new_string, replace_all)

    async def glob(self, pattern: str, path: str | None = None) -> ToolResult:
        """Files matching `pattern` (relative, `**` allowed) under `path`, newest first."""
        return await asyncio.to_thread(self._glob, pattern, path)

    async def grep(self, pattern: str, path: str | None = None) -> ToolResult:
        """Regex search: ripgrep when installed, else a pure-Python walk. Lines are `file:line:text`."""
        target = await asyncio.to_thread(self._grep_target, path)
        if isinstance(target, ToolResult):
            return target
        base, root, rel = target
        rg = shutil.which("rg", path=scrubbed_env(self._workspace)["PATH"]) if self._use_ripgrep else None
        if rg is not None:
            return await self._grep_rg(rg, pattern, root, rel)
        return await asyncio.to_thread(self._grep_python, pattern, base)

    # -- implementations (run in worker threads) -------------------------------------------------

    def _read(self, file_path: str, view_range: tuple[int, int] | None) -> ToolResult:
        try:
            real = self.resolve(file_path)
            st = os.stat(real)
        except PathRefused as exc:
            return ToolResult.error(f"read: {exc}")
        except FileNotFoundError:
            return ToolResult.error(f"read: file not found: {file_path}")
        except OSError as exc:
            return ToolResult.error(f"read: {file_path}: {exc.strerror or exc}")
        if stat.S_ISDIR(st.st_mode):
            return ToolResult.error(f"read: {file_path} is a directory")
        if not stat.S_ISREG(st.st_mode):
            return ToolResult.error(f"read: {file_path} is not a regular file")
        suffix = real.suffix.lower()
        if suffix in IMAGE_TYPES:
            encoded_size = 4 * ((st.st_size + 2) // 3)
            if encoded_size > IMAGE_LIMIT:
                return ToolResult.error(
                    f"read: image {file_path} is too large ({encoded_size} bytes base64-encoded; limit 5 MiB)"
                )
            return _binary_block(file_path, "image", IMAGE_TYPES[suffix], real)
        if suffix == ".pdf":
            if st.st_size > PDF_LIMIT:
                return ToolResult.error(f"read: PDF {file_path} is too large ({st.st_size} bytes; limit 20 MiB)")
            return _binary_block(file_path, "document", "application/pdf", real)
        if view_range is None:
            if st.st_size > READ_LIMIT:
                return ToolResult.error(
                    f"read: {file_path} is {st.st_size} bytes, over the 256 KiB limit; "
                    "use view_range to read part of it"
                )
            return _numbered_lines(file_path, real, 1, 0)
        start, end = view_range
        if start < 1:
            return ToolResult.error("read: view_range start must be >= 1")
        if 0 < end < start:
            return ToolResult.error("read: view_range end must be >= start (or <= 0 for end of file)")
        return _numbered_lines(file_path, real, start, end)

    def _write(self, file_path: str, content: str) -> ToolResult:
        try:
            real = self.resolve(file_path)
        except PathRefused as exc:
            return ToolResult.error(f"write: {exc}")
        if real.is_dir():
            return ToolResult.error(f"write: {file_path} is a directory")
        data = content.encode("utf-8")
        try:
            _make_parents(real.parent, self._owner)
            _write_bytes(real, data, self._owner)
        except OSError as exc:
            return ToolResult.error(f"write: {file_path}: {exc.strerror or exc}")
        return ToolResult.text(f"wrote {len(data)} bytes to {file_path}")

    def _edit(self, file_path: str, old: str, new: str, replace_all: bool) -> ToolResult:
        if old == new:
            return ToolResult.error("edit: old_string and new_string are identical; nothing to change")
        if not old:
            return ToolResult.error("edit: old_string must not be empty")
        try:
            real = self.resolve(file_path)
            raw = _read_bytes(real)
        except PathRefused as exc:
            return ToolResult.error(f"edit: {exc}")
        except FileNotFoundError:
            return ToolResult.error(f"edit: file not found: {file_path}")
        except IsADirectoryError:
            return ToolResult.error(f"edit: {file_path} is a directory")
        except OSError as exc:
            return ToolResult.error(f"edit: {file_path}: {exc.strerror or exc}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return ToolResult.error(f"edit: {file_path} is not UTF-8 text")
        count = text.count(old)
        if count == 0:
            return ToolResult.error(f"old_string not found in {file_path}")
        if count > 1 and not replace_all:
            return ToolResult.error(
                f"old_string appears {count} times in {file_path}; make it unique or set replace_all"
            )
        updated = text.replace(old, new) if replace_all else text.replace(old, new, 1)
        try:
            _write_bytes(real, updated.encode("utf-8"))
        except OSError as exc:
            return ToolResult.error(f"edit: {file_path}: {exc.strerror or exc}")
        noun = "occurrence" if count == 1 else "occurrences"
        return ToolResult.text(f"edited {file_path}: replaced {count} {noun}")

    def _glob(self, pattern: str, path: str | None) -> ToolResult:
        if not pattern:
            return ToolResult.error("glob: pattern must not be empty")
        if PurePosixPath(pattern).is_absolute():
            return ToolResult.error("glob: pattern must be relative (use path for the directory)")
        try:
            base = self.resolve(path if path is not None else ".")
        except PathRefused as exc:
            return ToolResult.error(f"glob: {exc}")
        if not base.is_dir():
            return ToolResult.error(f"glob: {path} is not a directory")
        root = os.path.realpath(self._workspace)
        found: list[tuple[float, str]] = []
        try:
            for match in base.glob(pattern):
                # `..` in the pattern or a symlink can point outside; such matches are silently skipped.
                real = os.path.realpath(match)
                if real != root and not real.startswith(root + os.sep):
                    continue
                try:
                    st = os.stat(real)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    found.append((st.st_mtime, self.display(match)))
        except (ValueError, NotImplementedError) as exc:
            return ToolResult.error(f"glob: invalid pattern: {exc}")
        if not found:
            return ToolResult.text("no matches")
        found.sort(key=lambda item: (-item[0], item[1]))
        lines = [name for _, name in found[:GLOB_LIMIT]]
        if len(found) > GLOB_LIMIT:
            lines.append(f"[showing the {GLOB_LIMIT} newest of {len(found)} matches]")
        return ToolResult.text("\n".join(lines))

    def _grep_target(self, path: str | None) -> tuple[Path, str, str] | ToolResult:
        """The resolved search path, the workspace's real path, and the former relative to the latter."""
        try:
            base = self.resolve(path if path is not None else ".")
        except PathRefused as exc:
            return ToolResult.error(f"grep: {exc}")
        if not base.exists():
            return ToolResult.error(f"grep: path not found: {path}")
        root = os.path.realpath(self._workspace)
        return base, root, os.path.relpath(base, root)

    async def _grep_rg(self, rg: str, pattern: str, root: str, rel: str) -> ToolResult:
        # Searching "." would prefix every hit with "./"; rg's own default for no path is riskier (it may
        # decide to search stdin), so strip the prefix instead.
        process = await asyncio.create_subprocess_exec(
            *(rg, "-n", "--no-heading", "--with-filename", "--color", "never", "--", pattern, rel),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=root,
            env=scrubbed_env(self._workspace),
        )
        assert process.stdout is not None and process.stderr is not None
        # stderr is drained concurrently: a full stderr pipe would otherwise stall rg and us with it.
        errors = asyncio.ensure_future(_read_capped(process.stderr, 4096))
        out = bytearray()
        truncated = False
        finished = False
        try:
            async with asyncio.timeout(GREP_TIMEOUT_S):
                while chunk := await process.stdout.read(64 * 1024):
                    out += chunk
                    if len(out) > GREP_LIMIT:
                        # Enough for the model: stop rg rather than read a huge result to the end.
                        truncated = True
                        break
                else:
                    finished = True
        except TimeoutError:
            truncated = True
        finally:
            # Only kill an rg we stopped listening to: Process.kill() polls, and reaping a process that
            # already exited races asyncio's child watcher (which then reports exit code 255).
            if not finished and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            code = await process.wait()
            err = await errors
        text = (_cap_lines(bytes(out)) if truncated else out.decode("utf-8", errors="replace")).rstrip("\n")
        if rel == ".":
            text = "\n".join(line.removeprefix("./") for line in text.split("\n"))
        if truncated:
            return ToolResult.text(text + "\n[output truncated]")
        if not text:
            if code == 1:
                return ToolResult.text("no matches")
            message = err.decode("utf-8", errors="replace").strip() or f"rg exited with code {code}"
            return ToolResult.error(f"grep: {message}")
        return ToolResult.text(text)

    def _grep_python(self, pattern: str, base: Path) -> ToolResult:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            return ToolResult.error(f"grep: invalid regex: {exc}")
        lines: list[str] = []
        size = 0
        for file in _walk_files(base):
            try:
                data = _read_bytes(file)
            except OSError:
                continue
            if b"\0" in data[:8192]:
                continue
            name = self.display(file)
            for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
                if regex.search(line):
                    entry = f"{name}:{number}:{line}"
                    size += len(entry.encode()) + 1
                    if size > GREP_LIMIT:
                        return ToolResult.text("\n".join(lines) + "\n[output truncated]")
                    lines.append(entry)
        return ToolResult.text("\n".join(lines) if lines else "no matches")


def _walk_files(base: Path) -> list[Path]:
    """Regular files under `base` in a stable order, skipping hidden entries like rg does by default.

    Symlinks are not followed, so the walk cannot leave the workspace.
    """
    if base.is_file():
        return [base]
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            full = Path(dirpath, name)
            if not name.startswith(".") and full.is_file() and not full.is_symlink():
                files.append(full)
    return files


async def _read_capped(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Read a stream to its end, keeping only the first `limit` bytes."""
    kept = bytearray()
    while chunk := await stream.read(64 * 1024):
        kept += chunk[: max(0, limit - len(kept))]
    return bytes(kept)


def _read_bytes(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def _write_bytes(path: Path, data: bytes, owner: tuple[int, int] | None = None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as f:
        if owner is not None:
            os.fchown(f.fileno(), *owner)
        f.write(data)


def _make_parents(directory: Path, owner: tuple[int, int] | None) -> None:
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
        if owner is not None:
            os.chown(path, *owner, follow_symlinks=False)


def _binary_block(file_path: str, kind: str, media_type: str, real: Path) -> ToolResult:
    try:
        data = _read_bytes(real)
    except OSError as exc:
        return ToolResult.error(f"read: {file_path}: {exc.strerror or exc}")
    source = {"type": "base64", "media_type": media_type, "data": base64.b64encode(data).decode("ascii")}
    return ToolResult(content=[{"type": kind, "source": source}])


def _numbered_lines(file_path: str, real: Path, start: int, end: int) -> ToolResult:
    """Lines `start`..`end` (end <= 0: to the end) numbered like `cat -n`.

    Streams the file, so a view_range into a huge file does not load all of it.
    """
    lines: list[str] = []
    size = 0
    total = 0
    try:
        fd = os.open(real, os.O_RDONLY | _NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            # A NUL early on means binary; checked first so a huge newline-free blob is never read whole.
            if b"\0" in f.read(8192):
                return ToolResult.error(f"read: {file_path} is a binary file, not UTF-8 text")
            f.seek(0)
            for number, raw in enumerate(f, 1):
                total = number
                if number < start:
                    continue
                if end > 0 and number > end:
                    break
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    return ToolResult.error(f"read: {file_path} is not UTF-8 text (binary file?)")
                size += len(raw) + 8
                if size > READ_LIMIT:
                    lines.append("[output truncated at 256 KiB; read a smaller view_range]")
                    break
                line = line.removesuffix("\n").removesuffix("\r")
                lines.append(f"{number:6d}\t{line}")
    except OSError as exc:
        return ToolResult.error(f"read: {file_path}: {exc.strerror or exc}")
    if not lines:
        if total == 0:
            # An empty text block would be rejected by the Messages API.
            return ToolResult.text(f"({file_path} is empty)")
        return ToolResult.error(f"read: view_range starts at line {start} but {file_path} has {total} lines")
    return ToolResult.text("\n".join(lines))


def _cap_lines(data: bytes) -> str:
    """Cut at the byte cap, then back to the last whole line."""
    text = data[:GREP_LIMIT].decode("utf-8", errors="replace")
    cut = text.rfind("\n")
    return text[:cut] if cut > 0 else text
