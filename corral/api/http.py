"""Request and response plumbing shared by every resource: bodies, query strings, cursors, pages."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from corral.api.errors import invalid
from corral.clock import parse_rfc3339, rfc3339
from corral.errors import InvalidRequest, PayloadTooLarge
from corral.session.records import Json, Page, TimeBounds

MAX_BODY_BYTES = 32 * 1024 * 1024
# Deeper JSON would reach recursion limits further in (validation, the store's encoder): refuse it on arrival.
MAX_JSON_DEPTH = 128
MAX_INTEGER_DIGITS = 400
# Text the stores cannot hold: PostgreSQL refuses NUL in text and jsonb, and a lone surrogate is not UTF-8.
_UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")

Model = TypeVar("Model", bound=BaseModel)


class ApiRoute(Route):
    """A route of the public API with the models that validate its query string and body.

    The OpenAPI document (`corral.api.openapi`) is made from these models, so it describes exactly what the
    handler accepts: the handler reads its input with `read_query(request, <query>)` and
    `read_body(request, <body>)`.
    """

    def __init__(
        self,
        method: str,
        path: str,
        endpoint: Callable[[Request], Awaitable[Response]],
        *,
        body: type[BaseModel] | None = None,
        query: type[Query] | None = None,
        streams: bool = False,
    ) -> None:
        super().__init__(path, endpoint, methods=[method])
        self.method = method
        self.body = body
        self.query = query
        self.streams = streams


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
        value = json.loads(raw, parse_int=_integer, parse_float=_finite_float, parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidRequest(f"request body nests JSON more than {MAX_JSON_DEPTH} levels deep") from exc
    if not isinstance(value, dict):
        raise InvalidRequest("request body must be a JSON object")
    check_storable(value)
    return value


def _integer(text: str) -> int:
    # Python refuses to convert past 4300 digits (a ValueError deep in the parser); no field needs a tenth of that.
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise InvalidRequest(f"request body has an integer of {len(text)} digits; at most {MAX_INTEGER_DIGITS} fit")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e999: it could be stored, but never sent back as JSON
        raise InvalidRequest(f"request body has a number too large for a double: {text[:40]}")
    return value


def _no_constant(name: str) -> float:
    raise InvalidRequest(f"request body has {name}, which is not a JSON number; send a finite number")


def check_storable(body: Json) -> None:
    """Refuse a body nested deeper than MAX_JSON_DEPTH or holding text no store can keep, naming where."""
    pending: list[tuple[Any, tuple[str | int, ...]]] = [(body, ())]
    while pending:
        value, path = pending.pop()
        if len(path) > MAX_JSON_DEPTH:
            raise InvalidRequest(
                f"request body nests JSON more than {MAX_JSON_DEPTH} levels deep (at {_dotted(path[:8])}...)"
            )
        if isinstance(value, str):
            _check_text(value, path)
        elif isinstance(value, dict):
            for key, item in value.items():
                _check_text(key, path, is_key=True)
                pending.append((item, (*path, key)))
        elif isinstance(value, list):
            pending.extend((item, (*path, index)) for index, item in enumerate(value))


def _check_text(text: str, path: tuple[str | int, ...], *, is_key: bool = False) -> None:
    found = _UNSTORABLE_CHARACTER.search(text)
    if found is None:
        return
    character = "a NUL character (\\u0000)" if found.group() == "\x00" else "an unpaired surrogate"
    where = f"a key of {_dotted(path)}" if is_key else _dotted(path)
    raise InvalidRequest(f"request body: {where} contains {character}, which the server cannot store; remove it")


def _dotted(path: tuple[str | int, ...]) -> str:
    return ".".join(str(part)[:64] for part in path) or "the top-level object"


async def read_body(request: Request, model: type[Model]) -> tuple[Model, Json]:
    """The body validated against `model`, plus the raw object (to tell omitted fields from nulls)."""
    raw = await read_json(request)
    try:
        return model.model_validate(raw), raw
    except ValidationError as exc:
        raise invalid(exc) from exc


# --- query strings -----------------------------------------------------------------------------------


class Query(BaseModel):
    """The query parameters of one endpoint (what its OpenAPI document lists), read with `read_query`.

    A field's alias is the parameter's name on the wire (`created_at[gte]`). Parameters no endpoint knows are
    ignored, as clients add their own; an empty value counts as absent.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    @classmethod
    def array_fields(cls) -> frozenset[str]:
        """Names (aliases) of the parameters that take several values."""
        return frozenset(
            field.alias or name for name, field in cls.model_fields.items() if get_origin(field.annotation) is list
        )


