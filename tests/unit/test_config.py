"""Settings: model routes (the defaults, the config form), the environment read only when passed in, the
TOML config file, and sizes."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

import corral.config
from corral.config import (
    ModelRoute,
    Settings,
    default_routes,
    format_size,
    load_config_file,
    parse_routes,
    parse_size,
)


def route_entry(**overrides: Any) -> dict[str, Any]:
    entry = {
        "match": "llama*",
        "provider": "openai",
        "base_url": "http://localhost:11434/v1",
        "api_key_env": "OLLAMA_API_KEY",
    }
    entry.update(overrides)
    return entry


def test_default_routes_send_claude_models_to_anthropic() -> None:
    route = Settings.from_env({}).route_for("claude-sonnet-4-5")

    assert route is not None
    assert (route.provider, route.base_url, route.api_key_env) == (
        "anthropic",
        "https://api.anthropic.com",
        "ANTHROPIC_API_KEY",
    )


def test_default_anthropic_route_honours_anthropic_base_url() -> None:
    route = Settings.from_env({"ANTHROPIC_BASE_URL": "http://127.0.0.1:9999"}).route_for("claude-opus-4")

    assert route is not None and route.base_url == "http://127.0.0.1:9999"


def test_default_openai_route_honours_openai_base_url() -> None:
    route = Settings.from_env({"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"}).route_for("llama3.1:8b")

    assert route is not None and route.base_url == "http://127.0.0.1:11434/v1"


def test_settings_made_without_an_environment_ignore_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9999")
    monkeypatch.setenv("CORRAL_API_KEY", "sk-from-the-process")

    settings = Settings()

    assert settings.route_for("claude-opus-4") == default_routes({})[0]
    assert settings.api_key is None


def test_from_env_reads_the_api_key_and_the_secret_key_from_the_environment_given() -> None:
    settings = Settings.from_env({"CORRAL_API_KEY": "sk-given", "CORRAL_SECRET_KEY": "c2VjcmV0"})

    assert (settings.api_key, settings.secret_key) == ("sk-given", "c2VjcmV0")


def test_from_env_keeps_routes_given_and_ignores_the_base_url_variables() -> None:
    routes = parse_routes([route_entry(match="*")])

    settings = Settings.from_env({"ANTHROPIC_BASE_URL": "http://127.0.0.1:9999"}, routes=routes, port=9000)

    assert (settings.routes, settings.port) == (routes, 9000)


def test_config_imports_nothing_above_the_floor() -> None:
    """config.py sits below models/, hands/ and the rest (docs/ARCHITECTURE.md), so none may import it back
    into a cycle."""
    tree = ast.parse(Path(corral.config.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}

    assert {name for name in imported if name.startswith("corral")} == {"corral.pricing"}


@pytest.mark.parametrize("model_id", ["gpt-4o", "llama3.1:8b", "qwen/qwen3-coder", "not-claude-x"])
def test_default_routes_send_other_models_to_openai(model_id: str) -> None:
    route = Settings.from_env({}).route_for(model_id)

    assert route is not None and route.provider == "openai"


def test_default_routes_try_anthropic_before_the_catch_all() -> None:
    assert [route.match for route in default_routes()] == ["claude-*", "*"]


def test_parse_routes_builds_routes_from_entries() -> None:
    assert parse_routes([route_entry()]) == [
        ModelRoute(
            match="llama*", provider="openai", base_url="http://localhost:11434/v1", api_key_env="OLLAMA_API_KEY"
        )
    ]


@pytest.mark.parametrize("key", ["match", "provider", "base_url", "api_key_env"])
def test_parse_routes_rejects_an_entry_missing_a_key_and_names_it(key: str) -> None:
    entry = route_entry()
    del entry[key]

    with pytest.raises(ValueError, match=rf"model route 1 is missing {key}"):
        parse_routes([route_entry(), entry])


def test_parse_routes_rejects_an_unknown_provider_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"model route 0: provider must be 'anthropic' or 'openai'"):
        parse_routes([route_entry(provider="azure")])


def test_parse_routes_rejects_a_non_list() -> None:
    with pytest.raises(ValueError, match="must be a list"):
        parse_routes({"match": "*"})


def test_load_config_file_reads_server_settings_and_model_routes(tmp_path: Path) -> None:
    path = tmp_path / "corral.toml"
    path.write_text(
        """
[server]
host = "0.0.0.0"
port = 9000

[[models.routes]]
match = "llama*"
provider = "openai"
base_url = "http://localhost:11434/v1"
api_key_env = "OLLAMA_API_KEY"

[[models.routes]]
match = "claude-*"
provider = "anthropic"
base_url = "https://api.anthropic.com"
api_key_env = "ANTHROPIC_API_KEY"
"""
    )

    values = load_config_file(path)

    assert values["host"] == "0.0.0.0"
    assert values["port"] == 9000
    routes = parse_routes(json.loads(values["model_routes"]))
    assert [(route.match, route.provider) for route in routes] == [("llama*", "openai"), ("claude-*", "anthropic")]


def test_load_config_file_without_routes_has_no_model_routes(tmp_path: Path) -> None:
    path = tmp_path / "corral.toml"
    path.write_text("[server]\nport = 9001\n")

    assert load_config_file(path) == {"port": 9001}


@pytest.mark.parametrize(
    ("text", "size"),
    [("512M", 512 * 1024**2), ("2G", 2 * 1024**3), ("1.5GiB", 3 * 1024**3 // 2), ("10g", 10 * 1024**3), ("4096", 4096)],
)
def test_sizes_are_read_in_binary_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["none", "0", "unlimited"])
def test_a_size_of_none_or_zero_means_no_limit(text: str) -> None:
    assert parse_size(text) is None


@pytest.mark.parametrize(
    ("size", "text"), [(2 * 1024**3, "2G"), (10 * 1024**3, "10G"), (512 * 1024**2, "512M"), (1000, "1000")]
)
def test_sizes_are_written_in_the_largest_unit_that_divides_them(size: int, text: str) -> None:
    assert format_size(size) == text
    assert parse_size(text) == size


@pytest.mark.parametrize("size", [None, 0])
def test_no_size_limit_is_written_none(size: int | None) -> None:
    assert format_size(size) == "none"


def test_a_size_that_is_not_one_is_refused_with_examples() -> None:
    with pytest.raises(ValueError, match="such as 512M"):
        parse_size("lots")
