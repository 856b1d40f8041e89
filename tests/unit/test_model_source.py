"""Model-holder logic that needs no torch: where the model comes from, decoding, token budgets."""

from __future__ import annotations

import pytest

from textgen.errors import ModelNotReady, ValidationFailed
from textgen.model import REPLACEMENT_CHAR, ModelHolder, decode_continuation, resolve_source
from textgen.schemas import parse_request
from textgen.settings import Settings


def model_folder(path, with_config=True, ggufs=()):
    path.mkdir(parents=True, exist_ok=True)
    if with_config:
        (path / "config.json").write_text("{}")
    for name in ggufs:
        (path / name).write_bytes(b"GGUF")
    return path


@pytest.fixture
def sagemaker_dir(tmp_path):
    """A stand-in for /opt/ml/model (empty unless a test fills it)."""
    path = tmp_path / "opt-ml-model"
    path.mkdir()
    return path


def settings(sagemaker_dir, model=None, default="/embedded/default"):
    return Settings(model=model, sagemaker_model_dir=str(sagemaker_dir), default_model_dir=default)


# ---- resolve_source --------------------------------------------------------------------------


def test_textgen_model_folder_wins_over_sagemaker_dir(tmp_path, sagemaker_dir):
    model_folder(sagemaker_dir)
    chosen = model_folder(tmp_path / "mine")
    source = resolve_source(settings(sagemaker_dir, model=str(chosen)))
    assert (source.kind, source.location, source.origin) == ("folder", str(chosen), "TEXTGEN_MODEL")


def test_textgen_model_folder_with_one_gguf(tmp_path, sagemaker_dir):
    chosen = model_folder(tmp_path / "mine", with_config=False, ggufs=["model.Q8_0.gguf"])
    source = resolve_source(settings(sagemaker_dir, model=str(chosen)))
    assert (source.kind, source.location) == ("gguf", str(chosen / "model.Q8_0.gguf"))


def test_textgen_model_gguf_file(tmp_path, sagemaker_dir):
    gguf = model_folder(tmp_path / "mine", with_config=False, ggufs=["m.gguf"]) / "m.gguf"
    source = resolve_source(settings(sagemaker_dir, model=str(gguf)))
    assert (source.kind, source.location) == ("gguf", str(gguf))


def test_textgen_model_folder_without_a_model_is_an_error(tmp_path, sagemaker_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="TEXTGEN_MODEL"):
        resolve_source(settings(sagemaker_dir, model=str(empty)))


@pytest.mark.parametrize("hub_id", ["openai-community/gpt2", "HuggingFaceTB/SmolLM2-135M-Instruct"])
def test_textgen_model_that_is_not_a_path_is_a_hub_id(sagemaker_dir, hub_id):
    model_folder(sagemaker_dir)
    source = resolve_source(settings(sagemaker_dir, model=hub_id))
    assert (source.kind, source.location, source.origin) == ("hub", hub_id, "TEXTGEN_MODEL")


def test_sagemaker_dir_with_config(sagemaker_dir):
    model_folder(sagemaker_dir)
    source = resolve_source(settings(sagemaker_dir))
    assert (source.kind, source.location) == ("folder", str(sagemaker_dir))


def test_sagemaker_dir_with_a_single_gguf(sagemaker_dir):
    model_folder(sagemaker_dir, with_config=False, ggufs=["model.gguf"])
    source = resolve_source(settings(sagemaker_dir))
    assert (source.kind, source.location) == ("gguf", str(sagemaker_dir / "model.gguf"))


def test_empty_sagemaker_dir_falls_back_to_the_embedded_default(sagemaker_dir):
    source = resolve_source(settings(sagemaker_dir, default="/srv/smollm2"))
    assert (source.kind, source.location) == ("embedded", "/srv/smollm2")


def test_missing_sagemaker_dir_falls_back_to_the_embedded_default(tmp_path):
    source = resolve_source(settings(tmp_path / "absent", default="/srv/smollm2"))
    assert (source.kind, source.location) == ("embedded", "/srv/smollm2")


