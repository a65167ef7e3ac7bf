"""Assembles the runtime (store, log, brain, hands, models) and serves the API with uvicorn."""

from __future__ import annotations

import asyncio
import logging

import click
import uvicorn

from corral.api.app import create_app
from corral.api.auth import issue_key, register_key
from corral.brain.scheduler import Brain
from corral.config import Settings
from corral.hands.bubblewrap import BubblewrapLauncher, RefusingLauncher
from corral.hands.local import LocalHandsProvider
from corral.hands.shell import LocalShellLauncher, SandboxUnavailable
from corral.ids import new_id
from corral.models.router import ModelRouter
from corral.runtime import Runtime
from corral.session.fanout import EventBus
from corral.session.log import SessionLog
from corral.session.sqlite import SqliteStore
from corral.session.store import Store

log = logging.getLogger("corral")


def build_hands(settings: Settings) -> LocalHandsProvider:
    """Workspaces under the data dir; shells in bubblewrap, or refused with the reason if it cannot run."""
    if settings.sandbox == "none":
        log.warning("--sandbox none: tool commands run UNCONFINED on this host, as the server's user")
        return LocalHandsProvider(settings.workspaces_dir, launcher=LocalShellLauncher())
    try:
        launcher = BubblewrapLauncher.detect(settings.workspaces_dir)
    except SandboxUnavailable as exc:
        log.error("sandbox unavailable, bash calls will fail until this is fixed: %s", exc)
        return LocalHandsProvider(settings.workspaces_dir, launcher=RefusingLauncher(str(exc)))
    identity = launcher.identity
    return LocalHandsProvider(settings.workspaces_dir, launcher=launcher, owner=(identity.uid, identity.gid))


def build_runtime(settings: Settings) -> Runtime:
    store = SqliteStore(settings.database_path)
    bus = EventBus()
    session_log = SessionLog(store, bus)
    hands = build_hands(settings)
    models = ModelRouter(settings)
    brain = Brain(session_log, hands, models, settings)
    return Runtime(settings=settings, store=store, bus=bus, log=session_log, hands=hands, models=models, brain=brain)


async def ensure_api_key(store: Store, configured_key: str | None) -> str | None:
    """Register CORRAL_API_KEY if given; on a server with no keys at all, mint one. Returns a new key to show."""
    existing = await store.list_api_keys()
    if configured_key:
        if existing:
            workspace = existing[0].workspace_id
        else:
            workspace = new_id("wrkspc")
            await store.create_workspace(workspace, "default")
        await register_key(store, workspace, configured_key)
        return None
    if any(key.revoked_at is None for key in existing):
        return None
    return (await issue_key(store)).key


def run_server(settings: Settings, log_level: str) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Traversable but not listable: sandboxes reach their workspace below it; the database file is 0600.
    settings.data_dir.chmod(0o711)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    runtime = build_runtime(settings)
    new_key = asyncio.run(ensure_api_key(runtime.store, settings.api_key))
    if new_key:
        click.echo(
            f"\nCreated an API key for this server (shown once; only its hash is stored):\n\n    {new_key}\n\n"
            f"Use it as the SDK's api_key with base_url http://{settings.host}:{settings.port}\n",
            err=True,
        )
    log.info("data directory %s; listening on http://%s:%d", settings.data_dir, settings.host, settings.port)
    uvicorn.run(
        create_app(runtime),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=log_level == "debug",
        timeout_graceful_shutdown=3,
        loop="uvloop",
        http="httptools",
    )
