"""Extreme but valid values generate; certainly-too-long prompts are refused before tokenizing."""

from __future__ import annotations

import re
import time

import pytest


@pytest.mark.parametrize("temperature", [1e-40, 5e-324, 1e-30, 1e39, 1.7e308])
@pytest.mark.parametrize("top_k", [0, 50])
def test_extreme_temperatures_generate(client, temperature, top_k):
    response = client.post(
        "/invocations",
        json={
            "input": "Hello there",
            "mode": "sample",
            "temperature": temperature,
            "top_k": top_k,
            "max_new_tokens": 4,
            "seed": 3,
        },
    )
    assert response.status_code == 200, response.get_json()
    assert all(text.startswith("Hello there") for text in response.get_json())


def test_a_tiny_temperature_samples_the_greedy_continuation(client):
    greedy = client.post("/invocations", json={"input": "Hello there", "mode": "greedy", "max_new_tokens": 6})
    cold = client.post(
        "/invocations",
        json={
            "input": "Hello there",
            "mode": "sample",
            "temperature": 1e-40,
            "top_k": 0,
            "top_p": 1.0,
            "max_new_tokens": 6,
            "num_return_sequences": 2,
        },
    )
    assert set(cold.get_json()) == set(greedy.get_json())


def test_a_megabyte_prompt_is_refused_without_tokenizing_it(client, holder):
    started = time.perf_counter()
    response = client.post("/invocations", json={"input": "word " * 400_000})
    elapsed = time.perf_counter() - started
    assert response.status_code == 400
    [message] = response.get_json()["fields"]["input"]
    assert "2000000 characters" in message and str(holder.token_limit - 1) in message
    assert elapsed < 1.0, f"took {elapsed:.2f}s: the prompt was tokenized"


def test_a_prompt_just_under_the_character_bound_is_still_counted_in_tokens(client, holder):
    text = "a" * (holder.token_limit * holder.max_token_chars)
    response = client.post("/invocations", json={"input": text})
    assert response.status_code == 400
    message = response.get_json()["fields"]["input"][0]
    assert re.match(r"is \d+ tokens; at most", message), message  # counted, not refused by length
