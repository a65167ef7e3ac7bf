"""Several nodes on one PostgreSQL: any node serves any request, streams see every node's appends, `corral worker`
processes take a share of the turns, and a dead node's sessions are taken over by the others once its lease
expires."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import psycopg
import pytest

from tests.support.fake_model import FakeModel
from tests.support.live_events import LiveEvents, all_events, types_of, user_message
from tests.support.postgres import PostgresServer
from tests.support.server import CorralServer, CorralWorker

pytestmark = pytest.mark.slow

LEASE_TTL = "2"
WORKER_ID = "worker-1"


def cluster_env(database: str) -> dict[str, str]:
    """What every node of one deployment shares: the database and the vault key (and here a short lease)."""
    return {
        "CORRAL_DATABASE_URL": database,
        "CORRAL_LEASE_TTL": LEASE_TTL,
        "CORRAL_SECRET_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    }


@pytest.fixture
def cluster(fake_model: FakeModel, postgres_server: PostgresServer) -> Iterator[tuple[CorralServer, CorralServer, str]]:
    """Two `corral serve` nodes sharing a new database, a data directory (workspaces) and a vault key."""
    database = postgres_server.create_database()
    env = cluster_env(database)
    with tempfile.TemporaryDirectory(prefix="corral-cluster-") as shared:
        data = Path(shared)
        data.chmod(0o711)
        first = CorralServer(model_url=fake_model.url, env=env, data_dir=data)
        second = CorralServer(model_url=fake_model.url, env=env, data_dir=data)
        second.log_path = data / "server-2.log"
        with first, second:
            yield first, second, database


@pytest.fixture
def serve_and_worker(
    fake_model: FakeModel, postgres_server: PostgresServer
) -> Iterator[tuple[CorralServer, CorralWorker, str]]:
    """A `corral serve` node and a `corral worker` on a new database, each with a data directory of its own."""
    database = postgres_server.create_database()
    env = cluster_env(database)
    with (
        CorralServer(model_url=fake_model.url, env=env) as node,
        CorralWorker(node_id=WORKER_ID, model_url=fake_model.url, env=env) as worker,
    ):
        yield node, worker, database


def sdk(node: CorralServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=node.url, api_key=node.api_key, max_retries=0)


def lease_owner(database: str, session_id: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(database) as conn:
            row = conn.execute("SELECT owner FROM session_leases WHERE session_id = %s", (session_id,)).fetchone()
        if row:
            return str(row[0])
        time.sleep(0.02)
    raise AssertionError("no brain took the session's lease")


def wait_idle(client: anthropic.Anthropic, session_id: str, timeout: float = 20.0) -> list[Any]:
    """The session's events once its turn has ended."""
    deadline = time.monotonic() + timeout
    while True:
        events = all_events(client, session_id)
        if events and events[-1].type == "session.status_idle":
            return events
        assert time.monotonic() < deadline, f"session never went idle: {types_of(events)}"
        time.sleep(0.05)


def wait_for_model_call(fake_model: FakeModel, text: str, timeout: float = 10.0) -> None:
    """Until a model request carrying `text` has arrived (the turn is then in its model call)."""
    deadline = time.monotonic() + timeout
    while not any(text in json.dumps(request) for request in fake_model.requests):
        assert time.monotonic() < deadline, f"no model request carried {text!r}"
        time.sleep(0.01)


def new_session(client: anthropic.Anthropic) -> Any:
    agent = client.beta.agents.create(name="a", model="claude-sonnet-4-6", tools=[{"type": "agent_toolset_20260401"}])
    env = client.beta.environments.create(name=f"env-{os.getpid()}-{time.monotonic_ns()}")
    return client.beta.sessions.create(agent=agent.id, environment_id=env.id)


def test_any_node_serves_any_session(cluster: tuple[CorralServer, CorralServer, str]) -> None:
    first, second, _ = cluster
    session = new_session(sdk(first))

    assert sdk(second).beta.sessions.retrieve(session.id).id == session.id


def test_a_stream_on_one_node_sees_a_turn_run_anywhere(cluster: tuple[CorralServer, CorralServer, str]) -> None:
    first, second, _ = cluster
    session = new_session(sdk(first))

    with LiveEvents(sdk(first), session.id) as live:
        sdk(second).beta.sessions.events.send(session.id, events=[user_message("hello from the other node")])
        seen = live.until_idle()

    assert types_of(seen)[0] == "user.message"
    assert types_of(seen)[-1] == "session.status_idle"
    assert [event.id for event in seen] == [event.id for event in all_events(sdk(second), session.id)]


def test_a_dead_nodes_turn_is_taken_over_by_another_node(
    cluster: tuple[CorralServer, CorralServer, str], fake_model: FakeModel
) -> None:
    first, second, database = cluster
    session = new_session(sdk(first))
    fake_model.script({"text": "never delivered", "delay": 60, "match": "takeover"})
    sdk(first).beta.sessions.events.send(session.id, events=[user_message("takeover")])
    owner = lease_owner(database, session.id)
    victim, survivor = (first, second) if owner.endswith(f":{first.port}") else (second, first)

    with LiveEvents(sdk(survivor), session.id) as live:
        victim.kill()
        fake_model.reset()
        seen = live.until_idle(timeout=30)

    types = types_of(seen)
    assert "session.status_rescheduled" in types
    assert seen[-1].stop_reason.type == "end_turn"
    assert next(event for event in seen if event.type == "agent.message").content[0].text == "echo: takeover"
    history = all_events(sdk(survivor), session.id)
    assert len({event.id for event in history}) == len(history)
    assert [event.type for event in history].count("user.message") == 1


