"""What reaches the server over raw HTTP: chunked bodies, gunicorn's own parse errors, saturation."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests


def raw_request(url: str, data: bytes, timeout: float = 30.0) -> tuple[int, dict, bytes]:
    """Send raw bytes to the server; return (status, headers, body) of its answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
            head, _, body = received.partition(b"\r\n\r\n")
            headers = dict(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:] if ": " in line)
            length = int(headers.get("Content-Length", "-1"))
            if length >= 0 and len(body) >= length:
                break
    status = int(received.split(b" ", 2)[1])
    return status, headers, body


def test_a_chunked_body_over_the_limit_is_413_not_truncated(tiny_server):
    def body():
        yield b'{"input": "Hi", "max_new_tokens": 2}'
        for _ in range(7):
            yield b" " * 1048576
        yield b"GARBAGE"

    response = requests.post(
        tiny_server.url + "/invocations", data=body(), headers={"Content-Type": "application/json"}, timeout=60
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "payload_too_large"


def test_a_chunked_body_under_the_limit_is_served(tiny_server):
    def body():
        yield b'{"input": "Chunked", '
        yield b'"max_new_tokens": 2}'

    response = requests.post(
        tiny_server.url + "/invocations", data=body(), headers={"Content-Type": "application/json"}, timeout=60
    )
    assert response.status_code == 200 and response.json()[0].startswith("Chunked")


def test_a_malformed_chunk_is_a_json_400(tiny_server):
    data = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
    )
    status, headers, body = raw_request(tiny_server.url, data)
    assert status == 400 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["code"] == 400


def test_gunicorn_parse_errors_are_json(tiny_server):
    cases = [
        b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # request line too long
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",  # bad Content-Length
        b"NOT A REQUEST\r\n\r\n",
    ]
    for data in cases:
        status, headers, body = raw_request(tiny_server.url, data)
        assert 400 <= status < 500, (data[:40], status)
        assert headers["Content-Type"] == "application/json", (data[:40], headers)
        assert json.loads(body)["code"] == status
    assert requests.get(tiny_server.url + "/ping", timeout=5).status_code == 200


def test_a_saturated_worker_answers_ping_and_refuses_the_excess_with_429(start_server, long_model_dir):
    live = start_server(
        {"TEXTGEN_MODEL": str(long_model_dir), "TEXTGEN_MAX_QUEUE": "2", "TEXTGEN_MAX_BATCH_ROWS": "2"}
    )  # threads: 2 + 2 + 16 = 20
    long_request = {"input": "Go on and on", "mode": "greedy", "max_new_tokens": 900, "no_repeat_ngram_size": 0}
    ping_times, stop = [], threading.Event()

    def pinger():
        while not stop.is_set():
            started = time.monotonic()
            assert requests.get(live.url + "/ping", timeout=10).status_code == 200
            ping_times.append(time.monotonic() - started)
            time.sleep(0.05)

    ping_thread = threading.Thread(target=pinger)
    ping_thread.start()
    try:
        with ThreadPoolExecutor(30) as pool:
            statuses = [r.status_code for r in pool.map(lambda _: live.post(long_request, timeout=300), range(30))]
    finally:
        stop.set()
        ping_thread.join()
    assert set(statuses) <= {200, 429} and statuses.count(429) >= 20, statuses
    assert statuses.count(200) >= 2
    assert ping_times and max(ping_times) < 2.0, max(ping_times)
