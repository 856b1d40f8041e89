"""/opt/ml/model may hold a single .gguf file: the embedded GGUF served from there, in process."""

from __future__ import annotations

import os

from textgen import create_app
from textgen.convert import embedded_gguf
from textgen.model import ModelHolder, resolve_source
from textgen.settings import Settings


def test_a_single_gguf_file_in_the_model_dir_serves(tmp_path):
    model_dir = tmp_path / "opt-ml-model"
    model_dir.mkdir()
    os.symlink(embedded_gguf(), model_dir / "model.gguf")
    settings = Settings(
        model=None,
        sagemaker_model_dir=str(model_dir),
        cache_dir=str(tmp_path / "cache"),
        dtype="float32",
        default_model_dir=str(tmp_path / "no-default"),
    )
    assert resolve_source(settings).kind == "gguf"
    client = create_app(settings, ModelHolder(settings).load()).test_client()
    response = client.post(
        "/invocations", json={"input": "The capital of France is", "mode": "greedy", "max_new_tokens": 6}
    )
    assert response.status_code == 200, response.get_json()
    [text] = response.get_json()
    assert text.startswith("The capital of France is") and "Paris" in text
