"""Every rule of the /invocations request contract: payload -> status, field, message fragment."""

from __future__ import annotations

import json
import re

import pytest

from textgen.schemas import MODES, SAMPLING_MODES
from textgen.settings import Settings

ACCEPTED_FIELDS = (
    "input",
    "mode",
    "max_length",
    "max_new_tokens",
    "top_p",
    "top_k",
    "temperature",
    "num_beams",
    "no_repeat_ngram_size",
    "num_return_sequences",
    "seed",
)
INTEGER_FIELDS = (
    "max_length",
    "max_new_tokens",
    "top_k",
    "num_beams",
    "no_repeat_ngram_size",
    "num_return_sequences",
    "seed",
)
NUMBER_FIELDS = ("top_p", "temperature")


def body(**fields) -> dict:
    return {"input": "Hello", **fields}


def case(payload: dict | str, field: str, fragment: str, id: str, settings: Settings | None = None):
    return pytest.param(payload, field, fragment, settings, id=id)


RULES = [
    # input
    case({}, "input", "is required", "input-missing"),
    case(body(input=""), "input", "non-empty", "input-empty"),
    case(body(input=5), "input", "must be a JSON string, got 5", "input-number"),
    case(body(input=["Hello"]), "input", "must be a JSON string", "input-array"),
    case(body(input={"text": "Hello"}), "input", "must be a JSON string", "input-object"),
    case(body(input=True), "input", "got true", "input-bool"),
    case(body(input=None), "input", "must not be null", "input-null"),
    case(body(input="ab\ud800cd"), "input", "lone surrogate", "input-lone-surrogate"),
    # max_length
    case(body(max_length=50.5), "max_length", "must be a JSON integer, got 50.5", "max_length-float"),
    case(body(max_length=True), "max_length", "must be a JSON integer, got true", "max_length-bool"),
    case(body(max_length="50"), "max_length", 'must be a JSON integer, got "50"', "max_length-string"),
    case(body(max_length=None), "max_length", "must not be null", "max_length-null"),
    case(body(max_length=0), "max_length", ">= 1, got 0", "max_length-zero"),
    case(body(max_length=-5), "max_length", ">= 1, got -5", "max_length-negative"),
    case(body(max_length=1025), "max_length", "at most 1024", "max_length-over-server-limit"),
    case(body(max_length=2**40), "max_length", str(2**40), "max_length-huge"),
    case(
        body(max_length=65),
        "max_length",
        "at most 64",
        "max_length-over-custom-server-limit",
        Settings(max_total_tokens=64),
    ),
    # max_new_tokens
    case(body(max_length=50, max_new_tokens=10), "max_new_tokens", "not both", "max_new_tokens-with-max_length"),
    case(body(max_new_tokens=0), "max_new_tokens", ">= 1, got 0", "max_new_tokens-zero"),
    case(body(max_new_tokens=1.5), "max_new_tokens", "must be a JSON integer, got 1.5", "max_new_tokens-float"),
    # mode
    case(body(mode="fast"), "mode", '"fast"', "mode-unknown"),
    case(body(mode="fast"), "mode", ", ".join(MODES), "mode-unknown-lists-modes"),
    case(body(mode="Greedy"), "mode", "one of", "mode-case-sensitive"),
    case(body(mode=3), "mode", "must be a JSON string, got 3", "mode-number"),
    case(body(mode=None), "mode", "must not be null", "mode-null"),
    # top_p
    case(body(top_p=0), "top_p", "must be > 0 and <= 1", "top_p-zero"),
    case(body(top_p=-0.1), "top_p", "must be > 0 and <= 1", "top_p-negative"),
    case(body(top_p=1.5), "top_p", "must be > 0 and <= 1, got 1.5", "top_p-over-one"),
    case(body(top_p="0.5"), "top_p", 'must be a JSON number, got "0.5"', "top_p-string"),
    case(body(top_p=True), "top_p", "must be a JSON number, got true", "top_p-bool"),
    case(body(top_p=None), "top_p", "must not be null", "top_p-null"),
    case('{"input": "Hello", "top_p": 1e999}', "top_p", "finite", "top_p-1e999-infinite"),
    # top_k
    case(body(top_k=-1), "top_k", ">= 0", "top_k-negative"),
    case(body(top_k=50.5), "top_k", "must be a JSON integer, got 50.5", "top_k-float"),
    case(body(top_k="50"), "top_k", "must be a JSON integer", "top_k-string"),
    case(body(mode="sample-top-k", top_k=0), "top_k", ">= 1 in sample-top-k", "top_k-zero-in-sample-top-k"),
    # temperature (any mode: see the per-mode test below)
    case(body(temperature=0), "temperature", "must be > 0", "temperature-zero"),
    case(body(temperature=-1), "temperature", "must be > 0, got -1", "temperature-negative"),
    case(body(temperature="hot"), "temperature", 'must be a JSON number, got "hot"', "temperature-string"),
    case('{"input": "Hello", "temperature": 1e999}', "temperature", "finite", "temperature-1e999-infinite"),
    # num_beams
    case(body(num_beams=0), "num_beams", "must be in 1..16, got 0", "num_beams-zero"),
    case(body(num_beams=17), "num_beams", "must be in 1..16, got 17", "num_beams-over-default-limit"),
    case(body(num_beams=2.5), "num_beams", "must be a JSON integer", "num_beams-float"),
    case(
        body(num_beams=5), "num_beams", "must be in 1..4, got 5", "num_beams-over-custom-limit", Settings(max_beams=4)
    ),
    # no_repeat_ngram_size
    case(body(no_repeat_ngram_size=-1), "no_repeat_ngram_size", ">= 0", "no_repeat_ngram_size-negative"),
    case(body(no_repeat_ngram_size=True), "no_repeat_ngram_size", "JSON integer", "no_repeat_ngram_size-bool"),
    # num_return_sequences
    case(body(num_return_sequences=0), "num_return_sequences", "must be in 1..16, got 0", "nrs-zero"),
    case(body(num_return_sequences=17), "num_return_sequences", "must be in 1..16, got 17", "nrs-over-limit"),
    case(
        body(num_return_sequences=5),
        "num_return_sequences",
        "must be in 1..4, got 5",
        "nrs-over-custom-limit",
        Settings(max_return_sequences=4),
    ),
    case(
        body(mode="greedy", num_return_sequences=3), "num_return_sequences", "greedy yields one sequence", "nrs-greedy"
    ),
    case(
        body(mode="beam", num_beams=3, num_return_sequences=4),
        "num_return_sequences",
        "<= num_beams (3)",
        "nrs-beam-over-num_beams",
    ),
    case(
        body(mode="beam", num_return_sequences=6),
        "num_return_sequences",
        "<= num_beams (default 5)",
        "nrs-beam-over-default-num_beams",
    ),
    # seed
    case(body(seed=-2), "seed", "null, -1 or 0..4294967295, got -2", "seed-minus-two"),
    case(body(seed=2**32), "seed", "got 4294967296", "seed-too-big"),
    case(body(seed=1.5), "seed", "must be a JSON integer, got 1.5", "seed-float"),
    case(body(seed="7"), "seed", "must be a JSON integer", "seed-string"),
    # unknown fields
    case(body(temprature=0.5), "temprature", "unknown field", "unknown-misspelled-temperature"),
    case(body(temprature=0.5), "temprature", ", ".join(ACCEPTED_FIELDS), "unknown-lists-accepted-fields"),
    case(body(prompt="x"), "prompt", "unknown field", "unknown-prompt"),
]


