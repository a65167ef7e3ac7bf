"""The web console in headless Chromium (Debian's `chromium`, driven by Playwright without its own browser).

Set CORRAL_CONSOLE_SCREENSHOT=PATH to also save the session page's screenshot there (docs/console.png is one).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import pytest

from tests.support.server import CorralServer

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium as root on a closed network: no sandbox (root), nothing that phones home (refused connections).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 20_000

if not Path(CHROMIUM).exists():  # scripts/setup installs it (as root)
    pytest.skip("Debian's chromium is not installed (scripts/setup installs it as root)", allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    opened.set_default_timeout(WAIT_MS)
    yield opened
    context.close()


def _sign_in(page: Page, server: CorralServer, key: str) -> None:
    page.goto(f"{server.url}/console/")
    page.fill("#api-key", key)
    page.click("button[type=submit]")
    expect(page.locator("#nav")).to_be_visible()


def test_the_console_is_served_without_a_key_but_its_api_calls_need_one(server: CorralServer) -> None:
    assert httpx.get(f"{server.url}/console/").status_code == 200
    assert httpx.get(f"{server.url}/console/console.js").status_code == 200
    assert httpx.get(f"{server.url}/console", follow_redirects=False).status_code in (301, 302, 307)
    assert httpx.get(f"{server.url}/v1/sessions").status_code == 401


def test_a_wrong_key_is_refused_at_sign_in(page: Page, server: CorralServer) -> None:
    page.goto(f"{server.url}/console/")
    page.fill("#api-key", "sk-corral-wrong")
    page.click("button[type=submit]")

    expect(page.locator(".notice")).to_contain_text("rejected")
    expect(page.locator("#nav")).to_be_hidden()


def test_sign_in_open_a_session_send_a_message_and_see_the_streamed_reply(
    page: Page, server: CorralServer, api_key: str, client: anthropic.Anthropic, tmp_path: Path
) -> None:
    agent = client.beta.agents.create(
        name="Console agent", model="claude-sonnet-4-6", tools=[{"type": "agent_toolset_20260401"}]
    )
    environment = client.beta.environments.create(name="console-env")
    session = client.beta.sessions.create(agent=agent.id, environment_id=environment.id, title="Console demo")

    _sign_in(page, server, api_key)
    page.click(f"tr[data-id='{session.id}']")
    expect(page.locator(".session-head h1")).to_have_text("Console demo")
    page.fill("#message", "bash: echo hello from the console")
    page.click("#send")

    log = page.locator("#event-log")
    expect(log.locator(".msg.user")).to_contain_text("bash: echo hello from the console")
    expect(log.locator(".tool")).to_contain_text("echo hello from the console")  # the call's input
    expect(log.locator(".tool .result pre")).to_have_text("hello from the console")  # its output
    expect(log.locator(".msg.agent").last).to_contain_text("done: hello from the console")
    expect(log.locator(".status-line").last).to_have_text("idle · end_turn")
    expect(page.locator(".session-head .badge")).to_have_text("idle")

    page.fill("#message", "and a plain message")
    page.click("#send")
    expect(log.locator(".msg.agent").last).to_contain_text("echo: and a plain message")
    expect(page.locator(".facts")).not_to_contain_text("0 in / 0 out")

    shot = tmp_path / "console.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("CORRAL_CONSOLE_SCREENSHOT"):
        shutil.copy(shot, os.environ["CORRAL_CONSOLE_SCREENSHOT"])


def test_interrupt_stops_a_running_turn(
    page: Page, server: CorralServer, api_key: str, client: anthropic.Anthropic, fake_model: object
) -> None:
    fake_model.script({"match": "take your time", "delay": 30, "text": "too late"})  # type: ignore[attr-defined]
    agent = client.beta.agents.create(name="slow", model="claude-sonnet-4-6")
    environment = client.beta.environments.create(name="slow-env")
    session = client.beta.sessions.create(agent=agent.id, environment_id=environment.id)

    _sign_in(page, server, api_key)
    page.goto(f"{server.url}/console/#/sessions/{session.id}")
    page.fill("#message", "take your time")
    page.click("#send")
    expect(page.locator(".session-head .badge")).to_have_text("running")
    page.click("#interrupt")

    expect(page.locator("#event-log .status-line").last).to_have_text("idle · end_turn")
    expect(page.locator("#event-log")).to_contain_text("interrupted")


def test_the_sessions_list_shows_status_and_usage(
    page: Page, server: CorralServer, api_key: str, client: anthropic.Anthropic
) -> None:
    agent = client.beta.agents.create(name="listed", model="claude-sonnet-4-6")
    environment = client.beta.environments.create(name="listed-env")
    session = client.beta.sessions.create(agent=agent.id, environment_id=environment.id, title="Listed")

    _sign_in(page, server, api_key)

    row = page.locator(f"tr[data-id='{session.id}']")
    expect(row).to_contain_text("Listed")
    expect(row.locator(".badge")).to_have_text("idle")
    expect(row).to_contain_text("0 in / 0 out")


def test_the_agents_page_shows_every_version_and_the_environments_page_the_networking(
    page: Page, server: CorralServer, api_key: str, client: anthropic.Anthropic
) -> None:
    agent = client.beta.agents.create(name="Versioned agent", model="claude-sonnet-4-6", system="first")
    client.beta.agents.update(agent.id, version=1, system="second")
    client.beta.environments.create(
        name="open-env", config={"type": "cloud", "networking": {"type": "limited", "allowed_hosts": ["pypi.org"]}}
    )

    _sign_in(page, server, api_key)
    page.click("a[data-section=agents]")
    page.click("text=Versioned agent")
    versions = page.locator("#versions tbody tr")
    expect(versions).to_have_count(2)
    expect(page.locator(".grid2")).to_contain_text("second")

    page.click("a[data-section=environments]")
    expect(page.locator("#environments")).to_contain_text("limited (pypi.org)")
