"""`corral serve`'s options take their defaults from the settings dataclasses, and `--sandbox` its choices
from the sandbox registry: nothing the server defaults to is written twice."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from corral.cli.main import serve
from corral.cli.mcp_options import mcp_options
from corral.cli.serve_options import operations_options
from corral.cli.web_options import web_options
from corral.config import McpSettings, Operations, Settings, WebSettings, default_data_dir
from corral.hands.sandbox.registry import SANDBOX_BACKENDS


@pytest.fixture
def no_corral_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No CORRAL_* variable set, and a data directory without a config file, so that only defaults apply."""
    for name in [name for name in os.environ if name.startswith("CORRAL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CORRAL_DATA_DIR", str(tmp_path))
    return tmp_path


def resolved(options: Any, value_name: str) -> Any:
    """What a group of options hands the command (`value_name=`) when no flag is given."""
    seen: list[Any] = []

    @click.command()
    @options
    def command(**values: Any) -> None:
        seen.append(values[value_name])

    result = CliRunner().invoke(command, [])
    assert result.exit_code == 0, result.output
    return seen[0]


def test_serve_flags_default_to_the_settings_defaults(no_corral_environment: Path) -> None:
    params = serve.make_context("serve", []).params
    defaults = Settings()

    assert {
        "host": params["host"],
        "port": params["port"],
        "database_url": params["database_url"],
        "model_max_retries": params["model_max_retries"],
        "model_retry_delay": params["model_retry_delay"],
        "model_timeout": params["model_timeout"],
        "max_tokens": params["max_tokens"],
        "max_tool_calls_per_turn": params["max_tool_calls_per_turn"],
        "sse_ping_seconds": params["sse_ping_seconds"],
        "lease_ttl_seconds": params["lease_ttl"],
        "sandbox": params["sandbox"],
    } == {
        "host": defaults.host,
        "port": defaults.port,
        "database_url": defaults.database_url,
        "model_max_retries": defaults.model_max_retries,
        "model_retry_delay": defaults.model_retry_delay,
        "model_timeout": defaults.model_timeout,
        "max_tokens": defaults.max_tokens,
        "max_tool_calls_per_turn": defaults.max_tool_calls_per_turn,
        "sse_ping_seconds": defaults.sse_ping_seconds,
        "lease_ttl_seconds": defaults.lease_ttl_seconds,
        "sandbox": defaults.sandbox,
    }


def test_the_data_dir_flag_defaults_to_the_settings_data_dir() -> None:
    data_dir = next(param for param in serve.params if param.name == "data_dir")

    assert data_dir.default == str(default_data_dir()) == str(Settings().data_dir)


@pytest.mark.usefixtures("no_corral_environment")
def test_the_operations_options_default_to_the_operations_defaults() -> None:
    assert resolved(operations_options, "operations") == Operations()


@pytest.mark.usefixtures("no_corral_environment")
def test_the_web_options_default_to_the_web_defaults() -> None:
    assert resolved(web_options, "web") == WebSettings()


@pytest.mark.usefixtures("no_corral_environment")
def test_the_mcp_options_default_to_the_mcp_defaults() -> None:
    assert resolved(mcp_options, "mcp") == McpSettings()


def test_the_sandbox_choices_are_the_registered_backends() -> None:
    sandbox = next(param for param in serve.params if param.name == "sandbox")

    assert isinstance(sandbox.type, click.Choice)
    assert list(sandbox.type.choices) == list(SANDBOX_BACKENDS)


def test_an_unregistered_sandbox_backend_is_refused_naming_the_choices(no_corral_environment: Path) -> None:
    result = CliRunner().invoke(serve, ["--sandbox", "podman"])

    assert result.exit_code == 2
    assert "'podman' is not one of 'bubblewrap', 'none'" in result.output
