"""Network and web tools through a real `corral serve`, driven by the official SDK.

The server is started with CORRAL_EGRESS_ALLOW_ADDRESSES naming a local HTTP server (this machine has no
internet) and CORRAL_SEARXNG_URL pointing at a fake SearXNG endpoint on that same server.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.support.fake_model import FakeModel
from tests.support.live_events import run_turn, user_message
from tests.support.local_web import LocalWeb, Response
from tests.support.server import CorralServer

PAGE = (
    b"<html><head><title>Field notes</title></head><body><article><h1>Field notes</h1>"
    b"<p>The quick brown fox reached the allowed host through the proxy and wrote this paragraph, which is "
    b"long enough for the extractor to keep it as the main content of the page.</p></article></body></html>"
)
SEARCH = {"results": [{"url": "https://example.org/fox", "title": "Fox facts", "content": "Foxes are quick."}]}


@pytest.fixture(scope="module")
def web() -> Iterator[LocalWeb]:
    routes = {
        "/page": Response(PAGE, "text/html; charset=utf-8"),
        "/search": Response(json.dumps(SEARCH).encode(), "application/json"),
    }
    with LocalWeb(routes).running() as running:
        yield running


@pytest.fixture(scope="module")
def networked(fake_model: FakeModel, web: LocalWeb) -> Iterator[CorralServer]:
    env = {"CORRAL_EGRESS_ALLOW_ADDRESSES": web.address, "CORRAL_SEARXNG_URL": f"http://127.0.0.1:{web.port}"}
    with CorralServer(model_url=fake_model.url, env=env) as running:
        yield running


@pytest.fixture
def client(networked: CorralServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=networked.url, api_key=networked.api_key, max_retries=0) as sdk:
        yield sdk


def session_in(client: anthropic.Anthropic, networking: dict[str, Any]) -> Any:
    agent = client.beta.agents.create(
        name="Network test agent", model="claude-sonnet-4-6", tools=[{"type": "agent_toolset_20260401"}]
    )
    environment = client.beta.environments.create(
        name=f"env-{uuid.uuid4().hex[:12]}", config={"type": "cloud", "networking": networking}
    )
    return client.beta.sessions.create(agent=agent.id, environment_id=environment.id)


def tool_result(events: list[Any]) -> Any:
    return next(event for event in events if event.type == "agent.tool_result")


def test_web_fetch_runs_in_the_server_and_returns_the_pages_text(client: anthropic.Anthropic, web: LocalWeb) -> None:
    session = session_in(client, {"type": "limited", "allowed_hosts": []})
    call = json.dumps({"url": f"http://127.0.0.1:{web.port}/page"})
    events = run_turn(client, session.id, [user_message(f"tool: web_fetch {call}")])

    result = tool_result(events)
    assert result.is_error is False
    assert "The quick brown fox" in result.content[0].text


def test_web_search_returns_search_result_blocks(client: anthropic.Anthropic, fake_model: FakeModel) -> None:
    session = session_in(client, {"type": "limited", "allowed_hosts": []})
    events = run_turn(client, session.id, [user_message('tool: web_search {"query": "fox"}')])

    (block,) = tool_result(events).content
    assert block.type == "search_result"
    assert block.source == "https://example.org/fox"
    offered = {tool["name"] for tool in fake_model.requests[-1]["body"]["tools"]}
    assert {"web_fetch", "web_search"} <= offered


def test_bash_reaches_an_allowed_host_through_the_egress_proxy(client: anthropic.Anthropic, web: LocalWeb) -> None:
    session = session_in(client, {"type": "limited", "allowed_hosts": ["127.0.0.1"]})
    events = run_turn(client, session.id, [user_message(f"bash: curl -s http://127.0.0.1:{web.port}/page")])

    assert "The quick brown fox" in tool_result(events).content[0].text


def test_bash_has_no_network_when_the_environment_allows_nothing(client: anthropic.Anthropic, web: LocalWeb) -> None:
    session = session_in(client, {"type": "limited", "allowed_hosts": []})
    events = run_turn(client, session.id, [user_message(f"bash: curl -sS -m 5 http://127.0.0.1:{web.port}/page")])

    result = tool_result(events)
    assert result.is_error is True
    assert "The quick brown fox" not in result.content[0].text
