"""The `corral` command: `serve` runs the server; `keys` and `migrate` administer its data directory."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import click

from corral import __version__
from corral.config import (
    DEFAULT_DATA_DIR,
    DEFAULT_PORT,
    Settings,
    default_routes,
    load_config_file,
    parse_routes,
)

if TYPE_CHECKING:
    from corral.session.sqlite import SqliteStore

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
        data_dir = os.environ.get("CORRAL_DATA_DIR") or str(DEFAULT_DATA_DIR)
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
    default=str(DEFAULT_DATA_DIR),
    show_default=True,
    help="Directory for the SQLite database and session workspaces.",
)


def _open_store(data_dir: str) -> SqliteStore:
    from corral.session.sqlite import SqliteStore

    return SqliteStore(Path(data_dir).expanduser() / "corral.db")


@click.group()
@click.version_option(__version__, prog_name="corral")
def main() -> None:
    """Corral: a self-hosted runtime for managed AI agents."""


@main.command(epilog=SERVE_EPILOG)
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
@click.option(
    "--host",
    envvar="CORRAL_HOST",
    show_envvar=True,
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on.",
)
@click.option(
    "--port",
    envvar="CORRAL_PORT",
    show_envvar=True,
    default=DEFAULT_PORT,
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
    default=4,
    show_default=True,
    type=click.IntRange(0, 20),
    help="Retries of a model call that failed with 429, 529, 5xx or a connection error.",
)
@click.option(
    "--model-retry-delay",
    envvar="CORRAL_MODEL_RETRY_DELAY",
    show_envvar=True,
    default=1.0,
    show_default=True,
    type=click.FloatRange(0, 600),
    help="Seconds before the first retry; each further retry waits twice as long.",
)
@click.option(
    "--model-timeout",
    envvar="CORRAL_MODEL_TIMEOUT",
    show_envvar=True,
    default=600.0,
    show_default=True,
    type=click.FloatRange(1, 3600),
    help="Seconds a model call may take.",
)
@click.option(
    "--max-tokens",
    envvar="CORRAL_MAX_TOKENS",
    show_envvar=True,
    default=8192,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="max_tokens of each model request.",
)
@click.option(
    "--sse-ping-seconds",
    envvar="CORRAL_SSE_PING_SECONDS",
    show_envvar=True,
    default=15.0,
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
    default=15.0,
    show_default=True,
    type=click.FloatRange(1, 600),
    help="Seconds a brain's lease on a session lasts without renewal (renewed every third of it).",
)
@click.option(
    "--sandbox",
    envvar="CORRAL_SANDBOX",
    show_envvar=True,
    default="bubblewrap",
    show_default=True,
    type=click.Choice(["bubblewrap", "none"]),
    help="Where tool commands run. 'none' runs them unconfined on the host: only for trusted agents.",
)
@click.option(
    "--log-level",
    envvar="CORRAL_LOG_LEVEL",
    show_envvar=True,
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def serve(
    data_dir: str,
    host: str,
    port: int,
    model_routes: str | None,
    model_max_retries: int,
    model_retry_delay: float,
    model_timeout: float,
    max_tokens: int,
    sse_ping_seconds: float,
    node_id: str | None,
    lease_ttl: float,
    sandbox: str,
    log_level: str,
) -> None:
    """Run the Corral server (SQLite in the data directory; listens on 127.0.0.1:8400 by default).

    \b
    Also reads CORRAL_API_KEY: a client API key to accept, registered on start if absent.
    """
    try:
        routes = parse_routes(json.loads(model_routes)) if model_routes else default_routes()
    except (ValueError, json.JSONDecodeError) as exc:
        raise click.BadParameter(str(exc), param_hint="--model-routes") from exc
    settings = Settings(
        data_dir=Path(data_dir).expanduser(),
        host=host,
        port=port,
        api_key=os.environ.get("CORRAL_API_KEY") or None,
        routes=routes,
        model_max_retries=model_max_retries,
        model_retry_delay=model_retry_delay,
        model_timeout=model_timeout,
        max_tokens=max_tokens,
        sse_ping_seconds=sse_ping_seconds,
        sandbox="none" if sandbox == "none" else "bubblewrap",
        node_id=node_id or f"{socket.gethostname()}:{port}",
        lease_ttl_seconds=lease_ttl,
    )
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from corral.server import run_server  # the server's imports are heavy; keep `corral --help` fast

    run_server(settings, log_level)


@main.command()
@data_dir_option
def migrate(data_dir: str) -> None:
    """Create or upgrade the database schema in the data directory, then exit."""
    store = _open_store(data_dir)
    asyncio.run(store.close())
    click.echo(f"database at {store.path} is up to date")


@main.group()
def keys() -> None:
    """Create, list and revoke API keys (works while the server runs)."""


@keys.command("create")
@data_dir_option
@click.option("--workspace", default=None, help="Workspace id for the key; default: a new workspace.")
@click.option("--name", default="default", show_default=True, help="Name of the new workspace.")
def keys_create(data_dir: str, workspace: str | None, name: str) -> None:
    """Mint a key and print it once (only its hash is stored)."""
    from corral.api.auth import issue_key

    store = _open_store(data_dir)

    async def create() -> None:
        try:
            issued = await issue_key(store, workspace, name)
        finally:
            await store.close()
        click.echo(f"{issued.key}\n(id {issued.record.id}, workspace {issued.record.workspace_id})")

    asyncio.run(create())


@keys.command("list")
@data_dir_option
def keys_list(data_dir: str) -> None:
    """List keys: id, workspace, hint, created, revoked."""
    store = _open_store(data_dir)

    async def show() -> None:
        try:
            for key in await store.list_api_keys():
                click.echo(f"{key.id}  {key.workspace_id}  {key.hint}  {key.created_at}  {key.revoked_at or '-'}")
        finally:
            await store.close()

    asyncio.run(show())


@keys.command("revoke")
@data_dir_option
@click.argument("key_id")
def keys_revoke(data_dir: str, key_id: str) -> None:
    """Revoke a key by id; requests with it get 401 from then on."""
    store = _open_store(data_dir)

    async def revoke() -> bool:
        try:
            return await store.revoke_api_key(key_id)
        finally:
            await store.close()

    if not asyncio.run(revoke()):
        raise click.ClickException(f"no live key with id {key_id}")
    click.echo(f"revoked {key_id}")
