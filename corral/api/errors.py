"""The API's error envelope: `{"type":"error","error":{"type","message","details?"},"request_id"}`."""

from __future__ import annotations

import logging
import re
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral.errors import ApiError, InvalidRequest
from corral.session.store import StorageUnavailable

log = logging.getLogger("corral.api")

_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
}


def request_id_of(request: Request) -> str:
    return str(request.scope.get("corral.request_id", ""))


def error_response(
    request: Request,
    status: int,
    error_type: str,
    message: str,
    *,
    error_code: str | None = None,
    should_retry: bool | None = None,
) -> JSONResponse:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if error_code:
        error["details"] = {"error_code": error_code}
    headers = {}
    if should_retry is not None:
        headers["x-should-retry"] = "true" if should_retry else "false"
    return JSONResponse(
        {"type": "error", "error": error, "request_id": request_id_of(request)},
        status_code=status,
        headers=headers,
    )


# Location parts pydantic adds for the members of a union (`tagged-union[A,B]`, `constrained-str`,
# `literal['a','b']`, `function-after[...]`): they name schema internals, not fields a client wrote.
_SCHEMA_LABEL = re.compile(r"^(?:[a-z-]+\[.*\]|(?:constrained|function)-[\w-]+)$", re.DOTALL)


def describe_validation_error(exc: ValidationError) -> str:
    """Pydantic's errors as one sentence a client can act on: `tools.0.type: Input should be ...`."""
    errors = _closest_matches(exc.errors(include_url=False))
    parts = []
    for error in errors[:5]:
        location = ".".join(_field_path(error["loc"]))
        message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        parts.append(f"{location}: {message}" if location else message)
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    return "; ".join(parts)


def _closest_matches(errors: list[ErrorDetails]) -> list[ErrorDetails]:
    """Leave out "not a string" for a union member when the value got further into another member.

    `agent: {"type": "agent", "version": 0}` fails both `agent: str` and the object form; only the second says
    what to fix.
    """

    def deeper_error_beside(error: ErrorDetails) -> bool:
        parent = error["loc"][:-1]
        return any(len(other["loc"]) > len(error["loc"]) and other["loc"][: len(parent)] == parent for other in errors)

    kept = [error for error in errors if not (error["type"].endswith("_type") and deeper_error_beside(error))]
    return kept or errors


def _field_path(location: tuple[int | str, ...]) -> list[str]:
    path: list[str] = []
    skip_tag = False
    for part in location:
        text = str(part)
        if skip_tag:  # a tagged union's label is followed by the tag value, which the client wrote as `type`
            skip_tag = False
            continue
        if _SCHEMA_LABEL.match(text):
            skip_tag = text.startswith("tagged-union[")
            continue
        path.append(text)
    return path


def invalid(exc: ValidationError) -> InvalidRequest:
    # The SDK raises a specialised error for invalid_metadata (spec §1.6), so a failure of metadata alone says so.
    only_metadata = all(error["loc"][:1] == ("metadata",) for error in exc.errors())
    return InvalidRequest(describe_validation_error(exc), error_code="invalid_metadata" if only_metadata else None)


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(
        request,
        exc.status,
        exc.error_type,
        exc.message,
        error_code=exc.error_code,
        should_retry=exc.should_retry,
    )


async def handle_storage_unavailable(request: Request, exc: Exception) -> Response:
    """The database cannot serve the request (disk full, locked, unreachable): a 503 a client may retry."""
    assert isinstance(exc, StorageUnavailable)
    return error_response(request, 503, "api_error", exc.message)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    return error_response(request, exc.status_code, _STATUS_TYPES.get(exc.status_code, "api_error"), message)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(request, 500, "api_error", "internal server error; the server log has the details")