def test_a_tool_call_cut_with_its_node_is_answered_by_the_model_on_the_node_that_takes_over(
    cluster: tuple[CorralServer, CorralServer, str], fake_model: FakeModel
) -> None:
    first, second, database = cluster
    session = new_session(sdk(first))
    sdk(first).beta.sessions.events.send(session.id, events=[user_message("bash: touch /workspace/started; sleep 30")])
    owner = lease_owner(database, session.id)
    victim, survivor = (first, second) if owner.endswith(f":{first.port}") else (second, first)
    started = first.data_dir / "workspaces" / session.id / "started"
    deadline = time.monotonic() + 10
    while not started.exists():
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.01)

    with LiveEvents(sdk(survivor), session.id) as live:
        victim.kill()
        fake_model.reset()
        seen = live.until_idle(timeout=30)

    call = next(event for event in all_events(sdk(survivor), session.id) if event.type == "agent.tool_use")
    (request,) = fake_model.requests
    (answer,) = request["body"]["messages"][-1]["content"]
    assert (answer["tool_use_id"], answer["is_error"]) == (call.id, True)
    assert "restarted" in answer["content"][0]["text"]
    assert "session.status_rescheduled" in types_of(seen)
    assert seen[-1].stop_reason.type == "end_turn"


def test_a_turn_survives_a_postgresql_restart(fake_model: FakeModel) -> None:
    database = PostgresServer.start_private()
    try:
        url = database.create_database()
        with CorralServer(model_url=fake_model.url, env={"CORRAL_DATABASE_URL": url}) as node:
            client = sdk(node)
            session = new_session(client)
            fake_model.script({"text": "after the restart", "delay": 2, "match": "restart"})
            with LiveEvents(client, session.id) as live:
                client.beta.sessions.events.send(session.id, events=[user_message("restart")])
                live.until_type("span.model_request_start")
                database.restart("fast")
                seen = live.until_idle(timeout=30)

            history = all_events(client, session.id)
            assert [event.id for event in seen] == [event.id for event in history[len(history) - len(seen) :]]
            assert types_of(history)[-1] == "session.status_idle"
            assert next(event for event in history if event.type == "agent.message").content[0].text == (
                "after the restart"
            )
    finally:
        database.close()


def test_a_worker_beside_a_serve_node_takes_a_share_of_the_turns(
    serve_and_worker: tuple[CorralServer, CorralWorker, str], fake_model: FakeModel
) -> None:
    node, worker, database = serve_and_worker
    client = sdk(node)
    sessions = [new_session(client) for _ in range(8)]
    for n in range(len(sessions)):
        fake_model.script({"text": f"answer {n}", "delay": 2, "match": f"question {n}"})

    for n, session in enumerate(sessions):
        client.beta.sessions.events.send(session.id, events=[user_message(f"question {n}")])
    # While the model holds every turn, each session's lease names the brain running it.
    owners = {session.id: lease_owner(database, session.id) for session in sessions}

    for n, session in enumerate(sessions):
        events = wait_idle(client, session.id)
        assert events[-1].stop_reason.type == "end_turn"
        assert next(event for event in events if event.type == "agent.message").content[0].text == f"answer {n}"
    assert worker.node_id in owners.values()
    assert set(owners.values()) - {worker.node_id}, "the serve node ran none of the turns"


def test_a_dead_workers_turn_is_taken_over_by_the_serve_node(
    serve_and_worker: tuple[CorralServer, CorralWorker, str], fake_model: FakeModel
) -> None:
    node, worker, database = serve_and_worker
    client = sdk(node)
    # Which brain wins a session is a race; send turns that never end until one lands on the worker.
    for attempt in range(20):
        session = new_session(client)
        fake_model.script({"text": "never delivered", "delay": 60, "match": f"takeover {attempt}"})
        client.beta.sessions.events.send(session.id, events=[user_message(f"takeover {attempt}")])
        if lease_owner(database, session.id) == worker.node_id:
            break
    else:
        raise AssertionError("the worker won none of 20 sessions")
    wait_for_model_call(fake_model, f"takeover {attempt}")

    with LiveEvents(client, session.id) as live:
        worker.kill()
        fake_model.reset()
        seen = live.until_idle(timeout=30)

    types = types_of(seen)
    assert "session.status_rescheduled" in types
    assert seen[-1].stop_reason.type == "end_turn"
    assert next(event for event in seen if event.type == "agent.message").content[0].text == f"echo: takeover {attempt}"
    history = all_events(client, session.id)
    assert len({event.id for event in history}) == len(history)
    assert [event.type for event in history].count("user.message") == 1
