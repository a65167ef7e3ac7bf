"""What operators reach besides the API: Prometheus metrics at `/metrics` and the web console at `/console`."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from corral.config import Settings
from corral.observability import metrics
from corral.runtime import runtime_of

log = logging.getLogger("corral.api")

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
# A scrape must not hang on a slow database: gauges read from the store keep their last value then.
GAUGE_REFRESH_TIMEOUT = 2.0


async def _refresh_queue_depth(request: Request) -> None:
    runtime = runtime_of(request)
    session_ids = await runtime.store.sessions_with_work(runtime.settings.node_id)
    total = 0
    for session_id in session_ids:
        total += len(await runtime.store.queued_events(session_id))
    metrics.QUEUED_EVENTS.set(total)


async def metrics_endpoint(request: Request) -> Response:
    try:
        await asyncio.wait_for(_refresh_queue_depth(request), GAUGE_REFRESH_TIMEOUT)
    except Exception:
        log.warning("metrics: could not read the queue depth from the store", exc_info=True)
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)


async def console_root(request: Request) -> Response:
    return RedirectResponse("/console/")


def routes(settings: Settings) -> list[BaseRoute]:
    found: list[BaseRoute] = [
        Route("/console", console_root, methods=["GET"]),
        Mount("/console", app=StaticFiles(directory=CONSOLE_DIR, html=True), name="console"),
    ]
    if settings.operations.metrics != "off":
        found.append(Route("/metrics", metrics_endpoint, methods=["GET"]))
    return found


def public_paths(settings: Settings) -> frozenset[str]:
    """Paths besides the health check and the console that need no API key."""
    return frozenset({"/metrics"}) if settings.operations.metrics == "public" else frozenset()
