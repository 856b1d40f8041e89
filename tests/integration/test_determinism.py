"""Seeds reproduce results, different seeds differ, search modes are deterministic, workers serialize."""

from __future__ import annotations

import threading

import pytest

SAMPLING = ["sample-top-p", "sample-top-k", "sample"]


def post(client, payload: dict):
    response = client.post("/invocations", json={"input": "Hello", "max_new_tokens": 10, **payload})
    assert response.status_code == 200, response.get_json()
    return response


@pytest.mark.parametrize("mode", SAMPLING)
def test_same_seed_twice_is_identical(client, mode):
    first = post(client, {"mode": mode, "seed": 1234})
    second = post(client, {"mode": mode, "seed": 1234})
    assert first.get_json() == second.get_json()
    assert first.headers["X-Textgen-Seed"] == second.headers["X-Textgen-Seed"] == "1234"


@pytest.mark.parametrize("mode", SAMPLING)
def test_two_seeds_differ(client, mode):
    assert post(client, {"mode": mode, "seed": 1}).get_json() != post(client, {"mode": mode, "seed": 2}).get_json()


@pytest.mark.parametrize("mode", SAMPLING)
def test_sampled_sequences_within_one_request_differ(client, mode):
    texts = post(client, {"mode": mode, "seed": 9, "num_return_sequences": 3}).get_json()
    assert len(set(texts)) > 1


@pytest.mark.parametrize("seed", [0, 2**32 - 1])
def test_extreme_seeds_work(client, seed):
    response = post(client, {"seed": seed})
    assert response.headers["X-Textgen-Seed"] == str(seed)


@pytest.mark.parametrize("payload", [{"mode": "beam"}, {"mode": "beam", "num_beams": 3, "no_repeat_ngram_size": 0}])
def test_beam_is_deterministic_without_a_seed(client, payload):
    assert post(client, payload).get_json() == post(client, payload).get_json()


def test_greedy_is_deterministic_and_ignores_the_seed(client):
    outputs = [post(client, {"mode": "greedy", **extra}).get_json() for extra in ({}, {}, {"seed": 1}, {"seed": 99})]
    assert all(output == outputs[0] for output in outputs)


@pytest.mark.parametrize("seed_field", [{}, {"seed": None}, {"seed": -1}])
def test_reported_seed_replays_an_unseeded_request(client, seed_field):
    first = post(client, {"mode": "sample-top-p", **seed_field})
    seed = int(first.headers["X-Textgen-Seed"])
    assert 0 <= seed <= 2**32 - 1
    replay = post(client, {"mode": "sample-top-p", "seed": seed})
    assert replay.get_json() == first.get_json()
    assert replay.headers["X-Textgen-Seed"] == str(seed)


def test_unseeded_requests_draw_fresh_seeds(client):
    post(client, {"seed": 5})  # a seeded request must not fix the seed of the next ones
    seeds = {post(client, {"max_new_tokens": 1}).headers["X-Textgen-Seed"] for _ in range(4)}
    assert len(seeds) == 4


def test_seed_does_not_leak_into_the_next_request(client):
    """A seeded request after an unseeded one gives the same as on its own."""
    alone = post(client, {"mode": "sample", "seed": 77}).get_json()
    post(client, {"mode": "sample"})
    assert post(client, {"mode": "sample", "seed": 77}).get_json() == alone


def test_holder_result_equals_http_result(client, generate):
    payload = {"mode": "sample-top-k", "seed": 31, "max_new_tokens": 10}
    assert generate(payload).texts == post(client, payload).get_json()


CONCURRENT = [
    {"mode": "sample-top-p", "seed": 1},
    {"mode": "sample-top-p", "seed": 2},
    {"mode": "sample-top-k", "seed": 3},
    {"mode": "sample", "seed": 4, "temperature": 1.5},
    {"mode": "beam", "num_beams": 3},
    {"mode": "greedy", "input": "Zürich 😀"},
    {"mode": "sample", "seed": 7, "num_return_sequences": 5},
    {"mode": "sample-top-p", "seed": 8, "input": "Hello , world !"},
]


def test_concurrent_requests_equal_their_solo_results(generate):
    payloads = [{"max_new_tokens": 16, **p} for p in CONCURRENT]
    solo = [generate(p).texts for p in payloads]
    barrier = threading.Barrier(len(payloads))
    results: list = [None] * len(payloads)
    errors: list = []

    def worker(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = generate(payloads[index]).texts
        except Exception as exc:  # reported below with the index
            errors.append((index, repr(exc)))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(payloads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert results == solo


def test_concurrent_http_requests_all_succeed(holder):
    from textgen import create_app

    app = create_app(settings=holder.settings, generator=holder)
    payloads = [{"input": "Hello", "max_new_tokens": 12, **p} for p in CONCURRENT]
    solo = [app.test_client().post("/invocations", json=p).get_json() for p in payloads]
    barrier = threading.Barrier(len(payloads))
    results: list = [None] * len(payloads)

    def worker(index: int) -> None:
        client = app.test_client()
        barrier.wait(timeout=30)
        response = client.post("/invocations", json=payloads[index])
        results[index] = (response.status_code, response.get_json())

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(payloads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == [(200, texts) for texts in solo]