QueryModel = TypeVar("QueryModel", bound=Query)


def _normalise_timestamp(text: str) -> str:
    try:
        return rfc3339(parse_rfc3339(text))
    except ValueError:
        raise PydanticCustomError("timestamp", "must be an RFC 3339 timestamp such as 2026-01-01T00:00:00Z") from None


Timestamp = Annotated[str, AfterValidator(_normalise_timestamp), Field(json_schema_extra={"format": "date-time"})]


class CreatedAtQuery(Query):
    """The `created_at[gt|gte|lt|lte]` range filter of a listing."""

    created_at_gt: Annotated[Timestamp | None, Field(alias="created_at[gt]")] = None
    created_at_gte: Annotated[Timestamp | None, Field(alias="created_at[gte]")] = None
    created_at_lt: Annotated[Timestamp | None, Field(alias="created_at[lt]")] = None
    created_at_lte: Annotated[Timestamp | None, Field(alias="created_at[lte]")] = None

    def created_bounds(self) -> TimeBounds:
        return TimeBounds(
            gt=self.created_at_gt, gte=self.created_at_gte, lt=self.created_at_lt, lte=self.created_at_lte
        )


Order = Literal["asc", "desc"]


def query_list(request: Request, name: str) -> list[str]:
    """An array parameter in any of the forms clients send: `k[]=a&k[]=b`, `k=a&k=b`, or `k=a,b`."""
    values = request.query_params.getlist(f"{name}[]") + request.query_params.getlist(name)
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def read_query(request: Request, model: type[QueryModel]) -> QueryModel:
    """The request's query string validated against `model`; a bad value is a 400 naming the parameter."""
    arrays = model.array_fields()
    raw: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key in arrays:
            values = query_list(request, key)
            if values:
                raw[key] = values
        else:
            value = request.query_params.get(key)
            if value:
                raw[key] = value
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise InvalidRequest(_describe_query_error(exc, arrays)) from exc


def _describe_query_error(exc: ValidationError, arrays: frozenset[str]) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:3]:
        name = str(error["loc"][0]) if error["loc"] else "query"
        shown = f"{name}[]" if name in arrays else name
        got = error["input"]
        given = f" (got {got[:100]!r})" if isinstance(got, str) else ""
        parts.append(f"query parameter '{shown}': {error['msg']}{given}")
    return "; ".join(parts)


# --- cursors and pages -----------------------------------------------------------------------------


def decode_cursor(raw: str | None, *, scope: str) -> Json | None:
    """The `page` cursor `raw`; it is bound to the listing (and order) it came from.

    A cursor's key is either a log position (an int) or a keyset pair (two ints or strings); anything else
    did not come from this server.
    """
    if not raw:
        return None
    not_ours = InvalidRequest("query parameter 'page' is not a cursor this server issued")
    try:
        cursor = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, RecursionError) as exc:  # a forged cursor may nest a thousand arrays
        raise not_ours from exc
    if not isinstance(cursor, dict):
        raise not_ours
    if cursor.get("s") != scope:
        raise InvalidRequest(
            "query parameter 'page' belongs to a different listing or order; start again without 'page'"
        )
    key = cursor.get("k")
    is_position = isinstance(key, int) and _is_cursor_part(key)
    is_pair = isinstance(key, list) and len(key) == 2 and all(_is_cursor_part(part) for part in key)
    if cursor.get("d", "next") not in ("next", "prev") or not (is_position or is_pair):
        raise not_ours
    if scope.startswith("events:") != is_position:
        raise not_ours
    return cursor


def _is_cursor_part(part: object) -> bool:
    """What a store can compare with its columns: a 64-bit integer, or text it can hold."""
    if isinstance(part, bool):
        return False
    if isinstance(part, int):
        return -(2**63) <= part < 2**63
    return isinstance(part, str) and _UNSTORABLE_CHARACTER.search(part) is None


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
