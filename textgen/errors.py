"""Exceptions that carry their HTTP status, and the one JSON error shape for every non-2xx answer."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

# Flask/werkzeug status codes -> the short machine-readable `error` value.
_HTTP_ERROR_NAMES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    500: "internal",
    503: "unavailable",
    504: "timeout",
}


class ApiError(Exception):
    """An error answered to the caller as JSON with ``status``."""

    status = 400
    error = "bad_request"

    def __init__(self, message: str, fields: dict[str, list[str]] | None = None, headers=None):
        super().__init__(message)
        self.message = message
        self.fields = fields
        self.headers = headers or {}


class ValidationFailed(ApiError):
    """The request body is well-formed JSON but breaks the contract; ``fields`` says where."""

    error = "validation"

    def __init__(self, fields: dict[str, list[str]]):
        summary = "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in sorted(fields.items()))
        super().__init__(f"invalid request: {summary}", fields)


class UnsupportedMediaType(ApiError):
    status = 415
    error = "unsupported_media_type"


class PayloadTooLarge(ApiError):
    status = 413
    error = "payload_too_large"

    def __init__(self, limit: int):
        super().__init__(
            f"request body is larger than the limit of {limit} bytes ({limit / 1048576:.3g} MiB, "
            "SAGEMAKER_MAX_PAYLOAD_IN_MB)"
        )


class NotAcceptable(ApiError):
    status = 406
    error = "not_acceptable"


class ModelNotReady(ApiError):
    status = 503
    error = "model_not_ready"

    def __init__(self, message: str):
        super().__init__(message, headers={"Retry-After": "5"})


class Overloaded(ApiError):
    status = 429
    error = "too_many_requests"


class GenerationTimeout(ApiError):
    status = 504
    error = "timeout"


class GenerationFailed(ApiError):
    status = 500
    error = "generation_failed"


def error_body(status: int, error: str, message: str, fields=None) -> dict:
    """The JSON error object: ``code``, ``error``, ``message`` and, for validation, ``fields``."""
    body = {"code": status, "error": error, "message": message}
    if fields:
        body["fields"] = fields
    return body


def _respond(status: int, error: str, message: str, fields=None, headers=None) -> Response:
    response = jsonify(error_body(status, error, message, fields))
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def init_app(app: Flask) -> None:
    """Register handlers so every error, Flask's own included, is answered in one JSON shape."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return _respond(exc.status, exc.error, exc.message, exc.fields, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        headers = {}
        message = exc.description
        if status == 404:
            message = (
                f"no endpoint at {request.path}; the endpoints are GET /ping, POST /invocations, "
                "GET /execution-parameters and POST /endpoints/<name>/invocations"
            )
        elif status == 405:
            allowed = sorted(set(exc.valid_methods or []) - {"HEAD", "OPTIONS"})
            headers["Allow"] = ", ".join(exc.valid_methods or [])
            message = f"{request.method} is not allowed on {request.path}; use {' or '.join(allowed)}"
        elif status == 413:
            message = PayloadTooLarge(app.config.get("MAX_CONTENT_LENGTH") or 0).message
        return _respond(status, _HTTP_ERROR_NAMES.get(status, "http_error"), message, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error while serving a request")
        return _respond(500, "internal", "internal server error; the server log has the details")
