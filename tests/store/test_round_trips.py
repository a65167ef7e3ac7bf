"""How many database operations one turn costs, on each SQL store: an upper bound, so that they cannot creep back.

The real brain runs real turns (tests/support/brain_node.py, the scripted fake model, no sandbox) over a real
SQLite or PostgreSQL store, and the test counts what the store asks of its database from the moment the message
is sent until the session settles: the POST handler's checks and enqueue, and the brain's whole turn. On
PostgreSQL each counted operation is one pooled connection's statement or transaction: one round trip, two for a
pipelined transaction that reads a result. On SQLite, each read and each write transaction.

The bounds are the counts measured when this test was written; lower them when a change saves operations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.session.postgres import PostgresStore
from corral.session.sqlite import SqliteStore
from corral.session.store import Store
from tests.store.conftest import ADAPTERS, StoreOpener
from tests.support.brain_node import MODEL_KEY_ENV, BrainNode, brain_settings, types_of, user_message
from tests.support.fake_model import FakeModel

# Counted operations per turn, at most (from a message sent to the session settled idle).
MOST_PER_NO_TOOL_TURN = {"sqlite": 15, "postgres": 15}
MOST_PER_ONE_TOOL_TURN = {"sqlite": 18, "postgres": 18}


class DatabaseOperations:
    """Counts the store's database operations by wrapping, on this one store object, the calls they all go
    through: the PostgreSQL adapter's `_run`; the SQLite adapter's reads (`_one`, `_all`) and write transactions
    (`_write`). Production code carries no counter."""

    def __init__(self, store: Store) -> None:
        self.count = 0
        if isinstance(store, PostgresStore):
            names = ["_run"]
        elif isinstance(store, SqliteStore):
            names = ["_one", "_all", "_write"]
        else:
            raise TypeError(f"no database operations to count on {type(store).__name__}")
        for name in names:
            setattr(store, name, self._counting(getattr(store, name)))

    def _counting(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return call(*args, **kwargs)

        return counted


@pytest.fixture(scope="module")
def model_server() -> Iterator[FakeModel]:
    with FakeModel() as server:
        yield server


@pytest.fixture
def open_store(store_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> StoreOpener:
    """Opens a store on a new, empty SQLite or PostgreSQL database (set up outside the event loop)."""
    return ADAPTERS[store_kind](request, tmp_path)


@pytest.fixture
async def node(
    open_store: StoreOpener, model_server: FakeModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[BrainNode]:
    model_server.reset()
    monkeypatch.setenv(MODEL_KEY_ENV, "test-key")
    store = await open_store()
    started = BrainNode(brain_settings(tmp_path, model_server.url), store)
    yield started
    await started.close()


async def operations_of_turn(node: BrainNode, session_id: str, text: str) -> tuple[int, list[str]]:
    """The database operations of one turn from sending `text` to idle, and the turn's event types."""
    start = await node.store.last_position(session_id)
    operations = DatabaseOperations(node.store)
    await node.send(session_id, user_message(text))
    await node.settled(session_id)
    counted = operations.count  # before the test's own read of what the turn appended
    return counted, types_of(await node.events(session_id, after=start))


async def test_a_no_tool_turn_stays_within_its_database_operations(node: BrainNode, store_kind: str) -> None:
    session_id = await node.new_session()
    await node.run(session_id, user_message("warm up"))

    count, seen = await operations_of_turn(node, session_id, "hello")

    assert seen[-1] == "session.status_idle" and "agent.tool_use" not in seen
    assert count <= MOST_PER_NO_TOOL_TURN[store_kind], f"a no-tool turn took {count} database operations"


async def test_a_one_tool_turn_stays_within_its_database_operations(node: BrainNode, store_kind: str) -> None:
    session_id = await node.new_session()
    await node.run(session_id, user_message("bash: echo warm"))

    count, seen = await operations_of_turn(node, session_id, "bash: echo hello")

    assert seen.count("agent.tool_use") == 1 and seen[-1] == "session.status_idle"
    assert count <= MOST_PER_ONE_TOOL_TURN[store_kind], f"a one-tool turn took {count} database operations"