# ---- decode_continuation ---------------------------------------------------------------------


class FakeTokenizer:
    """Decodes ids through a fixed table and records the keyword arguments it was called with."""

    def __init__(self, table: dict[int, str]):
        self.table = table
        self.calls: list[dict] = []

    def decode(self, ids, **kwargs) -> str:
        self.calls.append(kwargs)
        return "".join(self.table[i] for i in ids)


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ([1, 2], " world!"),
        ([1, 9], " world"),
        ([1, 9, 9], " world"),
        ([9, 1], REPLACEMENT_CHAR + " world"),
        ([3, 9], " 日本"),
        ([], ""),
    ],
)
def test_decode_continuation_drops_a_trailing_replacement_char(ids, expected):
    tokenizer = FakeTokenizer({1: " world", 2: "!", 3: " 日本", 9: REPLACEMENT_CHAR})
    assert decode_continuation(tokenizer, ids) == expected


def test_decode_continuation_keeps_spacing_and_skips_special_tokens():
    tokenizer = FakeTokenizer({1: " ,"})
    decode_continuation(tokenizer, [1])
    assert tokenizer.calls == [{"skip_special_tokens": True, "clean_up_tokenization_spaces": False}]


# ---- the holder before loading, and token budgets (no model needed) ---------------------------


def test_holder_starts_loading_and_refuses_to_generate():
    holder = ModelHolder(Settings(model="/nonexistent"))
    assert holder.state == "loading"
    assert holder.detail
    with pytest.raises(ModelNotReady):
        holder.generate(parse_request({"input": "Hello"}))


def budget_holder(context_window: int, max_total_tokens: int = 1024) -> ModelHolder:
    holder = ModelHolder(Settings(model="/nonexistent", max_total_tokens=max_total_tokens))
    holder.context_window = context_window
    return holder


@pytest.mark.parametrize(
    ("payload", "prompt_tokens", "expected"),
    [
        ({"max_length": 100}, 10, 90),
        ({"max_length": 11}, 10, 1),
        ({"max_length": 128}, 10, 118),
        ({"max_new_tokens": 5}, 10, 5),
        ({"max_new_tokens": 1}, 127, 1),
        ({}, 99, 1),
    ],
)
def test_new_token_budget(payload, prompt_tokens, expected):
    req = parse_request({"input": "Hello", **payload})
    assert budget_holder(128).new_token_budget(req, prompt_tokens) == expected


@pytest.mark.parametrize(
    ("payload", "prompt_tokens", "field", "numbers"),
    [
        ({"max_length": 200}, 10, "max_length", ("10", "11..128", "200")),
        ({"max_length": 10}, 10, "max_length", ("10", "11..128", "got 10")),
        ({}, 100, "max_length", ("100", "101..128")),
        ({"max_new_tokens": 119}, 10, "max_new_tokens", ("1..118", "10-token", "119")),
        ({"max_new_tokens": 1}, 128, "input", ("128 tokens", "127")),
        ({"max_new_tokens": 1}, 500, "input", ("500 tokens", "127")),
        ({"max_new_tokens": 1}, 0, "input", ("0 tokens",)),
    ],
)
def test_token_budget_errors_give_the_numbers(payload, prompt_tokens, field, numbers):
    req = parse_request({"input": "Hello", **payload})
    with pytest.raises(ValidationFailed) as info:
        budget_holder(128).new_token_budget(req, prompt_tokens)
    message = " ".join(info.value.fields[field])
    for number in numbers:
        assert number in message, message


def test_server_limit_below_the_context_window_is_the_limit():
    req = parse_request({"input": "Hello", "max_length": 65})
    with pytest.raises(ValidationFailed) as info:
        budget_holder(128, max_total_tokens=64).new_token_budget(req, 10)
    assert "11..64" in info.value.fields["max_length"][0]
    assert "TEXTGEN_MAX_TOTAL_TOKENS" in info.value.fields["max_length"][0]
