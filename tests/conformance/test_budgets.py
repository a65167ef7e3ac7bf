"""Session budgets (spec §6.2): a session stops at its list-cost cap, and a raised budget lets it go on."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.support.fake_model import FakeModel
from tests.support.live_events import LiveEvents, all_events, types_of, user_message
from tests.support.server import CorralServer

pytestmark = pytest.mark.slow

# One US dollar per token: any model request costs far more than the small budgets below.
PRICES = [{"match": "claude-*", "input": 1_000_000, "output": 1_000_000}]


@pytest.fixture(scope="module")
def priced_server(fake_model: FakeModel) -> Iterator[CorralServer]:
    with CorralServer(model_url=fake_model.url, env={"CORRAL_MODEL_PRICES": json.dumps(PRICES)}) as server:
        yield server


@pytest.fixture
def client(priced_server: CorralServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=priced_server.url, api_key=priced_server.api_key, max_retries=0)


def budget(cents: int) -> dict[str, Any]:
    return {"type": "limit", "max_list_cost": {"amount": str(cents), "currency": "USD"}}


def new_session(client: anthropic.Anthropic, model: str = "claude-sonnet-4-6", **params: Any) -> Any:
    agent = client.beta.agents.create(name="a", model=model, tools=[{"type": "agent_toolset_20260401"}])
    env = client.beta.environments.create(name=f"budget-{time.monotonic_ns()}")
    return client.beta.sessions.create(agent=agent.id, environment_id=env.id, **params)


def test_a_session_pauses_at_its_budget_before_the_next_model_request(client: anthropic.Anthropic) -> None:
    session = new_session(client, budget=budget(1000))

    with LiveEvents(client, session.id) as live:
        client.beta.sessions.events.send(session.id, events=[user_message("bash: echo hi")])
        seen = live.until_idle()

    assert types_of(seen).count("span.model_request_start") == 1
    assert types_of(seen)[-2:] == ["session.usage", "session.status_idle"]
    assert seen[-1].stop_reason.type == "budget_reached"
    assert int(seen[-2].usage.list_cost.amount) >= 1000
    assert seen[-2].budget.max_list_cost.amount == "1000"


def test_a_message_to_a_session_paused_at_its_budget_is_refused(client: anthropic.Anthropic) -> None:
    session = new_session(client, budget=budget(1))
    with LiveEvents(client, session.id) as live:
        client.beta.sessions.events.send(session.id, events=[user_message("hello")])
        live.until_idle()

    with pytest.raises(anthropic.BadRequestError, match="budget"):
        client.beta.sessions.events.send(session.id, events=[user_message("more")])


def test_raising_the_budget_resumes_the_paused_turn(client: anthropic.Anthropic) -> None:
    session = new_session(client, budget=budget(1000))
    with LiveEvents(client, session.id) as live:
        client.beta.sessions.events.send(session.id, events=[user_message("bash: echo hi")])
        live.until_idle()

    with LiveEvents(client, session.id) as live:
        client.beta.sessions.update(session.id, budget=budget(10**12))
        seen = live.until_idle()

    assert seen[-1].stop_reason.type == "end_turn"
    assert any(event.type == "agent.message" for event in seen)
    assert client.beta.sessions.retrieve(session.id).budget.max_list_cost.amount == str(10**12)


def test_a_budget_needs_a_model_with_a_list_price(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="list price") as raised:
        new_session(client, model="llama-unpriced", budget=budget(100))

    assert raised.value.body["error"]["details"]["error_code"] == "model_not_budgetable"


def test_a_budget_cannot_be_added_after_creation(client: anthropic.Anthropic) -> None:
    session = new_session(client)

    with pytest.raises(anthropic.BadRequestError) as raised:
        client.beta.sessions.update(session.id, budget=budget(100))

    assert raised.value.body["error"]["details"]["error_code"] == "budget_create_only"


def test_a_budget_cannot_be_lowered_to_what_is_spent(client: anthropic.Anthropic) -> None:
    session = new_session(client, budget=budget(10**12))
    with LiveEvents(client, session.id) as live:
        client.beta.sessions.events.send(session.id, events=[user_message("hello")])
        live.until_idle()

    with pytest.raises(anthropic.BadRequestError) as raised:
        client.beta.sessions.update(session.id, budget=budget(1))

    assert raised.value.body["error"]["details"]["error_code"] == "budget_not_raised"


def test_usage_reports_the_list_cost_when_the_model_has_a_price(client: anthropic.Anthropic) -> None:
    session = new_session(client)
    with LiveEvents(client, session.id) as live:
        client.beta.sessions.events.send(session.id, events=[user_message("hello")])
        live.until_idle()

    usage = client.beta.sessions.retrieve(session.id).usage
    assert usage.list_cost is not None
    assert usage.list_cost.currency == "USD"
    assert int(usage.list_cost.amount) == 100 * (usage.input_tokens + usage.output_tokens)
    assert all_events(client, session.id)[-1].type == "session.status_idle"
