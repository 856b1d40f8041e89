#!/usr/bin/env python3
"""Smoke-test a running textgen server: /ping, the README example, each mode once, two bad requests.

Standard library only, so it runs anywhere: ``python3 scripts/smoke_test.py --url http://HOST:PORT``.
Prints one line per check and exits non-zero if any check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request

EXAMPLE = {"input": "This is an input text"}


def call(
    url: str,
    path: str,
    body: bytes | None = None,
    content_type: str | None = "application/json",
    timeout: float = 300.0,
) -> tuple[int, dict, object]:
    """One HTTP call; returns (status, headers, decoded JSON or raw text)."""
    request = urllib.request.Request(url.rstrip("/") + path, data=body, method="POST" if body is not None else "GET")
    if content_type and body is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, headers, raw = exc.code, dict(exc.headers), exc.read()
    try:
        return status, headers, json.loads(raw)
    except ValueError:
        return status, headers, raw.decode("utf-8", "replace")


def generation_check(url: str, payload: dict, count: int):
    def check():
        status, headers, body = call(url, "/invocations", json.dumps(payload).encode())
        assert status == 200, f"status {status}: {body}"
        assert isinstance(body, list) and len(body) == count, f"expected {count} strings, got {body!r:.200}"
        for text in body:
            assert isinstance(text, str) and text.startswith(payload["input"]), f"bad prefix: {text!r:.100}"
        assert "X-Textgen-Seed" in headers, "no X-Textgen-Seed header"
        return f"{count} x {len(body[0]) - len(payload['input'])} new chars"

    return check


def error_check(url: str, body: bytes, content_type: str, status_expected: int, field: str | None):
    def check():
        status, _, answer = call(url, "/invocations", body, content_type)
        assert status == status_expected, f"status {status}, expected {status_expected}: {answer}"
        assert isinstance(answer, dict) and answer.get("code") == status, f"not the JSON error shape: {answer!r:.200}"
        if field:
            assert field in answer.get("fields", {}), f"error does not name {field}: {answer}"
        return answer["message"][:70]

    return check


def ping_check(url: str):
    def check():
        status, _, body = call(url, "/ping", timeout=5)
        assert status == 200, f"status {status}: {body}"
        return "ready"

    return check


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--wait", type=float, default=0, help="seconds to wait for /ping to answer 200 first")
    args = parser.parse_args()
    url = args.url
    deadline = time.monotonic() + args.wait
    while args.wait and time.monotonic() < deadline:
        try:
            if call(url, "/ping", timeout=2)[0] == 200:
                break
        except OSError:
            pass
        time.sleep(1)
    short = {"max_length": 24}
    checks = [
        ("GET /ping", ping_check(url)),
        ("README example (defaults)", generation_check(url, EXAMPLE, 3)),
        ("mode sample-top-p", generation_check(url, {"input": "Once upon a time", "mode": "sample-top-p", **short}, 3)),
        ("mode sample-top-k", generation_check(url, {"input": "Once upon a time", "mode": "sample-top-k", **short}, 3)),
        (
            "mode sample",
            generation_check(url, {"input": "Once upon a time", "mode": "sample", "temperature": 0.9, **short}, 3),
        ),
        ("mode beam", generation_check(url, {"input": "Once upon a time", "mode": "beam", **short}, 3)),
        ("mode greedy", generation_check(url, {"input": "Once upon a time", "mode": "greedy", **short}, 1)),
        (
            "bad request: top_p 1.5 -> 400",
            error_check(url, b'{"input": "x", "top_p": 1.5}', "application/json", 400, "top_p"),
        ),
        (
            "bad request: no Content-Type -> 415",
            error_check(url, b'{"input": "x"}', "application/x-www-form-urlencoded", 415, None),
        ),
    ]
    failed = 0
    for name, check in checks:
        started = time.monotonic()
        try:
            detail = check()
            print(f"PASS  {name}  ({detail}; {time.monotonic() - started:.1f}s)")
        except (AssertionError, OSError) as exc:
            failed += 1
            print(f"FAIL  {name}  ({exc})")
    print(f"{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
