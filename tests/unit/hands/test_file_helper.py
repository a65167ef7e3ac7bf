"""The file helper's own bounds, called directly (it is plain Python; the sandbox is not needed to check them)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from corral.hands.builtin import file_helper
from corral.hands.builtin.file_helper import Workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(str(tmp_path))


def lines_of(data: bytes, cap: int) -> list[tuple[bytes, int]]:
    stream = io.BytesIO(data)
    return list(file_helper._lines(stream, stream.read(3), cap, deadline=float("inf"), path="f"))


def test_lines_are_cut_at_the_cap_and_say_how_much_was_cut() -> None:
    assert lines_of(b"abcdefgh\nxy\n" + b"z" * 20, cap=4) == [(b"abcd", 4), (b"xy", 0), (b"zzzz", 16)]


def test_an_empty_line_and_a_missing_final_newline_are_lines() -> None:
    assert lines_of(b"\n\nlast", cap=10) == [(b"", 0), (b"", 0), (b"last", 0)]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*.py", ["top.py"]),
        ("**/*.py", ["a/b/deep.py", "a/mid.py", "top.py"]),
        ("a/**/*.py", ["a/b/deep.py", "a/mid.py"]),
        ("**/b/*.py", ["a/b/deep.py"]),
        ("**/**/**/*.py", ["a/b/deep.py", "a/mid.py", "top.py"]),
        ("a/**", ["a/b/deep.py", "a/mid.py", "a/notes.txt"]),
        ("a/?id.py", ["a/mid.py"]),
        ("[!t]*.txt", []),
    ],
)
def test_glob_matches_like_pathlib_with_double_stars_for_any_depth(
    ws: Workspace, tmp_path: Path, pattern: str, expected: list[str]
) -> None:
    for name in ("top.py", "a/mid.py", "a/notes.txt", "a/b/deep.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
        os.utime(tmp_path / name, (1000, 1000))
    listed = file_helper.glob(ws, pattern, None)["text"]
    assert (listed.split("\n") if listed != "no matches" else []) == expected


def test_glob_stops_after_its_entry_budget_and_says_so(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_helper, "GLOB_VISIT_LIMIT", 50)
    for index in range(200):
        (tmp_path / f"f{index}.txt").write_text("")
    listed = file_helper.glob(ws, "*.txt", None)["text"].split("\n")
    assert listed[-1] == "[stopped early: looked at 50 entries; narrow the pattern or the path]"
    assert len(listed) == 51


def test_glob_does_not_descend_where_the_pattern_cannot_match(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_helper, "GLOB_VISIT_LIMIT", 20)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("")
    (tmp_path / "big").mkdir()
    for index in range(100):
        (tmp_path / "big" / f"f{index}.py").write_text("")
    assert file_helper.glob(ws, "src/*.py", None)["text"] == "src/a.py"


def test_edit_refuses_a_file_over_its_limit_without_reading_it(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_helper, "EDIT_LIMIT", 10)
    (tmp_path / "big.txt").write_text("x" * 11)
    answer = file_helper.handle(ws, {"op": "edit", "path": "big.txt", "old": "x", "new": "y", "replace_all": True})
    assert answer == {
        "ok": False,
        "error": "edit: big.txt is 11 bytes, over the 10 MiB limit for edit; change it with bash (sed)",
    }


def test_a_malformed_request_is_an_error_answer_not_a_crash(ws: Workspace) -> None:
    assert file_helper.handle(ws, {"op": "read"}) == {"ok": False, "error": "read: malformed request (KeyError)"}
    assert file_helper.handle(ws, {"op": "rm -rf"})["ok"] is False
