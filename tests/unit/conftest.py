"""Unit-ring fixtures: a fake generator behind the real Flask app, and a guard against heavy imports."""

from __future__ import annotations

import sys

import pytest

from textgen import create_app
from textgen.model import GenerationResult
from textgen.schemas import GenerationRequest
from textgen.settings import Settings

HEAVY_MODULES = ("torch", "transformers")


class FakeGenerator:
    """Implements the Generator protocol without a model: echoes the input, records each request."""

    def __init__(self, state: str = "ready", detail: str = "ready", seed: int = 4242, error: Exception | None = None):
        self.state = state
        self.detail = detail
        self.seed = seed
        self.error = error
        self.requests: list[GenerationRequest] = []

    def generate(self, request: GenerationRequest, gone=None) -> GenerationResult:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        seed = request.seed if request.seed is not None else self.seed
        texts = [f"{request.input} continuation {i}" for i in range(request.num_return_sequences)]
        return GenerationResult(texts, seed, prompt_tokens=1, new_tokens=[2] * len(texts))


@pytest.fixture(autouse=True)
def no_heavy_imports():
    """Fail a unit test that imports torch or transformers (the contract layers must not need them)."""
    before = {name for name in HEAVY_MODULES if name in sys.modules}
    yield
    imported = {name for name in HEAVY_MODULES if name in sys.modules} - before
    assert not imported, f"a unit test imported {sorted(imported)}"


@pytest.fixture
def make_fake():
    """The FakeGenerator class, for tests that need one in a given state or raising an error."""
    return FakeGenerator


@pytest.fixture
def fake() -> FakeGenerator:
    return FakeGenerator()


@pytest.fixture
def make_client():
    """Build a test client from create_app(settings, generator); defaults: Settings() and a ready fake."""

    def build(settings: Settings | None = None, generator=None):
        app = create_app(settings=settings or Settings(), generator=generator or FakeGenerator())
        return app.test_client()

    return build


@pytest.fixture
def client(make_client, fake):
    return make_client(generator=fake)
