"""The HTTP blueprint: /ping and /invocations. Thin views: HTTP in, validated request, HTTP out."""

from __future__ import annotations

import json

from flask import Blueprint, Response, current_app, jsonify, request

from .errors import ApiError, ModelNotReady, UnsupportedMediaType, ValidationFailed
from .schemas import parse_request

bp = Blueprint("textgen", __name__)

JSON_TYPES = ("application/json",)


def _generator():
    return current_app.extensions["textgen"]


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON; numbers must be finite")


def decode_json(body: bytes):
    """Parse a request body as strict JSON (no NaN/Infinity); raise ApiError 400 with the reason."""
    if not body.strip():
        raise ApiError('request body is empty; send a JSON object such as {"input": "Hello"}')
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise ApiError(f"request body is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ApiError(f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:
        raise ApiError(f"request body is not valid JSON: {exc}") from None


@bp.get("/ping")
def ping() -> Response:
    """SageMaker health check: 200 once the model is loaded and warmed up, else 503."""
    generator = _generator()
    if generator.state != "ready":
        raise ModelNotReady(generator.detail)
    return jsonify({"status": "ready"})


@bp.post("/invocations")
def invocations() -> Response:
    """Generate continuations for one JSON request; answers a JSON list of strings."""
    if request.mimetype not in JSON_TYPES:
        sent = request.content_type or "none"
        raise UnsupportedMediaType(
            f"Content-Type {sent} is not supported; send Content-Type: application/json"
        )
    payload = decode_json(request.get_data(cache=False))
    if not isinstance(payload, dict):
        raise ValidationFailed({"_body": [f"must be a JSON object like {{\"input\": \"Hello\"}}, got {_json_type(payload)}"]})
    generation = parse_request(payload, current_app.config["TEXTGEN_LIMITS"])
    result = _generator().generate(generation)
    response = jsonify(result.texts)
    response.headers["X-Textgen-Seed"] = str(result.seed)
    if generation.ignored_fields:
        response.headers["X-Textgen-Ignored-Fields"] = ", ".join(generation.ignored_fields)
    return response


def _json_type(value) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)
