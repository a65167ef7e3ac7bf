"""The ASGI application: routes of every resource, the error envelope, request ids and authentication."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from corral import __version__
from corral.api import agents, environments, events, sessions
from corral.api.errors import handle_api_error, handle_http_exception, handle_unexpected
from corral.api.middleware import RequestContext
from corral.errors import ApiError
from corral.runtime import Runtime


async def health(request: Request) -> JSONResponse:
    """Liveness without a key: says the server is up, and nothing about its data."""
    return JSONResponse({"status": "ok", "version": __version__})


def create_app(runtime: Runtime) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.brain.start()
        try:
            yield
        finally:
            runtime.bus.close()
            await runtime.brain.close()
            await runtime.hands.close()
            await runtime.models.close()

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/healthz", health, methods=["GET"]),
            *agents.routes,
            *environments.routes,
            *sessions.routes,
            *events.routes,
        ],
        middleware=[Middleware(RequestContext, store=runtime.store)],
        exception_handlers={
            ApiError: handle_api_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    return app
