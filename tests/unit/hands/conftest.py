"""Fixtures shared by the hands tests."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data directory the sandbox user can traverse, as /var/lib/corral is (pytest's tmp_path is not)."""
    with tempfile.TemporaryDirectory(prefix="corral-hands-test-") as name:
        path = Path(name)
        path.chmod(0o711)
        yield path
