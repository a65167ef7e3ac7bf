"""The sandbox backends by name: what `--sandbox NAME` opens."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.config import SandboxLimits
from corral.hands.sandbox.registry import open_sandboxes


def test_an_unknown_backend_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown sandbox backend 'podman'; known: bubblewrap, none"):
        open_sandboxes("podman", tmp_path, SandboxLimits())


def test_the_none_backend_runs_host_shells_as_the_server_without_environments(tmp_path: Path) -> None:
    sandboxes = open_sandboxes("none", tmp_path, SandboxLimits())

    spec = sandboxes.launcher.launch_spec(tmp_path)
    assert Path(spec.argv[0]).name == "bash"
    assert spec.cwd == str(tmp_path)
    assert spec.sandbox is None
    assert sandboxes.owner is None
    assert not sandboxes.applies_environments
