"""Environment variable names and the one typed, read-only settings snapshot.

Imports nothing heavy (no torch, no transformers) so that gunicorn's master process and the
unit tests can read settings safely.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# textgen's own variables
MODEL = "TEXTGEN_MODEL"
DTYPE = "TEXTGEN_DTYPE"
MAX_TOTAL_TOKENS = "TEXTGEN_MAX_TOTAL_TOKENS"
MAX_BEAMS = "TEXTGEN_MAX_BEAMS"
MAX_RETURN_SEQUENCES = "TEXTGEN_MAX_RETURN_SEQUENCES"
THREADS = "TEXTGEN_THREADS"
CACHE_DIR = "TEXTGEN_CACHE_DIR"
DEFAULT_MODEL_DIR = "TEXTGEN_DEFAULT_MODEL_DIR"
BATCHING = "TEXTGEN_BATCHING"
BATCH_WAIT_MS = "TEXTGEN_BATCH_WAIT_MS"
MAX_BATCH_ROWS = "TEXTGEN_MAX_BATCH_ROWS"
MAX_QUEUE = "TEXTGEN_MAX_QUEUE"
REQUEST_TIMEOUT = "TEXTGEN_REQUEST_TIMEOUT"

# SageMaker's variables
BIND_TO_PORT = "SAGEMAKER_BIND_TO_PORT"
MODEL_SERVER_WORKERS = "SAGEMAKER_MODEL_SERVER_WORKERS"
MODEL_SERVER_TIMEOUT = "SAGEMAKER_MODEL_SERVER_TIMEOUT"
CONTAINER_LOG_LEVEL = "SAGEMAKER_CONTAINER_LOG_LEVEL"
MAX_CONCURRENT_TRANSFORMS = "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"
BATCH_STRATEGY = "SAGEMAKER_BATCH_STRATEGY"
MAX_PAYLOAD_IN_MB = "SAGEMAKER_MAX_PAYLOAD_IN_MB"

SAGEMAKER_MODEL_DIR = "/opt/ml/model"
DTYPES = ("auto", "float32", "bfloat16", "float16")
# SageMaker's numeric log levels (Python logging numbers) and names both work.
LOG_LEVELS = {"10": "debug", "20": "info", "30": "warning", "40": "error", "50": "critical"}


def gpu_count(env: Mapping[str, str] | None = None) -> int:
    """GPUs this process may use, counted without touching CUDA (safe in gunicorn's master)."""
    env = os.environ if env is None else env
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0


class SettingsError(ValueError):
    """A configuration variable holds a value that cannot be used."""


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int | None = None) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in {low}..{high}"
        raise SettingsError(f"{name} must be {bound}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, low: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not value >= low or value == float("inf"):
        raise SettingsError(f"{name} must be a finite number >= {low}, got {raw}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "on", "true", "yes"):
        return True
    if raw in ("0", "off", "false", "no"):
        return False
    raise SettingsError(f"{name} must be on or off, got {raw!r}")


def _log_level(env: Mapping[str, str]) -> str:
    raw = env.get(CONTAINER_LOG_LEVEL, "").strip().lower() or "info"
    level = LOG_LEVELS.get(raw, raw)
    if level not in LOG_LEVELS.values():
        raise SettingsError(
            f"{CONTAINER_LOG_LEVEL} must be one of {', '.join(LOG_LEVELS.values())} "
            f"or {', '.join(LOG_LEVELS)}, got {raw!r}"
        )
    return level


@dataclass(frozen=True)
class Settings:
    """Everything configurable, parsed and checked once."""

    model: str | None = None
    default_model_dir: str = ".model/smollm2-135m-instruct"
    sagemaker_model_dir: str = SAGEMAKER_MODEL_DIR
    dtype: str = "auto"
    max_total_tokens: int = 1024
    max_beams: int = 16
    max_return_sequences: int = 16
    cache_dir: str = ".cache/textgen"
    port: int = 8080
    workers: int | None = None  # None: one per GPU, or 1 on CPU (decided in the worker setup)
    # Request threads: room for a full queue plus a running batch plus /ping and quick refusals,
    # so a saturated worker still answers /ping and says 429 instead of leaving callers waiting.
    threads: int = 64 + 32 + 16
    timeout: int = 600
    log_level: str = "info"
    max_payload_bytes: int = 6 * 1024 * 1024
    max_concurrent_transforms: int | None = None
    batch_strategy: str = "MULTI_RECORD"
    batching: bool = True
    batch_wait_ms: float = 20.0
    max_batch_rows: int = 32
    max_queue: int = 64
    request_timeout: float = 0.0  # seconds; 0: no deadline

    @property
    def worker_count(self) -> int:
        """gunicorn workers: SAGEMAKER_MODEL_SERVER_WORKERS, else one per GPU, else 1 (one model copy per CPU)."""
        return self.workers or max(1, gpu_count())

    @property
    def concurrent_transforms(self) -> int:
        """Requests worth sending at once: enough to fill each worker's batches, at most its threads."""
        if self.max_concurrent_transforms:
            return self.max_concurrent_transforms
        per_worker = max(1, self.max_batch_rows // 3) if self.batching else 1
        return self.worker_count * min(self.threads, per_worker)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every variable from ``env`` (default ``os.environ``); raise SettingsError on a bad one."""
        env = os.environ if env is None else env
        workers_raw = env.get(MODEL_SERVER_WORKERS, "").strip()
        return cls(
            model=env.get(MODEL, "").strip() or None,
            default_model_dir=env.get(DEFAULT_MODEL_DIR, "").strip() or cls.default_model_dir,
            dtype=_choice(env, DTYPE, "auto", DTYPES),
            max_total_tokens=_int(env, MAX_TOTAL_TOKENS, 1024, 2),
            max_beams=_int(env, MAX_BEAMS, 16, 1),
            max_return_sequences=_int(env, MAX_RETURN_SEQUENCES, 16, 1),
            cache_dir=env.get(CACHE_DIR, "").strip() or cls.cache_dir,
            port=_int(env, BIND_TO_PORT, 8080, 1, 65535),
            workers=_int(env, MODEL_SERVER_WORKERS, 1, 1) if workers_raw else None,
            threads=_int(env, THREADS, _int(env, MAX_QUEUE, 64, 1) + _int(env, MAX_BATCH_ROWS, 32, 1) + 16, 1),
            timeout=_int(env, MODEL_SERVER_TIMEOUT, 600, 1),
            log_level=_log_level(env),
            max_payload_bytes=int(_float(env, MAX_PAYLOAD_IN_MB, 6.0, 0.001) * 1024 * 1024),
            max_concurrent_transforms=(
                _int(env, MAX_CONCURRENT_TRANSFORMS, 1, 1) if env.get(MAX_CONCURRENT_TRANSFORMS, "").strip() else None
            ),
            batch_strategy=_choice(env, BATCH_STRATEGY, "multi_record", ("multi_record", "single_record")).upper(),
            batching=_bool(env, BATCHING, True),
            batch_wait_ms=_float(env, BATCH_WAIT_MS, 20.0, 0.0),
            max_batch_rows=_int(env, MAX_BATCH_ROWS, 32, 1),
            max_queue=_int(env, MAX_QUEUE, 64, 1),
            request_timeout=_float(env, REQUEST_TIMEOUT, 0.0, 0.0),
        )
