"""The tiny GPT-2 behind the holder and the app: counts per mode, exact prefixes, lengths in tokens."""

from __future__ import annotations

import pytest

from textgen.model import REPLACEMENT_CHAR, decode_continuation

CONTEXT_WINDOW = 128  # n_positions of the tiny model built by tests/conftest.py
SHORT = {"max_new_tokens": 6}


def post(client, payload: dict):
    return client.post("/invocations", json={"input": "Hello", **payload})


def tokens_of(n: int) -> str:
    """A prompt of exactly ``n`` tokens (" the" is one GPT-2 token)."""
    return " the" * n


# ---- counts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "count"),
    [
        ({}, 3),
        ({"mode": "sample-top-p", **SHORT}, 3),
        ({"mode": "sample-top-k", **SHORT}, 3),
        ({"mode": "sample", **SHORT}, 3),
        ({"mode": "beam", **SHORT}, 3),
        ({"mode": "greedy", **SHORT}, 1),
        ({"mode": "sample-top-p", "num_return_sequences": 1, **SHORT}, 1),
        ({"mode": "sample", "num_return_sequences": 5, **SHORT}, 5),
        ({"mode": "sample-top-k", "num_return_sequences": 16, **SHORT}, 16),
        ({"mode": "beam", "num_beams": 2, **SHORT}, 2),
        ({"mode": "beam", "num_beams": 1, **SHORT}, 1),
        ({"mode": "beam", "num_beams": 4, "num_return_sequences": 4, **SHORT}, 4),
        ({"mode": "beam", "num_beams": 6, "num_return_sequences": 1, **SHORT}, 1),
    ],
)
def test_each_mode_returns_the_right_count(client, payload, count):
    response = post(client, payload)
    assert response.status_code == 200, response.get_json()
    texts = response.get_json()
    assert isinstance(texts, list) and len(texts) == count
    assert all(isinstance(t, str) and t.startswith("Hello") for t in texts)


# ---- exact prefixes --------------------------------------------------------------------------

TRICKY_INPUTS = [
    pytest.param("Hello , world !", id="space-before-punctuation"),
    pytest.param("Hello  world  .  Two  spaces", id="double-spaces"),
    pytest.param("   leading spaces", id="leading-spaces"),
    pytest.param("trailing spaces   ", id="trailing-spaces"),
    pytest.param("Zürich 😀 naïve 日本", id="non-ascii-emoji"),
    pytest.param("👩‍👩‍👧 family 🇨🇭", id="emoji-sequences"),
    pytest.param("before <|endoftext|> after", id="literal-endoftext"),
    pytest.param("<|endoftext|>", id="only-endoftext"),
    pytest.param("line one\nline two\n", id="newlines"),
    pytest.param("col\tcol\t", id="tabs"),
    pytest.param("don't , isn't ' s", id="apostrophes"),
    pytest.param(" ", id="single-space"),
    pytest.param("e\u0301 composed vs \u00e9", id="combining-accent"),
]


@pytest.mark.parametrize("text", TRICKY_INPUTS)
@pytest.mark.parametrize("mode", ["greedy", "sample-top-p", "beam"])
def test_outputs_start_with_the_input_byte_for_byte(client, text, mode):
    response = client.post("/invocations", json={"input": text, "mode": mode, "max_new_tokens": 5, "seed": 1})
    assert response.status_code == 200, response.get_json()
    sent = text.encode("utf-8")
    for output in response.get_json():
        assert output.encode("utf-8")[: len(sent)] == sent
        assert output.startswith(text)


@pytest.mark.parametrize("text", TRICKY_INPUTS)
def test_holder_keeps_the_input_exactly(generate, text):
    result = generate({"input": text, "mode": "sample", "max_new_tokens": 8, "seed": 3})
    assert all(output.startswith(text) for output in result.texts)


# ---- lengths in tokens -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["greedy", "sample-top-p", "sample-top-k", "sample", "beam"])
@pytest.mark.parametrize("new", [1, 4, 12])
def test_max_length_counts_the_prompt(generate, prompt_tokens, mode, new):
    text = "The quick brown fox"
    total = prompt_tokens(text) + new
    result = generate({"input": text, "mode": mode, "max_length": total, "seed": 5})
    assert result.prompt_tokens == prompt_tokens(text)
    assert len(result.new_tokens) == len(result.texts)
    assert all(0 <= n <= new for n in result.new_tokens)
    assert max(result.new_tokens) > 0


@pytest.mark.parametrize("mode", ["greedy", "sample-top-p", "beam"])
@pytest.mark.parametrize("new", [1, 7])
def test_max_new_tokens_counts_new_tokens_only(generate, mode, new):
    result = generate({"input": "The quick brown fox", "mode": mode, "max_new_tokens": new, "seed": 5})
    assert all(0 <= n <= new for n in result.new_tokens)
    assert max(result.new_tokens) > 0


def test_greedy_continuation_retokenizes_within_the_limit(holder, generate, prompt_tokens):
    text = "Once upon a time"
    new = 10
    result = generate({"input": text, "mode": "greedy", "max_length": prompt_tokens(text) + new})
    (output,) = result.texts
    continuation = output[len(text) :]
    assert len(holder.tokenizer(continuation)["input_ids"]) <= new