@pytest.mark.parametrize(("payload", "field", "fragment", "settings"), RULES)
def test_contract_rule(make_client, payload, field, fragment, settings):
    """``payload`` is a dict sent as JSON, or a str sent as the raw body (for numbers json.dumps cannot write)."""
    client = make_client(settings=settings)
    if isinstance(payload, str):
        response = client.post("/invocations", data=payload, content_type="application/json")
    else:
        response = client.post("/invocations", json=payload)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.content_type == "application/json"
    data = response.get_json()
    assert data["code"] == 400
    assert data["error"] == "validation"
    assert field in data["fields"], data
    assert any(fragment in message for message in data["fields"][field]), data["fields"][field]
    assert field in data["message"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("temperature", [0, -1, -0.5])
def test_temperature_must_be_positive_in_every_mode(client, mode, temperature):
    payload = body(mode=mode, temperature=temperature)
    response = client.post("/invocations", json=payload)
    assert response.status_code == 400
    assert "temperature" in response.get_json()["fields"]


@pytest.mark.parametrize("mode", ["sample-top-p", "sample-top-k", "sample"])
def test_greedy_message_names_the_modes_that_give_several(client, mode):
    response = client.post("/invocations", json=body(mode="greedy", num_return_sequences=2))
    message = " ".join(response.get_json()["fields"]["num_return_sequences"])
    assert "greedy yields one sequence" in message
    assert mode in message and "beam" in message
    assert "got 2" in message


@pytest.mark.parametrize("field", INTEGER_FIELDS)
@pytest.mark.parametrize(("value", "shown"), [(50.5, "50.5"), (True, "true"), (False, "false"), ("50", '"50"')])
def test_integer_fields_take_json_integers_only(client, field, value, shown):
    response = client.post("/invocations", json=body(**{field: value}))
    assert response.status_code == 400
    messages = response.get_json()["fields"][field]
    assert any("must be a JSON integer" in m and shown in m for m in messages), messages


@pytest.mark.parametrize("field", NUMBER_FIELDS)
@pytest.mark.parametrize(("value", "shown"), [(True, "true"), ("0.5", '"0.5"'), ([0.5], "[0.5]")])
def test_number_fields_take_json_numbers_only(client, field, value, shown):
    response = client.post("/invocations", json=body(**{field: value}))
    assert response.status_code == 400
    messages = response.get_json()["fields"][field]
    assert any("must be a JSON number" in m and shown in m for m in messages), messages


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", NUMBER_FIELDS)
def test_nan_and_infinity_literals_are_malformed_json(client, field, literal):
    raw = f'{{"input": "Hello", "{field}": {literal}}}'
    response = client.post("/invocations", data=raw, content_type="application/json")
    assert response.status_code == 400
    data = response.get_json()
    assert data["code"] == 400
    assert "not valid JSON" in data["message"]


@pytest.mark.parametrize("field", NUMBER_FIELDS)
def test_overflowing_number_is_refused_as_infinite(client, field):
    raw = f'{{"input": "Hello", "{field}": 1e999}}'
    response = client.post("/invocations", data=raw, content_type="application/json")
    assert response.status_code == 400
    assert any("finite" in m for m in response.get_json()["fields"][field])


VALID = [
    pytest.param(body(seed=2**32 - 1), id="seed-max"),
    pytest.param(body(seed=0), id="seed-zero"),
    pytest.param(body(seed=None), id="seed-null"),
    pytest.param(body(seed=-1), id="seed-minus-one"),
    pytest.param(body(temperature=1), id="temperature-int"),
    pytest.param(body(mode="sample", temperature=2.5), id="temperature-high"),
    pytest.param(body(top_p=1), id="top_p-one-int"),
    pytest.param(body(top_p=1e-9), id="top_p-tiny"),
    pytest.param(body(top_k=0), id="top_k-zero-turns-off"),
    pytest.param(body(mode="sample-top-k", top_k=1), id="top_k-one-in-sample-top-k"),
    pytest.param(body(no_repeat_ngram_size=0), id="no_repeat_ngram_size-zero"),
    pytest.param(body(num_beams=16), id="num_beams-max"),
    pytest.param(body(num_beams=1), id="num_beams-one"),
    pytest.param(body(num_return_sequences=16), id="nrs-max"),
    pytest.param(body(mode="greedy", num_return_sequences=1), id="nrs-greedy-one"),
    pytest.param(body(mode="beam", num_beams=4, num_return_sequences=4), id="nrs-beam-equal-num_beams"),
    pytest.param(body(max_length=1024), id="max_length-at-server-limit"),
    pytest.param(body(max_new_tokens=1), id="max_new_tokens-one"),
    pytest.param(body(input=" "), id="input-space"),
    pytest.param(body(input="Zürich 😀 naïve 日本"), id="input-non-ascii"),
]


@pytest.mark.parametrize("payload", VALID)
def test_valid_requests_are_accepted(client, payload):
    response = client.post("/invocations", json=payload)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert isinstance(response.get_json(), list)


@pytest.mark.parametrize("mode", SAMPLING_MODES + ("beam", "greedy"))
def test_every_field_is_type_checked_even_when_the_mode_ignores_it(client, mode):
    payload = body(mode=mode, top_p=2, top_k=-1, num_beams=0, no_repeat_ngram_size=-1)
    response = client.post("/invocations", json=payload)
    assert response.status_code == 400
    assert {"top_p", "top_k", "num_beams", "no_repeat_ngram_size"} <= set(response.get_json()["fields"])


def test_several_errors_are_reported_at_once(client):
    payload = {"input": "", "top_p": 1.5, "top_k": "50", "temprature": 1, "seed": -2}
    response = client.post("/invocations", json=payload)
    assert response.status_code == 400
    data = response.get_json()
    assert set(data["fields"]) == {"input", "top_p", "top_k", "temprature", "seed"}
    for name in data["fields"]:
        assert name in data["message"]


def test_beam_default_num_beams_respects_a_lower_server_limit(make_client, fake):
    """With TEXTGEN_MAX_BEAMS below the default num_beams (5), beam mode must not run more beams than allowed."""
    client = make_client(settings=Settings(max_beams=4), generator=fake)
    response = client.post("/invocations", json=body(mode="beam"))
    if response.status_code == 400:
        assert "num_beams" in response.get_json()["fields"]
    else:
        assert response.status_code == 200
        assert fake.requests[0].num_beams <= 4


def test_a_wire_level_lone_surrogate_is_refused(client):
    raw = json.dumps({"input": "a\ud83d"})  # ensure_ascii writes the escape \ud83d
    assert "\\ud83d" in raw
    response = client.post("/invocations", data=raw, content_type="application/json")
    assert response.status_code == 400
    assert "input" in response.get_json()["fields"]


@pytest.mark.parametrize(("field", "value"), [("max_length", 2**31), ("max_length", 2**40), ("max_new_tokens", 2**31)])
def test_too_large_lengths_name_the_upper_bound(client, field, value):
    """A value that is >= 1 but too large must not be told "must be >= 1"; the message gives the upper bound."""
    response = client.post("/invocations", json=body(**{field: value}))
    assert response.status_code == 400
    message = " ".join(response.get_json()["fields"][field])
    assert str(value) in message
    assert re.search(r"at most \d+|<= ?\d+|\d+ ?\.\. ?\d+", message), message
