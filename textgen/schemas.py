"""The /invocations wire contract: types, defaults per mode, ranges and cross-field rules.

No torch here. Rules that need the model (prompt length in tokens, context window) are checked
by the model holder, which raises the same ``ValidationFailed`` shape.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validates_schema

from .errors import ValidationFailed

MODES = ("sample-top-p", "sample-top-k", "sample", "beam", "greedy")
SAMPLING_MODES = ("sample-top-p", "sample-top-k", "sample")
DEFAULT_MODE = "sample-top-p"
DEFAULT_MAX_LENGTH = 100
DEFAULT_RETURN_SEQUENCES = 3
SEED_MAX = 2**32 - 1
INT_MAX = 2**31 - 1

# Fields each mode hands to generate(); the rest are validated but have no effect in that mode.
MODE_FIELDS = {
    "sample-top-p": ("top_p", "top_k"),
    "sample-top-k": ("top_k",),
    "sample": ("top_p", "top_k", "temperature"),
    "beam": ("num_beams", "no_repeat_ngram_size"),
    "greedy": (),
}
COMMON_FIELDS = ("input", "mode", "max_length", "max_new_tokens", "num_return_sequences", "seed")


@dataclass(frozen=True)
class Limits:
    """Server-side bounds that the schema enforces (from Settings)."""

    max_beams: int = 16
    max_return_sequences: int = 16
    max_total_tokens: int = 1024


@dataclass(frozen=True)
class GenerationRequest:
    """A validated /invocations request with every default filled in."""

    input: str
    mode: str = DEFAULT_MODE
    max_length: int | None = DEFAULT_MAX_LENGTH
    max_new_tokens: int | None = None
    top_p: float = 0.92
    top_k: int = 50
    temperature: float = 0.7
    num_beams: int = 5
    no_repeat_ngram_size: int = 2
    num_return_sequences: int = DEFAULT_RETURN_SEQUENCES
    seed: int | None = None
    given: frozenset[str] = frozenset()

    @property
    def ignored_fields(self) -> list[str]:
        """Fields the caller sent that the chosen mode does not use (reported, never dropped silently)."""
        used = set(COMMON_FIELDS) | set(MODE_FIELDS[self.mode])
        return sorted(self.given - used)

    @property
    def rows(self) -> int:
        """Sequences this request generates (what a batch is sized by)."""
        return self.num_return_sequences


def _show(value: Any) -> str:
    """The received value as the caller wrote it (JSON), shortened for messages."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class StrictInteger(fields.Field):
    """A JSON integer only: not 50.5, not true/false, not "50"."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(f"must be a JSON integer, got {_show(value)}")
        return value


class StrictNumber(fields.Field):
    """A finite JSON number, integer or decimal; not a string or boolean, never NaN or Infinity.

    The value is kept as sent (so messages echo it exactly) and made a float by ``parse_request``.
    """

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError(f"must be a JSON number, got {_show(value)}")
        try:
            finite = math.isfinite(float(value))
        except OverflowError:
            finite = False
        if not finite:
            raise ValidationError(f"must be a finite number within double precision, got {_show(value)}")
        return value


class Text(fields.Field):
    """A JSON string, kept exactly as sent."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise ValidationError(f"must be a JSON string, got {_show(value)}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(
                "must be valid Unicode text; it holds a lone surrogate escape (\\ud800-\\udfff)"
            ) from None
        return value


def _check(predicate, rule: str):
    """A marshmallow validator that names the rule and the value received."""

    def validate(value):
        if not predicate(value):
            raise ValidationError(f"must be {rule}, got {_show(value)}")

    return validate


_NULL = {"null": "must not be null", "required": "is required"}


