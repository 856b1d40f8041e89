"""Defaults per mode: what parse_request fills in when a field is not given."""

from __future__ import annotations

import pytest

from textgen.schemas import Limits, parse_request

COMMON_DEFAULTS = {
    "max_length": 100,
    "max_new_tokens": None,
    "top_p": 0.92,
    "top_k": 50,
    "temperature": 0.7,
    "num_beams": 5,
    "no_repeat_ngram_size": 2,
    "seed": None,
}


@pytest.mark.parametrize(
    ("mode", "return_sequences"),
    [
        (None, 3),
        ("sample-top-p", 3),
        ("sample-top-k", 3),
        ("sample", 3),
        ("beam", 3),
        ("greedy", 1),
    ],
)
def test_defaults_per_mode(mode, return_sequences):
    payload = {"input": "Hello"} if mode is None else {"input": "Hello", "mode": mode}
    req = parse_request(payload)
    assert req.input == "Hello"
    assert req.mode == (mode or "sample-top-p")
    assert req.num_return_sequences == return_sequences
    for name, value in COMMON_DEFAULTS.items():
        assert getattr(req, name) == value, name


@pytest.mark.parametrize(("num_beams", "expected"), [(1, 1), (2, 2), (3, 3), (4, 3), (16, 3)])
def test_beam_default_return_sequences_is_min_of_three_and_num_beams(num_beams, expected):
    req = parse_request({"input": "Hello", "mode": "beam", "num_beams": num_beams})
    assert req.num_return_sequences == expected


@pytest.mark.parametrize("mode", ["sample-top-p", "beam"])
def test_default_return_sequences_respects_a_lower_server_limit(mode):
    req = parse_request({"input": "Hello", "mode": mode}, Limits(max_return_sequences=2))
    assert req.num_return_sequences == 2


@pytest.mark.parametrize(("seed", "expected"), [(None, None), (-1, None), (0, 0), (7, 7), (2**32 - 1, 2**32 - 1)])
def test_seed_null_and_minus_one_mean_a_fresh_seed(seed, expected):
    assert parse_request({"input": "Hello", "seed": seed}).seed == expected


def test_max_new_tokens_replaces_the_default_max_length():
    req = parse_request({"input": "Hello", "max_new_tokens": 7})
    assert req.max_new_tokens == 7
    assert req.max_length is None


def test_numbers_accept_json_integers_and_become_floats():
    req = parse_request({"input": "Hello", "mode": "sample", "temperature": 1, "top_p": 1})
    assert req.temperature == 1.0 and isinstance(req.temperature, float)
    assert req.top_p == 1.0 and isinstance(req.top_p, float)


def test_input_is_kept_exactly_as_sent():
    text = "  Hello , world !  Zürich 😀 <|endoftext|>\n\t"
    assert parse_request({"input": text}).input == text


def test_given_fields_are_recorded():
    req = parse_request({"input": "Hello", "mode": "greedy", "temperature": 0.5})
    assert req.given == frozenset({"input", "mode", "temperature"})


def test_defaults_reach_the_generator_through_http(client, fake):
    response = client.post("/invocations", json={"input": "Hello"})
    assert response.status_code == 200
    (req,) = fake.requests
    assert req.mode == "sample-top-p"
    assert req.num_return_sequences == 3
    for name, value in COMMON_DEFAULTS.items():
        assert getattr(req, name) == value, name
