"""The scheduler (corral/brain/scheduler.py) on the in-memory store: which worker, on which node, runs a session.

Nodes here are `Brain`s on one `MemoryDatabase`, as processes on one PostgreSQL database are; the database's
clock is a `ManualClock`, so a lease expires when a test says so. The end-to-end versions run real servers in
tests/conformance/test_cluster.py and test_recovery.py.
"""

from __future__ import annotations

from corral.session.log import new_event
from tests.support.brain_node import (
    BrainNode,
    ManualClock,
    StartNode,
    replies,
    stop_reason,
    types_of,
    user_message,
)
from tests.support.fake_model import FakeModel

LEASE_TTL_SECONDS = 15.0


async def test_two_wakes_of_one_session_run_one_worker(node: BrainNode, model: FakeModel) -> None:
    session_id = await node.new_session()

    await node.send(session_id, user_message("hello"))  # wakes the brain
    node.brain.wake(session_id)
    await node.settled(session_id)

    seen = await node.events(session_id)
    assert len(model.requests) == 1
    assert types_of(seen).count("session.status_running") == 1
    assert "session.error" not in types_of(seen)
    assert replies(seen) == ["echo: hello"]


async def test_two_nodes_woken_for_one_session_run_one_turn(start_node: StartNode, model: FakeModel) -> None:
    first, second = await start_node(node_id="node-a"), await start_node(node_id="node-b")
    session_id = await first.new_session()

    await first.send(session_id, user_message("hello"))
    second.brain.wake(session_id)
    await first.settled(session_id)  # and the second node's worker: both run in this process

    seen = await first.events(session_id)
    assert len(model.requests) == 1
    assert replies(seen) == ["echo: hello"]
    assert stop_reason(seen) == {"type": "end_turn"}


async def test_a_lease_held_by_another_node_is_not_taken_until_it_expires(
    node: BrainNode, clock: ManualClock, model: FakeModel
) -> None:
    session_id = await node.new_session()
    assert await node.store.acquire_lease(session_id, "node-b", LEASE_TTL_SECONDS)

    await node.run(session_id, user_message("hello"))
    clock.advance(LEASE_TTL_SECONDS - 1)
    swept_while_held = await node.brain.sweep()
    await node.settled(session_id)
    assert (swept_while_held, model.requests) == (0, [])
    assert [event.type for event in await node.store.queued_events(session_id)] == ["user.message"]

    clock.advance(2)
    assert await node.brain.sweep() == 1
    await node.settled(session_id)

    seen = await node.events(session_id)
    assert replies(seen) == ["echo: hello"]
    assert stop_reason(seen) == {"type": "end_turn"}


async def test_a_message_whose_brain_died_before_the_turn_started_is_answered_by_the_sweep(
    node: BrainNode, model: FakeModel
) -> None:
    session_id = await node.new_session()
    # The dead brain took the message off the queue and appended nothing more.
    [message] = await node.log.enqueue(session_id, [new_event("user.message", **user_message("hello"))])
    await node.log.mark_processed(session_id, message.id)

    assert await node.brain.sweep() == 1
    await node.settled(session_id)

    seen = await node.events(session_id)
    assert replies(seen) == ["echo: hello"]
    assert stop_reason(seen) == {"type": "end_turn"}
