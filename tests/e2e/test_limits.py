"""Limits at the HTTP edge: per-key rate limits (spec §1.8) and the cap on running sessions per workspace."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest

from corral.api.edge import TokenBucket, limit_of
from tests.e2e.conftest import new_workspace_key
from tests.support.fake_model import FakeModel
from tests.support.server import CorralServer


def _sdk(server: CorralServer, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0)


# --- what counts against which limit (no server) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "limit"),
    [
        ("POST", "/v1/agents", "create"),
        ("POST", "/v1/sessions", "create"),
        ("POST", "/v1/vaults", "create"),
        ("POST", "/v1/agents/agent_1", "other"),
        ("GET", "/v1/sessions", "other"),
        ("POST", "/v1/sessions/sesn_1/events", "other"),
        ("POST", "/v1/environments", "environments"),
        ("GET", "/v1/environments/env_1", "environments"),
        ("GET", "/health", None),
        ("GET", "/metrics", None),
        ("GET", "/console/", None),
    ],
)
def test_each_request_counts_against_the_limit_of_its_kind(method: str, path: str, limit: str | None) -> None:
    assert limit_of(method, path) == limit


def test_a_bucket_allows_its_limit_at_once_then_refills_over_the_minute() -> None:
    bucket = TokenBucket(per_minute=60, tokens=60.0, updated=0.0)

    allowed = [bucket.take(now=0.0) for _ in range(60)]
    over = bucket.take(now=0.0)
    after_a_second = bucket.take(now=1.0)

    assert allowed == [0.0] * 60
    assert over == pytest.approx(1.0)  # seconds until the next token
    assert after_a_second == 0.0


# --- rate limits against a real server -------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_server() -> Iterator[CorralServer]:
    env = {"CORRAL_RATE_LIMIT_ENVIRONMENTS": "2", "CORRAL_RATE_LIMIT_CREATE": "2"}
    with CorralServer(env=env) as running:
        yield running


def test_a_request_over_the_keys_limit_gets_429_rate_limit_error_with_retry_after(
    limited_server: CorralServer,
) -> None:
    sdk = _sdk(limited_server, new_workspace_key(limited_server))
    sdk.beta.environments.create(name="one")
    sdk.beta.environments.create(name="two")

    with pytest.raises(anthropic.RateLimitError) as refused:
        sdk.beta.environments.create(name="three")

    assert refused.value.status_code == 429
    assert refused.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert int(refused.value.response.headers["retry-after"]) >= 1
    assert refused.value.response.headers["request-id"].startswith("req_")


def test_each_api_key_has_its_own_limits(limited_server: CorralServer) -> None:
    first = _sdk(limited_server, new_workspace_key(limited_server))
    for name in ("a", "b"):
        first.beta.environments.create(name=name)
    with pytest.raises(anthropic.RateLimitError):
        first.beta.environments.list()

    second = _sdk(limited_server, new_workspace_key(limited_server))

    assert list(second.beta.environments.list()) == []


def test_the_create_limit_leaves_other_requests_alone(limited_server: CorralServer) -> None:
    sdk = _sdk(limited_server, new_workspace_key(limited_server))
    for name in ("a", "b"):
        sdk.beta.agents.create(name=name, model="claude-sonnet-4-6")
    with pytest.raises(anthropic.RateLimitError):
        sdk.beta.agents.create(name="c", model="claude-sonnet-4-6")

    assert len(list(sdk.beta.agents.list())) == 2


@pytest.mark.slow
def test_the_sdk_waits_for_retry_after_and_then_succeeds() -> None:
    with CorralServer(env={"CORRAL_RATE_LIMIT_ENVIRONMENTS": "60"}) as server:
        sdk = anthropic.Anthropic(base_url=server.url, api_key=new_workspace_key(server), max_retries=2)
        for index in range(60):
            sdk.beta.environments.create(name=f"env-{index}")

        # One token comes back each second; the SDK honours retry-after and tries again.
        created = sdk.beta.environments.create(name="after-the-wait")

    assert created.name == "after-the-wait"


# --- the running-sessions cap ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def capped_server(fake_model: FakeModel) -> Iterator[CorralServer]:
    with CorralServer(model_url=fake_model.url, env={"CORRAL_MAX_RUNNING_SESSIONS": "1"}) as running:
        yield running


def _message(text: str) -> list[dict[str, object]]:
    return [{"type": "user.message", "content": [{"type": "text", "text": text}]}]


@pytest.mark.slow
def test_a_message_that_would_start_one_more_running_session_than_the_cap_gets_429(
    capped_server: CorralServer, fake_model: FakeModel
) -> None:
    sdk = _sdk(capped_server, new_workspace_key(capped_server))
    agent = sdk.beta.agents.create(name="capped", model="claude-sonnet-4-6")
    environment = sdk.beta.environments.create(name="capped")
    busy = sdk.beta.sessions.create(agent=agent.id, environment_id=environment.id)
    waiting = sdk.beta.sessions.create(agent=agent.id, environment_id=environment.id)
    fake_model.script({"match": "hold-the-slot", "delay": 2, "text": "released"})

    with sdk.beta.sessions.events.stream(busy.id) as stream:
        sdk.beta.sessions.events.send(busy.id, events=_message("hold-the-slot"))  # type: ignore[arg-type]
        for event in stream:
            if event.type == "session.status_running":
                break
        with pytest.raises(anthropic.RateLimitError) as refused:
            sdk.beta.sessions.events.send(waiting.id, events=_message("me too"))  # type: ignore[arg-type]
        more_for_the_busy_one = sdk.beta.sessions.events.send(busy.id, events=_message("queued behind"))  # type: ignore[arg-type]
        for event in stream:
            if event.type == "session.status_idle":
                break

    assert "--max-running-sessions 1" in str(refused.value)
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert more_for_the_busy_one.data  # a running session takes more messages: it is already counted
    assert list(sdk.beta.sessions.events.list(waiting.id)) == []


def test_the_cap_counts_each_workspace_on_its_own(capped_server: CorralServer, fake_model: FakeModel) -> None:
    fake_model.script({"match": "hold-the-slot-2", "delay": 2, "text": "released"})
    first = _sdk(capped_server, new_workspace_key(capped_server))
    second = _sdk(capped_server, new_workspace_key(capped_server))
    sessions = []
    for sdk in (first, second):
        agent = sdk.beta.agents.create(name="capped", model="claude-sonnet-4-6")
        environment = sdk.beta.environments.create(name="capped")
        sessions.append(sdk.beta.sessions.create(agent=agent.id, environment_id=environment.id))

    with first.beta.sessions.events.stream(sessions[0].id) as stream:
        first.beta.sessions.events.send(sessions[0].id, events=_message("hold-the-slot-2"))  # type: ignore[arg-type]
        for event in stream:
            if event.type == "session.status_running":
                break
        accepted = second.beta.sessions.events.send(sessions[1].id, events=_message("other workspace"))  # type: ignore[arg-type]

    assert accepted.data


def test_initial_events_count_against_the_cap(capped_server: CorralServer, fake_model: FakeModel) -> None:
    fake_model.script({"match": "hold-the-slot-3", "delay": 2, "text": "released"})
    sdk = _sdk(capped_server, new_workspace_key(capped_server))
    agent = sdk.beta.agents.create(name="capped", model="claude-sonnet-4-6")
    environment = sdk.beta.environments.create(name="capped")
    busy = sdk.beta.sessions.create(agent=agent.id, environment_id=environment.id)
    with sdk.beta.sessions.events.stream(busy.id) as stream:
        sdk.beta.sessions.events.send(busy.id, events=_message("hold-the-slot-3"))  # type: ignore[arg-type]
        for event in stream:
            if event.type == "session.status_running":
                break

        with pytest.raises(anthropic.RateLimitError):
            sdk.beta.sessions.create(
                agent=agent.id,
                environment_id=environment.id,
                initial_events=_message("start right away"),  # type: ignore[arg-type]
            )
        idle_session = sdk.beta.sessions.create(agent=agent.id, environment_id=environment.id)

    assert idle_session.status == "idle"  # a session without a message starts nothing: not capped
