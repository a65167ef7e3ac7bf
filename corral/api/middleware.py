"""Pure ASGI middleware (no per-request task or body buffering): request ids and API-key authentication."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.api.auth import hash_key, presented_key
from corral.ids import new_id
from corral.observability.logs import bind_request
from corral.session.store import Store

PUBLIC_PATHS = frozenset({"/health", "/healthz"})
# The web console's static files; the API calls the console makes carry the key like any client's.
PUBLIC_PREFIX = "/console"


def is_public(path: str, public_paths: frozenset[str] = PUBLIC_PATHS) -> bool:
    return path in public_paths or path == PUBLIC_PREFIX or path.startswith(PUBLIC_PREFIX + "/")


class RequestContext:
    """Gives every request a `request-id` (response header and error body) and resolves its workspace.

    Every path but the health check needs a live API key; a missing or unknown key is a 401 envelope.
    """

    def __init__(self, app: ASGIApp, store: Store, public_paths: frozenset[str] = PUBLIC_PATHS) -> None:
        self.app = app
        self.store = store
        self.public_paths = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_id("req")
        scope["corral.request_id"] = request_id
        bind_request(request_id, scope["path"])
        header_value = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"request-id", header_value)]
            await send(message)

        if not is_public(scope["path"], self.public_paths):
            headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
            key = presented_key(headers.get("authorization"), headers.get("x-api-key"))
            record = await self.store.find_api_key(hash_key(key)) if key else None
            if record is None:
                message = (
                    "missing API key: send 'x-api-key: <key>' or 'Authorization: Bearer <key>'"
                    if key is None
                    else "invalid API key: it is unknown to this server or has been revoked"
                )
                await _send_error(send_with_id, 401, "authentication_error", message, request_id)
                return
            scope["corral.workspace_id"] = record.workspace_id
            scope["corral.api_key_id"] = record.id
        await self.app(scope, receive, send_with_id)


async def _send_error(send: Send, status: int, error_type: str, message: str, request_id: str) -> None:
    body = json.dumps(
        {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
