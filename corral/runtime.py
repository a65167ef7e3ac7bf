"""The running server's parts, wired together once at start and shared by every request."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from starlette.requests import Request

from corral.config import Settings
from corral.hands.base import HandsProvider
from corral.models.router import ModelRouter
from corral.services import Services
from corral.services.agents import Agents
from corral.services.environments import Environments
from corral.services.events import Events
from corral.services.sessions import Sessions
from corral.services.vaults import Vaults
from corral.session.cluster import Cluster
from corral.session.fanout import EventBus
from corral.session.log import SessionLog
from corral.session.store import Store
from corral.vault.credentials import VaultAccess

if TYPE_CHECKING:
    from corral.brain.scheduler import Brain


@dataclass
class Runtime:
    settings: Settings
    store: Store
    bus: EventBus
    log: SessionLog
    hands: HandsProvider
    models: ModelRouter
    brain: Brain
    # Opens vault credentials for the MCP client and the egress proxy; seals new ones for the API.
    vault: VaultAccess
    # How this node hears about other nodes' work and events (nothing to hear on a single node).
    cluster: Cluster

    @cached_property
    def services(self) -> Services:
        """The API's operations over these parts (built on first use: the brain is set by then)."""
        agents = Agents(self.store)
        environments = Environments(self.store)
        vaults = Vaults(self.store, self.vault, self.settings.mcp)
        sessions = Sessions(
            self.store,
            self.log,
            self.bus,
            self.brain,
            self.hands,
            self.settings,
            agents=agents,
            environments=environments,
            vaults=vaults,
        )
        events = Events(self.store, self.log, self.brain, self.settings, sessions=sessions)
        return Services(agents, environments, sessions, events, vaults)

    async def start(self) -> None:
        """Start the background parts: the cluster listener, then the brain (which resumes unfinished work)."""
        await self.cluster.start(self._on_wake, self.bus.reached, self._on_reconnect)
        await self.brain.start()

    async def stop(self) -> None:
        self.bus.close()
        await self.cluster.close()
        await self.brain.close()
        await self.hands.close()
        await self.models.close()

    def _on_wake(self, session_id: str, interrupt: bool) -> None:
        self.brain.wake(session_id)
        if interrupt:
            self.brain.interrupt(session_id)

    def _on_reconnect(self) -> None:
        # Notices sent while the listener was away are lost: streams catch up and the brain sweeps.
        asyncio.get_running_loop().create_task(self._resync())

    async def _resync(self) -> None:
        for session_id in self.bus.session_ids():
            self.bus.reached(session_id, await self.store.last_position(session_id))
        await self.brain.sweep()


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def workspace_of(request: Request) -> str:
    """The workspace of the API key that authenticated this request (set by the auth middleware)."""
    return str(request.scope["corral.workspace_id"])
