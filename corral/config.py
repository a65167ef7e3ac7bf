"""Server settings: command-line flags, then `CORRAL_*` environment variables, then a TOML config file.

`corral serve --help` lists every setting; this module holds what they resolve to, and each one's default:
the dataclasses below are the only place a default is written (the CLI options take theirs from them). The
environment is read only when asked, from the mapping passed in (`Settings.from_env`), never at import.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from corral.pricing import ModelPrice

ProviderKind = Literal["anthropic", "openai"]
SearchKind = Literal["none", "searxng", "brave"]
MetricsAccess = Literal["key", "public", "off"]
LogFormat = Literal["text", "json"]


def default_data_dir() -> Path:
    """As root, sandboxed commands run as an unprivileged user that must be able to reach the workspaces, so
    the data directory cannot sit under /root."""
    return Path("/var/lib/corral") if os.geteuid() == 0 else Path("~/.corral")


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


def default_routes(environ: Mapping[str, str] | None = None) -> list[ModelRoute]:
    """`claude-*` to Anthropic, anything else OpenAI-compatible, at the base URLs that `environ` names in
    ANTHROPIC_BASE_URL and OPENAI_BASE_URL as the SDKs do (without an environment: the public APIs)."""
    environ = environ or {}
    return [
        ModelRoute(
            match="claude-*",
            provider="anthropic",
            base_url=environ.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com",
            api_key_env="ANTHROPIC_API_KEY",
        ),
        ModelRoute(
            match="*",
            provider="openai",
            base_url=environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1",
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
class Operations:
    """Operator settings: limits at the HTTP edge, metrics, logs and traces (`corral serve --help`)."""

    # Requests per minute per API key (spec §1.8); 0 turns a limit off.
    rate_limit_create: int = 300
    rate_limit_other: int = 600
    rate_limit_environments: int = 60
    # Sessions of one workspace that may run at once; 0 is no cap.
    max_running_sessions: int = 100
    # `/metrics`: "key" needs an API key like the API, "public" needs none, "off" removes it.
    metrics: MetricsAccess = "key"
    log_format: LogFormat = "text"
    # OTLP/HTTP collector base URL (e.g. http://127.0.0.1:4318); None: no traces.
    otlp_endpoint: str | None = None


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)


def parse_size(text: str | int) -> int | None:
    """'512M', '2G', '1.5GiB', '1048576' -> bytes (binary units); '0', 'none', 'unlimited' -> None."""
    if isinstance(text, int):
        return text or None
    value = text.strip()
    if value.lower() in ("0", "none", "unlimited", "off"):
        return None
    match = _SIZE.fullmatch(value)
    if match is None:
        raise ValueError(f"{text!r} is not a size such as 512M, 2G or 1073741824 (or 'none')")
    number, unit = match.groups()
    factor = 1024 ** ("KMGT".index(unit.upper()) + 1) if unit else 1
    return int(float(number) * factor) or None


def format_size(size: int | None) -> str:
    """The inverse of `parse_size`, in the largest unit that divides `size`: 2147483648 -> '2G'; None, 0 -> 'none'."""
    if not size:
        return "none"
    for unit in "TGMK":
        factor = 1024 ** ("KMGT".index(unit) + 1)
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


@dataclass(frozen=True)
class SandboxLimits:
    """What each session's bubblewrap sandbox may use and how long it idles (`corral serve --help`).

    None turns a limit off. `cgroup_parent` None runs sandboxes without cgroups, hence without the memory,
    process and CPU limits; `workspace_bytes` None keeps workspaces as plain directories on the data disk.
    `disk_reserve_bytes` is the free space on the data disk that workspaces may never take, kept for the
    database and the logs (None: 1 GiB, or 1/20 of a smaller disk; 0: none).
    """

    memory_bytes: int | None = 2 * 1024**3
    pids: int | None = 1024
    cpus: float | None = 1.0
    tmp_bytes: int | None = 1024**3
    workspace_bytes: int | None = 10 * 1024**3
    disk_reserve_bytes: int | None = None
    idle_timeout_s: float | None = 600.0
    cgroup_parent: str | None = "corral"


@dataclass(frozen=True)
class McpSettings:
    """How the brain reaches agents' MCP servers (`corral serve --help`)."""

    connect_timeout: float = 10.0
    # Seconds one MCP tool call may take.
    call_timeout: float = 300.0
    # Further connection attempts within a turn after one failed (connection errors and 5xx only).
    connect_retries: int = 2
    # Seconds before the first retry; each further retry waits twice as long.
    retry_delay: float = 0.5


@dataclass(frozen=True)
class WebSettings:
    """Sandboxes' network egress and the web tools (`corral serve --help`)."""

    # web_search's backend: "searxng" (at `searxng_url`), "brave" (key in BRAVE_SEARCH_API_KEY), or "none"
    # (web_search is then not offered to models).
    search: SearchKind = "none"
    searxng_url: str | None = None
    # `address:port` pairs that sandboxes and web_fetch may reach although they are not public addresses
    # (CORRAL_EGRESS_ALLOW_ADDRESSES; for tests that stand a local server in for the internet).
    egress_allow_addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = 8400
    api_key: str | None = None
    routes: list[ModelRoute] = field(default_factory=default_routes)
    model_max_retries: int = 4
    model_retry_delay: float = 1.0
    model_timeout: float = 600.0
    max_tokens: int = 8192
    max_tool_calls_per_turn: int = 200
    # List prices for session budgets (corral.pricing); none by default.
    prices: list[ModelPrice] = field(default_factory=list)
    sse_ping_seconds: float = 15.0
    # A backend's name in corral/hands/sandbox/registry.py, which lists the choices.
    sandbox: str = "bubblewrap"
    sandbox_limits: SandboxLimits = field(default_factory=SandboxLimits)
    # Which brain holds a session's lease; a restarted node with the same id resumes its sessions at once.
    node_id: str = field(default_factory=lambda: socket.gethostname())
    lease_ttl_seconds: float = 15.0
    # `sqlite:///PATH` or `postgresql://...`; None: the SQLite file `corral.db` in the data directory.
    database_url: str | None = None
    operations: Operations = field(default_factory=Operations)
    mcp: McpSettings = field(default_factory=McpSettings)
    web: WebSettings = field(default_factory=WebSettings)
    # Base64 of the 32-byte key that seals vault secrets (CORRAL_SECRET_KEY); None: <data-dir>/secret.key.
    secret_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **values: Any) -> Settings:
        """Settings from `values` (what the flags resolved to; `routes=None` for the default routes), completed
        from the variables that only the environment sets: CORRAL_API_KEY, CORRAL_SECRET_KEY, and the default
        routes' base URLs."""
        if values.get("routes") is None:
            values["routes"] = default_routes(environ)
        return cls(
            api_key=environ.get("CORRAL_API_KEY") or None,
            secret_key=environ.get("CORRAL_SECRET_KEY") or None,
            **values,
        )

    @property
    def database_path(self) -> Path:
        return self.data_dir / "corral.db"

    @property
    def store_url(self) -> str:
        """The database the server uses (see `corral.session.open_store`)."""
        return self.database_url or f"sqlite:///{self.database_path}"

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
    prices = document.get("models", {}).get("prices")
    if prices is not None:
        values["model_prices"] = json.dumps(prices)
    return values
