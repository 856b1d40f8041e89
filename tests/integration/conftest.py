"""Integration-ring fixtures: one loaded tiny GPT-2 holder per module, and the real app around it."""

from __future__ import annotations

import pytest

from textgen import create_app
from textgen.model import ModelHolder
from textgen.schemas import parse_request
from textgen.settings import Settings


def single_threaded() -> None:
    """Use one torch thread: the tiny model's tensors are too small to gain from intra-op threads, and
    on a busy CI machine their spin-waits make each decoding step ten times slower."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def holder(tiny_model_dir, tmp_path_factory) -> ModelHolder:
    cache = tmp_path_factory.mktemp("textgen-cache")
    loaded = ModelHolder(Settings(model=str(tiny_model_dir), cache_dir=str(cache), dtype="float32")).load()
    single_threaded()  # load() set threads = cores / workers
    return loaded


@pytest.fixture(scope="module")
def client(holder):
    return create_app(settings=holder.settings, generator=holder).test_client()


@pytest.fixture(scope="module")
def generate(holder):
    """Run one request (a JSON-like dict) through the schema and the holder; return the GenerationResult."""

    def run(payload: dict):
        return holder.generate(parse_request({"input": "Hello", **payload}))

    return run


@pytest.fixture(scope="module")
def prompt_tokens(holder):
    """The token count of a text under the model's tokenizer."""

    def count(text: str) -> int:
        return len(holder.tokenizer(text)["input_ids"])

    return count
