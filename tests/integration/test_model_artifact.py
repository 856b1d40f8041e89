"""A SageMaker model.tar.gz made by `make model-artifact` serves through the /opt/ml/model code path."""

from __future__ import annotations

import subprocess
import sys
import tarfile

from tests.e2e.conftest import REPO
from textgen import create_app
from textgen.model import ModelHolder, resolve_source
from textgen.settings import Settings


def test_model_artifact_unpacks_and_serves(tiny_model_dir, tmp_path):
    artifact = tmp_path / "model.tar.gz"
    subprocess.run(
        [sys.executable, str(REPO / "scripts/model_artifact.py"), str(tiny_model_dir), str(artifact)], check=True
    )
    with tarfile.open(artifact) as archive:
        names = archive.getnames()
        assert "config.json" in names and "model.safetensors" in names  # files at the archive root
        assert all("/" not in name for name in names)
        opt_ml_model = tmp_path / "opt-ml-model"
        archive.extractall(opt_ml_model, filter="data")

    settings = Settings(
        model=None,
        sagemaker_model_dir=str(opt_ml_model),
        cache_dir=str(tmp_path / "cache"),
        dtype="float32",
        default_model_dir=str(tmp_path / "no-default"),
    )
    source = resolve_source(settings)
    assert (source.kind, source.origin) == ("folder", str(opt_ml_model))
    client = create_app(settings, ModelHolder(settings).load()).test_client()
    response = client.post("/invocations", json={"input": "From the artifact", "max_new_tokens": 5})
    assert response.status_code == 200, response.get_json()
    assert len(response.get_json()) == 3
    assert all(text.startswith("From the artifact") for text in response.get_json())


def test_artifact_refuses_a_folder_without_a_model(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts/model_artifact.py"), str(tmp_path), str(tmp_path / "m.tar.gz")],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "no config.json" in result.stderr
