"""Limits and accounting at the HTTP edge: per-key rate limits, the running-sessions cap, request metrics.

Rate limits follow the hosted API's (spec §1.8): each API key may make, per minute, 300 create requests
(`POST /v1/agents`, `/v1/sessions`, `/v1/vaults`), 60 requests to `/v1/environments...`, and 600 of every
other `/v1/` request. Each limit is a token bucket that refills continuously; a request over it is answered
429 `rate_limit_error` with `retry-after` (whole seconds until a token is back). The buckets live in this
process: behind a load balancer each node applies the limits on its own.

The running-sessions cap is checked when a `user.message` would start a turn in a session that is not
running yet (sent as an event or as a session's `initial_events`): with the workspace already at the cap,
the request is refused with 429 `rate_limit_error` and `x-should-retry: false` (it succeeds once a running
session idles, which a blind retry a second later would rarely see). Requests racing each other can
overshoot the cap by the number of requests in flight. The check is a session operation's
(`corral.services.sessions.Sessions.ensure_capacity`); it is described here with the other limits.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.config import Operations
from corral.observability import metrics

CREATE_PATHS = frozenset({"/v1/agents", "/v1/sessions", "/v1/vaults"})


def limit_of(method: str, path: str) -> str | None:
    """Which per-key limit a request counts against (None: not limited)."""
    if not path.startswith("/v1/"):
        return None
    if path == "/v1/environments" or path.startswith("/v1/environments/"):
        return "environments"
    if method == "POST" and path in CREATE_PATHS:
        return "create"
    return "other"


@dataclass
class TokenBucket:
    per_minute: int
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take one token: 0 if there was one, else the seconds until there will be."""
        rate = self.per_minute / 60.0
        self.tokens = min(float(self.per_minute), self.tokens + (now - self.updated) * rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate


class RateLimiter:
    """Per-key token buckets, one per limit; a limit of 0 is no limit."""

    def __init__(self, operations: Operations) -> None:
        self.limits = {
            "create": operations.rate_limit_create,
            "other": operations.rate_limit_other,
            "environments": operations.rate_limit_environments,
        }
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def check(self, key_id: str, limit: str, now: float | None = None) -> float:
        """0 when the request may go ahead, else the seconds to wait."""
        per_minute = self.limits[limit]
        if per_minute <= 0:
            return 0.0
        moment = time.monotonic() if now is None else now
        bucket = self._buckets.get((key_id, limit))
        if bucket is None:
            bucket = self._buckets[(key_id, limit)] = TokenBucket(per_minute, float(per_minute), moment)
        return bucket.take(moment)


class RateLimits:
    """ASGI middleware, inside the auth middleware (which sets the key id): 429 over a key's limit."""

    def __init__(self, app: ASGIApp, operations: Operations) -> None:
        self.app = app
        self.limiter = RateLimiter(operations)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key_id = scope.get("corral.api_key_id")
        limit = limit_of(scope.get("method", ""), scope.get("path", "")) if scope["type"] == "http" else None
        if key_id is not None and limit is not None:
            wait = self.limiter.check(key_id, limit)
            if wait > 0:
                metrics.rate_limited(limit)
                await _send_rate_limited(send, scope, limit, self.limiter.limits[limit], math.ceil(wait))
                return
        await self.app(scope, receive, send)


async def _send_rate_limited(send: Send, scope: Scope, limit: str, per_minute: int, retry_after: int) -> None:
    what = {"create": "create requests", "environments": "environment requests", "other": "requests"}[limit]
    body = json.dumps(
        {
            "type": "error",
            "error": {
                "type": "rate_limit_error",
                "message": f"rate limit exceeded: this API key may make {per_minute} {what} per minute; "
                f"retry in {retry_after} s",
            },
            "request_id": scope.get("corral.request_id", ""),
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry_after).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class HttpMetrics:
    """Outermost ASGI middleware: counts every HTTP response by method and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                metrics.http_answered(scope["method"], int(message["status"]))
            await send(message)

        await self.app(scope, receive, counting_send)
