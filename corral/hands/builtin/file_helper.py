"""The file tools' helper: serves read, write, edit, glob and grep from inside a session's sandbox.

This is a standalone program (standard library only, Python 3.11): the server sends this file's source to a
`python3 -I -S` that the session's shell starts inside the sandbox (see `file_channel.py`), so nothing here may
import corral. The server imports it only for the limits below.

It runs as the sandbox's user with the sandbox's view of the file system, so a path that a command in the sandbox
swaps for a symlink can reach only what that command could reach by itself: the boundary is the sandbox, not a
check in this file. The checks here (paths stay in the workspace, only regular files are opened, a cap on every
size, a deadline on every walk) keep the tools predictable, and keep every answer small and prompt.

Protocol, over the socket that is both stdin and stdout: the server sends frames `<length>\\n<JSON object>`; the
helper answers each with one frame, `{"ok": true, "text": ...}`, `{"ok": true, "block": {...}}` or
`{"ok": false, "error": ...}`. Errors are written for the model: they name the path it gave, never a host path.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fnmatch
import json
import os
import re
import select
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

MODEL_ROOT = "/workspace"
READ_LIMIT = 256 * 1024  # text shown by one read, and the largest file read whole
LINE_LIMIT = READ_LIMIT - 1024  # of one line, so that a cut line still fits in a read with its note
EDIT_LIMIT = 10 * 1024 * 1024  # the largest file edit rewrites
WRITE_LIMIT = 10 * 1024 * 1024  # the largest content write takes (UTF-8 bytes)
IMAGE_LIMIT = 5 * 1024 * 1024  # base64-encoded size
PDF_LIMIT = 20 * 1024 * 1024
GLOB_LIMIT = 1000  # matches listed
GLOB_VISIT_LIMIT = 200_000  # directory entries one glob looks at
GREP_LIMIT = 100 * 1024  # output bytes
GREP_COLUMNS = 2000  # longer matching lines are summarised by rg
WALK_DEADLINE_S = 20.0  # glob, grep and a read's scan give up (with what they have) after this long
REQUEST_LIMIT = 4 * WRITE_LIMIT + 1024 * 1024  # a frame from the server: JSON-escaped content and then some
IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}
PDF_TYPE = "application/pdf"
_CHUNK = 1024 * 1024


class Refused(Exception):
    """A request that cannot be served; the message is the tool's error result."""


