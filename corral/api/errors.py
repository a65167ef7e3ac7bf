"""The API's error envelope: `{"type":"error","error":{"type","message","details?"},"request_id"}`."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral.errors import ApiError, InvalidRequest

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


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """Pydantic's errors as one sentence a client can act on: `tools.0.type: Input should be ...`."""
    parts = []
    for error in exc.errors(include_url=False)[:5]:
        location = ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-"))
        location = f"{prefix}.{location}" if prefix and location else (prefix or location)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        parts.append(f"{location}: {message}" if location else message)
    more = len(exc.errors()) - 5
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def invalid(exc: ValidationError, prefix: str = "") -> InvalidRequest:
    return InvalidRequest(describe_validation_error(exc, prefix))


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
