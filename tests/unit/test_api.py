"""HTTP behaviour with a fake generator: headers, and the one JSON error shape for every non-2xx answer."""

from __future__ import annotations

import pytest

from textgen.errors import ModelNotReady
from textgen.settings import Settings


def assert_error_shape(response, status: int) -> dict:
    """Every error: JSON with code/error/message, code == status, no HTML, no traceback."""
    assert response.status_code == status
    assert response.content_type == "application/json"
    text = response.get_data(as_text=True)
    lowered = text.lower()
    assert "<html" not in lowered and "<!doctype" not in lowered and "<p>" not in lowered
    assert "traceback" not in lowered
    data = response.get_json()
    assert isinstance(data, dict)
    assert {"code", "error", "message"} <= set(data)
    assert set(data) <= {"code", "error", "message", "fields"}
    assert data["code"] == status
    assert isinstance(data["error"], str) and data["error"]
    assert isinstance(data["message"], str) and data["message"]
    return data


# ---- success ---------------------------------------------------------------------------------


def test_success_is_a_json_list_of_strings(client):
    response = client.post("/invocations", json={"input": "Hello", "num_return_sequences": 2})
    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert response.get_json() == ["Hello continuation 0", "Hello continuation 1"]


@pytest.mark.parametrize("seed", [0, 7, 2**32 - 1])
def test_seed_header_is_the_generators_seed(client, seed):
    response = client.post("/invocations", json={"input": "Hello", "seed": seed})
    assert response.headers["X-Textgen-Seed"] == str(seed)


def test_seed_header_reports_a_drawn_seed(make_client, make_fake):
    client = make_client(generator=make_fake(seed=987654321))
    response = client.post("/invocations", json={"input": "Hello"})
    assert response.headers["X-Textgen-Seed"] == "987654321"


def test_json_with_charset_is_accepted(client):
    response = client.post(
        "/invocations", data=b'{"input": "Hello"}', headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("payload", "ignored"),
    [
        ({"mode": "greedy", "temperature": 0.5}, "temperature"),
        ({"mode": "sample-top-p", "temperature": 0.5}, "temperature"),
        ({"mode": "sample-top-k", "top_p": 0.5, "temperature": 0.5}, "temperature, top_p"),
        ({"mode": "beam", "top_p": 0.5, "top_k": 3, "temperature": 0.5}, "temperature, top_k, top_p"),
        ({"mode": "greedy", "num_beams": 3, "no_repeat_ngram_size": 1}, "no_repeat_ngram_size, num_beams"),
        ({"mode": "sample", "num_beams": 3}, "num_beams"),
    ],
)
def test_ignored_fields_header_lists_given_fields_the_mode_does_not_use(client, payload, ignored):
    response = client.post("/invocations", json={"input": "Hello", **payload})
    assert response.status_code == 200
    assert response.headers["X-Textgen-Ignored-Fields"] == ignored


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"mode": "sample", "top_p": 0.5, "top_k": 3, "temperature": 0.5},
        {"mode": "sample-top-p", "top_p": 0.5, "top_k": 3},
        {"mode": "sample-top-k", "top_k": 3},
        {"mode": "beam", "num_beams": 3, "no_repeat_ngram_size": 1},
        {"mode": "greedy", "seed": 3, "max_new_tokens": 5, "num_return_sequences": 1},
        {"max_length": 20, "num_return_sequences": 2, "seed": None},
    ],
)
def test_ignored_fields_header_absent_when_every_field_is_used(client, payload):
    response = client.post("/invocations", json={"input": "Hello", **payload})
    assert response.status_code == 200
    assert "X-Textgen-Ignored-Fields" not in response.headers


# ---- 400 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        pytest.param(b'{"input": "Hello"', "not valid JSON", id="truncated"),
        pytest.param(b"{'input': 'Hello'}", "not valid JSON", id="single-quotes"),
        pytest.param(b'{"input": "Hello",}', "not valid JSON", id="trailing-comma"),
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"   \n", "empty", id="whitespace"),
        pytest.param(b'{"input": "\xff"}', "UTF-8", id="invalid-utf8"),
        pytest.param(b"[]", "JSON object", id="empty-array"),
        pytest.param(b'["Hello"]', "JSON object", id="array"),
        pytest.param(b'"Hello"', "JSON object", id="string"),
        pytest.param(b"null", "JSON object", id="null"),
        pytest.param(b"42", "JSON object", id="number"),
        pytest.param(b"true", "JSON object", id="boolean"),
    ],
)
def test_bad_bodies_are_400(client, fake, raw, fragment):
    response = client.post("/invocations", data=raw, content_type="application/json")
    data = assert_error_shape(response, 400)
    assert fragment in data["message"]
    assert fake.requests == []


