"""End to end: batching in a live gunicorn on the tiny GPT-2 (16 concurrent clients; the queue bound)."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import requests

CLIENTS = 16
MODES = [
    {"mode": "greedy", "num_return_sequences": 1},
    {"mode": "sample-top-p", "num_return_sequences": 3},
    {"mode": "sample-top-k", "top_k": 8, "num_return_sequences": 2},
    {"mode": "sample", "temperature": 1.3, "top_p": 0.8, "top_k": 40, "num_return_sequences": 2},
    {"mode": "beam", "num_beams": 3, "no_repeat_ngram_size": 2, "num_return_sequences": 2},
]


def mixed_payloads() -> list[dict]:
    """Every mode, distinct inputs and lengths; every fourth request carries a seed."""
    payloads = []
    for i in range(CLIENTS):
        payload = {
            "input": f"Client {i} {'and more ' * (i % 4)}says",
            "max_new_tokens": 4 + i % 9,
            **MODES[i % len(MODES)],
        }
        if i % 4 == 1:
            payload["seed"] = 1000 + i
        payloads.append(payload)
    return payloads


def timed_post(server, payload: dict, timeout: float = 120.0):
    started = time.monotonic()
    response = server.post(payload, timeout=timeout)
    return response, started, time.monotonic()


def test_sixteen_concurrent_clients_each_get_their_own_correct_answer(tiny_server):
    payloads = mixed_payloads()
    barrier = threading.Barrier(CLIENTS)

    def client(payload: dict) -> requests.Response:
        barrier.wait()
        return tiny_server.post(payload)

    with ThreadPoolExecutor(CLIENTS) as pool:
        responses = list(pool.map(client, payloads))
    for payload, response in zip(payloads, responses):
        assert response.status_code == 200, (payload, response.text)
        texts = response.json()
        assert len(texts) == payload["num_return_sequences"], payload
        assert all(isinstance(text, str) and text.startswith(payload["input"]) for text in texts), (payload, texts)
        seed = response.headers["X-Textgen-Seed"]
        assert int(seed) >= 0
        if "seed" in payload:
            assert seed == str(payload["seed"])
    # A seeded request answers under load exactly what it answers alone.
    for payload, response in zip(payloads, responses):
        if "seed" in payload:
            replay = tiny_server.post(payload)
            assert replay.status_code == 200
            assert replay.json() == response.json(), payload


def open_request(server, payload: dict) -> socket.socket:
    """POST ``payload`` on a raw connection left open: closing it is a client disconnect."""
    body = json.dumps(payload).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    head = f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    sock.sendall(head.encode() + body)
    return sock


def answered(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def test_beyond_the_queue_bound_requests_get_429_with_retry_after_at_once(start_server, long_model_dir):
    live = start_server({"TEXTGEN_MODEL": str(long_model_dir), "TEXTGEN_MAX_QUEUE": "1", "TEXTGEN_DTYPE": "float32"})
    # A request that holds the engine for far longer than the test (16 rows, 1000 steps, each sorting
    # the whole vocabulary: no top-k and top_p near 1); its client leaves at the end.
    blocker = open_request(
        live,
        {
            "input": "Once upon a time",
            "mode": "sample",
            "top_k": 0,
            "top_p": 0.99,
            "num_return_sequences": 16,
            "max_new_tokens": 1000,
        },
    )
    try:
        time.sleep(1.0)  # the engine takes it and starts running it
        assert not answered(blocker), "the long request finished too soon to hold the engine"
        extra = 6
        barrier = threading.Barrier(extra)

        def client(i: int):
            barrier.wait()
            return timed_post(live, {"input": f"Extra {i}", "mode": "greedy", "max_new_tokens": 2})

        with ThreadPoolExecutor(extra) as pool:
            pending = {pool.submit(client, i) for i in range(extra)}
            refused = []
            deadline = time.monotonic() + 30
            while len(refused) < extra - 1 and pending and time.monotonic() < deadline:
                done, pending = wait(pending, timeout=1, return_when=FIRST_COMPLETED)
                for future in done:
                    response, started, ended = future.result()
                    assert response.status_code == 429, f"only the queued request may wait: {response.text}"
                    refused.append((response, ended - started))
            assert len(refused) == extra - 1, "all but the one queued request should be refused"
            assert not answered(blocker), "the refusals came only after the running request ended"
            for response, seconds in refused:
                assert seconds < 5.0, f"refused after {seconds:.1f}s instead of at once"
                assert response.headers["Content-Type"] == "application/json"
                body = response.json()
                assert body["code"] == 429 and body["error"] == "too_many_requests"
                assert "TEXTGEN_MAX_QUEUE" in body["message"]
                assert int(response.headers["Retry-After"]) >= 1
            # The blocker's client leaves: its rows stop, and the queued request runs.
            blocker.close()
            [queued] = pending
            response, _, _ = queued.result(timeout=120)
            assert response.status_code == 200, response.text
    finally:
        blocker.close()
    after = live.post({"input": "After", "mode": "greedy", "max_new_tokens": 2})
    assert after.status_code == 200 and after.json()[0].startswith("After")
