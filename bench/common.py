"""What every benchmark process shares: the seeded request plan, token counting, percentiles.

Standard library only (the load and ping processes must stay light); ``tokenizers`` is imported
only by ``TokenCounter``.
"""

from __future__ import annotations

import math
import random

# Short, varied prompts; each request prefixes its own tag so every input in a phase is unique.
STEMS = (
    "The quick brown fox",
    "Once upon a time in a small village,",
    "The capital of France is",
    "Here is a short recipe for pancakes:",
    "In computer science, a hash table is",
    "Dear team, thank you for",
    "The weather today is",
    "My favourite book is",
    "Write a haiku about the sea:",
    "Three tips for better sleep:",
    "The history of the bicycle began",
    "Explain photosynthesis in simple terms:",
    "The best way to learn a language is",
    "A good morning routine includes",
    "The stock market fell today because",
    "Scientists discovered a new species of",
    "To make a cup of tea, first",
    "The meeting was postponed because",
    "In the year 2050, cities will",
    "The main ingredients of bread are",
    "A short poem about autumn:",
    "Our product helps small businesses",
    "The train to the coast leaves at",
    "Summary of the article:",
)

SCENARIOS = ("greedy", "mix")
# The mix: the three request kinds of the issue, drawn with these weights by a seeded generator.
MIX_WEIGHTS = (("greedy", 0.4), ("sample-top-p", 0.4), ("beam", 0.2))
MIX_LENGTHS = (16, 32)  # max_new_tokens in the mix: different lengths share (or split) batches
EXPECTED_COUNT = {"greedy": 1, "sample-top-p": 3, "beam": 3}  # the README's num_return_sequences defaults


def make_request(seed: int, scenario: str, concurrency: int, client: int, k: int, max_new_tokens: int) -> dict:
    """The k-th request of one client in one phase: the same on every server and every run.

    Returns {"payload": the JSON body, "mode", "expected": the answer's length, "seeded": bool}.
    """
    rng = random.Random(f"{seed}/{scenario}/{concurrency}/{client}/{k}")
    text = f"Note {client}-{k}: {rng.choice(STEMS)}"
    if scenario == "greedy":
        mode, length, request_seed = "greedy", max_new_tokens, None
    elif scenario == "mix":
        # Fixed seeded requests, sent first so they complete even on the slowest server: client 0's
        # first request is a seeded default (sample-top-p) one, client 1's a seeded beam one.
        if k == 0 and client == 0:
            mode, length, request_seed = "sample-top-p", max_new_tokens, rng.randrange(2**32)
        elif k == 0 and client == 1:
            mode, length, request_seed = "beam", max_new_tokens // 2, rng.randrange(2**32)
        else:
            roll, mode = rng.random(), MIX_WEIGHTS[-1][0]
            for name, weight in MIX_WEIGHTS:
                if roll < weight:
                    mode = name
                    break
                roll -= weight
            length = rng.choice(MIX_LENGTHS) if max_new_tokens >= max(MIX_LENGTHS) else max_new_tokens
            request_seed = None
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    payload = {"input": text, "max_new_tokens": length}
    if mode != "sample-top-p":  # the default request: only input and length
        payload["mode"] = mode
    if request_seed is not None:
        payload["seed"] = request_seed
    return {"payload": payload, "mode": mode, "expected": EXPECTED_COUNT[mode], "seeded": request_seed is not None}


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolation percentile (numpy's default); None for no values."""
    if not values:
        return None
    data = sorted(values)
    pos = (len(data) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return data[low] + (data[high] - data[low]) * (pos - low)


def median(values: list[float]) -> float | None:
    return percentile(values, 50)


class TokenCounter:
    """Counts new tokens in an answer by re-tokenizing the continuation with the model's tokenizer."""

    def __init__(self, tokenizer_json: str):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(tokenizer_json)

    def count(self, prompt: str, text: str) -> int:
        continuation = text[len(prompt) :] if text.startswith(prompt) else text
        if not continuation:
            return 0
        return len(self.tokenizer.encode(continuation, add_special_tokens=False).ids)
