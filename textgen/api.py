"""The HTTP blueprint: SageMaker's /ping, /invocations and /execution-parameters, plus the
SageMaker runtime path /endpoints/<name>/invocations. Thin views: HTTP in, validated request, HTTP out."""

from __future__ import annotations

import json
import logging
import math
import socket
import time
import uuid

from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from .errors import (
    ApiError,
    ModelNotReady,
    NotAcceptable,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    error_body,
)
from .logs import request_id
from .schemas import parse_request

log = logging.getLogger(__name__)
bp = Blueprint("textgen", __name__)

JSON = "application/json"
JSONLINES = ("application/jsonlines", "application/x-jsonlines")
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
INFERENCE_ID = "X-Amzn-SageMaker-Inference-Id"
INTERNAL_ERROR = error_body(500, "internal", "internal server error; the server log has the details")


def _generator():
    return current_app.extensions["textgen"]


def _ready_generator():
    """The generator, or 503 while it is loading or after it failed to load."""
    generator = _generator()
    if generator.state != "ready":
        raise ModelNotReady(generator.detail)
    return generator


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON; numbers must be finite")


def _refuse_duplicates(pairs: list[tuple[str, object]]) -> dict:
    """An object hook: a key given twice is an error, never a silent last-one-wins."""
    result: dict = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {json.dumps(key)}: give each field once")
        result[key] = value
    return result


