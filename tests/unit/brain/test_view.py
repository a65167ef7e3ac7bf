"""The brain's view of a session's log: what it reads, and when its own appends are enough."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.brain.view import SessionView
from corral.session.fanout import EventBus
from corral.session.log import SessionLog, new_event
from corral.session.records import SessionRecord
from corral.session.sqlite import SqliteStore
from corral.session.state import empty_usage


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


def test_a_view_is_behind_a_log_known_to_reach_past_it_or_not_known_at_all() -> None:
    view = SessionView(position=3)

    assert view.behind(4) and view.behind(None)
    assert not view.behind(3)


async def test_a_sync_through_a_known_position_passes_events_it_does_not_read(log: SessionLog) -> None:
    view = SessionView()
    # Someone else appends an event the view does not read (a session update); the view then syncs.
    await log.append("sesn_1", new_event("session.updated", changes={}))
    await view.sync(log.store, "sesn_1", committed_through=log.known_position("sesn_1"))

    own = await log.append("sesn_1", new_event("agent.message", content=[{"type": "text", "text": "hi"}]))
    view.apply_own(own)

    # Its own append follows on without a gap, so the view takes it without reading the log again.
    assert view.position == 2 and not view.behind(log.known_position("sesn_1"))
    assert view.conversation.messages()[-1]["role"] == "assistant"
