"""Pure mapping from a validated request to ``generate()`` keyword arguments, one function per mode."""

from __future__ import annotations

from collections.abc import Callable

from .schemas import GenerationRequest


def _sample_top_p(req: GenerationRequest) -> dict:
    return {"do_sample": True, "top_p": req.top_p, "top_k": req.top_k, "temperature": 1.0}


def _sample_top_k(req: GenerationRequest) -> dict:
    return {"do_sample": True, "top_k": req.top_k, "top_p": 1.0, "temperature": 1.0}


def _sample(req: GenerationRequest) -> dict:
    return {"do_sample": True, "top_p": req.top_p, "top_k": req.top_k, "temperature": req.temperature}


def _beam(req: GenerationRequest) -> dict:
    return {
        "do_sample": False,
        "num_beams": req.num_beams,
        "no_repeat_ngram_size": req.no_repeat_ngram_size,
        "early_stopping": True,
    }


def _greedy(req: GenerationRequest) -> dict:
    return {"do_sample": False, "num_beams": 1}


MODE_KWARGS: dict[str, Callable[[GenerationRequest], dict]] = {
    "sample-top-p": _sample_top_p,
    "sample-top-k": _sample_top_k,
    "sample": _sample,
    "beam": _beam,
    "greedy": _greedy,
}


def to_generate_kwargs(req: GenerationRequest) -> dict:
    """The decoding settings for ``req.mode`` plus the return count; length is added by the model holder."""
    return {**MODE_KWARGS[req.mode](req), "num_return_sequences": req.num_return_sequences}
