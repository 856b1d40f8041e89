"""The holder's states: ready after load; failed (with a reason) when the model cannot load."""

from __future__ import annotations

import pytest

from textgen import create_app
from textgen.errors import ModelNotReady
from textgen.model import ModelHolder
from textgen.schemas import parse_request
from textgen.settings import Settings


def single_threaded() -> None:
    """As the module holder does (see conftest.py): load() sets torch threads, the tiny model wants one."""
    import torch

    torch.set_num_threads(1)


def test_loaded_holder_is_ready(holder, tiny_model_dir):
    assert holder.state == "ready"
    assert holder.detail == "ready"
    assert holder.context_window == 128
    assert holder.token_limit == 128
    assert holder.source.kind == "folder" and holder.source.location == str(tiny_model_dir)
    assert str(holder.dtype) == "torch.float32"


def test_ping_is_200_once_ready(client):
    response = client.get("/ping")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready"}


def bad_model_folders(root):
    broken = root / "broken-config"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    no_weights = root / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text('{"model_type": "gpt2"}')
    empty = root / "empty"
    empty.mkdir()
    return {"broken-config": broken, "no-weights": no_weights, "empty": empty}


@pytest.mark.parametrize("kind", ["broken-config", "no-weights", "empty"])
def test_bad_model_folder_fails_in_the_background_and_ping_says_503(tmp_path, kind):
    folder = bad_model_folders(tmp_path)[kind]
    bad = ModelHolder(Settings(model=str(folder), cache_dir=str(tmp_path / "cache"), dtype="float32"))
    app = create_app(settings=bad.settings, generator=bad)
    client = app.test_client()
    thread = bad.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert bad.state == "failed"
    assert bad.detail.startswith("model failed to load: ")
    response = client.get("/ping")
    assert response.status_code == 503
    assert response.content_type == "application/json"
    data = response.get_json()
    assert data["code"] == 503
    assert data["message"] == bad.detail
    assert "Traceback" not in response.get_data(as_text=True)
    invocation = client.post("/invocations", json={"input": "Hello"})
    assert invocation.status_code == 503
    with pytest.raises(ModelNotReady):
        bad.generate(parse_request({"input": "Hello"}))


def test_started_holder_goes_from_loading_to_ready(tiny_model_dir, tmp_path):
    fresh = ModelHolder(Settings(model=str(tiny_model_dir), cache_dir=str(tmp_path), dtype="float32"))
    client = create_app(settings=fresh.settings, generator=fresh).test_client()
    assert fresh.state == "loading"
    assert client.get("/ping").status_code == 503
    fresh.start().join(timeout=120)
    single_threaded()
    assert fresh.state == "ready"
    assert client.get("/ping").status_code == 200
    response = client.post("/invocations", json={"input": "Hello", "mode": "greedy", "max_new_tokens": 3})
    assert response.status_code == 200
    assert response.get_json()[0].startswith("Hello")


def test_another_holder_reproduces_a_seeded_result(holder, tiny_model_dir, tmp_path):
    """Same model, same seed, same hardware: whichever worker's holder serves it, the same list comes back."""
    other = ModelHolder(Settings(model=str(tiny_model_dir), cache_dir=str(tmp_path), dtype="float32")).load()
    single_threaded()
    request = parse_request({"input": "Hello", "mode": "sample", "seed": 2024, "max_new_tokens": 10})
    assert other.generate(request).texts == holder.generate(request).texts


def test_auto_dtype_on_cpu_is_measured_once_and_reused(tiny_model_dir, tmp_path):
    settings = Settings(model=str(tiny_model_dir), cache_dir=str(tmp_path), dtype="auto")
    first = ModelHolder(settings).load()
    assert str(first.dtype) in ("torch.float32", "torch.bfloat16")
    measured = list(tmp_path.glob("dtype-*.json"))
    assert len(measured) == 1
    second = ModelHolder(settings).load()
    single_threaded()
    assert second.dtype == first.dtype
    assert list(tmp_path.glob("dtype-*.json")) == measured
    request = parse_request({"input": "Hello", "mode": "greedy", "max_new_tokens": 4})
    assert second.generate(request).texts[0].startswith("Hello")