class Workspace:
    """Maps the model's paths to real ones under `root` and back."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)

    def resolve(self, raw: str) -> str:
        """`raw` as a real path inside the workspace (symlinks followed), or `Refused`.

        Accepted forms: relative to the workspace, under /workspace, or under the real root (what `pwd` shows
        when bash runs unsandboxed).
        """
        if not raw:
            raise Refused("path must not be empty")
        if "\0" in raw:
            raise Refused("path must not contain NUL bytes")
        if raw == self.root or raw.startswith(self.root + "/"):
            candidate = raw
        elif raw == MODEL_ROOT or raw.startswith(MODEL_ROOT + "/"):
            candidate = self.root + raw[len(MODEL_ROOT) :]
        elif raw.startswith("/"):
            candidate = raw
        else:
            candidate = os.path.join(self.root, raw)
        real = os.path.realpath(candidate)
        if not self.contains(real):
            raise Refused(f"{raw} is outside the workspace")
        return real

    def contains(self, real: str) -> bool:
        return real == self.root or real.startswith(self.root + "/")

    def display(self, real: str) -> str:
        return os.path.relpath(real, self.root)


def _os_error(tool: str, path: str, exc: OSError) -> Refused:
    if exc.errno == errno.ENOENT:
        return Refused(f"{tool}: file not found: {path}")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return Refused(f"{tool}: {path}: the workspace's disk is full; delete files to make room")
    if exc.errno == errno.ENXIO:
        return Refused(f"{tool}: {path} is not a regular file")
    if exc.errno == errno.ELOOP:
        return Refused(f"{tool}: {path} changed while it was being opened; try again")
    return Refused(f"{tool}: {path}: {exc.strerror or exc}")


def _open_regular(tool: str, path: str, real: str, flags: int) -> int:
    """Open `real` only if it is a regular file: a FIFO, socket or device never blocks or gets written to."""
    try:
        fd = os.open(real, flags | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except IsADirectoryError:
        raise Refused(f"{tool}: {path} is a directory") from None
    except OSError as exc:
        raise _os_error(tool, path, exc) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        what = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise Refused(f"{tool}: {path} is {what}")
    return fd


def _read_at_most(f: IO[bytes], limit: int) -> bytes:
    data = f.read(limit + 1)
    if len(data) > limit:
        raise Refused("the file grew while it was being read; try again")
    return data


# -- read ----------------------------------------------------------------------------------------


def read(ws: Workspace, path: str, view_range: list[int] | None) -> dict[str, Any]:
    real = ws.resolve(path)
    fd = _open_regular("read", path, real, os.O_RDONLY)
    with os.fdopen(fd, "rb", buffering=0) as f:
        size = os.fstat(fd).st_size
        suffix = os.path.splitext(real)[1].lower()
        if suffix in IMAGE_TYPES:
            encoded = 4 * ((size + 2) // 3)
            if encoded > IMAGE_LIMIT:
                raise Refused(f"read: image {path} is too large ({encoded} bytes base64-encoded; limit 5 MiB)")
            return _block("image", IMAGE_TYPES[suffix], _read_at_most(f, size))
        if suffix == ".pdf":
            if size > PDF_LIMIT:
                raise Refused(f"read: PDF {path} is too large ({size} bytes; limit 20 MiB)")
            return _block("document", PDF_TYPE, _read_at_most(f, size))
        if view_range is None:
            if size > READ_LIMIT:
                raise Refused(
                    f"read: {path} is {size} bytes, over the 256 KiB limit; use view_range to read part of it"
                )
            start, end = 1, 0
        else:
            start, end = view_range
        return {"ok": True, "text": _numbered_lines(f, path, start, end)}


def _block(kind: str, media_type: str, data: bytes) -> dict[str, Any]:
    return {"ok": True, "block": {"kind": kind, "media_type": media_type, "data": base64.b64encode(data).decode()}}


def _numbered_lines(f: IO[bytes], path: str, start: int, end: int) -> str:
    """Lines `start`..`end` (end <= 0: to the end) numbered like `cat -n`, streamed: memory stays bounded by
    READ_LIMIT whatever the file's size or line lengths."""
    head = f.read(8192)
    if b"\0" in head:
        return _refuse(f"read: {path} is a binary file, not UTF-8 text")
    deadline = time.monotonic() + WALK_DEADLINE_S
    lines: list[str] = []
    size = 0
    total = 0
    for number, (kept, cut) in enumerate(_lines(f, head, LINE_LIMIT, deadline, path), 1):
        total = number
        if number < start:
            continue
        if end > 0 and number > end:
            break
        try:
            line = kept.decode("utf-8", errors="replace" if cut else "strict")
        except UnicodeDecodeError:
            return _refuse(f"read: {path} is not UTF-8 text (binary file?)")
        line = line.removesuffix("\r")
        if cut:
            line += f" [line cut: {cut} more bytes]"
        entry = f"{number:6d}\t{line}"
        size += len(entry) + 1
        if size > READ_LIMIT:
            lines.append("[output truncated at 256 KiB; read a smaller view_range]")
            break
        lines.append(entry)
    if not lines:
        if total == 0:
            # An empty text block would be rejected by the Messages API.
            return f"({path} is empty)"
        return _refuse(f"read: view_range starts at line {start} but {path} has {total} lines")
    return "\n".join(lines)


def _refuse(message: str) -> str:
    raise Refused(message)


