"""Request and response plumbing shared by every resource: bodies, query strings, cursors, pages."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from corral.api.errors import invalid
from corral.clock import parse_rfc3339, rfc3339
from corral.errors import InvalidRequest, PayloadTooLarge
from corral.session.records import Json, Page, TimeBounds

MAX_BODY_BYTES = 32 * 1024 * 1024

Model = TypeVar("Model", bound=BaseModel)


def ok(payload: Json) -> JSONResponse:
    return JSONResponse(payload)


async def read_json(request: Request) -> Json:
    """The request body as a JSON object; an empty body (bodiless POST) is `{}`."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body is larger than {MAX_BODY_BYTES} bytes")
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body is larger than {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidRequest("request body must be a JSON object")
    return value


async def read_body(request: Request, model: type[Model]) -> tuple[Model, Json]:
    """The body validated against `model`, plus the raw object (to tell omitted fields from nulls)."""
    raw = await read_json(request)
    try:
        return model.model_validate(raw), raw
    except ValidationError as exc:
        raise invalid(exc) from exc


# --- query strings -----------------------------------------------------------------------------------


def query_list(request: Request, name: str) -> list[str]:
    """An array parameter in any of the forms clients send: `k[]=a&k[]=b`, `k=a&k=b`, or `k=a,b`."""
    values = request.query_params.getlist(f"{name}[]") + request.query_params.getlist(name)
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def query_int(request: Request, name: str, *, default: int | None, minimum: int, maximum: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise InvalidRequest(f"query parameter '{name}' must be an integer, got {raw!r}") from exc
    if not minimum <= value <= maximum:
        raise InvalidRequest(f"query parameter '{name}' must be between {minimum} and {maximum}, got {value}")
    return value


def query_limit(request: Request, *, default: int, maximum: int) -> int:
    value = query_int(request, "limit", default=default, minimum=1, maximum=maximum)
    assert value is not None
    return value


def query_bool(request: Request, name: str, *, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise InvalidRequest(f"query parameter '{name}' must be true or false, got {raw!r}")


def query_order(request: Request, *, default: str) -> str:
    order = request.query_params.get("order") or default
    if order not in ("asc", "desc"):
        raise InvalidRequest(f"query parameter 'order' must be 'asc' or 'desc', got {order!r}")
    return order


def query_time_bounds(request: Request, name: str = "created_at") -> TimeBounds:
    values: dict[str, str] = {}
    for op in ("gt", "gte", "lt", "lte"):
        raw = request.query_params.get(f"{name}[{op}]")
        if raw:
            try:
                values[op] = rfc3339(parse_rfc3339(raw))
            except ValueError as exc:
                raise InvalidRequest(
                    f"query parameter '{name}[{op}]' must be an RFC 3339 timestamp, got {raw!r}"
                ) from exc
    return TimeBounds(**values)


# --- cursors and pages -----------------------------------------------------------------------------


def decode_cursor(request: Request, *, scope: str) -> Json | None:
    """The `page` cursor; it is bound to the listing (and order) it came from.

    A cursor's key is either a log position (an int) or a keyset pair (two ints or strings); anything else
    did not come from this server.
    """
    raw = request.query_params.get("page")
    if not raw:
        return None
    not_ours = InvalidRequest("query parameter 'page' is not a cursor this server issued")
    try:
        cursor = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise not_ours from exc
    if not isinstance(cursor, dict):
        raise not_ours
    if cursor.get("s") != scope:
        raise InvalidRequest(
            "query parameter 'page' belongs to a different listing or order; start again without 'page'"
        )
    key = cursor.get("k")
    is_position = isinstance(key, int) and not isinstance(key, bool)
    is_pair = isinstance(key, list) and len(key) == 2 and all(isinstance(part, str | int) for part in key)
    if cursor.get("d", "next") not in ("next", "prev") or not (is_position or is_pair):
        raise not_ours
    if scope.startswith("events:") != is_position:
        raise not_ours
    return cursor


def encode_cursor(cursor: Json | None, *, scope: str) -> str | None:
    if cursor is None:
        return None
    text = json.dumps({**cursor, "s": scope}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def page_response(page: Page, items: list[Json], *, scope: str, with_prev: bool = False) -> JSONResponse:
    payload: dict[str, Any] = {"data": items, "next_page": encode_cursor(page.next_cursor, scope=scope)}
    if with_prev:
        payload["prev_page"] = encode_cursor(page.prev_cursor, scope=scope)
    return ok(payload)
