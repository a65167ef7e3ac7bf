"""Pure ASGI middleware (no per-request task or body buffering): request ids and API-key authentication."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from sse_starlette import ServerSentEvent
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.api.auth import hash_key, presented_key
from corral.api.revocation import HeldRequest, KeyRevocations
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

    Every path but the health check needs a live API key; a missing or unknown key is a 401 envelope. A key
    revoked while its request is in progress ends that request too (see `corral.api.revocation`).
    """

    def __init__(self, app: ASGIApp, store: Store, public_paths: frozenset[str] = PUBLIC_PATHS) -> None:
        self.app = app
        self.store = store
        self.public_paths = public_paths
        self.revocations = KeyRevocations(store)

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

        problem = nul_in_url(scope)
        if problem is not None:
            await _send_error(send_with_id, 400, "invalid_request_error", problem, request_id)
            return
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
            with self.revocations.hold(record.id, receive, send_with_id) as held, held.cancel_scope:
                await self.app(scope, held.receive, held.send)
            if held.ended_by_revocation:
                await _end_revoked(held, send_with_id, request_id)
            return
        await self.app(scope, receive, send_with_id)


def nul_in_url(scope: Scope) -> str | None:
    """Why the request's path or query string cannot be used, if it carries a NUL character (`%00`).

    No id or filter value ever contains one, and PostgreSQL refuses it in text: answered here, on both stores.
    """
    if "\x00" in scope["path"]:
        return "the request path contains a NUL character (%00); no id contains one"
    query: bytes = scope["query_string"]
    if b"%00" not in query and b"\x00" not in query:
        return None
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            shown = name.replace("\x00", "%00")[:64]
            return f"query parameter '{shown}' contains a NUL character (%00); no parameter value may contain one"
    return None


REVOKED_MESSAGE = "this API key was revoked while the request was in progress"


async def _end_revoked(held: HeldRequest, send: Send, request_id: str) -> None:
    """Answer a request whose key was revoked under it: a 401 if nothing was sent yet; a stream gets a last
    `event: error` frame (what the SDK raises as an error), then its end."""
    if held.response_finished:
        return
    if not held.response_started:
        await _send_error(send, 401, "authentication_error", REVOKED_MESSAGE, request_id)
        return
    last = b""
    if held.content_type.startswith(b"text/event-stream"):
        envelope = _envelope("authentication_error", REVOKED_MESSAGE, request_id).decode()
        last = ServerSentEvent(data=envelope, event="error").encode()
    await send({"type": "http.response.body", "body": last, "more_body": False})


def _envelope(error_type: str, message: str, request_id: str) -> bytes:
    return json.dumps(
        {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id}
    ).encode()


async def _send_error(send: Send, status: int, error_type: str, message: str, request_id: str) -> None:
    body = _envelope(error_type, message, request_id)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