def test_default_max_length_is_100_tokens_in_total(generate, prompt_tokens):
    text = "Hello there"
    result = generate({"input": text, "mode": "greedy"})
    assert result.prompt_tokens == prompt_tokens(text)
    assert max(result.new_tokens) <= 100 - prompt_tokens(text)


# ---- the context window ----------------------------------------------------------------------


def test_tokens_of_builds_exact_prompts(prompt_tokens):
    assert prompt_tokens(tokens_of(50)) == 50


def test_prompt_over_the_context_window_is_400_with_the_numbers(client, prompt_tokens):
    text = tokens_of(200)
    count = prompt_tokens(text)
    response = client.post("/invocations", json={"input": text, "max_new_tokens": 1})
    assert response.status_code == 400
    data = response.get_json()
    assert data["code"] == 400 and data["error"] == "validation"
    message = " ".join(data["fields"]["input"])
    assert str(count) in message
    assert str(CONTEXT_WINDOW - 1) in message and str(CONTEXT_WINDOW) in message


def test_prompt_filling_the_context_window_is_400(client):
    response = client.post("/invocations", json={"input": tokens_of(CONTEXT_WINDOW), "max_new_tokens": 1})
    assert response.status_code == 400
    assert "input" in response.get_json()["fields"]


def test_prompt_one_under_the_context_window_fits_one_token(client, holder):
    payload = {"input": tokens_of(CONTEXT_WINDOW - 1), "max_new_tokens": 1, "mode": "greedy"}
    response = client.post("/invocations", json=payload)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()[0].startswith(payload["input"])


def test_max_length_over_the_context_window_is_400_with_the_numbers(client, prompt_tokens):
    text = "Hello world"
    count = prompt_tokens(text)
    response = client.post("/invocations", json={"input": text, "max_length": 200})
    assert response.status_code == 400
    message = " ".join(response.get_json()["fields"]["max_length"])
    assert f"{count + 1}..{CONTEXT_WINDOW}" in message
    assert "200" in message


def test_max_length_at_the_context_window_is_served(client):
    response = client.post("/invocations", json={"input": "Hi", "max_length": CONTEXT_WINDOW, "mode": "greedy"})
    assert response.status_code == 200


def test_max_length_not_above_the_prompt_is_400(client, prompt_tokens):
    text = "The quick brown fox"
    count = prompt_tokens(text)
    response = client.post("/invocations", json={"input": text, "max_length": count})
    assert response.status_code == 400
    message = " ".join(response.get_json()["fields"]["max_length"])
    assert str(count) in message and f"{count + 1}..{CONTEXT_WINDOW}" in message


def test_max_new_tokens_pushing_past_the_context_window_is_400(client, prompt_tokens):
    text = tokens_of(100)
    response = client.post("/invocations", json={"input": text, "max_new_tokens": 29})
    assert response.status_code == 400
    message = " ".join(response.get_json()["fields"]["max_new_tokens"])
    assert "1..28" in message and "100" in message and str(CONTEXT_WINDOW) in message and "29" in message


def test_max_new_tokens_up_to_the_context_window_is_served(client):
    response = client.post("/invocations", json={"input": tokens_of(100), "max_new_tokens": 28, "mode": "greedy"})
    assert response.status_code == 200


# ---- decoding --------------------------------------------------------------------------------


def test_no_output_ends_with_a_replacement_char(generate):
    """Flat sampling on random weights often ends on a byte-fragment token (about 1 in 100 rows here);
    a cut-off character must be dropped, not shown as U+FFFD."""
    flat = {"mode": "sample", "temperature": 2.0, "top_k": 0, "top_p": 1.0, "num_return_sequences": 16}
    for seed in range(30):
        result = generate({"input": "日本 😀", "max_new_tokens": 2, "seed": seed, **flat})
        assert not any(text.endswith(REPLACEMENT_CHAR) for text in result.texts)
        assert all(text.startswith("日本 😀") for text in result.texts)


@pytest.mark.parametrize("text", ["日本", "😀", "🇨🇭 Zürich", "👩‍👩‍👧"])
def test_a_character_cut_by_the_limit_is_dropped(holder, text):
    """With the real tokenizer: every prefix of a multi-byte text's tokens decodes without U+FFFD at the end."""
    ids = holder.tokenizer(text)["input_ids"]
    cuts = [ids[:k] for k in range(1, len(ids) + 1)]
    raw = [holder.tokenizer.decode(cut) for cut in cuts]
    assert any(r.endswith(REPLACEMENT_CHAR) for r in raw)  # the tokenizer really splits characters
    for cut in cuts:
        decoded = decode_continuation(holder.tokenizer, cut)
        assert not decoded.endswith(REPLACEMENT_CHAR)
        assert text.startswith(decoded)
    assert decode_continuation(holder.tokenizer, ids) == text


def test_tokenizer_pads_left_with_eos(holder):
    assert holder.tokenizer.padding_side == "left"
    assert holder.tokenizer.pad_token_id == holder.tokenizer.eos_token_id