class GenerationSchema(Schema):
    """Schema of the /invocations JSON object."""

    class Meta:
        unknown = RAISE

    input = Text(required=True, validate=_check(lambda v: v != "", "a non-empty string"), error_messages=_NULL)
    mode = Text(validate=_check(lambda v: v in MODES, f"one of {', '.join(MODES)}"), error_messages=_NULL)
    # Upper bounds depend on the server's limits and the prompt: checked below and by the model holder.
    max_length = StrictInteger(validate=_check(lambda v: v >= 1, ">= 1"), error_messages=_NULL)
    max_new_tokens = StrictInteger(validate=_check(lambda v: v >= 1, ">= 1"), error_messages=_NULL)
    top_p = StrictNumber(validate=_check(lambda v: 0 < v <= 1, "> 0 and <= 1"), error_messages=_NULL)
    top_k = StrictInteger(
        validate=_check(lambda v: 0 <= v <= INT_MAX, f">= 0 and <= {INT_MAX} (0 turns top-k off)"), error_messages=_NULL
    )
    temperature = StrictNumber(validate=_check(lambda v: v > 0, "> 0"), error_messages=_NULL)
    num_beams = StrictInteger(error_messages=_NULL)
    no_repeat_ngram_size = StrictInteger(
        validate=_check(lambda v: 0 <= v <= INT_MAX, f">= 0 and <= {INT_MAX} (0 turns it off)"), error_messages=_NULL
    )
    num_return_sequences = StrictInteger(error_messages=_NULL)
    seed = StrictInteger(
        allow_none=True,
        validate=_check(lambda v: v == -1 or 0 <= v <= SEED_MAX, f"null, -1 or 0..{SEED_MAX}"),
        error_messages=_NULL,
    )

    def __init__(self, limits: Limits | None = None, **kwargs):
        super().__init__(**kwargs)
        self.limits = limits or Limits()
        accepted = ", ".join(self.fields)
        self.error_messages = {**self.error_messages, "unknown": f"unknown field; accepted fields are: {accepted}"}

    @validates_schema(skip_on_field_errors=False)
    def _cross_field(self, data: dict, **kwargs) -> None:
        errors: dict[str, list[str]] = {}
        limits = self.limits
        mode = data.get("mode", DEFAULT_MODE)
        beams = data.get("num_beams")
        if beams is not None and not 1 <= beams <= limits.max_beams:
            errors["num_beams"] = [f"must be in 1..{limits.max_beams}, got {_show(beams)}"]
        if "max_length" in data and "max_new_tokens" in data:
            errors["max_new_tokens"] = ["give either max_length or max_new_tokens, not both"]
        if "max_length" in data and data["max_length"] > limits.max_total_tokens:
            errors["max_length"] = [
                f"must be at most {limits.max_total_tokens} (server limit on total tokens, prompt included), "
                f"got {_show(data['max_length'])}"
            ]
        if "max_new_tokens" in data and data["max_new_tokens"] >= limits.max_total_tokens:
            errors["max_new_tokens"] = [
                f"must be in 1..{limits.max_total_tokens - 1} (prompt + new tokens <= {limits.max_total_tokens}, "
                f"the server limit), got {_show(data['max_new_tokens'])}"
            ]
        if mode == "sample-top-k" and data.get("top_k") == 0:
            errors["top_k"] = ["must be >= 1 in sample-top-k mode (0 would turn top-k off), got 0"]
        nrs = data.get("num_return_sequences")
        if nrs is not None:
            if not 1 <= nrs <= limits.max_return_sequences:
                errors["num_return_sequences"] = [f"must be in 1..{limits.max_return_sequences}, got {_show(nrs)}"]
            elif mode == "greedy" and nrs > 1:
                errors["num_return_sequences"] = [
                    f"greedy yields one sequence, so it must be 1, got {nrs}; "
                    f"use {', '.join(SAMPLING_MODES)} or beam for several"
                ]
            elif mode == "beam" and beams is not None and 1 <= beams and nrs > beams:
                errors["num_return_sequences"] = [f"must be <= num_beams ({beams}) in beam mode, got {nrs}"]
            elif mode == "beam" and beams is None and nrs > default_beams(limits):
                errors["num_return_sequences"] = [
                    f"must be <= num_beams (default {default_beams(limits)}) in beam mode, got {nrs}"
                ]
        if errors:
            raise ValidationError(errors)


def default_beams(limits: Limits) -> int:
    """num_beams when the caller gives none: 5, or the server's TEXTGEN_MAX_BEAMS if lower."""
    return min(GenerationRequest.num_beams, limits.max_beams)


def parse_request(payload: Any, limits: Limits | None = None) -> GenerationRequest:
    """Validate a decoded JSON body into a GenerationRequest; raise ValidationFailed naming each field."""
    if not isinstance(payload, dict):
        raise ValidationFailed(
            {"_body": [f"must be a JSON object, got {type(payload).__name__ if payload is not None else 'null'}"]}
        )
    limits = limits or Limits()
    try:
        data = GenerationSchema(limits).load(payload)
    except ValidationError as exc:
        raise ValidationFailed(_flatten(exc.messages)) from None
    mode = data.get("mode", DEFAULT_MODE)
    num_beams = data.setdefault("num_beams", default_beams(limits))
    if "num_return_sequences" in data:
        nrs = data["num_return_sequences"]
    elif mode == "greedy":
        nrs = 1
    elif mode == "beam":
        nrs = min(DEFAULT_RETURN_SEQUENCES, num_beams, limits.max_return_sequences)
    else:
        nrs = min(DEFAULT_RETURN_SEQUENCES, limits.max_return_sequences)
    seed = data.get("seed")
    values = {k: v for k, v in data.items() if k not in ("num_return_sequences", "seed")}
    for name in ("top_p", "temperature"):
        if name in values:
            values[name] = float(values[name])
    if "max_new_tokens" in data:
        values["max_length"] = None
    return GenerationRequest(
        **values,
        num_return_sequences=nrs,
        seed=None if seed in (None, -1) else seed,
        given=frozenset(payload),
    )


def _flatten(messages: Any) -> dict[str, list[str]]:
    """marshmallow's messages as {field: [str, ...]}."""
    if isinstance(messages, list):
        return {"_body": [str(m) for m in messages]}
    out: dict[str, list[str]] = {}
    for key, value in messages.items():
        # An unknown key is echoed back; one that is not valid Unicode is shown escaped.
        key = str(key).encode("utf-8", "backslashreplace").decode("utf-8")
        if isinstance(value, dict):
            value = [f"{k}: {v}" for k, v in value.items()]
        out[key] = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return out