def _lines(f: IO[bytes], first: bytes, cap: int, deadline: float, path: str) -> Iterator[tuple[bytes, int]]:
    """Each line (without its newline) cut to `cap` bytes, with how many bytes were cut off."""
    kept = bytearray()
    cut = 0
    chunk = first
    while chunk:
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            stop = len(chunk) if newline < 0 else newline
            room = cap - len(kept)
            if room > 0:
                kept += chunk[start : min(stop, start + room)]
            cut += max(0, stop - start - max(room, 0))
            if newline < 0:
                break
            yield bytes(kept), cut
            kept.clear()
            cut = 0
            start = newline + 1
        if time.monotonic() > deadline:
            raise Refused(f"read: gave up scanning {path} after {WALK_DEADLINE_S:g} s; read a smaller view_range")
        chunk = f.read(_CHUNK)
    if kept or cut:
        yield bytes(kept), cut


# -- write / edit --------------------------------------------------------------------------------


def write(ws: Workspace, path: str, content: str) -> dict[str, Any]:
    real = ws.resolve(path)
    data = content.encode("utf-8")
    if len(data) > WRITE_LIMIT:
        raise Refused(f"write: content is {len(data)} bytes, over the 10 MiB limit; write it in parts with bash")
    try:
        os.makedirs(os.path.dirname(real), exist_ok=True)
    except FileExistsError:
        raise Refused(f"write: a parent of {path} is not a directory") from None
    except OSError as exc:
        raise _os_error("write", path, exc) from None
    fd = _open_regular("write", path, real, os.O_WRONLY | os.O_CREAT)
    try:
        _replace_contents(fd, data, old_size=os.fstat(fd).st_size)
    except OSError as exc:
        raise _os_error("write", path, exc) from None
    finally:
        os.close(fd)
    return {"ok": True, "text": f"wrote {len(data)} bytes to {path}"}


def _replace_contents(fd: int, data: bytes, old_size: int) -> None:
    # Claim the space first: on a full disk the write fails before the old contents are touched.
    if len(data) > old_size:
        with contextlib.suppress(OSError):
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, len(data))
    view = memoryview(data)
    offset = 0
    while offset < len(view):
        offset += os.pwrite(fd, view[offset:], offset)
    os.ftruncate(fd, len(data))


