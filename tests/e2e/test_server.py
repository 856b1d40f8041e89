"""End to end: a live gunicorn serving the tiny GPT-2."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.e2e.conftest import README_EXAMPLE


def test_ping_is_503_while_loading_then_200(tiny_server):
    assert tiny_server.ping_statuses[-1] == 200
    assert 503 in tiny_server.ping_statuses, f"never saw 503 before 200: {tiny_server.ping_statuses[:5]}"
    first_503 = tiny_server.ping_statuses.index(503)
    assert 200 not in tiny_server.ping_statuses[:first_503]


def test_readme_example(tiny_server):
    response = tiny_server.post(README_EXAMPLE)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    texts = response.json()
    assert len(texts) == 3
    assert all(text.startswith(README_EXAMPLE["input"]) for text in texts)
    assert int(response.headers["X-Textgen-Seed"]) >= 0


def test_eight_concurrent_requests_all_succeed(tiny_server):
    payloads = [{"input": f"Request number {i} says", "max_new_tokens": 16, "seed": i} for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(tiny_server.post, payloads))
    for payload, response in zip(payloads, responses):
        assert response.status_code == 200, response.text
        assert all(text.startswith(payload["input"]) for text in response.json())
    # Seeded requests answer the same when repeated alone.
    assert tiny_server.post(payloads[3]).json() == responses[3].json()


def test_ping_answers_fast_during_a_long_generation(tiny_server):
    long_request = {
        "input": "Tell a long story:",
        "mode": "beam",
        "num_beams": 8,
        "num_return_sequences": 8,
        "max_length": 1000,
        "no_repeat_ngram_size": 0,
    }
    result = {}
    worker = threading.Thread(target=lambda: result.update(response=tiny_server.post(long_request, timeout=300)))
    worker.start()
    time.sleep(0.5)
    assert worker.is_alive(), "the long generation finished too soon to test /ping under load"
    latencies = []
    while worker.is_alive() and len(latencies) < 10:
        started = time.monotonic()
        ping = requests.get(tiny_server.url + "/ping", timeout=5)
        latencies.append(time.monotonic() - started)
        assert ping.status_code == 200
        time.sleep(0.1)
    worker.join()
    assert result["response"].status_code == 200
    assert len(latencies) >= 3, "generation ended before /ping was measured"
    assert max(latencies) < 2.0, latencies


def test_sigterm_lets_the_in_flight_request_finish_and_exits_0(start_server, long_model_dir):
    live = start_server({"TEXTGEN_MODEL": str(long_model_dir)})
    payload = {"input": "Once", "mode": "greedy", "max_length": 1000, "no_repeat_ngram_size": 0}
    result = {}
    worker = threading.Thread(target=lambda: result.update(response=live.post(payload, timeout=60)))
    worker.start()
    time.sleep(0.5)
    assert worker.is_alive(), "request finished before SIGTERM could be sent"
    started = time.monotonic()
    live.process.send_signal(signal.SIGTERM)
    worker.join(60)
    assert result["response"].status_code == 200
    assert result["response"].json()[0].startswith("Once")
    assert live.process.wait(30) == 0, live.log()
    assert time.monotonic() - started < 30
    with pytest.raises(requests.ConnectionError):
        requests.get(live.url + "/ping", timeout=2)
