"""Streams read through the session log get every persisted event exactly once, in log order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.session.fanout import EventBus, Subscription
from corral.session.log import SessionLog, new_event
from corral.session.records import SessionRecord
from corral.session.sqlite import SqliteStore
from corral.session.state import empty_usage

HANG_GUARD_SECONDS = 5


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[SessionLog]:
    store = SqliteStore(tmp_path / "corral.db")
    now = "2026-01-01T00:00:00.000000Z"
    await store.insert_session(
        SessionRecord(
            "sesn_1", "wrkspc_1", "agent_1", 1, "env_1", {"agent": {}}, "idle", empty_usage(), 0.0, None, now, now
        )
    )
    yield SessionLog(store, EventBus())
    await store.close()


async def take(log: SessionLog, subscription: Subscription, count: int) -> list[str]:
    frames = log.frames(subscription)

    async def read() -> list[str]:
        return [json.loads((await anext(frames)).data)["type"] for _ in range(count)]

    return await asyncio.wait_for(read(), HANG_GUARD_SECONDS)


async def test_a_stream_sees_only_what_is_appended_after_it_opens(log: SessionLog) -> None:
    await log.append("sesn_1", new_event("session.status_running"))
    subscription = await log.open_stream("sesn_1", frozenset(), after_event=None)

    await log.append("sesn_1", new_event("agent.message", content=[]))

    assert await take(log, subscription, 1) == ["agent.message"]


async def test_last_event_id_replays_everything_after_that_event(log: SessionLog) -> None:
    first, *_ = await log.append("sesn_1", new_event("session.status_running"), new_event("agent.message", content=[]))
    subscription = await log.open_stream("sesn_1", frozenset(), after_event=first.id)

    await log.append("sesn_1", new_event("session.status_idle", stop_reason={"type": "end_turn"}))

    assert await take(log, subscription, 2) == ["agent.message", "session.status_idle"]


async def test_an_append_the_bus_never_saw_is_read_back_from_the_store(log: SessionLog) -> None:
    subscription = await log.open_stream("sesn_1", frozenset(), after_event=None)

    # As if another node (or a concurrent writer) appended without this process publishing it.
    await log.store.append_events("sesn_1", [new_event("session.status_running")])
    await log.append("sesn_1", new_event("agent.message", content=[]))

    assert await take(log, subscription, 2) == ["session.status_running", "agent.message"]


async def test_an_unknown_last_event_id_is_refused(log: SessionLog) -> None:
    with pytest.raises(LookupError):
        await log.open_stream("sesn_1", frozenset(), after_event="sevt_unknown")


async def test_the_log_knows_how_far_its_own_appends_reach(log: SessionLog) -> None:
    assert log.known_position("sesn_1") is None

    await log.append("sesn_1", new_event("session.status_running"), new_event("agent.message", content=[]))

    assert log.known_position("sesn_1") == 2


async def test_another_nodes_notice_moves_the_known_position_forward_never_back(log: SessionLog) -> None:
    log.bus.reached("sesn_1", 5)
    log.bus.reached("sesn_1", 3)  # a late notice of an earlier append

    assert log.known_position("sesn_1") == 5


async def test_a_deleted_sessions_position_is_forgotten(log: SessionLog) -> None:
    await log.append("sesn_1", new_event("session.status_running"))

    log.bus.end_session("sesn_1")

    assert log.known_position("sesn_1") is None
