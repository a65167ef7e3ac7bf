"""Fixtures of the hermetic brain tests: one fake model for the directory, fresh nodes on a fresh in-memory database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.session.memory import MemoryDatabase
from tests.support.brain_node import MODEL_KEY_ENV, BrainNode, ManualClock, StartNode, brain_settings
from tests.support.fake_model import FakeModel


@pytest.fixture(scope="package")
def model_server() -> Iterator[FakeModel]:
    with FakeModel() as server:
        yield server


@pytest.fixture
def model(model_server: FakeModel, monkeypatch: pytest.MonkeyPatch) -> FakeModel:
    """The fake model with an empty script and no recorded requests."""
    model_server.reset()
    monkeypatch.setenv(MODEL_KEY_ENV, "test-key")
    return model_server


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def database(clock: ManualClock) -> MemoryDatabase:
    return MemoryDatabase(clock=clock)


@pytest.fixture
async def start_node(model: FakeModel, database: MemoryDatabase, tmp_path: Path) -> AsyncIterator[StartNode]:
    """Start a node on the test's database; keyword arguments override its settings. Closed at the end."""
    started: list[BrainNode] = []

    async def start(**overrides: Any) -> BrainNode:
        node = BrainNode(brain_settings(tmp_path, model.url, **overrides), database)
        started.append(node)
        return node

    yield start
    for node in started:
        await node.close()


@pytest.fixture
async def node(start_node: StartNode) -> BrainNode:
    return await start_node()
