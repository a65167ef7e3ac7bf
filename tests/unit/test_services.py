"""The API's operations (corral/services/) on a real runtime over the in-memory store: no HTTP, no database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.config import Settings
from corral.errors import InvalidRequest
from corral.runtime import Runtime
from corral.server import build_runtime
from corral.services.agents import AgentCreate, AgentUpdate
from corral.services.environments import EnvironmentCreate
from corral.services.sessions import SessionCreate, SessionUpdate
from corral.session.records import SessionRecord

WORKSPACE = "wrkspc_test"
HANG_GUARD_SECONDS = 5


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    """Every part real and none started: the brain runs no turns unless a test wakes it."""
    built = await build_runtime(Settings(data_dir=tmp_path, sandbox="none", database_url="memory://"))
    yield built
    await built.stop()
    await built.store.close()


async def new_session(runtime: Runtime) -> SessionRecord:
    services = runtime.services
    agent = await services.agents.create(
        WORKSPACE, AgentCreate.model_validate({"name": "helper", "model": "claude-sonnet-4-6"})
    )
    environment = await services.environments.create(WORKSPACE, EnvironmentCreate.model_validate({"name": "env"}))
    return await services.sessions.create(
        WORKSPACE,
        SessionCreate.model_validate({"agent": agent.id, "environment_id": environment.id, "title": "first"}),
    )


async def test_a_session_update_stores_the_change_and_announces_only_the_changed_fields(runtime: Runtime) -> None:
    session = await new_session(runtime)

    updated = await runtime.services.sessions.update(
        WORKSPACE, session.id, SessionUpdate.model_validate({"title": "second", "metadata": {}})
    )

    [event] = await runtime.store.events_after(session.id, 0, 10)
    assert (event.type, event.body) == ("session.updated", {"title": "second"})
    assert (updated.body["title"], updated.updated_at) == ("second", event.processed_at)


async def test_a_session_update_that_changes_nothing_appends_no_event(runtime: Runtime) -> None:
    session = await new_session(runtime)

    await runtime.services.sessions.update(WORKSPACE, session.id, SessionUpdate.model_validate({"title": "first"}))

    assert await runtime.store.events_after(session.id, 0, 10) == []


async def test_deleting_a_session_ends_its_open_streams_with_session_deleted(runtime: Runtime) -> None:
    session = await new_session(runtime)
    frames = await runtime.services.events.open_stream(WORKSPACE, session.id, frozenset(), after_event=None)

    await runtime.services.sessions.delete(WORKSPACE, session.id)

    async def read_all() -> list[str]:
        return [json.loads(frame.data)["type"] async for frame in frames]

    assert await asyncio.wait_for(read_all(), HANG_GUARD_SECONDS) == ["session.deleted"]


async def test_an_agent_update_naming_name_as_null_is_refused(runtime: Runtime) -> None:
    agent = await runtime.services.agents.create(
        WORKSPACE, AgentCreate.model_validate({"name": "helper", "model": "claude-sonnet-4-6"})
    )

    with pytest.raises(InvalidRequest, match="name cannot be cleared"):
        await runtime.services.agents.update(WORKSPACE, agent.id, AgentUpdate.model_validate({"name": None}))


async def test_an_agent_update_leaves_the_fields_it_omits_as_they_were(runtime: Runtime) -> None:
    agent = await runtime.services.agents.create(
        WORKSPACE,
        AgentCreate.model_validate({"name": "helper", "model": "claude-sonnet-4-6", "system": "be brief"}),
    )

    updated = await runtime.services.agents.update(
        WORKSPACE, agent.id, AgentUpdate.model_validate({"description": "new"})
    )

    assert (updated.version, updated.body["system"], updated.body["description"]) == (2, "be brief", "new")