def edit(ws: Workspace, path: str, old: str, new: str, replace_all: bool) -> dict[str, Any]:
    if old == new:
        raise Refused("edit: old_string and new_string are identical; nothing to change")
    if not old:
        raise Refused("edit: old_string must not be empty")
    real = ws.resolve(path)
    fd = _open_regular("edit", path, real, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        if size > EDIT_LIMIT:
            raise Refused(f"edit: {path} is {size} bytes, over the 10 MiB limit for edit; change it with bash (sed)")
        raw = os.pread(fd, EDIT_LIMIT + 1, 0)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Refused(f"edit: {path} is not UTF-8 text") from None
        count = text.count(old)
        if count == 0:
            raise Refused(f"old_string not found in {path}")
        if count > 1 and not replace_all:
            raise Refused(f"old_string appears {count} times in {path}; make it unique or set replace_all")
        updated = (text.replace(old, new) if replace_all else text.replace(old, new, 1)).encode("utf-8")
        if len(updated) > EDIT_LIMIT:
            raise Refused(f"edit: the result would be {len(updated)} bytes, over the 10 MiB limit for edit")
        try:
            _replace_contents(fd, updated, old_size=len(raw))
        except OSError as exc:
            raise _os_error("edit", path, exc) from None
    finally:
        os.close(fd)
    noun = "occurrence" if count == 1 else "occurrences"
    return {"ok": True, "text": f"edited {path}: replaced {count} {noun}"}


# -- glob ----------------------------------------------------------------------------------------

# One step of a glob pattern: a compiled name pattern, or None for `**` (any number of directories).
_Step = re.Pattern[str] | None


def _glob_steps(pattern: str) -> list[_Step]:
    steps: list[_Step] = []
    for part in pattern.split("/"):
        if part in ("", "."):
            continue
        if part == "**":
            if steps and steps[-1] is None:
                continue  # `**/**` is `**`
            steps.append(None)
        else:
            # fnmatch's translation of one name (which holds no "/") is safe from catastrophic backtracking.
            steps.append(re.compile(fnmatch.translate(part)))
    return steps


def _closure(steps: list[_Step], states: set[int]) -> set[int]:
    """Add the states reached by letting each `**` match no directory at all."""
    todo = list(states)
    while todo:
        i = todo.pop()
        if i < len(steps) and steps[i] is None and i + 1 not in states:
            states.add(i + 1)
            todo.append(i + 1)
    return states


def _advance(steps: list[_Step], states: set[int], name: str) -> set[int]:
    after: set[int] = set()
    for i in states:
        if i < len(steps):
            step = steps[i]
            if step is None:
                after.add(i)
            elif step.match(name):
                after.add(i + 1)
    return _closure(steps, after)


def glob(ws: Workspace, pattern: str, path: str | None) -> dict[str, Any]:
    """Files matching `pattern` under `path`, newest first. One walk, pruned by the pattern (a path that cannot
    match any more is not descended), symlinked directories not followed, bounded in entries and time."""
    if not pattern:
        raise Refused("glob: pattern must not be empty")
    if pattern.startswith("/"):
        raise Refused("glob: pattern must be relative (use path for the directory)")
    base = ws.resolve(path if path is not None else ".")
    if not os.path.isdir(base):
        raise Refused(f"glob: {path} is not a directory")
    steps = _glob_steps(pattern)
    deadline = time.monotonic() + WALK_DEADLINE_S
    found: list[tuple[float, str]] = []
    visited = 0
    stopped = ""
    stack: list[tuple[str, set[int]]] = [(base, _closure(steps, {0}))]
    while stack and not stopped:
        directory, states = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            visited += 1
            if visited > GLOB_VISIT_LIMIT:
                stopped = f"looked at {GLOB_VISIT_LIMIT} entries"
                break
            if visited % 1000 == 0 and time.monotonic() > deadline:
                stopped = f"searched for {WALK_DEADLINE_S:g} s"
                break
            after = _advance(steps, states, entry.name)
            if not after:
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if any(state < len(steps) for state in after):
                        stack.append((entry.path, after))
                    continue
                if len(steps) not in after:
                    continue
                real = os.path.realpath(entry.path) if entry.is_symlink() else entry.path
                if not ws.contains(real):
                    continue
                st = os.stat(real)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found.append((st.st_mtime, ws.display(entry.path)))
    found.sort(key=lambda item: (-item[0], item[1]))
    lines = [name for _, name in found[:GLOB_LIMIT]]
    if len(found) > GLOB_LIMIT:
        lines.append(f"[showing the {GLOB_LIMIT} newest of {len(found)} matches]")
    if stopped:
        lines.append(f"[stopped early: {stopped}; narrow the pattern or the path]")
    return {"ok": True, "text": "\n".join(lines) if lines else "no matches"}


# -- grep ----------------------------------------------------------------------------------------


def grep(ws: Workspace, pattern: str, path: str | None) -> dict[str, Any]:
    """ripgrep in the workspace, its output capped at GREP_LIMIT and its run at WALK_DEADLINE_S."""
    base = ws.resolve(path if path is not None else ".")
    if not os.path.exists(base):
        raise Refused(f"grep: path not found: {path}")
    rel = os.path.relpath(base, ws.root)
    argv = ["rg", "-n", "--no-heading", "--with-filename", "--color", "never", "--max-columns", str(GREP_COLUMNS)]
    try:
        process = subprocess.Popen(
            [*argv, "--", pattern, rel],
            cwd=ws.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except FileNotFoundError:
        raise Refused("grep: ripgrep (rg) is not installed in the sandbox; install the ripgrep package") from None
    out, err, stopped = _collect(process, GREP_LIMIT, time.monotonic() + WALK_DEADLINE_S)
    text = (_cut_to_line(out) if stopped else out.decode("utf-8", errors="replace")).rstrip("\n")
    if rel == ".":
        text = "\n".join(line.removeprefix("./") for line in text.split("\n"))
    if stopped:
        return {"ok": True, "text": f"{text}\n[output truncated: {stopped}]"}
    if not text:
        if process.returncode == 1:
            return {"ok": True, "text": "no matches"}
        message = err.decode("utf-8", errors="replace").strip() or f"rg exited with code {process.returncode}"
        raise Refused(f"grep: {message}")
    return {"ok": True, "text": text}


def _collect(process: subprocess.Popen[bytes], limit: int, deadline: float) -> tuple[bytes, bytes, str]:
    """Read a process's stdout (up to `limit`) and stderr (4 KiB) until it exits, the cap or the deadline,
    killing it in the last two cases; returns (stdout, stderr, why it was stopped or "")."""
    assert process.stdout is not None and process.stderr is not None
    out, err = bytearray(), bytearray()
    open_fds = {process.stdout.fileno(): out, process.stderr.fileno(): err}
    stopped = ""
    while open_fds and not stopped:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            stopped = f"grep stopped after {WALK_DEADLINE_S:g} s"
            break
        ready, _, _ = select.select(list(open_fds), [], [], remaining)
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                del open_fds[fd]
                continue
            sink = open_fds[fd]
            sink += chunk if sink is out else chunk[: max(0, 4096 - len(sink))]
            if len(out) > limit:
                stopped = f"over {limit // 1024} KiB of matches"
    if stopped:
        process.kill()
    process.wait()
    process.stdout.close()
    process.stderr.close()
    return bytes(out), bytes(err), stopped


def _cut_to_line(data: bytes) -> str:
    text = data[:GREP_LIMIT].decode("utf-8", errors="replace")
    cut = text.rfind("\n")
    return text[:cut] if cut > 0 else text


# -- serving -------------------------------------------------------------------------------------


def handle(ws: Workspace, request: dict[str, Any]) -> dict[str, Any]:
    """One request: the server has validated the field types; anything that goes wrong is an error answer."""
    op = request.get("op")
    try:
        if op == "read":
            return read(ws, request["path"], request.get("view_range"))
        if op == "write":
            return write(ws, request["path"], request["content"])
        if op == "edit":
            return edit(ws, request["path"], request["old"], request["new"], bool(request.get("replace_all")))
        if op == "glob":
            return glob(ws, request["pattern"], request.get("path"))
        if op == "grep":
            return grep(ws, request["pattern"], request.get("path"))
        return {"ok": False, "error": f"unknown operation {op!r}"}
    except Refused as exc:
        return {"ok": False, "error": str(exc)}
    except (KeyError, TypeError, ValueError) as exc:
        return {"ok": False, "error": f"{op}: malformed request ({type(exc).__name__})"}
    except OSError as exc:
        return {"ok": False, "error": f"{op}: {exc.strerror or exc}"}
    except MemoryError:
        return {"ok": False, "error": f"{op}: the sandbox ran out of memory"}


def _read_frame(stream: IO[bytes]) -> dict[str, Any] | None:
    header = stream.readline(32)
    if not header:
        return None
    length = int(header)
    if not 0 <= length <= REQUEST_LIMIT:
        raise ValueError("frame too large")
    payload = json.loads(stream.read(length))
    if not isinstance(payload, dict):
        raise ValueError("a request must be a JSON object")
    return payload


def _write_frame(stream: IO[bytes], answer: dict[str, Any]) -> None:
    payload = json.dumps(answer, ensure_ascii=False).encode("utf-8", errors="surrogateescape")
    stream.write(b"%d\n" % len(payload) + payload)
    stream.flush()


def serve(root: str, nonce: str, stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """Announce readiness with the server's nonce, then answer requests until the server closes the socket."""
    ws = Workspace(root)
    _write_frame(stdout, {"ready": nonce})
    while (request := _read_frame(stdin)) is not None:
        _write_frame(stdout, handle(ws, request))


def _rename_process() -> None:
    """Call this process `corral-files` rather than `python3`, so that a command in the sandbox that cleans up
    its own Python processes (`pkill python3`) leaves the file tools alone."""
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
        comm.write("corral-files")


if __name__ == "__main__":
    _rename_process()
    # argv: [-c, nonce, workspace root] (the bootstrap has read the code; see file_channel.py).
    serve(sys.argv[2], sys.argv[1], sys.stdin.buffer, sys.stdout.buffer)