def decode_json(body: bytes | str):
    """Parse strict JSON (UTF-8, an optional BOM; no NaN/Infinity, no duplicate keys); raise ApiError 400."""
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ApiError(f"request body is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not body.strip():
        raise ApiError('request body is empty; send a JSON object such as {"input": "Hello"}')
    try:
        return json.loads(body, parse_constant=_reject_constant, object_pairs_hook=_refuse_duplicates)
    except json.JSONDecodeError as exc:
        raise ApiError(f"request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:
        raise ApiError(f"request body is not valid JSON: {exc}") from None


def read_body() -> bytes:
    """The whole request body, at most MAX_CONTENT_LENGTH bytes; a longer one is 413 even when it
    arrives chunked (with no Content-Length to check up front)."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(limit)
    stream = request.environ["wsgi.input"]
    chunks, size = [], 0
    try:
        while True:
            chunk = stream.read(min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(limit)
    except ApiError:
        raise
    except Exception as exc:  # gunicorn's own parse errors, e.g. a malformed chunk size
        raise ApiError(f"request body could not be read: {type(exc).__name__}: {exc}") from None
    return b"".join(chunks)


def _check_charset() -> None:
    charset = request.mimetype_params.get("charset")
    if charset and charset.lower().replace("-", "") != "utf8":
        raise UnsupportedMediaType(f"charset={charset} is not supported; JSON must be sent as UTF-8 (charset=utf-8)")


def _response_type() -> str:
    """JSON or JSON lines, from the Accept header (a wildcard answers in the request's own format);
    anything else is 406."""
    accept = request.headers.get("Accept", "").strip()
    if not accept:
        return ""
    if request.mimetype in JSONLINES:
        best = request.accept_mimetypes.best_match([request.mimetype, *JSONLINES, JSON])
    else:
        best = request.accept_mimetypes.best_match([JSON, *JSONLINES])
    if best is None:
        raise NotAcceptable(
            f"Accept {accept} is not supported; accept {JSON}, {JSONLINES[0]} or {JSONLINES[1]} (or */*)"
        )
    return best


@bp.before_app_request
def _tag_request() -> None:
    rid = request.headers.get(INFERENCE_ID) or request.headers.get("X-Request-Id") or uuid.uuid4().hex[:16]
    g.request_id_token = request_id.set(rid[:128])
    g.started = time.monotonic()


@bp.after_app_request
def _echo_headers(response: Response) -> Response:
    if CUSTOM_ATTRIBUTES in request.headers:
        response.headers[CUSTOM_ATTRIBUTES] = request.headers[CUSTOM_ATTRIBUTES]
    response.headers["X-Request-Id"] = request_id.get()
    return response


@bp.teardown_app_request
def _untag_request(exc) -> None:
    token = g.pop("request_id_token", None)
    if token is not None:
        request_id.reset(token)


@bp.get("/ping")
def ping() -> Response:
    """SageMaker health check: 200 once the model is loaded and warmed up, else 503."""
    _ready_generator()
    return jsonify({"status": "ready"})


@bp.get("/execution-parameters")
def execution_parameters() -> Response:
    """What SageMaker batch transform should send: concurrency, batch strategy, payload size."""
    settings = current_app.config["TEXTGEN_SETTINGS"]
    return jsonify(
        {
            "MaxConcurrentTransforms": settings.concurrent_transforms,
            "BatchStrategy": settings.batch_strategy,
            "MaxPayloadInMB": max(1, math.floor(settings.max_payload_bytes / 1048576)),
        }
    )


@bp.post("/invocations")
def invocations() -> Response:
    """Generate for one JSON request (a JSON list of strings) or for JSON lines (a line per record)."""
    answer_as = _response_type()
    if request.mimetype in JSONLINES:
        return _jsonlines(answer_as)
    if request.mimetype != JSON:
        sent = request.content_type or "none"
        raise UnsupportedMediaType(
            f"Content-Type {sent} is not supported; send Content-Type: {JSON} "
            f"(or {JSONLINES[0]} for one request per line)"
        )
    _check_charset()
    generation = _parse(decode_json(read_body()))
    result = _ready_generator().generate(generation, gone=_client_gone_probe())
    _log_done(generation, result)
    if answer_as in JSONLINES:
        response = Response(json.dumps(result.texts) + "\n", mimetype=answer_as)
    else:
        response = jsonify(result.texts)
    response.headers["X-Textgen-Seed"] = str(result.seed)
    if generation.ignored_fields:
        response.headers["X-Textgen-Ignored-Fields"] = ", ".join(generation.ignored_fields)
    return response


@bp.post("/endpoints/<name>/invocations")
def runtime_invocations(name: str) -> Response:
    """The SageMaker runtime's InvokeEndpoint path, so boto3 and the AWS CLI work against this server.

    Signature headers are ignored. Errors come back as SageMaker surfaces a container's error: 424
    with a ``ModelError`` carrying the original status and message.
    """
    try:
        response = invocations()
    except ApiError as exc:
        original = error_body(exc.status, exc.error, exc.message, exc.fields)
        return _model_error(name, exc.status, json.dumps(original))
    except HTTPException as exc:
        original = error_body(exc.code or 500, "http_error", exc.description or exc.name)
        return _model_error(name, exc.code or 500, json.dumps(original))
    except Exception:  # answered the way SageMaker would; the log gets the traceback
        log.exception("unhandled error while serving a request")
        return _model_error(name, 500, json.dumps(INTERNAL_ERROR))
    response.headers["X-Amzn-Invoked-Production-Variant"] = "AllTraffic"
    return response


def _model_error(endpoint: str, status: int, original: str) -> Response:
    kind = "client" if status < 500 else "server"
    body = {
        "ErrorCode": f"{kind.upper()}_ERROR_FROM_MODEL",
        "Message": f'Received {kind} error ({status}) from primary with message "{original}". '
        f"See the server log for endpoint {endpoint}.",
        "OriginalStatusCode": status,
        "OriginalMessage": original,
        "LogStreamArn": f"local:textgen/{endpoint}",
    }
    response = jsonify(body)
    response.status_code = 424
    response.headers["X-Amzn-ErrorType"] = "ModelError:"
    return response


def _jsonlines(answer_as: str) -> Response:
    """One request per non-blank line; each answered on its own line, a bad one with its error."""
    _check_charset()
    body = read_body().removeprefix(b"\xef\xbb\xbf")
    # Records end at LF (a CR before it is dropped). Other Unicode line breaks may sit inside JSON
    # strings, and each line is decoded alone, so one line of bad UTF-8 fails only its own record.
    lines = (line.removesuffix(b"\r") for line in body.split(b"\n"))
    records = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    if not records:
        raise ApiError('request body has no JSON lines; send one JSON object per line such as {"input": "Hello"}')
    generator = _ready_generator()
    gone = _client_gone_probe()
    outputs, seeds, ignored = [], [], []
    for number, generation, result in _generate_records(generator, records, gone):
        ignored.append(" ".join(generation.ignored_fields) if generation and generation.ignored_fields else "-")
        if isinstance(result, ApiError):
            outputs.append({**error_body(result.status, result.error, result.message, result.fields), "line": number})
            seeds.append("-")
        elif isinstance(result, Exception):  # one broken record must not lose the others
            log.error("unhandled error on JSON line %d", number, exc_info=result)
            outputs.append({**INTERNAL_ERROR, "line": number})
            seeds.append("-")
        else:
            outputs.append(result.texts)
            seeds.append(str(result.seed))
    if answer_as == JSON:
        response = jsonify(outputs)
    else:
        lines = "".join(json.dumps(output) + "\n" for output in outputs)
        response = Response(lines, mimetype=answer_as or request.mimetype)
    response.headers["X-Textgen-Seed"] = ",".join(seeds)
    if any(entry != "-" for entry in ignored):
        response.headers["X-Textgen-Ignored-Fields"] = ";".join(ignored)
    return response


def _generate_records(generator, records, gone):
    """Yield (line number, parsed request or None, result or exception) in order. With a batching
    engine the records are queued a window at a time, so they share batches and leave queue room
    for other callers."""
    parsed = [(number, _parse_line(line)) for number, line in records]
    submit = getattr(generator, "submit", None)
    if submit is None:
        for number, generation in parsed:
            if isinstance(generation, Exception):
                yield number, None, generation
            else:
                yield number, generation, _attempt(lambda g=generation: generator.generate(g, gone=gone), generation)
        return
    window = max(1, current_app.config["TEXTGEN_SETTINGS"].max_batch_rows)
    for start in range(0, len(parsed), window):
        chunk = parsed[start : start + window]
        jobs = [
            generation if isinstance(generation, Exception) else _attempt(lambda g=generation: submit(g), None)
            for _, generation in chunk
        ]
        for (number, generation), job in zip(chunk, jobs, strict=True):
            if isinstance(generation, Exception):
                yield number, None, generation
            elif isinstance(job, Exception):
                yield number, generation, job
            else:
                yield number, generation, _attempt(lambda j=job: generator.wait(j, gone=gone), generation)


def _parse_line(line: bytes):
    """One JSON line as a GenerationRequest, or the ApiError that says why not."""
    try:
        return _parse(decode_json(line))
    except ApiError as exc:
        return exc


def _attempt(call, generation):
    """``call()``, returning an error instead of raising it (ModelNotReady is raised: it fails all)."""
    try:
        result = call()
    except ModelNotReady:
        raise
    except Exception as exc:
        return exc
    if generation is not None:
        _log_done(generation, result)
    return result


def _client_gone_probe():
    """A check that the caller closed its connection (peeks the socket without consuming data)."""
    sock = request.environ.get("gunicorn.socket")
    if sock is None:
        return None

    def gone() -> bool:
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    return gone


def _parse(payload):
    if not isinstance(payload, dict):
        raise ValidationFailed(
            {"_body": [f'must be a JSON object like {{"input": "Hello"}}, got {_json_type(payload)}']}
        )
    return parse_request(payload, current_app.config["TEXTGEN_LIMITS"])


def _log_done(generation, result) -> None:
    log.info(
        "generated mode=%s rows=%d prompt_tokens=%d new_tokens=%s seed=%d in %.2fs",
        generation.mode,
        len(result.texts),
        result.prompt_tokens,
        result.new_tokens,
        result.seed,
        time.monotonic() - g.started,
    )


def _json_type(value) -> str:
    return {
        list: "an array",
        str: "a string",
        bool: "a boolean",
        type(None): "null",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)
