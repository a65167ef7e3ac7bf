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
from corral.api import agents, environments, events, operator, sessions, vaults
from corral.api.edge import HttpMetrics, RateLimits
from corral.api.errors import (
    handle_api_error,
    handle_http_exception,
    handle_storage_unavailable,
    handle_unexpected,
)
from corral.api.middleware import PUBLIC_PATHS, RequestContext
from corral.api.openapi import OPENAPI_PATH, serve_openapi
from corral.errors import ApiError
from corral.observability import tracing
from corral.runtime import Runtime
from corral.session.store import StorageUnavailable


async def health(request: Request) -> JSONResponse:
    """Liveness without a key: says the server is up, and nothing about its data."""
    return JSONResponse({"status": "ok", "version": __version__})


def create_app(runtime: Runtime) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tracing.configure(runtime.settings.operations.otlp_endpoint, "corral", runtime.settings.node_id)
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()
            tracing.shutdown()

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/healthz", health, methods=["GET"]),
            Route(OPENAPI_PATH, serve_openapi, methods=["GET"]),
            *agents.routes,
            *environments.routes,
            *sessions.routes,
            *events.routes,
            *vaults.routes,
            *operator.routes(runtime.settings),
        ],
        middleware=[
            Middleware(HttpMetrics),
            Middleware(
                RequestContext,
                store=runtime.store,
                public_paths=PUBLIC_PATHS | {OPENAPI_PATH} | operator.public_paths(runtime.settings),
            ),
            Middleware(RateLimits, operations=runtime.settings.operations),
        ],
        exception_handlers={
            ApiError: handle_api_error,
            StorageUnavailable: handle_storage_unavailable,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    return app
