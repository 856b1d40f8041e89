"""End to end on the embedded SmolLM2-135M-Instruct, served for real (needs `make model`)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO

MODEL_DIR = Path(os.environ.get("TEXTGEN_DEFAULT_MODEL_DIR", REPO / ".model/smollm2-135m-instruct"))


@pytest.fixture(scope="module")
def embedded_server(tmp_path_factory):
    from tests.e2e.conftest import LiveServer

    if not (MODEL_DIR / "config.json").is_file():
        pytest.fail(f"the embedded model is not converted at {MODEL_DIR}: run `make model`")
    tmp = tmp_path_factory.mktemp("embedded")
    env = {"TEXTGEN_DEFAULT_MODEL_DIR": str(MODEL_DIR), "TEXTGEN_CACHE_DIR": str(tmp / "cache"), "TEXTGEN_MODEL": ""}
    live = LiveServer(env=env, log_path=tmp / "server.log").start(deadline_s=300)
    yield live
    live.stop()


def test_greedy_request_returns_readable_text(embedded_server):
    prompt = "The capital of France is"
    response = embedded_server.post({"input": prompt, "mode": "greedy", "max_new_tokens": 24})
    assert response.status_code == 200, response.text
    [text] = response.json()
    continuation = text[len(prompt) :]
    assert text.startswith(prompt)
    words = re.findall(r"[A-Za-z]{2,}", continuation)
    assert len(words) >= 3, f"not readable text: {continuation!r}"
    # Readable text: printable characters, not byte soup or replacement characters.
    printable = sum(ch.isprintable() or ch in "\n\t" for ch in continuation)
    assert printable == len(continuation) and "\ufffd" not in continuation, continuation
    assert "Paris" in continuation, continuation


def test_default_request_gives_three_different_continuations(embedded_server):
    prompt = "This is an input text"
    response = embedded_server.post({"input": prompt, "max_length": 40})
    assert response.status_code == 200, response.text
    texts = response.json()
    assert len(texts) == 3 and all(t.startswith(prompt) for t in texts)
    assert len(set(texts)) == 3, texts