def test_validation_error_names_field_rule_and_value(client):
    response = client.post("/invocations", json={"input": "Hello", "top_p": 1.5})
    data = assert_error_shape(response, 400)
    assert data["error"] == "validation"
    assert data["fields"] == {"top_p": ["must be > 0 and <= 1, got 1.5"]}
    assert "top_p" in data["message"] and "1.5" in data["message"]


# ---- 404 / 405 / 413 / 415 -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/"), ("GET", "/nope"), ("POST", "/invocation"), ("GET", "/ping/")]
)
def test_unknown_path_is_404_json(client, method, path):
    data = assert_error_shape(client.open(path, method=method), 404)
    assert data["error"] == "not_found"
    assert "/invocations" in data["message"] and "/ping" in data["message"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/invocations", "POST"),
        ("PUT", "/invocations", "POST"),
        ("POST", "/ping", "GET"),
        ("DELETE", "/ping", "GET"),
    ],
)
def test_wrong_method_is_405_json_with_allow(client, method, path, allowed):
    response = client.open(path, method=method)
    data = assert_error_shape(response, 405)
    assert data["error"] == "method_not_allowed"
    assert allowed in response.headers["Allow"]
    assert allowed in data["message"]


def test_body_over_the_payload_limit_is_413_json(make_client, fake):
    client = make_client(settings=Settings(max_payload_bytes=1024), generator=fake)
    big = '{"input": "' + "a" * 2048 + '"}'
    data = assert_error_shape(client.post("/invocations", data=big, content_type="application/json"), 413)
    assert data["error"] == "payload_too_large"
    assert "SAGEMAKER_MAX_PAYLOAD_IN_MB" in data["message"]
    assert fake.requests == []


def test_body_under_the_payload_limit_is_served(make_client):
    client = make_client(settings=Settings(max_payload_bytes=1024))
    small = '{"input": "' + "a" * 500 + '"}'
    assert client.post("/invocations", data=small, content_type="application/json").status_code == 200


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"],
)
def test_non_json_content_type_is_415(client, fake, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/invocations", data=b'{"input": "Hello"}', headers=headers)
    data = assert_error_shape(response, 415)
    assert data["error"] == "unsupported_media_type"
    assert "Content-Type: application/json" in data["message"]
    assert fake.requests == []


# ---- 503 / 500 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "detail"), [("loading", "model is loading"), ("failed", "model failed to load: OSError: no weights")]
)
def test_ping_is_503_until_ready(make_client, state, detail, make_fake):
    client = make_client(generator=make_fake(state=state, detail=detail))
    data = assert_error_shape(client.get("/ping"), 503)
    assert detail in data["message"]


def test_ping_is_200_when_ready(client):
    response = client.get("/ping")
    assert response.status_code == 200
    assert response.content_type == "application/json"


@pytest.mark.parametrize(
    ("state", "detail"), [("loading", "model is loading"), ("failed", "model failed to load: OSError: no weights")]
)
def test_invocations_is_503_while_the_generator_is_not_ready(make_client, state, detail, make_fake):
    fake = make_fake(state=state, detail=detail)
    client = make_client(generator=fake)
    data = assert_error_shape(client.post("/invocations", json={"input": "Hello"}), 503)
    assert detail in data["message"]


def test_generator_raising_model_not_ready_is_503(make_client, make_fake):
    client = make_client(generator=make_fake(error=ModelNotReady("model is loading")))
    data = assert_error_shape(client.post("/invocations", json={"input": "Hello"}), 503)
    assert data["message"] == "model is loading"


def test_unloaded_model_holder_answers_503_without_loading(make_client):
    """The real holder, never started: /ping and /invocations say 503 and nothing heavy is imported."""
    from textgen import create_app

    app = create_app(settings=Settings(model="/nonexistent/model"))
    client = app.test_client()
    assert_error_shape(client.get("/ping"), 503)
    assert_error_shape(client.post("/invocations", json={"input": "Hello"}), 503)


def test_unexpected_exception_is_500_json_without_details(make_client, make_fake):
    secret = "boom at /srv/secret/path.py line 12"
    client = make_client(generator=make_fake(error=RuntimeError(secret)))
    response = client.post("/invocations", json={"input": "Hello"})
    data = assert_error_shape(response, 500)
    text = response.get_data(as_text=True)
    assert "boom" not in text and "secret" not in text and "RuntimeError" not in text
    assert 'File "' not in text
    assert data["error"] == "internal"


def test_unexpected_exception_is_logged_with_traceback(make_client, caplog, make_fake):
    client = make_client(generator=make_fake(error=RuntimeError("kaboom")))
    client.post("/invocations", json={"input": "Hello"})
    assert any(record.exc_info and "kaboom" in str(record.exc_info[1]) for record in caplog.records)
