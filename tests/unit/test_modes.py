"""The mode -> generate() kwargs mapping: each mode passes exactly its parameters and nothing else."""

from __future__ import annotations

import pytest

from textgen.modes import to_generate_kwargs
from textgen.schemas import MODES, SAMPLING_MODES, parse_request

# Distinct non-default values, so a value that leaks into the wrong mode is visible.
GIVEN = {"top_p": 0.5, "top_k": 7, "temperature": 1.3, "num_beams": 4, "no_repeat_ngram_size": 3}
BEAM_ONLY = ("num_beams", "no_repeat_ngram_size", "early_stopping")


def kwargs_for(mode: str, **fields) -> dict:
    nrs = 1 if mode == "greedy" else 2
    payload = {"input": "Hello", "mode": mode, "num_return_sequences": nrs, **GIVEN, **fields}
    return to_generate_kwargs(parse_request(payload))


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (
            "sample-top-p",
            {"do_sample": True, "top_p": 0.5, "top_k": 7, "temperature": 1.0, "num_return_sequences": 2},
        ),
        (
            "sample-top-k",
            {"do_sample": True, "top_k": 7, "top_p": 1.0, "temperature": 1.0, "num_return_sequences": 2},
        ),
        (
            "sample",
            {"do_sample": True, "top_p": 0.5, "top_k": 7, "temperature": 1.3, "num_return_sequences": 2},
        ),
        (
            "beam",
            {
                "do_sample": False,
                "num_beams": 4,
                "no_repeat_ngram_size": 3,
                "early_stopping": True,
                "num_return_sequences": 2,
            },
        ),
        ("greedy", {"do_sample": False, "num_beams": 1, "num_return_sequences": 1}),
    ],
)
def test_mode_kwargs_exactly(mode, expected):
    assert kwargs_for(mode) == expected


@pytest.mark.parametrize("mode", SAMPLING_MODES)
def test_beam_settings_never_reach_sampling_modes(mode):
    kwargs = kwargs_for(mode)
    assert not set(BEAM_ONLY) & set(kwargs)
    assert kwargs["do_sample"] is True


@pytest.mark.parametrize("mode", MODES)
def test_temperature_only_reaches_sample(mode):
    kwargs = kwargs_for(mode)
    if mode == "sample":
        assert kwargs["temperature"] == GIVEN["temperature"]
    elif mode in SAMPLING_MODES:
        assert kwargs["temperature"] == 1.0
    else:
        assert "temperature" not in kwargs


@pytest.mark.parametrize("mode", ["beam", "greedy"])
def test_search_modes_do_not_sample(mode):
    kwargs = kwargs_for(mode)
    assert kwargs["do_sample"] is False
    assert not {"top_p", "top_k", "temperature"} & set(kwargs)


@pytest.mark.parametrize("mode", MODES)
def test_num_return_sequences_always_present(mode):
    req = parse_request({"input": "Hello", "mode": mode})
    kwargs = to_generate_kwargs(req)
    assert kwargs["num_return_sequences"] == req.num_return_sequences


@pytest.mark.parametrize("mode", MODES)
def test_length_is_left_to_the_model_holder(mode):
    kwargs = kwargs_for(mode, max_length=50)
    assert not {"max_length", "max_new_tokens", "seed"} & set(kwargs)


def test_sample_top_p_uses_defaults_when_nothing_is_given():
    kwargs = to_generate_kwargs(parse_request({"input": "Hello"}))
    assert kwargs == {"do_sample": True, "top_p": 0.92, "top_k": 50, "temperature": 1.0, "num_return_sequences": 3}


def test_beam_uses_defaults_when_nothing_is_given():
    kwargs = to_generate_kwargs(parse_request({"input": "Hello", "mode": "beam"}))
    assert kwargs == {
        "do_sample": False,
        "num_beams": 5,
        "no_repeat_ngram_size": 2,
        "early_stopping": True,
        "num_return_sequences": 3,
    }


def test_sample_top_k_with_top_k_off_in_another_mode_passes_zero():
    kwargs = to_generate_kwargs(parse_request({"input": "Hello", "top_k": 0}))
    assert kwargs["top_k"] == 0
