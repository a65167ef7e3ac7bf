"""One node's brain over the in-memory store, wired as corral/server.py wires it, for hermetic brain tests.

Every part is real: the `Brain` and its `SessionWorker`s, the `SessionLog` over a `MemoryStore`, the model
providers (pointed at the scripted `FakeModel`, over HTTP), `LocalHands` without a sandbox, and the API's
services to create sessions and send events. No HTTP server and no database: a turn takes milliseconds.
Several nodes on one `MemoryDatabase` behave like processes sharing a database, under one `ManualClock`
that decides when leases expire.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.brain.scheduler import Brain
from corral.config import ModelRoute, Settings
from corral.hands.local import LocalHandsProvider
from corral.models.router import ModelRouter
from corral.runtime import Runtime
from corral.services.agents import AgentCreate
from corral.services.environments import EnvironmentCreate
from corral.services.events import SendEvents
from corral.services.sessions import SessionCreate
from corral.session.cluster import SingleNode
from corral.session.fanout import EventBus, Frame
from corral.session.log import SessionLog
from corral.session.memory import MemoryDatabase, MemoryStore
from corral.session.records import EventRecord, Json
from corral.session.store import Store
from corral.vault.credentials import VaultAccess
from corral.vault.crypto import SecretBox

WORKSPACE = "wrkspc_brain"
MODEL = "claude-sonnet-4-6"
# The environment variable the model route reads its key from (the fake model takes any key).
MODEL_KEY_ENV = "CORRAL_TEST_MODEL_KEY"
# A bound on every wait, so that a brain that never settles fails its test instead of hanging the run.
HANG_GUARD_SECONDS = 5.0
ALL_TOOLS: list[dict[str, Any]] = [{"type": "agent_toolset_20260401"}]


@dataclass
class ManualClock:
    """The store's clock (lease expiry): it moves only when a test moves it."""

    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def brain_settings(data_dir: Path, model_url: str, **overrides: Any) -> Settings:
    """Settings for a node whose `claude-*` models are the fake model; retries wait no time."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "sandbox": "none",
        "database_url": "memory://",
        "node_id": "node-a",
        "routes": [ModelRoute("claude-*", "anthropic", model_url, MODEL_KEY_ENV)],
        "model_retry_delay": 0.0,
        **overrides,
    }
    return Settings(**values)


def user_message(text: str) -> dict[str, Any]:
    return {"type": "user.message", "content": [{"type": "text", "text": text}]}


# --- reading a log ---------------------------------------------------------------------------------


def types_of(events: list[EventRecord]) -> list[str]:
    return [event.type for event in events]


def one(events: list[EventRecord], event_type: str) -> EventRecord:
    """The only event of `event_type`."""
    [found] = [event for event in events if event.type == event_type]
    return found


def stop_reason(events: list[EventRecord]) -> Json:
    """The stop reason of the idle that `events` end with."""
    assert events[-1].type == "session.status_idle", types_of(events)
    return events[-1].body["stop_reason"]


def replies(events: list[EventRecord]) -> list[str]:
    """The text of each agent.message."""
    messages = [event for event in events if event.type == "agent.message"]
    return ["".join(block["text"] for block in message.body["content"]) for message in messages]


async def until_appended(frames: AsyncIterator[Frame], event_type: str) -> None:
    """Read a stream up to the first event of `event_type`."""

    async def read() -> None:
        async for frame in frames:
            if frame.event == event_type:
                return
        raise AssertionError(f"the stream ended before a {event_type}")

    await asyncio.wait_for(read(), HANG_GUARD_SECONDS)


class BrainNode:
    """The parts one `corral serve` process runs a session's turns with (no HTTP, no cluster listener)."""

    def __init__(self, settings: Settings, database: MemoryDatabase | Store) -> None:
        """On a new `MemoryStore` over `database`, or on the store given (SQLite or PostgreSQL: the tests that count
        a turn's database operations)."""
        self.settings = settings
        self.store: Store = MemoryStore(database) if isinstance(database, MemoryDatabase) else database
        bus = EventBus()
        self.log = SessionLog(self.store, bus)
        # No launcher: commands run in plain bash on the host, in a workspace under the data directory.
        hands = LocalHandsProvider(settings.workspaces_dir)
        models = ModelRouter(settings)
        self.brain = Brain(self.log, hands, models, settings)
        self.runtime = Runtime(
            settings=settings,
            store=self.store,
            bus=bus,
            log=self.log,
            hands=hands,
            models=models,
            brain=self.brain,
            vault=VaultAccess(self.store, SecretBox(bytes(32))),
            cluster=SingleNode(),
        )

    async def new_session(self, tools: list[dict[str, Any]] | None = None) -> str:
        """A session of a new agent (`tools`: the whole built-in toolset unless given) in a new environment."""
        services = self.runtime.services
        agent_params = {"name": "helper", "model": MODEL, "tools": ALL_TOOLS if tools is None else tools}
        agent = await services.agents.create(WORKSPACE, AgentCreate.model_validate(agent_params))
        environment = await services.environments.create(
            WORKSPACE, EnvironmentCreate.model_validate({"name": f"env-{uuid.uuid4().hex[:8]}"})
        )
        session = await services.sessions.create(
            WORKSPACE, SessionCreate.model_validate({"agent": agent.id, "environment_id": environment.id})
        )
        return session.id

    async def send(self, session_id: str, *events: dict[str, Any]) -> list[EventRecord]:
        """What `POST /v1/sessions/{id}/events` does: store the events and wake the brain."""
        params = SendEvents.model_validate({"events": list(events)})
        return await self.runtime.services.events.send(WORKSPACE, session_id, params)

    async def run(self, session_id: str, *events: dict[str, Any]) -> list[EventRecord]:
        """Send `events`, let the brain finish with the session, and return what the log gained meanwhile."""
        start = await self.store.last_position(session_id)
        await self.send(session_id, *events)
        await self.settled(session_id)
        return await self.events(session_id, after=start)

    async def settled(self, session_id: str) -> None:
        """Wait until no brain in this process has a worker on the session (the brain names each worker's task
        after its session; a worker that ends may start another for a wake that came late, hence the loop)."""

        async def no_worker() -> None:
            name = f"brain:{session_id}"
            while workers := [task for task in asyncio.all_tasks() if task.get_name() == name]:
                await asyncio.wait(workers)

        await asyncio.wait_for(no_worker(), HANG_GUARD_SECONDS)

    async def watch(self, session_id: str) -> AsyncIterator[Frame]:
        """The session's live stream from now on, as `GET /v1/sessions/{id}/events/stream` serves it."""
        return self.log.frames(await self.log.open_stream(session_id, frozenset(), None))

    async def events(self, session_id: str, after: int = 0) -> list[EventRecord]:
        """The session's processed events after position `after`, in log order."""
        return await self.store.events_after(session_id, after, 10_000)

    async def close(self) -> None:
        await self.runtime.stop()
        await self.store.close()


# Starts a node on the test's database; keyword arguments override its settings (the `start_node` fixture).
StartNode = Callable[..., Awaitable[BrainNode]]
