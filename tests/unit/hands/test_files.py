"""The file tools: read, write, edit, glob and grep, confined to the workspace.

These run the file helper on the host (no sandbox) for speed; tests/unit/hands/test_file_boundary.py attacks it
inside a real sandbox.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.hands.base import ToolResult
from corral.hands.builtin.bash import BashSession
from corral.hands.builtin.files import FileTools


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    return workspace


@pytest.fixture
async def files(ws: Path) -> AsyncIterator[FileTools]:
    shell = BashSession(ws)
    yield FileTools(shell.file_helper)
    await shell.close()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret\n")
    return secret


def text(result: ToolResult) -> str:
    assert len(result.content) == 1 and result.content[0]["type"] == "text"
    return str(result.content[0]["text"])


def read_text(path: Path) -> str:
    return path.read_text()


# -- read ----------------------------------------------------------------------------------------


async def test_read_numbers_lines_like_cat_n(files: FileTools, ws: Path) -> None:
    (ws / "a.txt").write_text("first\nsecond\n")
    result = await files.read("a.txt")
    assert not result.is_error
    assert text(result) == "     1\tfirst\n     2\tsecond"


async def test_read_view_range_is_inclusive(files: FileTools, ws: Path) -> None:
    (ws / "a.txt").write_text("".join(f"line{i}\n" for i in range(1, 11)))
    assert text(await files.read("a.txt", (3, 4))) == "     3\tline3\n     4\tline4"


@pytest.mark.parametrize("end", [0, -1])
async def test_read_view_range_end_not_positive_means_eof(files: FileTools, ws: Path, end: int) -> None:
    (ws / "a.txt").write_text("a\nb\nc\n")
    assert text(await files.read("a.txt", (2, end))) == "     2\tb\n     3\tc"


async def test_read_view_range_past_eof_is_error(files: FileTools, ws: Path) -> None:
    (ws / "a.txt").write_text("a\n")
    assert (await files.read("a.txt", (5, 0))).is_error


async def test_read_accepts_workspace_absolute_path(files: FileTools, ws: Path) -> None:
    (ws / "d").mkdir()
    (ws / "d" / "a.txt").write_text("x\n")
    assert text(await files.read("/workspace/d/a.txt")) == "     1\tx"


async def test_read_large_file_requires_view_range(files: FileTools, ws: Path) -> None:
    (ws / "big.txt").write_text("x" * 100 + "\n" * 3000 + "y" * (300 * 1024))
    result = await files.read("big.txt")
    assert result.is_error and "view_range" in text(result)
    assert text(await files.read("big.txt", (1, 1))) == "     1\t" + "x" * 100


async def test_read_binary_file_is_clear_error(files: FileTools, ws: Path) -> None:
    (ws / "blob.bin").write_bytes(b"\x7fELF\x00\x01\x02\xff")
    result = await files.read("blob.bin")
    assert result.is_error and "binary" in text(result)


async def test_read_image_gives_image_block(files: FileTools, ws: Path) -> None:
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    (ws / "pic.PNG").write_bytes(data)
    result = await files.read("pic.PNG")
    assert not result.is_error
    assert result.content == [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(data).decode()},
        }
    ]


async def test_read_pdf_gives_document_block(files: FileTools, ws: Path) -> None:
    (ws / "doc.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    result = await files.read("doc.pdf")
    assert result.content[0]["type"] == "document"
    assert result.content[0]["source"]["media_type"] == "application/pdf"


async def test_read_missing_file_is_error(files: FileTools) -> None:
    result = await files.read("nope.txt")
    assert result.is_error and "not found" in text(result)


# -- confinement ---------------------------------------------------------------------------------


async def test_read_refuses_dotdot_escape(files: FileTools, outside: Path) -> None:
    result = await files.read("../secret.txt")
    assert result.is_error and "outside the workspace" in text(result)


async def test_read_refuses_symlink_escape(files: FileTools, ws: Path, outside: Path) -> None:
    (ws / "link.txt").symlink_to(outside)
    result = await files.read("link.txt")
    assert result.is_error and "outside the workspace" in text(result)


async def test_read_refuses_absolute_path_outside(files: FileTools, outside: Path) -> None:
    assert (await files.read(str(outside))).is_error
    assert (await files.read("/workspace/../secret.txt")).is_error


async def test_write_refuses_dotdot_escape(files: FileTools, tmp_path: Path) -> None:
    result = await files.write("../evil.txt", "x")
    assert result.is_error
    assert not (tmp_path / "evil.txt").exists()


async def test_write_refuses_symlinked_directory_escape(files: FileTools, ws: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (ws / "out").symlink_to(target)
    result = await files.write("out/evil.txt", "x")
    assert result.is_error and "outside the workspace" in text(result)
    assert not (target / "evil.txt").exists()


async def test_edit_refuses_symlink_escape(files: FileTools, ws: Path, outside: Path) -> None:
    (ws / "link.txt").symlink_to(outside)
    result = await files.edit("link.txt", "secret", "public")
    assert result.is_error and "outside the workspace" in text(result)
    assert read_text(outside) == "top secret\n"


async def test_symlink_inside_workspace_is_allowed(files: FileTools, ws: Path) -> None:
    (ws / "real.txt").write_text("ok\n")
    (ws / "alias.txt").symlink_to(ws / "real.txt")
    assert text(await files.read("alias.txt")) == "     1\tok"


# -- write / edit --------------------------------------------------------------------------------


async def test_write_creates_parents_and_reports_bytes(files: FileTools, ws: Path) -> None:
    result = await files.write("a/b/c.txt", "héllo")
    assert text(result) == "wrote 6 bytes to a/b/c.txt"
    assert (ws / "a" / "b" / "c.txt").read_text() == "héllo"


async def test_write_overwrites(files: FileTools, ws: Path) -> None:
    (ws / "a.txt").write_text("old content")
    await files.write("/workspace/a.txt", "new")
    assert (ws / "a.txt").read_text() == "new"


async def test_edit_replaces_unique_occurrence(files: FileTools, ws: Path) -> None:
    (ws / "a.py").write_text("x = 1\ny = 2\n")
    result = await files.edit("a.py", "y = 2", "y = 3")
    assert not result.is_error
    assert (ws / "a.py").read_text() == "x = 1\ny = 3\n"


async def test_edit_not_found_is_error(files: FileTools, ws: Path) -> None:
    (ws / "a.py").write_text("x = 1\n")
    result = await files.edit("a.py", "z = 9", "z = 0")
    assert result.is_error and text(result) == "old_string not found in a.py"


async def test_edit_ambiguous_is_error_and_leaves_file(files: FileTools, ws: Path) -> None:
    (ws / "a.py").write_text("x\nx\nx\n")
    result = await files.edit("a.py", "x", "y")
    assert result.is_error
    assert text(result) == "old_string appears 3 times in a.py; make it unique or set replace_all"
    assert (ws / "a.py").read_text() == "x\nx\nx\n"


async def test_edit_replace_all(files: FileTools, ws: Path) -> None:
    (ws / "a.py").write_text("x\nx\nx\n")
    assert not (await files.edit("a.py", "x", "y", replace_all=True)).is_error
    assert (ws / "a.py").read_text() == "y\ny\ny\n"


async def test_edit_identical_strings_is_error(files: FileTools, ws: Path) -> None:
    (ws / "a.py").write_text("x\n")
    assert (await files.edit("a.py", "x", "x")).is_error


# -- glob ----------------------------------------------------------------------------------------


async def test_glob_lists_newest_first(files: FileTools, ws: Path) -> None:
    (ws / "pkg" / "deep").mkdir(parents=True)
    for name, mtime in [("old.py", 1_000), ("pkg/new.py", 3_000), ("pkg/deep/mid.py", 2_000)]:
        (ws / name).write_text("")
        os.utime(ws / name, (mtime, mtime))
    (ws / "notes.txt").write_text("")
    assert text(await files.glob("**/*.py")) == "pkg/new.py\npkg/deep/mid.py\nold.py"


async def test_glob_relative_to_path_and_files_only(files: FileTools, ws: Path) -> None:
    (ws / "src" / "sub.py").mkdir(parents=True)  # a directory that matches the pattern
    (ws / "src" / "a.py").write_text("")
    assert text(await files.glob("*.py", "/workspace/src")) == "src/a.py"


async def test_glob_no_matches(files: FileTools) -> None:
    assert text(await files.glob("*.rs")) == "no matches"


async def test_glob_skips_symlinks_leaving_workspace(files: FileTools, ws: Path, outside: Path) -> None:
    (ws / "link.txt").symlink_to(outside)
    assert text(await files.glob("*.txt")) == "no matches"


# -- grep ----------------------------------------------------------------------------------------


@pytest.fixture
def grep_files(files: FileTools) -> FileTools:
    return files


async def test_grep_finds_matches_with_relative_paths(grep_files: FileTools, ws: Path) -> None:
    (ws / "src").mkdir()
    (ws / "src" / "a.py").write_text("import os\ndef main():\n    pass\n")
    (ws / "b.txt").write_text("nothing here\ndef not_python\n")
    (ws / "blob.bin").write_bytes(b"def \x00\x01")
    result = await grep_files.grep(r"^def \w+")
    assert not result.is_error
    assert sorted(text(result).splitlines()) == ["b.txt:2:def not_python", "src/a.py:2:def main():"]


async def test_grep_within_path(grep_files: FileTools, ws: Path) -> None:
    (ws / "src").mkdir()
    (ws / "src" / "a.py").write_text("needle\n")
    (ws / "b.txt").write_text("needle\n")
    assert text(await grep_files.grep("needle", "src")) == "src/a.py:1:needle"


async def test_grep_no_matches(grep_files: FileTools, ws: Path) -> None:
    (ws / "a.txt").write_text("hay\n")
    assert text(await grep_files.grep("needle")) == "no matches"


async def test_grep_refuses_path_outside(grep_files: FileTools, outside: Path) -> None:
    assert (await grep_files.grep("secret", "..")).is_error


async def test_grep_invalid_regex_is_error(grep_files: FileTools, ws: Path) -> None:
    (ws / "a.txt").write_text("x\n")
    assert (await grep_files.grep("(unclosed")).is_error
