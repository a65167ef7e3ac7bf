"""The `corral` command: `serve` runs the server; `keys` and `migrate` administer its data directory."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from corral import __version__
from corral.cli.commands import register as register_client_commands
from corral.cli.mcp_options import MCP_EPILOG, mcp_options
from corral.cli.sandbox_options import SANDBOX_EPILOG, sandbox_options
from corral.cli.serve_options import OPERATIONS_EPILOG, operations_options
from corral.cli.web_options import WEB_EPILOG, web_options
from corral.config import (
    McpSettings,
    Operations,
    SandboxLimits,
    Settings,
    WebSettings,
    load_config_file,
    parse_routes,
)
from corral.hands.sandbox.registry import SANDBOX_BACKENDS
from corral.observability.logs import configure as configure_logging
from corral.pricing import parse_prices

if TYPE_CHECKING:
    from corral.session.store import Store

T = TypeVar("T")

# The options' defaults are the settings' own (none is written twice); this reads no environment.
DEFAULTS = Settings()

SERVE_EPILOG = """\b
Model routes map model ids to providers. The default routes are:
  claude-*  -> Anthropic Messages API at $ANTHROPIC_BASE_URL
               (default https://api.anthropic.com), key from $ANTHROPIC_API_KEY
  *         -> OpenAI-compatible chat completions at $OPENAI_BASE_URL
               (default https://api.openai.com/v1), key from $OPENAI_API_KEY
Keys are read from the server's environment when a model is called; they are
never stored. Override the table with --model-routes / CORRAL_MODEL_ROUTES (a
JSON list) or in the config file:

\b
  [server]
  port = 8400
  data_dir = "/var/lib/corral"
  [[models.routes]]
  match = "llama-*"
  provider = "openai"            # or "anthropic"
  base_url = "http://127.0.0.1:11434/v1"
  api_key_env = "OLLAMA_API_KEY"

\b
Precedence: command-line flags, then environment variables, then the config
file (--config, else <data-dir>/config.toml when it exists), then defaults.
On first start, with no key registered and no CORRAL_API_KEY, the server
creates an API key and prints it once; `corral keys create` makes more.
"""


def _load_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Eager option: the config file becomes the defaults the other options fall back to."""
    path = Path(value).expanduser() if value else None
    if path is None:
        data_dir = os.environ.get("CORRAL_DATA_DIR") or str(DEFAULTS.data_dir)
        candidate = Path(data_dir).expanduser() / "config.toml"
        path = candidate if candidate.exists() else None
    if path is not None:
        try:
            ctx.default_map = {**(ctx.default_map or {}), **load_config_file(path)}
        except (OSError, ValueError) as exc:
            raise click.BadParameter(f"cannot read config file {path}: {exc}") from exc
    return value


data_dir_option = click.option(
    "--data-dir",
    envvar="CORRAL_DATA_DIR",
    show_envvar=True,
    default=str(DEFAULTS.data_dir),
    show_default=True,
    help="Directory for session workspaces, and the SQLite database unless --database-url names another.",
)

database_url_option = click.option(
    "--database-url",
    envvar="CORRAL_DATABASE_URL",
    show_envvar=True,
    default=None,
    help="sqlite:///PATH (sqlite:////abs/path) or postgresql://USER[:PASSWORD]@HOST[:PORT]/DB. "
    "Default: SQLite file corral.db in the data directory.",
)


def _store_url(data_dir: str, database_url: str | None) -> str:
    from corral.session.open_store import parse_database_url

    url = database_url or f"sqlite:///{Path(data_dir).expanduser() / 'corral.db'}"
    try:
        parse_database_url(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--database-url") from exc
    return url


def _with_store(data_dir: str, database_url: str | None, action: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store (migrating it), run `action` on it, close it."""
    from corral.session.open_store import open_store
    from corral.session.store import StorageUnavailable

    url = _store_url(data_dir, database_url)

    async def run() -> T:
        store = await open_store(url)
        try:
            return await action(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except StorageUnavailable as exc:
        raise click.ClickException(exc.message) from exc


@click.group()
@click.version_option(__version__, prog_name="corral")
def main() -> None:
    """Corral: a self-hosted runtime for managed AI agents."""


@main.command(epilog=SERVE_EPILOG + SANDBOX_EPILOG + OPERATIONS_EPILOG + WEB_EPILOG + MCP_EPILOG)
@click.option(
    "--config",
    envvar="CORRAL_CONFIG",
    show_envvar=True,
    is_eager=True,
    callback=_load_config,
    expose_value=False,
    help="TOML config file.",
)
@data_dir_option
@database_url_option
@click.option(
    "--host",
    envvar="CORRAL_HOST",
    show_envvar=True,
    default=DEFAULTS.host,
    show_default=True,
    help="Address to listen on.",
)
@click.option(
    "--port",
    envvar="CORRAL_PORT",
    show_envvar=True,
    default=DEFAULTS.port,
    show_default=True,
    type=int,
    help="Port to listen on.",
)
@click.option(
    "--model-routes",
    envvar="CORRAL_MODEL_ROUTES",
    show_envvar=True,
    default=None,
    help="JSON list of {match, provider, base_url, api_key_env}; replaces the default routes.",
)
@click.option(
    "--model-max-retries",
    envvar="CORRAL_MODEL_MAX_RETRIES",
    show_envvar=True,
    default=DEFAULTS.model_max_retries,
    show_default=True,
    type=click.IntRange(0, 20),
    help="Retries of a model call that failed with 429, 529, 5xx or a connection error.",
)
@click.option(
    "--model-retry-delay",
    envvar="CORRAL_MODEL_RETRY_DELAY",
    show_envvar=True,
    default=DEFAULTS.model_retry_delay,
    show_default=True,
    type=click.FloatRange(0, 600),
    help="Seconds before the first retry; each further retry waits twice as long.",
)
@click.option(
    "--model-timeout",
    envvar="CORRAL_MODEL_TIMEOUT",
    show_envvar=True,
    default=DEFAULTS.model_timeout,
    show_default=True,
    type=click.FloatRange(1, 3600),
    help="Seconds a model call may take.",
)
@click.option(
    "--max-tokens",
    envvar="CORRAL_MAX_TOKENS",
    show_envvar=True,
    default=DEFAULTS.max_tokens,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="max_tokens of each model request.",
)
@click.option(
    "--model-prices",
    envvar="CORRAL_MODEL_PRICES",
    show_envvar=True,
    default=None,
    help="JSON list of {match, input, output, cache_read, cache_write} in USD per million tokens: the list "
    "prices that session budgets are measured in (a session can have a budget only if its model has one).",
)
@click.option(
    "--max-tool-calls-per-turn",
    envvar="CORRAL_MAX_TOOL_CALLS_PER_TURN",
    show_envvar=True,
    default=DEFAULTS.max_tool_calls_per_turn,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Tool calls one turn may make; the turn then ends with tool_use_limit_reached_error.",
)
@click.option(
    "--sse-ping-seconds",
    envvar="CORRAL_SSE_PING_SECONDS",
    show_envvar=True,
    default=DEFAULTS.sse_ping_seconds,
    show_default=True,
    type=click.FloatRange(0.05, 300),
    help="Keepalive interval on event streams.",
)
@click.option(
    "--node-id",
    envvar="CORRAL_NODE_ID",
    show_envvar=True,
    default=None,
    help="This node's name in session leases (default: <hostname>:<port>). Restarting with the same id "
    "resumes the node's sessions at once; other nodes take them over when the lease expires.",
)
@click.option(
    "--lease-ttl",
    envvar="CORRAL_LEASE_TTL",
    show_envvar=True,
    default=DEFAULTS.lease_ttl_seconds,
    show_default=True,
    type=click.FloatRange(1, 600),
    help="Seconds a brain's lease on a session lasts without renewal (renewed every third of it).",
)
@click.option(
    "--sandbox",
    envvar="CORRAL_SANDBOX",
    show_envvar=True,
    default=DEFAULTS.sandbox,
    show_default=True,
    type=click.Choice(list(SANDBOX_BACKENDS)),
    help="Where tool commands run. 'none' runs them unconfined on the host: only for trusted agents.",
)
@click.option(
    "--log-level",
    envvar="CORRAL_LOG_LEVEL",
    show_envvar=True,
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Least severe log records written (to stderr).",
)
@sandbox_options
@operations_options
@web_options
@mcp_options
def serve(
    data_dir: str,
    database_url: str | None,
    host: str,
    port: int,
    model_routes: str | None,
    model_max_retries: int,
    model_retry_delay: float,
    model_timeout: float,
    max_tokens: int,
    model_prices: str | None,
    max_tool_calls_per_turn: int,
    sse_ping_seconds: float,
    node_id: str | None,
    lease_ttl: float,
    sandbox: str,
    sandbox_limits: SandboxLimits,
    log_level: str,
    operations: Operations,
    web: WebSettings,
    mcp: McpSettings,
    brain_only: bool = False,
) -> None:
    """Run the Corral server (SQLite in the data directory; listens on 127.0.0.1:8400 by default).

    \b
    Also reads CORRAL_API_KEY: a client API key to accept, registered on start if absent; and
    CORRAL_SECRET_KEY: the key (32 bytes, base64) that encrypts vault secrets.
    """
    try:
        routes = parse_routes(json.loads(model_routes)) if model_routes else None
    except (ValueError, json.JSONDecodeError) as exc:
        raise click.BadParameter(str(exc), param_hint="--model-routes") from exc
    try:
        prices = parse_prices(json.loads(model_prices)) if model_prices else []
    except (ValueError, json.JSONDecodeError) as exc:
        raise click.BadParameter(str(exc), param_hint="--model-prices") from exc
    settings = Settings.from_env(
        os.environ,
        data_dir=Path(data_dir).expanduser(),
        host=host,
        port=port,
        routes=routes,
        model_max_retries=model_max_retries,
        model_retry_delay=model_retry_delay,
        model_timeout=model_timeout,
        max_tokens=max_tokens,
        max_tool_calls_per_turn=max_tool_calls_per_turn,
        prices=prices,
        sse_ping_seconds=sse_ping_seconds,
        sandbox=sandbox,
        sandbox_limits=sandbox_limits,
        # A worker has no port of its own: its pid keeps two workers on one host from sharing an id.
        node_id=node_id
        or (f"{socket.gethostname()}:worker:{os.getpid()}" if brain_only else f"{socket.gethostname()}:{port}"),
        lease_ttl_seconds=lease_ttl,
        database_url=_store_url(data_dir, database_url) if database_url else None,
        operations=operations,
        web=web,
        mcp=mcp,
    )
    configure_logging(log_level, operations.log_format)
    from corral.server import run_server, run_worker  # heavy imports; keep `corral --help` fast
    from corral.session.store import StorageUnavailable

    try:
        if brain_only:
            run_worker(settings)
        else:
            run_server(settings, log_level)
    except StorageUnavailable as exc:  # the database cannot be reached or migrated: say so, without a traceback
        raise click.ClickException(exc.message) from exc


assert serve.callback is not None
worker = click.Command(
    "worker",
    params=serve.params,
    callback=functools.partial(serve.callback, brain_only=True),
    help="Run only brains (no HTTP API), beside `corral serve` nodes on the same PostgreSQL database.\n\n"
    "Takes the same settings as `serve` (the HTTP ones are unused). Workers pick up sessions with work, "
    "hold their leases while they run turns, and take over the sessions of nodes that died.",
    epilog=serve.epilog,
)
main.add_command(worker)


@main.command()
@data_dir_option
@database_url_option
def migrate(data_dir: str, database_url: str | None) -> None:
    """Create or upgrade the database schema, then exit."""

    async def where(store: Store) -> str:
        described = store.describe()
        return str(described.get("path") or described.get("url"))

    click.echo(f"database at {_with_store(data_dir, database_url, where)} is up to date")


@main.group()
def keys() -> None:
    """Create, list and revoke API keys (works while the server runs)."""


@keys.command("create")
@data_dir_option
@database_url_option
@click.option("--workspace", default=None, help="Workspace id for the key; default: a new workspace.")
@click.option("--name", default="default", show_default=True, help="Name of the new workspace.")
def keys_create(data_dir: str, database_url: str | None, workspace: str | None, name: str) -> None:
    """Mint a key and print it once (only its hash is stored)."""
    from corral.api.auth import issue_key

    async def create(store: Store) -> None:
        issued = await issue_key(store, workspace, name)
        click.echo(f"{issued.key}\n(id {issued.record.id}, workspace {issued.record.workspace_id})")

    _with_store(data_dir, database_url, create)


@keys.command("list")
@data_dir_option
@database_url_option
def keys_list(data_dir: str, database_url: str | None) -> None:
    """List keys: id, workspace, hint, created, revoked."""

    async def show(store: Store) -> None:
        for key in await store.list_api_keys():
            click.echo(f"{key.id}  {key.workspace_id}  {key.hint}  {key.created_at}  {key.revoked_at or '-'}")

    _with_store(data_dir, database_url, show)


@keys.command("revoke")
@data_dir_option
@database_url_option
@click.argument("key_id")
def keys_revoke(data_dir: str, database_url: str | None, key_id: str) -> None:
    """Revoke a key by id: new requests with it get 401, and those in progress (event streams, uploads) end
    within about a second, on every server that shares the database."""

    async def revoke(store: Store) -> bool:
        return await store.revoke_api_key(key_id)

    if not _with_store(data_dir, database_url, revoke):
        raise click.ClickException(f"no live key with id {key_id}")
    click.echo(f"revoked {key_id}")


register_client_commands(main)  # run, apply, agents, environments, sessions (corral/cli/commands/)
