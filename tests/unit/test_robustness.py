"""Inputs that once slipped past the contract: each gets a clear 4xx naming the rule, never a 500."""

from __future__ import annotations

import json

import pytest

from textgen.settings import Settings


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ('{"input": "First", "input": "Second"}', 'duplicate key "input"'),
        ('{"input": "x", "top_p": 7, "top_p": 0.5}', 'duplicate key "top_p"'),
    ],
)
def test_duplicate_keys_are_refused(make_client, raw, fragment):
    response = make_client().post("/invocations", data=raw, content_type="application/json")
    assert response.status_code == 400 and fragment in response.get_json()["message"]


@pytest.mark.parametrize("field", ["top_p", "temperature"])
def test_an_integer_too_large_for_a_double_is_a_400(make_client, field):
    raw = f'{{"input": "x", "{field}": {"9" * 400}}}'
    response = make_client().post("/invocations", data=raw, content_type="application/json")
    assert response.status_code == 400
    [message] = response.get_json()["fields"][field]
    assert "finite number" in message and len(message) < 200


@pytest.mark.parametrize(("value", "shown"), [(7, "got 7"), (0, "got 0"), (2**64, "got 18446744073709551616")])
def test_messages_echo_the_number_as_sent(make_client, value, shown):
    response = make_client().post("/invocations", json={"input": "x", "top_p": value})
    assert response.status_code == 400
    assert response.get_json()["fields"]["top_p"][0].endswith(shown)


def test_a_huge_integer_is_shortened_in_messages(make_client):
    raw = '{"input": "x", "max_length": %s}' % ("9" * 400)
    response = make_client().post("/invocations", data=raw, content_type="application/json")
    [message] = response.get_json()["fields"]["max_length"]
    assert response.status_code == 400 and len(message) < 200 and "..." in message


@pytest.mark.parametrize("charset", ["latin-1", "utf-16", "ISO-8859-1"])
def test_a_non_utf8_charset_is_415(make_client, charset):
    response = make_client().post(
        "/invocations", data=b'{"input": "x"}', content_type=f"application/json; charset={charset}"
    )
    assert response.status_code == 415 and charset in response.get_json()["message"]


@pytest.mark.parametrize("charset", ["utf-8", "UTF-8", "utf8"])
def test_a_utf8_charset_is_fine(make_client, charset):
    response = make_client().post(
        "/invocations", data=b'{"input": "x"}', content_type=f"application/json; charset={charset}"
    )
    assert response.status_code == 200


def test_a_utf8_bom_is_accepted_on_json_and_jsonlines(make_client):
    client = make_client()
    assert (
        client.post("/invocations", data=b'\xef\xbb\xbf{"input": "x"}', content_type="application/json").status_code
        == 200
    )
    response = client.post(
        "/invocations", data=b'\xef\xbb\xbf{"input": "a"}\n{"input": "b"}\n', content_type="application/jsonlines"
    )
    assert [json.loads(line)[0][0] for line in response.get_data(as_text=True).splitlines()] == ["a", "b"]


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085", "\x0c", "\x0b", "\r"])
def test_jsonlines_splits_records_at_lf_only(make_client, separator):
    record = json.dumps({"input": f"A{separator}B"}, ensure_ascii=False)
    body = (record + "\n" + json.dumps({"input": "C"}) + "\n").encode()
    response = make_client().post("/invocations", data=body, content_type="application/jsonlines")
    answers = [json.loads(line) for line in response.get_data(as_text=True).split("\n") if line]
    assert len(answers) == 2
    assert answers[0][0].startswith(f"A{separator}B") and answers[1][0].startswith("C")


def test_a_jsonlines_record_with_bad_utf8_fails_alone(make_client):
    body = b'{"input": "a"}\n{"input": "\xff"}\n{"input": "c"}\n'
    response = make_client().post("/invocations", data=body, content_type="application/jsonlines")
    assert response.status_code == 200
    a, bad, c = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
    assert a[0].startswith("a") and c[0].startswith("c")
    assert bad["code"] == 400 and bad["line"] == 2 and "UTF-8" in bad["message"]


def test_jsonlines_reports_ignored_fields_per_record(make_client):
    body = '{"input": "a", "mode": "greedy", "temperature": 0.3}\n{"input": "b"}\n{"input": "c", "num_beams": 3}\n'
    response = make_client().post("/invocations", data=body, content_type="application/jsonlines")
    assert response.headers["X-Textgen-Ignored-Fields"] == "temperature;-;num_beams"


def test_oversize_body_on_the_runtime_path_keeps_its_413(make_client):
    client = make_client(settings=Settings(max_payload_bytes=64))
    response = client.post("/endpoints/gpt-2/invocations", json={"input": "x" * 100})
    assert response.status_code == 424
    assert response.get_json()["OriginalStatusCode"] == 413


def test_ping_while_loading_says_when_to_retry(make_client, make_fake):
    response = make_client(generator=make_fake(state="loading", detail="model is loading")).get("/ping")
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"


def test_json_decode_messages_read_cleanly(make_client):
    response = make_client().post("/invocations", data='{"input": "abc', content_type="application/json")
    message = response.get_json()["message"]
    assert response.status_code == 400 and "at at" not in message and "line 1" in message
