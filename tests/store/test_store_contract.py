"""Every storage adapter honours the `Store` contract: event log order, derived session state, listings,
scoping, leases. Each test runs once per adapter (SQLite, PostgreSQL, in-memory; see tests/store/conftest.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from corral.session.records import (
    AgentRecord,
    ApiKeyRecord,
    EnvironmentRecord,
    EventRecord,
    NewEvent,
    Page,
    SessionRecord,
    TimeBounds,
)
from corral.session.state import empty_usage
from corral.session.store import Store
from tests.store.conftest import StoreOpener, ts

WS = "ws_main"
OTHER_WS = "ws_other"


def session_record(
    session_id: str,
    *,
    workspace_id: str = WS,
    created: float = 0,
    agent_id: str = "agent_1",
    status: str = "idle",
) -> SessionRecord:
    return SessionRecord(
        id=session_id,
        workspace_id=workspace_id,
        agent_id=agent_id,
        agent_version=1,
        environment_id="env_1",
        body={"title": session_id, "metadata": {}},
        status=status,
        usage=empty_usage(),
        active_seconds=0.0,
        running_since=None,
        created_at=ts(created),
        updated_at=ts(created),
    )


def agent_record(agent_id: str, version: int = 1, *, workspace_id: str = WS, created: float = 0) -> AgentRecord:
    return AgentRecord(
        id=agent_id,
        workspace_id=workspace_id,
        version=version,
        body={"name": f"{agent_id} v{version}", "model": "claude-test"},
        created_at=ts(created),
        updated_at=ts(created + version),
    )


def environment_record(
    environment_id: str, name: str, *, workspace_id: str = WS, created: float = 0
) -> EnvironmentRecord:
    return EnvironmentRecord(
        id=environment_id,
        workspace_id=workspace_id,
        name=name,
        body={"name": name, "config": {"type": "cloud"}},
        created_at=ts(created),
        updated_at=ts(created),
    )


def message(event_id: str, text: str = "hi") -> NewEvent:
    return NewEvent(id=event_id, type="user.message", body={"content": [{"type": "text", "text": text}]})


def note(event_id: str) -> NewEvent:
    return NewEvent(id=event_id, type="agent.message", body={"content": [{"type": "text", "text": event_id}]})


def ids(items: list[Any]) -> list[str]:
    return [item.id for item in items]


async def list_events(store: Store, session_id: str = "sess_1", **kwargs: Any) -> Page:
    options: dict[str, Any] = {"types": [], "processed": TimeBounds(), "order": "asc", "limit": 100, "cursor": None}
    options.update(kwargs)
    return await store.list_events(session_id, **options)


async def list_sessions(store: Store, workspace_id: str = WS, **kwargs: Any) -> Page:
    options: dict[str, Any] = {
        "agent_id": None,
        "agent_version": None,
        "statuses": [],
        "include_archived": False,
        "created": TimeBounds(),
        "order": "desc",
        "limit": 100,
        "cursor": None,
    }
    options.update(kwargs)
    return await store.list_sessions(workspace_id, **options)


async def walk(fetch: Callable[[dict[str, Any] | None], Any]) -> list[Page]:
    pages: list[Page] = []
    cursor = None
    while True:
        page = await fetch(cursor)
        pages.append(page)
        cursor = page.next_cursor
        if cursor is None:
            return pages
        assert len(pages) < 50, "paging does not terminate"


@pytest.fixture
async def session(store: Store) -> str:
    await store.insert_session(session_record("sess_1"))
    return "sess_1"


# --- the event log -----------------------------------------------------------------------------------


async def test_append_events_assigns_consecutive_positions_across_appends(store: Store, session: str) -> None:
    first = await store.append_events(session, [message("e1"), note("e2")])
    second = await store.append_events(session, [note("e3")])

    assert [record.position for record in first + second] == [1, 2, 3]


async def test_append_events_sets_processed_at_on_every_event(store: Store, session: str) -> None:
    records = await store.append_events(session, [message("e1"), note("e2")])

    assert all(record.processed_at for record in records)
    assert records[0].processed_at <= records[1].processed_at  # type: ignore[operator]


async def test_append_events_with_a_session_body_stores_it_updated_when_the_event_was_processed(
    store: Store, session: str
) -> None:
    [record] = await store.append_events(
        session, [NewEvent("e1", "session.updated", {"title": "renamed"})], session_body={"title": "renamed"}
    )

    stored = await store.get_session(WS, session)
    assert stored is not None
    assert (stored.body, stored.updated_at) == ({"title": "renamed"}, record.processed_at)


async def test_appended_events_become_wire_dicts_with_type_id_body_and_processed_at(store: Store, session: str) -> None:
    [record] = await store.append_events(session, [message("e1", "hello")])

    assert record.to_wire() == {
        "type": "user.message",
        "id": "e1",
        "content": [{"type": "text", "text": "hello"}],
        "processed_at": record.processed_at,
    }


async def test_listed_events_equal_what_append_returned(store: Store, session: str) -> None:
    appended = await store.append_events(session, [message("e1"), note("e2")])

    page = await list_events(store)

    assert [record.to_wire() for record in page.items] == [record.to_wire() for record in appended]


async def test_enqueued_events_have_no_position_or_processed_at(store: Store, session: str) -> None:
    queued = await store.enqueue_events(session, [message("q1")])
    stored = await store.find_event(session, "q1")

    assert (queued[0].position, queued[0].processed_at) == (None, None)
    assert stored is not None and (stored.position, stored.processed_at) == (None, None)


async def test_enqueued_events_are_not_listed_until_processed(store: Store, session: str) -> None:
    await store.append_events(session, [note("e1")])
    await store.enqueue_events(session, [message("q1")])

    assert ids((await list_events(store)).items) == ["e1"]


async def test_queued_events_come_back_in_send_order(store: Store, session: str) -> None:
    await store.enqueue_events(session, [message("q1"), message("q2")])
    await store.enqueue_events(session, [message("q3")])

    assert ids(await store.queued_events(session)) == ["q1", "q2", "q3"]


async def test_mark_processed_removes_the_event_from_the_queue(store: Store, session: str) -> None:
    await store.enqueue_events(session, [message("q1"), message("q2"), message("q3")])

    await store.mark_processed(session, "q2")

    assert ids(await store.queued_events(session)) == ["q1", "q3"]


async def test_a_queued_event_processed_after_later_appends_is_listed_after_them(store: Store, session: str) -> None:
    await store.enqueue_events(session, [message("q1")])
    await store.append_events(session, [note("e1"), note("e2")])

    processed = await store.mark_processed(session, "q1")

    assert processed.position == 3
    assert processed.processed_at is not None
    assert ids((await list_events(store)).items) == ["e1", "e2", "q1"]


async def test_mark_processed_of_an_event_that_is_not_queued_raises_lookup_error(store: Store, session: str) -> None:
    await store.append_events(session, [note("e1")])

    with pytest.raises(LookupError):
        await store.mark_processed(session, "e1")


# --- derived session state ---------------------------------------------------------------------------


async def test_status_follows_appended_status_events(store: Store, session: str) -> None:
    [running] = await store.append_events(session, [NewEvent("s1", "session.status_running")])
    during = await store.get_session(WS, session)
    await store.append_events(session, [NewEvent("s2", "session.status_idle")])
    after = await store.get_session(WS, session)

    assert during is not None and (during.status, during.running_since) == ("running", running.processed_at)
    assert after is not None and (after.status, after.running_since) == ("idle", None)


async def test_a_queued_status_event_changes_status_only_when_processed(store: Store, session: str) -> None:
    await store.enqueue_events(session, [NewEvent("s1", "session.status_terminated")])
    before = await store.get_session(WS, session)
    await store.mark_processed(session, "s1")
    after = await store.get_session(WS, session)

    assert before is not None and before.status == "idle"
    assert after is not None and after.status == "terminated"


async def test_active_seconds_add_up_the_time_between_running_and_idle(store: Store, session: str) -> None:
    [run1] = await store.append_events(session, [NewEvent("s1", "session.status_running")])
    [idle1] = await store.append_events(session, [NewEvent("s2", "session.status_idle")])
    [run2] = await store.append_events(session, [NewEvent("s3", "session.status_running")])
    [idle2] = await store.append_events(session, [NewEvent("s4", "session.status_idle")])

    def seconds(start: EventRecord, end: EventRecord) -> float:
        assert start.processed_at and end.processed_at
        return (datetime.fromisoformat(end.processed_at) - datetime.fromisoformat(start.processed_at)).total_seconds()

    stored = await store.get_session(WS, session)
    expected = seconds(run1, idle1) + seconds(run2, idle2)
    assert expected > 0
    assert stored is not None and stored.active_seconds == pytest.approx(expected)


async def test_usage_sums_model_usage_of_model_request_end_spans(store: Store, session: str) -> None:
    usage = {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_input_tokens": 2,
        "cache_creation_input_tokens": 3,
    }
    await store.append_events(
        session,
        [
            NewEvent("m1", "span.model_request_end", {"model_usage": usage}),
            NewEvent("m2", "span.model_request_end", {"model_usage": {"input_tokens": 1, "output_tokens": 1}}),
            NewEvent("m3", "span.model_request_start", {"model_usage": {"input_tokens": 100}}),
        ],
    )

    stored = await store.get_session(WS, session)

    assert stored is not None
    assert stored.usage["input_tokens"] == 11
    assert stored.usage["output_tokens"] == 6
    assert stored.usage["cache_read_input_tokens"] == 2
    assert stored.usage["cache_creation"]["ephemeral_5m_input_tokens"] == 3


# --- listing events ----------------------------------------------------------------------------------


async def test_list_events_filters_by_type(store: Store, session: str) -> None:
    await store.append_events(session, [message("u1"), note("a1"), message("u2")])

    page = await list_events(store, types=["user.message"])

    assert ids(page.items) == ["u1", "u2"]


async def test_list_events_desc_returns_newest_first(store: Store, session: str) -> None:
    await store.append_events(session, [note("e1"), note("e2"), note("e3")])

    page = await list_events(store, order="desc")

    assert ids(page.items) == ["e3", "e2", "e1"]


async def test_list_events_only_lists_the_sessions_own_events(store: Store, session: str) -> None:
    await store.insert_session(session_record("sess_2"))
    await store.append_events(session, [note("e1")])
    await store.append_events("sess_2", [note("x1")])

    assert ids((await list_events(store, "sess_2")).items) == ["x1"]


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_list_events_pages_cover_the_log_with_no_gap_or_duplicate(store: Store, session: str, order: str) -> None:
    await store.append_events(session, [note(f"e{n}") for n in range(7)])
    everything = ids((await list_events(store, order=order)).items)

    pages = await walk(lambda cursor: list_events(store, order=order, limit=3, cursor=cursor))

    assert [len(page.items) for page in pages] == [3, 3, 1]
    assert [event_id for page in pages for event_id in ids(page.items)] == everything


async def test_list_events_has_no_next_cursor_when_the_page_ends_exactly_at_the_last_event(
    store: Store, session: str
) -> None:
    await store.append_events(session, [note("e1"), note("e2")])

    page = await list_events(store, limit=2)

    assert ids(page.items) == ["e1", "e2"]
    assert page.next_cursor is None


async def test_list_events_pages_with_a_type_filter_skip_other_types(store: Store, session: str) -> None:
    await store.append_events(session, [message("u1"), note("a1"), message("u2"), note("a2"), message("u3")])

    pages = await walk(lambda cursor: list_events(store, types=["user.message"], limit=2, cursor=cursor))

    assert [ids(page.items) for page in pages] == [["u1", "u2"], ["u3"]]


async def test_list_events_honours_processed_time_bounds(store: Store, session: str) -> None:
    records = await store.append_events(session, [note(f"e{n}") for n in range(5)])
    stamps = [record.processed_at for record in records]

    inclusive = await list_events(store, processed=TimeBounds(gte=stamps[1], lte=stamps[3]))
    exclusive = await list_events(store, processed=TimeBounds(gt=stamps[1], lt=stamps[3]))

    assert ids(inclusive.items) == ["e1", "e2", "e3"]
    assert ids(exclusive.items) == ["e2"]


# --- agents ------------------------------------------------------------------------------------------


async def test_add_agent_version_succeeds_when_the_expected_version_is_current(store: Store) -> None:
    await store.insert_agent(agent_record("agent_1", 1))

    assert await store.add_agent_version(agent_record("agent_1", 2), expected_version=1) is True
    latest = await store.get_agent(WS, "agent_1")
    assert latest is not None and (latest.version, latest.body["name"]) == (2, "agent_1 v2")


async def test_add_agent_version_with_a_stale_expected_version_returns_false_and_changes_nothing(
    store: Store,
) -> None:
    await store.insert_agent(agent_record("agent_1", 1))
    await store.add_agent_version(agent_record("agent_1", 2), expected_version=1)

    stale = AgentRecord(**{**agent_record("agent_1", 2).__dict__, "body": {"name": "lost update"}})
    assert await store.add_agent_version(stale, expected_version=1) is False
    latest = await store.get_agent(WS, "agent_1")
    assert latest is not None and latest.body["name"] == "agent_1 v2"


async def test_get_agent_with_a_version_returns_that_version(store: Store) -> None:
    await store.insert_agent(agent_record("agent_1", 1))
    await store.add_agent_version(agent_record("agent_1", 2), expected_version=1)

    first = await store.get_agent(WS, "agent_1", version=1)
    missing = await store.get_agent(WS, "agent_1", version=3)

    assert first is not None and (first.version, first.body["name"]) == (1, "agent_1 v1")
    assert missing is None


async def test_list_agent_versions_lists_newest_first(store: Store) -> None:
    await store.insert_agent(agent_record("agent_1", 1))
    for version in (2, 3):
        await store.add_agent_version(agent_record("agent_1", version), expected_version=version - 1)

    page = await store.list_agent_versions(WS, "agent_1", limit=10, cursor=None)

    assert [agent.version for agent in page.items] == [3, 2, 1]


async def test_list_agent_versions_pages_without_gap_or_duplicate(store: Store) -> None:
    await store.insert_agent(agent_record("agent_1", 1))
    for version in (2, 3, 4, 5):
        await store.add_agent_version(agent_record("agent_1", version), expected_version=version - 1)

    pages = await walk(lambda cursor: store.list_agent_versions(WS, "agent_1", limit=2, cursor=cursor))

    assert [[agent.version for agent in page.items] for page in pages] == [[5, 4], [3, 2], [1]]


async def test_list_agents_excludes_archived_agents_unless_asked(store: Store) -> None:
    await store.insert_agent(agent_record("agent_1", created=1))
    await store.insert_agent(agent_record("agent_2", created=2))
    await store.archive_agent(WS, "agent_1", ts(10))

    live = await store.list_agents(WS, include_archived=False, created=TimeBounds(), limit=10, cursor=None)
    every = await store.list_agents(WS, include_archived=True, created=TimeBounds(), limit=10, cursor=None)

    assert ids(live.items) == ["agent_2"]
    assert ids(every.items) == ["agent_2", "agent_1"]
    assert every.items[1].archived_at == ts(10)


async def test_list_agents_shows_each_agent_once_at_its_latest_version(store: Store) -> None:
    await store.insert_agent(agent_record("agent_1", 1))
    await store.add_agent_version(agent_record("agent_1", 2), expected_version=1)

    page = await store.list_agents(WS, include_archived=False, created=TimeBounds(), limit=10, cursor=None)

    assert [(agent.id, agent.version) for agent in page.items] == [("agent_1", 2)]


# --- environments ------------------------------------------------------------------------------------


async def test_insert_environment_refuses_a_duplicate_name_in_the_same_workspace(store: Store) -> None:
    assert await store.insert_environment(environment_record("env_1", "dev")) is True

    assert await store.insert_environment(environment_record("env_2", "dev")) is False
    assert await store.get_environment(WS, "env_2") is None


async def test_insert_environment_allows_the_same_name_in_another_workspace(store: Store) -> None:
    await store.insert_environment(environment_record("env_1", "dev"))

    assert await store.insert_environment(environment_record("env_2", "dev", workspace_id=OTHER_WS)) is True


async def test_update_environment_refuses_a_rename_onto_another_environments_name(store: Store) -> None:
    await store.insert_environment(environment_record("env_1", "alpha"))
    await store.insert_environment(environment_record("env_2", "beta"))

    collided = await store.update_environment(environment_record("env_2", "alpha"))

    assert collided is False
    unchanged = await store.get_environment(WS, "env_2")
    assert unchanged is not None and unchanged.name == "beta"


async def test_update_environment_renames_to_a_free_name(store: Store) -> None:
    await store.insert_environment(environment_record("env_1", "alpha"))

    assert await store.update_environment(environment_record("env_1", "gamma")) is True
    renamed = await store.get_environment(WS, "env_1")
    assert renamed is not None and renamed.name == "gamma"


# --- sessions ----------------------------------------------------------------------------------------


@pytest.fixture
async def five_sessions(store: Store) -> list[str]:
    # Two share a created_at, so the id breaks the tie.
    for session_id, created in (("sess_a", 1), ("sess_b", 2), ("sess_c", 2), ("sess_d", 3), ("sess_e", 4)):
        await store.insert_session(session_record(session_id, created=created))
    return ["sess_a", "sess_b", "sess_c", "sess_d", "sess_e"]


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_list_sessions_walks_forward_with_next_cursors_and_back_with_prev_cursors(
    store: Store, five_sessions: list[str], order: str
) -> None:
    expected = five_sessions if order == "asc" else five_sessions[::-1]

    forward = await walk(lambda cursor: list_sessions(store, order=order, limit=2, cursor=cursor))
    assert [ids(page.items) for page in forward] == [expected[0:2], expected[2:4], expected[4:]]
    assert forward[0].prev_cursor is None

    backward = [forward[-1]]
    while backward[-1].prev_cursor is not None:
        backward.append(await list_sessions(store, order=order, limit=2, cursor=backward[-1].prev_cursor))
        assert len(backward) < 10, "paging back does not terminate"
    assert [ids(page.items) for page in reversed(backward)] == [ids(page.items) for page in forward]


async def test_list_sessions_next_cursor_of_a_page_reached_backwards_leads_forward_again(
    store: Store, five_sessions: list[str]
) -> None:
    forward = await walk(lambda cursor: list_sessions(store, limit=2, cursor=cursor))
    back = await list_sessions(store, limit=2, cursor=forward[-1].prev_cursor)

    again = await list_sessions(store, limit=2, cursor=back.next_cursor)

    assert ids(again.items) == ids(forward[-1].items)


async def test_list_sessions_filters_by_status(store: Store) -> None:
    for session_id in ("sess_a", "sess_b", "sess_c"):
        await store.insert_session(session_record(session_id))
    await store.append_events("sess_b", [NewEvent("s1", "session.status_running")])
    await store.append_events("sess_c", [NewEvent("s2", "session.status_terminated")])

    page = await list_sessions(store, statuses=["running", "terminated"], order="asc")

    assert ids(page.items) == ["sess_b", "sess_c"]


async def test_count_sessions_counts_the_workspaces_sessions_in_the_statuses_archived_too(store: Store) -> None:
    for session_id in ("sess_a", "sess_b", "sess_c", "sess_d"):
        await store.insert_session(session_record(session_id))
    await store.insert_session(session_record("sess_other", workspace_id=OTHER_WS))
    for session_id in ("sess_a", "sess_b", "sess_c", "sess_other"):
        await store.append_events(session_id, [NewEvent(f"run_{session_id}", "session.status_running")])
    await store.append_events("sess_c", [NewEvent("resched", "session.status_rescheduled")])
    await store.archive_session("sess_b", ts(5))

    found = await store.count_sessions(WS, ["running", "rescheduling"], excluding="sess_none", up_to=10)

    assert found == 3


async def test_count_sessions_leaves_out_the_excluded_session(store: Store) -> None:
    for session_id in ("sess_a", "sess_b"):
        await store.insert_session(session_record(session_id))
        await store.append_events(session_id, [NewEvent(f"run_{session_id}", "session.status_running")])

    assert await store.count_sessions(WS, ["running"], excluding="sess_a", up_to=10) == 1


async def test_count_sessions_stops_counting_at_up_to(store: Store) -> None:
    for session_id in ("sess_a", "sess_b", "sess_c"):
        await store.insert_session(session_record(session_id))
        await store.append_events(session_id, [NewEvent(f"run_{session_id}", "session.status_running")])

    assert await store.count_sessions(WS, ["running"], excluding="sess_none", up_to=2) == 2


async def test_list_sessions_filters_by_agent_id(store: Store) -> None:
    await store.insert_session(session_record("sess_a", agent_id="agent_1", created=1))
    await store.insert_session(session_record("sess_b", agent_id="agent_2", created=2))
    await store.insert_session(session_record("sess_c", agent_id="agent_1", created=3))

    page = await list_sessions(store, agent_id="agent_1", order="asc")

    assert ids(page.items) == ["sess_a", "sess_c"]


async def test_list_sessions_only_lists_the_workspaces_sessions(store: Store) -> None:
    await store.insert_session(session_record("sess_a"))
    await store.insert_session(session_record("sess_b", workspace_id=OTHER_WS))

    assert ids((await list_sessions(store)).items) == ["sess_a"]


async def test_get_session_without_a_workspace_finds_a_session_of_any_workspace(store: Store) -> None:
    await store.insert_session(session_record("sess_a", workspace_id=OTHER_WS))

    found = await store.get_session(None, "sess_a")

    assert found is not None and found.workspace_id == OTHER_WS


async def test_delete_session_removes_the_session_and_its_events(store: Store, session: str) -> None:
    await store.insert_session(session_record("sess_2"))
    await store.append_events(session, [note("e1")])
    await store.enqueue_events(session, [message("q1")])
    await store.append_events("sess_2", [note("x1")])

    await store.delete_session(session)

    assert await store.get_session(WS, session) is None
    assert await store.find_event(session, "e1") is None
    assert await store.queued_events(session) == []
    assert ids((await list_events(store, "sess_2")).items) == ["x1"]


async def test_sessions_with_work_lists_queued_events_turns_left_running_and_messages_no_turn_took(
    store: Store,
) -> None:
    for session_id in ("sess_queued", "sess_running", "sess_idle", "sess_done", "sess_orphan"):
        await store.insert_session(session_record(session_id))
    await store.enqueue_events("sess_queued", [message("q1")])
    await store.append_events("sess_running", [NewEvent("s1", "session.status_running")])
    await store.append_events("sess_idle", [NewEvent("s2", "session.status_running")])
    await store.append_events("sess_idle", [NewEvent("s3", "session.status_idle")])
    await store.enqueue_events("sess_done", [message("q2")])
    await store.mark_processed("sess_done", "q2")
    await store.append_events(
        "sess_done", [NewEvent("s4", "session.status_running"), NewEvent("s5", "session.status_idle")]
    )
    # A brain died between taking the message and starting its turn.
    await store.enqueue_events("sess_orphan", [message("q3")])
    await store.mark_processed("sess_orphan", "q3")

    assert sorted(await store.sessions_with_work("node-a")) == ["sess_orphan", "sess_queued", "sess_running"]


# --- workspace scoping -------------------------------------------------------------------------------


async def test_get_session_from_another_workspace_is_not_found(store: Store, session: str) -> None:
    assert await store.get_session(OTHER_WS, session) is None


async def test_get_agent_from_another_workspace_is_not_found(store: Store) -> None:
    await store.insert_agent(agent_record("agent_1"))

    assert await store.get_agent(OTHER_WS, "agent_1") is None
    assert await store.get_agent(OTHER_WS, "agent_1", version=1) is None


async def test_get_environment_from_another_workspace_is_not_found(store: Store) -> None:
    await store.insert_environment(environment_record("env_1", "dev"))

    assert await store.get_environment(OTHER_WS, "env_1") is None


# --- API keys ----------------------------------------------------------------------------------------


@pytest.fixture
async def api_key(store: Store) -> ApiKeyRecord:
    await store.create_workspace(WS, "main")
    key = ApiKeyRecord(id="key_1", workspace_id=WS, hint="sk-...abcd", created_at=ts(0))
    await store.add_api_key(key, "hash-1")
    return key


async def test_find_api_key_finds_a_key_by_its_hash(store: Store, api_key: ApiKeyRecord) -> None:
    assert await store.find_api_key("hash-1") == api_key
    assert await store.find_api_key("hash-2") is None


async def test_a_revoked_api_key_is_no_longer_found(store: Store, api_key: ApiKeyRecord) -> None:
    assert await store.revoke_api_key(api_key.id) is True

    assert await store.find_api_key("hash-1") is None
    [listed] = await store.list_api_keys()
    assert listed.revoked_at is not None


async def test_revoking_a_key_twice_reports_false_the_second_time(store: Store, api_key: ApiKeyRecord) -> None:
    await store.revoke_api_key(api_key.id)

    assert await store.revoke_api_key(api_key.id) is False


async def test_live_api_key_ids_leaves_out_revoked_and_unknown_keys(store: Store, api_key: ApiKeyRecord) -> None:
    second = ApiKeyRecord(id="key_2", workspace_id=WS, hint="sk-...efgh", created_at=ts(1))
    await store.add_api_key(second, "hash-2")
    await store.revoke_api_key(second.id)

    assert await store.live_api_key_ids([api_key.id, second.id, "key_unknown"]) == {api_key.id}
    assert await store.live_api_key_ids([]) == set()


# --- concurrency -------------------------------------------------------------------------------------


async def test_concurrent_appends_to_one_session_get_distinct_consecutive_positions(store: Store, session: str) -> None:
    batches = await asyncio.gather(*(store.append_events(session, [note(f"e{n}a"), note(f"e{n}b")]) for n in range(10)))

    positions = sorted(record.position for batch in batches for record in batch if record.position is not None)
    assert positions == list(range(1, 21))
    for batch in batches:
        assert [record.position for record in batch][1] == batch[0].position + 1  # type: ignore[operator]
    assert await store.last_position(session) == 20


async def test_concurrent_appends_keep_the_derived_state_of_every_event(store: Store, session: str) -> None:
    spans = [
        NewEvent(f"m{n}", "span.model_request_end", {"model_usage": {"input_tokens": 1, "output_tokens": 2}})
        for n in range(10)
    ]

    await asyncio.gather(*(store.append_events(session, [span]) for span in spans))

    stored = await store.get_session(WS, session)
    assert stored is not None and (stored.usage["input_tokens"], stored.usage["output_tokens"]) == (10, 20)


async def test_appending_to_a_missing_session_raises_lookup_error_and_stores_nothing(store: Store) -> None:
    with pytest.raises(LookupError):
        await store.append_events("sess_missing", [note("e1")])

    assert await store.find_event("sess_missing", "e1") is None


# --- reading the log as streams do -------------------------------------------------------------------


async def test_last_position_is_the_newest_processed_events_position(store: Store, session: str) -> None:
    assert await store.last_position(session) == 0
    await store.append_events(session, [note("e1"), note("e2")])
    await store.enqueue_events(session, [message("q1")])

    assert await store.last_position(session) == 2
    assert await store.last_position("sess_missing") == 0


async def test_events_after_returns_processed_events_after_a_position_in_order(store: Store, session: str) -> None:
    await store.append_events(session, [note(f"e{n}") for n in range(1, 6)])
    await store.enqueue_events(session, [message("q1")])

    assert ids(await store.events_after(session, 2, limit=2)) == ["e3", "e4"]
    assert ids(await store.events_after(session, 4, limit=10)) == ["e5"]
    assert await store.events_after(session, 5, limit=10) == []


async def test_conversation_events_returns_the_given_types_after_a_position(store: Store, session: str) -> None:
    await store.append_events(session, [message("u1"), note("a1"), NewEvent("s1", "session.status_idle")])
    await store.append_events(session, [message("u2")])

    assert ids(await store.conversation_events(session, ("user.message", "agent.message"))) == ["u1", "a1", "u2"]
    assert ids(await store.conversation_events(session, ("user.message",), after_position=1)) == ["u2"]


# --- leases ------------------------------------------------------------------------------------------


async def test_a_lease_is_refused_to_another_owner_while_it_is_live(store: Store, session: str) -> None:
    assert await store.acquire_lease(session, "node-a", 60) is True

    assert await store.acquire_lease(session, "node-b", 60) is False


async def test_the_owner_of_a_lease_renews_it(store: Store, session: str) -> None:
    await store.acquire_lease(session, "node-a", 60)

    assert await store.acquire_lease(session, "node-a", 60) is True


async def test_a_released_lease_can_be_taken_by_another_owner(store: Store, session: str) -> None:
    await store.acquire_lease(session, "node-a", 60)

    await store.release_lease(session, "node-a")

    assert await store.acquire_lease(session, "node-b", 60) is True


async def test_releasing_another_owners_lease_changes_nothing(store: Store, session: str) -> None:
    await store.acquire_lease(session, "node-a", 60)

    await store.release_lease(session, "node-b")

    assert await store.acquire_lease(session, "node-b", 60) is False


async def test_an_expired_lease_can_be_taken_by_another_owner(store: Store, session: str) -> None:
    await store.acquire_lease(session, "node-a", 0)

    assert await store.acquire_lease(session, "node-b", 60) is True
    assert await store.acquire_lease(session, "node-a", 60) is False


async def test_sessions_with_work_leaves_out_sessions_another_owner_holds_a_live_lease_on(store: Store) -> None:
    for session_id in ("sess_free", "sess_mine", "sess_theirs", "sess_expired"):
        await store.insert_session(session_record(session_id))
        await store.enqueue_events(session_id, [message(f"q_{session_id}")])
    await store.acquire_lease("sess_mine", "node-a", 60)
    await store.acquire_lease("sess_theirs", "node-b", 60)
    await store.acquire_lease("sess_expired", "node-b", 0)

    assert sorted(await store.sessions_with_work("node-a")) == ["sess_expired", "sess_free", "sess_mine"]


async def test_delete_session_removes_its_lease(store: Store, session: str) -> None:
    await store.acquire_lease(session, "node-a", 60)

    await store.delete_session(session)
    await store.insert_session(session_record(session))

    assert await store.acquire_lease(session, "node-b", 60) is True


# --- durability and sharing --------------------------------------------------------------------------


async def test_a_new_store_on_the_same_database_sees_everything_written_before(open_store: StoreOpener) -> None:
    first = await open_store()
    await first.create_workspace(WS, "main")
    key = ApiKeyRecord(id="key_1", workspace_id=WS, hint="sk-...abcd", created_at=ts(0))
    await first.add_api_key(key, "hash-1")
    await first.insert_agent(agent_record("agent_1", 1))
    await first.add_agent_version(agent_record("agent_1", 2), expected_version=1)
    await first.insert_environment(environment_record("env_1", "dev"))
    await first.insert_session(session_record("sess_1"))
    appended = await first.append_events("sess_1", [NewEvent("s1", "session.status_running"), note("e1")])
    await first.enqueue_events("sess_1", [message("q1")])
    session_before = await first.get_session(WS, "sess_1")
    await first.close()

    second = await open_store()
    try:
        assert await second.find_api_key("hash-1") == key
        agent = await second.get_agent(WS, "agent_1")
        assert agent is not None and agent.version == 2
        assert await second.get_agent(WS, "agent_1", version=1) is not None
        assert await second.get_environment(WS, "env_1") is not None
        assert await second.get_session(WS, "sess_1") == session_before
        listed = await list_events(second)
        assert [record.to_wire() for record in listed.items] == [record.to_wire() for record in appended]
        assert ids(await second.queued_events("sess_1")) == ["q1"]
        [next_event] = await second.append_events("sess_1", [note("e2")])
        assert next_event.position == 3
    finally:
        await second.close()


async def test_two_stores_on_one_database_append_to_one_log_without_clashing(
    open_store: StoreOpener, store: Store, session: str
) -> None:
    other = await open_store()
    try:
        mine, theirs = await asyncio.gather(
            store.append_events(session, [note(f"a{n}") for n in range(5)]),
            other.append_events(session, [note(f"b{n}") for n in range(5)]),
        )
    finally:
        await other.close()

    listed = (await list_events(store)).items
    assert sorted(ids(listed)) == sorted(ids(mine) + ids(theirs))
    assert [record.position for record in listed] == list(range(1, 11))
