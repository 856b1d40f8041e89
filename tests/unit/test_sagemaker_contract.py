"""The rest of SageMaker's container contract: JSON lines, Accept, headers, runtime path, parameters."""

from __future__ import annotations

import json

import pytest

from textgen.settings import Settings

THREE_LINES = '{"input": "first"}\n{"input": "second", "top_p": 7}\n{"input": "third", "num_return_sequences": 1}\n'


def lines_of(response) -> list:
    return [json.loads(line) for line in response.get_data(as_text=True).splitlines()]


@pytest.mark.parametrize("content_type", ["application/jsonlines", "application/x-jsonlines"])
def test_jsonlines_answers_each_line_in_order_with_errors_in_place(make_client, content_type):
    response = make_client().post("/invocations", data=THREE_LINES, content_type=content_type)
    assert response.status_code == 200
    assert response.mimetype == content_type
    first, second, third = lines_of(response)
    assert len(first) == 3 and all(t.startswith("first") for t in first)
    assert second["code"] == 400 and second["line"] == 2 and "top_p" in second["fields"]
    assert third == ["third continuation 0"]
    assert response.headers["X-Textgen-Seed"].split(",")[1] == "-"


@pytest.mark.parametrize(
    "body",
    [
        '\n{"input": "a"}\n\n{"input": "b"}\n',
        '{"input": "a"}\r\n{"input": "b"}',
        '{"input": "a"}\n  \n{"input": "b"}\n\n',
    ],
    ids=["blank-lines", "crlf-no-trailing-newline", "whitespace-line"],
)
def test_jsonlines_skips_blank_lines_and_trailing_newlines(make_client, body):
    response = make_client().post("/invocations", data=body, content_type="application/jsonlines")
    assert response.status_code == 200
    answers = lines_of(response)
    assert [a[0].split()[0] for a in answers] == ["a", "b"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [("{not json}\n", "not valid JSON"), ("[1, 2]\n", "must be a JSON object"), ('{"input": 5}\n', "JSON string")],
)
def test_a_malformed_json_line_is_an_error_line(make_client, body, fragment):
    response = make_client().post("/invocations", data='{"input": "ok"}\n' + body, content_type="application/jsonlines")
    assert response.status_code == 200
    ok, bad = lines_of(response)
    assert ok[0].startswith("ok")
    assert bad["code"] == 400 and bad["line"] == 2 and fragment in json.dumps(bad)


def test_an_empty_jsonlines_body_is_400(make_client):
    response = make_client().post("/invocations", data="\n\n", content_type="application/jsonlines")
    assert response.status_code == 400 and "no JSON lines" in response.get_json()["message"]


def test_one_failing_record_does_not_lose_the_others(make_client, make_fake):
    class FailsOnBoom(make_fake):
        def generate(self, request, gone=None):
            if request.input == "boom":
                raise RuntimeError("unexpected")
            return super().generate(request, gone)

    body = '{"input": "a"}\n{"input": "boom"}\n{"input": "c"}\n'
    response = make_client(generator=FailsOnBoom()).post(
        "/invocations", data=body, content_type="application/jsonlines"
    )
    a, boom, c = lines_of(response)
    assert a[0].startswith("a") and c[0].startswith("c")
    assert boom["code"] == 500 and boom["line"] == 2 and "unexpected" not in json.dumps(boom)


@pytest.mark.parametrize(
    ("content_type", "accept", "expected"),
    [
        ("application/json", None, "application/json"),
        ("application/json", "*/*", "application/json"),
        ("application/json", "application/json", "application/json"),
        ("application/json", "application/jsonlines", "application/jsonlines"),
        ("application/jsonlines", None, "application/jsonlines"),
        ("application/jsonlines", "*/*", "application/jsonlines"),
        ("application/jsonlines", "application/json", "application/json"),
        ("application/x-jsonlines", "application/*", "application/x-jsonlines"),
    ],
)
def test_accept_chooses_the_answer_format(make_client, content_type, accept, expected):
    headers = {"Accept": accept} if accept else {}
    body = '{"input": "hi"}' + ("\n" if "lines" in content_type else "")
    response = make_client().post("/invocations", data=body, content_type=content_type, headers=headers)
    assert response.status_code == 200 and response.mimetype == expected
    text = response.get_data(as_text=True)
    if expected == "application/json":
        parsed = json.loads(text)
        assert isinstance(parsed, list)
    else:
        assert text.endswith("\n") and len(text.splitlines()) == 1


@pytest.mark.parametrize("accept", ["text/html", "text/csv", "application/xml"])
def test_an_unsupported_accept_is_406_json(make_client, accept):
    response = make_client().post("/invocations", json={"input": "hi"}, headers={"Accept": accept})
    assert response.status_code == 406 and response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"] == "not_acceptable" and accept in body["message"]


def test_custom_attributes_are_echoed_and_the_inference_id_is_returned(make_client):
    client = make_client()
    headers = {"X-Amzn-SageMaker-Custom-Attributes": "a=1;b=two", "X-Amzn-SageMaker-Inference-Id": "inf-42"}
    ok = client.post("/invocations", json={"input": "hi"}, headers=headers)
    assert ok.headers["X-Amzn-SageMaker-Custom-Attributes"] == "a=1;b=two"
    assert ok.headers["X-Request-Id"] == "inf-42"
    bad = client.post("/invocations", json={"input": ""}, headers=headers)
    assert bad.status_code == 400 and bad.headers["X-Amzn-SageMaker-Custom-Attributes"] == "a=1;b=two"
    assert "X-Amzn-SageMaker-Custom-Attributes" not in client.post("/invocations", json={"input": "hi"}).headers


def test_unknown_and_signature_headers_are_ignored(make_client):
    headers = {"Authorization": "AWS4-HMAC-SHA256 Credential=x", "X-Amz-Date": "20260101T000000Z", "X-Whatever": "1"}
    response = make_client().post("/endpoints/gpt-2/invocations", json={"input": "hi"}, headers=headers)
    assert response.status_code == 200 and len(response.get_json()) == 3


def test_runtime_path_wraps_errors_as_model_error(make_client):
    response = make_client().post("/endpoints/gpt-2/invocations", json={"input": "hi", "top_k": -1})
    assert response.status_code == 424
    assert response.headers["X-Amzn-ErrorType"].startswith("ModelError")
    body = response.get_json()
    assert body["OriginalStatusCode"] == 400
    assert json.loads(body["OriginalMessage"])["fields"]["top_k"]
    assert "top_k" in body["Message"]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (Settings(), {"MaxConcurrentTransforms": 10, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}),
        (
            Settings(batching=False),
            {"MaxConcurrentTransforms": 1, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6},
        ),
        (
            Settings(max_concurrent_transforms=3, batch_strategy="SINGLE_RECORD", max_payload_bytes=20 * 1048576),
            {"MaxConcurrentTransforms": 3, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 20},
        ),
    ],
)
def test_execution_parameters(make_client, settings, expected):
    response = make_client(settings=settings).get("/execution-parameters")
    assert response.status_code == 200 and response.get_json() == expected


def test_an_oversize_jsonlines_body_is_413_json(make_client):
    client = make_client(settings=Settings(max_payload_bytes=1024))
    response = client.post("/invocations", data='{"input": "x"}\n' * 200, content_type="application/jsonlines")
    assert response.status_code == 413 and response.get_json()["error"] == "payload_too_large"
    assert "MiB" in response.get_json()["message"]
