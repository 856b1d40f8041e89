"""The per-worker model holder: resolve the model source, pick device and dtype, load, generate.

One ``ModelHolder`` lives in each gunicorn worker and loads after the fork, in a background thread,
so /ping can answer 503 while loading and 200 after the warm-up generation.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import platform
import secrets
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .errors import ModelNotReady, ValidationFailed
from .modes import to_generate_kwargs
from .schemas import GenerationRequest
from .settings import Settings

log = logging.getLogger(__name__)

LOADING, READY, FAILED = "loading", "ready", "failed"
REPLACEMENT_CHAR = "\ufffd"


@dataclass(frozen=True)
class GenerationResult:
    """What one request produced: the answer strings and the seed that reproduces them."""

    texts: list[str]
    seed: int
    prompt_tokens: int = 0
    new_tokens: list[int] = field(default_factory=list)


class Generator(Protocol):
    """What the HTTP layer needs from a model holder (the real one, a batching engine, or a fake)."""

    state: str
    detail: str

    def generate(self, request: GenerationRequest, gone: Callable[[], bool] | None = None) -> GenerationResult:
        """Generate for ``request``; ``gone()`` tells whether the caller has left (to cancel)."""
        ...


@dataclass(frozen=True)
class ModelSource:
    """Where the weights come from: a folder, a single GGUF file, or a hub id."""

    location: str
    kind: str  # "folder" | "gguf" | "hub" | "embedded"
    origin: str  # which setting chose it, for the log


def _model_in(path: Path) -> ModelSource | None:
    """The model a local path holds, if any (a transformers folder, or a folder/file with one .gguf)."""
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(str(path), "gguf", str(path))
    if not path.is_dir():
        return None
    if (path / "config.json").is_file():
        return ModelSource(str(path), "folder", str(path))
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelSource(str(ggufs[0]), "gguf", str(path))
    return None


def resolve_source(settings: Settings) -> ModelSource:
    """TEXTGEN_MODEL, else /opt/ml/model when it holds a model, else the embedded default."""
    if settings.model:
        path = Path(settings.model)
        if path.exists():
            found = _model_in(path)
            if found is None:
                raise FileNotFoundError(f"TEXTGEN_MODEL={settings.model} holds no config.json and no single .gguf file")
            return ModelSource(found.location, found.kind, "TEXTGEN_MODEL")
        return ModelSource(settings.model, "hub", "TEXTGEN_MODEL")
    found = _model_in(Path(settings.sagemaker_model_dir))
    if found is not None:
        return ModelSource(found.location, found.kind, settings.sagemaker_model_dir)
    return ModelSource(settings.default_model_dir, "embedded", "embedded default")


def decode_continuation(tokenizer, ids) -> str:
    """Decode only new tokens; drop a multi-byte character the length limit cut in half."""
    text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return text.rstrip(REPLACEMENT_CHAR)


class ModelHolder:
    """Loads one model for this process and runs generate() on it, one request at a time."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()
        self.state = LOADING
        self.detail = "model is loading"
        self.model = None
        self.tokenizer = None
        self.device = "cpu"
        self.dtype = None
        self.context_window = 0
        self.max_token_chars = 1
        self.source: ModelSource | None = None
        # Generation is serialized: the fast tokenizer is not thread-safe ("Already borrowed") and
        # the global RNG that seeds sampling must not be shared by two requests at once.
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # ---- loading -------------------------------------------------------------------------
    def start(self, worker_index: int = 0, worker_count: int = 1) -> threading.Thread:
        """Load in a background thread (so /ping answers 503 meanwhile); return the thread."""
        self._thread = threading.Thread(
            target=self._load_logged, args=(worker_index, worker_count), name="textgen-load", daemon=True
        )
        self._thread.start()
        return self._thread

    def _load_logged(self, worker_index: int, worker_count: int) -> None:
        try:
            self.load(worker_index, worker_count)
        except Exception as exc:  # /ping reports the failure; the log keeps the traceback
            log.exception("model failed to load")
            self.state, self.detail = FAILED, f"model failed to load: {type(exc).__name__}: {exc}"

    def load(self, worker_index: int = 0, worker_count: int = 1) -> ModelHolder:
        """Load the model and tokenizer, pick device and dtype, warm up; raises on failure."""
        import torch

        started = time.monotonic()
        self.source = source = resolve_source(self.settings)
        if source.kind == "embedded":
            from .convert import ensure_default_model

            ensure_default_model(source.location)
        if torch.cuda.is_available():
            index = worker_index % torch.cuda.device_count()
            self.device = f"cuda:{index}"
            torch.cuda.set_device(index)
        else:
            cores = len(os.sched_getaffinity(0))
            torch.set_num_threads(max(1, cores // max(1, worker_count)))
        model, tokenizer = self._load_weights(source)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.eval()
        self.context_window = _context_window(model.config)
        self.dtype = self._choose_dtype(model, tokenizer, torch)
        self.model = model.to(device=self.device, dtype=self.dtype)
        self.tokenizer = tokenizer
        # No token covers more than this many characters of text (a vocabulary entry of n
        # characters stands for at most 4n bytes), which bounds the token count from below.
        self.max_token_chars = 4 * max(len(token) for token in tokenizer.get_vocab())
        self._warm_up()
        self.state, self.detail = READY, "ready"
        log.info(
            "model ready: %s (%s) on %s, %s, context %d tokens, %d torch threads, %.1fs",
            source.location,
            source.origin,
            self.device,
            str(self.dtype).removeprefix("torch."),
            self.context_window,
            torch.get_num_threads(),
            time.monotonic() - started,
        )
        return self

    def _load_weights(self, source: ModelSource):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if source.kind == "gguf":
            from .convert import load_gguf

            return load_gguf(Path(source.location))
        options = {"trust_remote_code": False}
        tokenizer = AutoTokenizer.from_pretrained(source.location, **options)
        model = AutoModelForCausalLM.from_pretrained(source.location, use_safetensors=True, dtype="float32", **options)
        return model, tokenizer

    def _choose_dtype(self, model, tokenizer, torch):
        choice = self.settings.dtype
        if choice != "auto":
            return getattr(torch, choice)
        if self.device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return self._measured_cpu_dtype(model, tokenizer, torch)

    def _measured_cpu_dtype(self, model, tokenizer, torch):
        """The faster of fp32 and bf16 on this CPU, measured once and cached so every worker agrees."""
        key = json.dumps(
            [self.source.location, platform.processor(), cpu_model(), torch.__version__, torch.get_num_threads()]
        )
        cache = Path(self.settings.cache_dir) / f"dtype-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
        cache.parent.mkdir(parents=True, exist_ok=True)
        with open(cache.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if cache.is_file():
                choice = json.loads(cache.read_text())["dtype"]
                log.info("CPU dtype %s (measured before, %s)", choice, cache)
                return getattr(torch, choice)
            timings = _time_dtypes(model, tokenizer, torch, ("float32", "bfloat16"))
            choice = min(timings, key=timings.get)
            cache.write_text(json.dumps({"dtype": choice, "seconds": timings, "key": json.loads(key)}))
            log.info(
                "CPU dtype %s (measured: %s)", choice, ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in timings.items())
            )
            return getattr(torch, choice)

    def _warm_up(self) -> None:
        request = GenerationRequest(
            input="Hello", mode="greedy", max_length=None, max_new_tokens=2, num_return_sequences=1
        )
        self._generate(request)

    # ---- serving -------------------------------------------------------------------------
    @property
    def token_limit(self) -> int:
        """Most tokens (prompt + new) one sequence may reach."""
        return min(self.context_window, self.settings.max_total_tokens)

    def encode(self, request: GenerationRequest) -> tuple[list[int], int]:
        """Token ids of the prompt and the number of new tokens to generate; raises ValidationFailed."""
        limit = self.token_limit
        if len(request.input) > limit * self.max_token_chars:
            # Certainly too long: refuse before spending seconds tokenizing megabytes.
            raise ValidationFailed(
                {
                    "input": [
                        f"is {len(request.input)} characters, certainly more than the {limit - 1} tokens allowed "
                        f"(model context window {self.context_window}, TEXTGEN_MAX_TOTAL_TOKENS {self.settings.max_total_tokens})"
                    ]
                }
            )
        ids = self.tokenizer(request.input)["input_ids"]
        return ids, self.new_token_budget(request, len(ids))

    def new_token_budget(self, request: GenerationRequest, prompt_tokens: int) -> int:
        """How many new tokens ``request`` asks for, checked against the context window and server limit."""
        limit = self.token_limit
        why = f"model context window {self.context_window}, server limit TEXTGEN_MAX_TOTAL_TOKENS {self.settings.max_total_tokens}"
        if prompt_tokens == 0:
            raise ValidationFailed({"input": ["must tokenize to at least one token, got 0 tokens"]})
        if prompt_tokens >= limit:
            raise ValidationFailed(
                {
                    "input": [
                        f"is {prompt_tokens} tokens; at most {limit - 1} are allowed so that one new token fits ({why})"
                    ]
                }
            )
        if request.max_new_tokens is not None:
            if prompt_tokens + request.max_new_tokens > limit:
                raise ValidationFailed(
                    {
                        "max_new_tokens": [
                            f"must be in 1..{limit - prompt_tokens} for this {prompt_tokens}-token prompt "
                            f"(prompt + new tokens <= {limit}: {why}), got {request.max_new_tokens}"
                        ]
                    }
                )
            return request.max_new_tokens
        max_length = request.max_length
        if "max_length" not in request.given:  # the default 100 never exceeds a smaller window
            max_length = min(max_length, limit)
        if not prompt_tokens < max_length <= limit:
            raise ValidationFailed(
                {
                    "max_length": [
                        f"counts the prompt's {prompt_tokens} tokens too, so it must be in {prompt_tokens + 1}..{limit} "
                        f"({why}), got {max_length}{'' if 'max_length' in request.given else ' (the default)'}; "
                        "or give max_new_tokens"
                    ]
                }
            )
        return max_length - prompt_tokens

    def generate(self, request: GenerationRequest, gone=None) -> GenerationResult:
        """Generate for one request, alone (one generate() call); raises ModelNotReady, ValidationFailed."""
        if self.state != READY:
            raise ModelNotReady(self.detail)
        return self._generate(request)

    def _generate(self, request: GenerationRequest) -> GenerationResult:
        from .generation import Job, run_jobs

        seeded = request.seed is not None
        with self._lock:
            ids, new_tokens = self.encode(request)
            job = Job(request, ids, new_tokens, request.seed if seeded else secrets.randbits(32), seeded)
            [rows] = run_jobs(self, [job])
            return self.result(job, rows)

    def result(self, job, rows: list[list[int]]) -> GenerationResult:
        """The answer for ``job``: its exact input followed by each row's decoded new tokens."""
        texts = [job.request.input + decode_continuation(self.tokenizer, row) for row in rows]
        return GenerationResult(texts, job.seed, len(job.ids), [len(row) for row in rows])

    def generation_config(self, request: GenerationRequest, new_tokens: int):
        """A complete GenerationConfig for ``request``: the mode's kwargs and nothing from the model's defaults."""
        from transformers import GenerationConfig

        tok = self.tokenizer
        return GenerationConfig(
            **to_generate_kwargs(request),
            max_new_tokens=new_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            bos_token_id=tok.bos_token_id,
        )


def _context_window(config) -> int:
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError("the model config gives no context window (max_position_embeddings or n_positions)")


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo), or the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def _time_dtypes(model, tokenizer, torch, names: tuple[str, ...], rounds: int = 3) -> dict[str, float]:
    """Median seconds of a short greedy generation per dtype, measured in alternating rounds so that
    a burst of load elsewhere hits every candidate alike."""
    import copy

    candidates = {name: copy.deepcopy(model).to(dtype=getattr(torch, name)) for name in names}
    ids = torch.tensor([tokenizer("The quick brown fox jumps over the lazy dog. " * 3)["input_ids"]])
    times: dict[str, list[float]] = {name: [] for name in names}
    pad = tokenizer.eos_token_id or 0
    with torch.inference_mode():
        for round_ in range(rounds + 1):
            for name, candidate in candidates.items():
                start = time.perf_counter()
                candidate.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=4,
                    min_new_tokens=4,
                    do_sample=False,
                    pad_token_id=pad,
                )
                if round_:  # the first round warms caches
                    times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
