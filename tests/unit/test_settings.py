"""Settings.from_env: defaults, each variable parsed, and bad values refused naming the variable."""

from __future__ import annotations

import dataclasses

import pytest

from textgen.settings import Settings, SettingsError


def test_empty_environment_gives_the_defaults():
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.model is None
    assert settings.dtype == "auto"
    assert settings.max_total_tokens == 1024
    assert settings.max_beams == 16
    assert settings.max_return_sequences == 16
    assert settings.port == 8080
    assert settings.workers is None
    assert settings.timeout == 600
    assert settings.log_level == "info"
    assert settings.max_payload_bytes == 6 * 1024 * 1024
    assert settings.max_concurrent_transforms is None
    assert settings.batch_strategy == "MULTI_RECORD"
    assert settings.sagemaker_model_dir == "/opt/ml/model"


def test_blank_values_count_as_unset():
    env = {name: "  " for name in ("TEXTGEN_MODEL", "TEXTGEN_DTYPE", "TEXTGEN_MAX_BEAMS", "SAGEMAKER_BIND_TO_PORT")}
    assert Settings.from_env(env) == Settings()


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().port = 1  # type: ignore[misc]


def test_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("TEXTGEN_MAX_BEAMS", "3")
    assert Settings.from_env().max_beams == 3


@pytest.mark.parametrize(
    ("variable", "raw", "attribute", "expected"),
    [
        ("TEXTGEN_MODEL", "gpt2", "model", "gpt2"),
        ("TEXTGEN_MODEL", " /models/gpt2 ", "model", "/models/gpt2"),
        ("TEXTGEN_DEFAULT_MODEL_DIR", "/srv/default", "default_model_dir", "/srv/default"),
        ("TEXTGEN_DTYPE", "float32", "dtype", "float32"),
        ("TEXTGEN_DTYPE", "BFloat16", "dtype", "bfloat16"),
        ("TEXTGEN_DTYPE", "float16", "dtype", "float16"),
        ("TEXTGEN_MAX_TOTAL_TOKENS", "2048", "max_total_tokens", 2048),
        ("TEXTGEN_MAX_BEAMS", "4", "max_beams", 4),
        ("TEXTGEN_MAX_RETURN_SEQUENCES", "8", "max_return_sequences", 8),
        ("TEXTGEN_THREADS", "8", "threads", 8),
        ("TEXTGEN_CACHE_DIR", "/tmp/textgen-cache", "cache_dir", "/tmp/textgen-cache"),
        ("TEXTGEN_BATCHING", "off", "batching", False),
        ("TEXTGEN_BATCHING", "0", "batching", False),
        ("TEXTGEN_BATCHING", "Yes", "batching", True),
        ("TEXTGEN_BATCH_WAIT_MS", "2.5", "batch_wait_ms", 2.5),
        ("TEXTGEN_BATCH_WAIT_MS", "0", "batch_wait_ms", 0.0),
        ("TEXTGEN_MAX_BATCH_ROWS", "8", "max_batch_rows", 8),
        ("TEXTGEN_MAX_QUEUE", "10", "max_queue", 10),
        ("SAGEMAKER_BIND_TO_PORT", "9000", "port", 9000),
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "3", "workers", 3),
        ("SAGEMAKER_MODEL_SERVER_TIMEOUT", "120", "timeout", 120),
        ("SAGEMAKER_CONTAINER_LOG_LEVEL", "20", "log_level", "info"),
        ("SAGEMAKER_CONTAINER_LOG_LEVEL", "10", "log_level", "debug"),
        ("SAGEMAKER_CONTAINER_LOG_LEVEL", "WARNING", "log_level", "warning"),
        ("SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", "2", "max_concurrent_transforms", 2),
        ("SAGEMAKER_BATCH_STRATEGY", "single_record", "batch_strategy", "SINGLE_RECORD"),
        ("SAGEMAKER_BATCH_STRATEGY", "MULTI_RECORD", "batch_strategy", "MULTI_RECORD"),
        ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "1", "max_payload_bytes", 1024 * 1024),
        ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "0.5", "max_payload_bytes", 512 * 1024),
        ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "100", "max_payload_bytes", 100 * 1024 * 1024),
    ],
)
def test_each_variable_is_parsed(variable, raw, attribute, expected):
    assert getattr(Settings.from_env({variable: raw}), attribute) == expected


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("TEXTGEN_DTYPE", "fp8"),
        ("TEXTGEN_DTYPE", "half"),
        ("TEXTGEN_MAX_TOTAL_TOKENS", "many"),
        ("TEXTGEN_MAX_TOTAL_TOKENS", "1"),
        ("TEXTGEN_MAX_TOTAL_TOKENS", "1.5"),
        ("TEXTGEN_MAX_BEAMS", "0"),
        ("TEXTGEN_MAX_BEAMS", "-3"),
        ("TEXTGEN_MAX_RETURN_SEQUENCES", "x"),
        ("TEXTGEN_MAX_RETURN_SEQUENCES", "0"),
        ("TEXTGEN_THREADS", "0"),
        ("TEXTGEN_BATCHING", "maybe"),
        ("TEXTGEN_BATCH_WAIT_MS", "-1"),
        ("TEXTGEN_BATCH_WAIT_MS", "nan"),
        ("TEXTGEN_BATCH_WAIT_MS", "inf"),
        ("TEXTGEN_BATCH_WAIT_MS", "soon"),
        ("TEXTGEN_MAX_BATCH_ROWS", "0"),
        ("TEXTGEN_MAX_QUEUE", "none"),
        ("SAGEMAKER_BIND_TO_PORT", "0"),
        ("SAGEMAKER_BIND_TO_PORT", "70000"),
        ("SAGEMAKER_BIND_TO_PORT", "80a"),
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "0"),
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "two"),
        ("SAGEMAKER_MODEL_SERVER_TIMEOUT", "0"),
        ("SAGEMAKER_MODEL_SERVER_TIMEOUT", "1m"),
        ("SAGEMAKER_CONTAINER_LOG_LEVEL", "verbose"),
        ("SAGEMAKER_CONTAINER_LOG_LEVEL", "25"),
        ("SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", "0"),
        ("SAGEMAKER_BATCH_STRATEGY", "all"),
        ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "0"),
        ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "-1"),
        ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "six"),
        ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "inf"),
        ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "nan"),
    ],
)
def test_bad_values_raise_naming_the_variable(variable, raw):
    with pytest.raises(SettingsError, match=variable) as info:
        Settings.from_env({variable: raw})
    assert raw.strip().lower() in str(info.value).lower()


def test_settings_error_is_a_value_error():
    assert issubclass(SettingsError, ValueError)
