"""Assembles the runtime (store, log, brain, hands, models) and serves the API with uvicorn."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

import click
import uvicorn
import uvloop

from corral.api.app import create_app
from corral.api.auth import issue_key, register_key
from corral.brain.scheduler import Brain
from corral.config import Settings
from corral.hands.builtin.web import BRAVE_API_KEY_ENV, BraveBackend, SearchBackend, SearxngBackend, WebTools
from corral.hands.local import LocalHandsProvider
from corral.hands.net.ca import UPSTREAM_CA_ENV, EgressCA
from corral.hands.net.egress import CredentialSource, EgressProxy
from corral.hands.net.policy import AddressPolicy, parse_allow_addresses
from corral.hands.sandbox.packages import PackageCache
from corral.hands.sandbox.provision import ErrorReporter, Provisioner
from corral.hands.sandbox.registry import open_sandboxes
from corral.ids import new_id
from corral.mcp.client import McpHub
from corral.models.router import ModelRouter
from corral.protocol.events import session_error
from corral.runtime import Runtime
from corral.session.cluster import Cluster, PostgresCluster, SingleNode
from corral.session.fanout import EventBus
from corral.session.log import SessionLog
from corral.session.open_store import open_store
from corral.session.postgres import PostgresStore, psycopg_conninfo
from corral.session.store import Store
from corral.vault.credentials import VaultAccess
from corral.vault.crypto import SecretBox, load_or_create_key

log = logging.getLogger("corral")


def build_hands(
    settings: Settings, *, credentials: CredentialSource | None = None, report: ErrorReporter | None = None
) -> LocalHandsProvider:
    """Workspaces under the data dir; shells in the sandbox backend `--sandbox` names (`hands/sandbox/registry.py`).

    What cannot be provided as configured is refused with the reason and its fix, at start (logged) and in
    every tool call it affects; nothing silently runs with less confinement than asked for. `credentials` and
    `report` are the provisioner's (the sessions' vault credentials for the egress proxy; where a credential's
    unreachable host is reported).
    """
    limits = settings.sandbox_limits
    web = build_web_tools(settings)
    sandboxes = open_sandboxes(settings.sandbox, settings.workspaces_dir, limits)
    provisioner = (
        build_provisioner(settings, web.addresses, sandboxes.owner, credentials=credentials, report=report)
        if sandboxes.applies_environments
        else None
    )
    return LocalHandsProvider(
        settings.workspaces_dir,
        launcher=sandboxes.launcher,
        owner=sandboxes.owner,
        volumes=sandboxes.volumes,
        idle_timeout_s=limits.idle_timeout_s,
        provisioner=provisioner,
        web=web,
    )


def build_web_tools(settings: Settings) -> WebTools:
    """web_fetch always; web_search with the configured backend (none: not offered to models)."""
    addresses = AddressPolicy(allow_addresses=parse_allow_addresses(settings.web.egress_allow_addresses))
    backend: SearchBackend | None = None
    if settings.web.search == "searxng" and settings.web.searxng_url:
        backend = SearxngBackend(settings.web.searxng_url)
    elif settings.web.search == "brave":
        if not os.environ.get(BRAVE_API_KEY_ENV):
            log.error("--web-search brave: set %s; web_search calls fail until then", BRAVE_API_KEY_ENV)
        backend = BraveBackend()
    log.info("web tools: web_fetch, %s", f"web_search via {backend.name}" if backend else "no web_search")
    return WebTools(addresses, backend)


def build_provisioner(
    settings: Settings,
    addresses: AddressPolicy,
    owner: tuple[int, int] | None,
    *,
    credentials: CredentialSource | None = None,
    report: ErrorReporter | None = None,
) -> Provisioner:
    """Environments applied to sandboxes: the egress proxy's sockets and the package cache in the data dir.

    With vault credentials, the egress proxy gets the data dir's CA (`corral.hands.net.ca`), to put them into
    HTTPS requests to the hosts they name."""
    ca = None
    if credentials is not None:
        ca = EgressCA.load_or_create(
            settings.data_dir, SecretBox(load_or_create_key(settings.secret_key, settings.data_dir))
        )
    upstream_ca = os.environ.get(UPSTREAM_CA_ENV)
    egress = EgressProxy(
        settings.data_dir / "egress",
        addresses,
        owner=owner,
        credentials=credentials,
        ca=ca,
        upstream_ca=Path(upstream_ca) if upstream_ca else None,
    )
    return Provisioner(
        egress=egress,
        packages=PackageCache(settings.data_dir / "packages", run_as=owner),
        credentials=credentials,
        report=report,
    )


async def build_runtime(settings: Settings) -> Runtime:
    """The runtime on the running event loop (a PostgreSQL pool belongs to the loop that opened it)."""
    store = await open_store(settings.store_url)
    bus = EventBus()
    session_log = SessionLog(store, bus)
    vault = VaultAccess(store, SecretBox(load_or_create_key(settings.secret_key, settings.data_dir)))

    async def report(session_id: str, error: dict[str, Any]) -> None:
        await session_log.append(session_id, session_error(error))

    hands = build_hands(settings, credentials=vault.session_environment_secrets, report=report)
    models = ModelRouter(settings)
    brain = Brain(session_log, hands, models, settings, mcp=McpHub(settings.mcp, vault))
    cluster: Cluster = (
        PostgresCluster(psycopg_conninfo(store.url)) if isinstance(store, PostgresStore) else SingleNode()
    )
    return Runtime(
        settings=settings,
        store=store,
        bus=bus,
        log=session_log,
        hands=hands,
        models=models,
        brain=brain,
        vault=vault,
        cluster=cluster,
    )


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
    # One event loop from start to exit: the store is opened on the loop uvicorn then serves on.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(settings, log_level))


async def serve(settings: Settings, log_level: str) -> None:
    runtime = await build_runtime(settings)
    try:
        new_key = await ensure_api_key(runtime.store, settings.api_key)
        if new_key:
            click.echo(
                f"\nCreated an API key for this server (shown once; only its hash is stored):\n\n    {new_key}\n\n"
                f"Use it as the SDK's api_key with base_url http://{settings.host}:{settings.port}\n",
                err=True,
            )
        log.info(
            "data directory %s; database %s; listening on http://%s:%d",
            settings.data_dir,
            runtime.store.describe(),
            settings.host,
            settings.port,
        )
        config = uvicorn.Config(
            create_app(runtime),
            host=settings.host,
            port=settings.port,
            log_level=log_level,
            log_config=None,  # corral.observability.logs formats every logger's records (text or JSON)
            access_log=log_level == "debug",
            timeout_graceful_shutdown=3,
            http="httptools",
        )
        await uvicorn.Server(config).serve()
    finally:
        await runtime.store.close()


def run_worker(settings: Settings) -> None:
    """`corral worker`: the brain without the HTTP API, until SIGTERM or SIGINT."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(work(settings))


async def work(settings: Settings) -> None:
    runtime = await build_runtime(settings)
    try:
        if not isinstance(runtime.store, PostgresStore):
            raise click.ClickException(
                "corral worker needs a PostgreSQL database shared with the API nodes: "
                "pass --database-url postgresql://... (a single node on SQLite runs its brain inside `corral serve`)"
            )
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        await runtime.start()
        log.info("worker %s: running brains on %s", settings.node_id, runtime.store.describe())
        try:
            await stopping.wait()
        finally:
            await runtime.stop()
    finally:
        await runtime.store.close()
