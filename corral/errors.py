"""Errors that reach a client, with the HTTP status and `error.type` of the API's error envelope.

Domain code raises these; `corral.api.errors` renders them. Anything else that escapes a request is a bug
and becomes a 500 `api_error`.
"""

from __future__ import annotations


class ApiError(Exception):
    status = 500
    error_type = "api_error"
    # The SDK retries 409 and >= 500 unless told not to; real conflicts set this False.
    should_retry: bool | None = None

    def __init__(self, message: str, *, error_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code


class InvalidRequest(ApiError):
    status = 400
    error_type = "invalid_request_error"


class Unauthenticated(ApiError):
    status = 401
    error_type = "authentication_error"


class NotFound(ApiError):
    status = 404
    error_type = "not_found_error"


class Conflict(ApiError):
    """A request that conflicts with the current state; retrying it unchanged cannot succeed."""

    status = 409
    error_type = "invalid_request_error"
    should_retry = False


class PayloadTooLarge(ApiError):
    status = 413
    error_type = "request_too_large"
