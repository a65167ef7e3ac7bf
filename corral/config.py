"""Server settings: command-line flags, then `CORRAL_*` environment variables, then a TOML config file.

`corral serve --help` lists every setting; this module holds what they resolve to.
"""

from __future__ import annotations

import fnmatch
import json
import os
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ProviderKind = Literal["anthropic", "openai"]
SandboxKind = Literal["bubblewrap", "none"]

DEFAULT_PORT = 8400
# As root, sandboxed commands run as an unprivileged user that must be able to reach the workspaces, so the
# data directory cannot sit under /root.
DEFAULT_DATA_DIR = Path("/var/lib/corral") if os.geteuid() == 0 else Path("~/.corral")


@dataclass(frozen=True)
class ModelRoute:
    """Which provider serves the model ids matching `match` (a shell-style pattern such as `claude-*`).

    The key is read from the server's environment variable `api_key_env` when a request is made, so a key
    set after start (or rotated) is picked up, and no key is ever written to the database.
    """

    match: str
    provider: ProviderKind
    base_url: str
    api_key_env: str

    def matches(self, model_id: str) -> bool:
        return fnmatch.fnmatchcase(model_id, self.match)

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None


def default_routes() -> list[ModelRoute]:
    """`claude-*` to Anthropic (honouring ANTHROPIC_BASE_URL as the SDK does), anything else OpenAI-compatible."""
    return [
        ModelRoute(
            match="claude-*",
            provider="anthropic",
            base_url=os.environ.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com",
            api_key_env="ANTHROPIC_API_KEY",
        ),
        ModelRoute(
            match="*",
            provider="openai",
            base_url=os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1",
            api_key_env="OPENAI_API_KEY",
        ),
    ]


def parse_routes(raw: Any) -> list[ModelRoute]:
    """Routes from config (a list of tables/objects with match, provider, base_url, api_key_env)."""
    if not isinstance(raw, list):
        raise ValueError("model routes must be a list of {match, provider, base_url, api_key_env}")
    routes = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise ValueError(f"model route {index} must be a table with match, provider, base_url, api_key_env")
        missing = [key for key in ("match", "provider", "base_url", "api_key_env") if not entry.get(key)]
        if missing:
            raise ValueError(f"model route {index} is missing {', '.join(missing)}")
        if entry["provider"] not in ("anthropic", "openai"):
            raise ValueError(
                f"model route {index}: provider must be 'anthropic' or 'openai', not {entry['provider']!r}"
            )
        routes.append(
            ModelRoute(
                match=str(entry["match"]),
                provider=entry["provider"],
                base_url=str(entry["base_url"]),
                api_key_env=str(entry["api_key_env"]),
            )
        )
    return routes


@dataclass(frozen=True)
class Settings:
    data_dir: Path = DEFAULT_DATA_DIR
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    api_key: str | None = None
    routes: list[ModelRoute] = field(default_factory=default_routes)
    model_max_retries: int = 4
    model_retry_delay: float = 1.0
    model_timeout: float = 600.0
    max_tokens: int = 8192
    sse_ping_seconds: float = 15.0
    sandbox: SandboxKind = "bubblewrap"
    # Which brain holds a session's lease; a restarted node with the same id resumes its sessions at once.
    node_id: str = field(default_factory=lambda: socket.gethostname())
    lease_ttl_seconds: float = 15.0

    @property
    def database_path(self) -> Path:
        return self.data_dir / "corral.db"

    @property
    def workspaces_dir(self) -> Path:
        return self.data_dir / "workspaces"

    def route_for(self, model_id: str) -> ModelRoute | None:
        return next((route for route in self.routes if route.matches(model_id)), None)


def load_config_file(path: Path) -> dict[str, Any]:
    """The `[server]` and `[[models.routes]]` tables of a TOML config file, flattened for the CLI."""
    with path.open("rb") as handle:
        document = tomllib.load(handle)
    values: dict[str, Any] = dict(document.get("server", {}))
    routes = document.get("models", {}).get("routes")
    if routes is not None:
        values["model_routes"] = json.dumps(routes)
    return values
