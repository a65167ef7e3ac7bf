"""Fixtures for the operator-facing surfaces: the `corral` client commands, the console, metrics and limits.

One fake model and one `corral serve` are shared by the module's tests; each test gets an API key of its own
workspace, so what one test creates never shows up in another's listings.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anthropic
import pytest
from click.testing import CliRunner, Result

from corral.api.auth import issue_key
from corral.cli.main import main
from corral.session.open_store import open_store
from tests.support.fake_model import FakeModel
from tests.support.server import CORRAL_BIN, CorralServer


@pytest.fixture(scope="module")
def fake_model() -> Iterator[FakeModel]:
    with FakeModel() as model:
        yield model


@pytest.fixture(scope="module")
def server(fake_model: FakeModel) -> Iterator[CorralServer]:
    with CorralServer(model_url=fake_model.url) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_script(request: pytest.FixtureRequest) -> Iterator[None]:
    if "fake_model" not in request.fixturenames:
        yield
        return
    model: FakeModel = request.getfixturevalue("fake_model")
    model.reset()
    yield
    model.reset()


def new_workspace_key(server: CorralServer) -> str:
    """A key of a new workspace of `server`, minted in its database as `corral keys create` does."""

    async def mint() -> str:
        store = await open_store(f"sqlite:///{server.data_dir / 'corral.db'}")
        try:
            return (await issue_key(store)).key
        finally:
            await store.close()

    # On a thread of its own: a test may already run an event loop on this one (Playwright's sync API does).
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(mint())).result()


@pytest.fixture
def api_key(server: CorralServer) -> str:
    return new_workspace_key(server)


@pytest.fixture
def client(server: CorralServer, api_key: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.url, api_key=api_key, max_retries=0) as sdk:
        yield sdk


def corral_cli(
    server_url: str, api_key: str | None, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Runs `corral ARGS` as a fresh process would from a shell, with the server and key in its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "ANTHROPIC_"))}
    env["CORRAL_URL"] = server_url
    if api_key is not None:
        env["CORRAL_API_KEY"] = api_key
    return subprocess.run(
        [str(CORRAL_BIN), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=Path.cwd()
    )


def cli(server: CorralServer, api_key: str | None, *args: str) -> Result:
    """Runs `corral ARGS` in this process (click's runner), against `server` with `api_key`."""
    env = {"CORRAL_URL": server.url, "CORRAL_API_KEY": api_key, "COLUMNS": "200"}
    return CliRunner().invoke(main, list(args), env=env)
