"""Fixtures for conformance tests: one fake model and one real `corral serve`, driven by the official SDK.

Tests that use `server` run once per storage adapter (`--store`, see tests/conftest.py): against a server on
SQLite, then against one on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import anthropic
import pytest

from tests.support.fake_model import FakeModel
from tests.support.server import CorralServer

# Environment for a `CorralServer` whose store is new and empty, on the adapter of the test's `store_kind`.
StoreEnv = Callable[[], dict[str, str]]


@pytest.fixture(scope="session")
def fake_model() -> Iterator[FakeModel]:
    with FakeModel() as model:
        yield model


@pytest.fixture(scope="session")
def new_store_env(store_kind: str, request: pytest.FixtureRequest) -> StoreEnv:
    """Makes the environment of a server with a store of its own: SQLite in its data dir, or a new PostgreSQL
    database (dropped at the end of the run). Keep the environment to restart a server on the same store."""
    if store_kind == "sqlite":
        return dict
    postgres = request.getfixturevalue("postgres_server")
    return lambda: {"CORRAL_DATABASE_URL": postgres.create_database()}


@pytest.fixture(scope="session")
def server(fake_model: FakeModel, new_store_env: StoreEnv) -> Iterator[CorralServer]:
    with CorralServer(model_url=fake_model.url, env=new_store_env()) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_script(fake_model: FakeModel) -> Iterator[None]:
    fake_model.reset()
    yield
    fake_model.reset()


@pytest.fixture
def client(server: CorralServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.url, api_key=server.api_key, max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def agent(client: anthropic.Anthropic):  # type: ignore[no-untyped-def]
    return client.beta.agents.create(
        name="Test agent", model="claude-sonnet-4-6", tools=[{"type": "agent_toolset_20260401"}]
    )


@pytest.fixture
def environment(client: anthropic.Anthropic):  # type: ignore[no-untyped-def]
    import uuid

    return client.beta.environments.create(
        name=f"env-{uuid.uuid4().hex[:12]}", config={"type": "cloud", "networking": {"type": "unrestricted"}}
    )


@pytest.fixture
def session(client: anthropic.Anthropic, agent, environment):  # type: ignore[no-untyped-def]
    return client.beta.sessions.create(agent=agent.id, environment_id=environment.id, title="test session")
