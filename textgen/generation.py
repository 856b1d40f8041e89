"""Run a batch of requests through one ``generate()`` call (torch; used by the holder and the engine).

- Greedy and sampling requests share one call whatever their ``top_p``/``top_k``/``temperature``
  and lengths: ``RowSampler`` applies each row's own settings exactly as transformers' warpers do
  and samples each request from its own ``torch.Generator`` seeded with the request's seed, and
  ``RowLimits`` ends each row at its own length. What a request samples therefore depends on its
  seed, not on what else shares the batch.
- Beam requests share a call when ``num_beams``, ``no_repeat_ngram_size`` and the length agree;
  they pass the mode's kwargs to ``generate()`` unchanged.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .modes import to_generate_kwargs
from .schemas import GenerationRequest

if TYPE_CHECKING:
    from .model import GenerationResult


@dataclass(eq=False)
class Job:
    """One queued request and, once done, its result or error."""

    request: GenerationRequest
    ids: list[int]
    new_tokens: int
    seed: int
    seeded: bool
    done: threading.Event = field(default_factory=threading.Event)
    result: GenerationResult | None = None
    error: BaseException | None = None
    cancelled: bool = False

    @property
    def beam(self) -> bool:
        return self.request.mode == "beam"

    @property
    def rows(self) -> int:
        """Rows this job occupies in a batch (beam search keeps num_beams rows per prompt)."""
        return self.request.num_beams if self.beam else self.request.num_return_sequences

    def group_key(self) -> tuple:
        """Jobs with equal keys can run in one generate() call."""
        if self.seeded:
            return ("alone", id(self))
        if self.beam:
            return ("beam", self.request.num_beams, self.request.no_repeat_ngram_size, self.new_tokens)
        return ("rows",)

    def finish(self, result: GenerationResult | None = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


def run_jobs(holder, jobs: list[Job]) -> list[list[list[int]]]:
    """New token ids per job and row (padding after an early stop removed); jobs must share a group."""
    rows = run_beam_batch(holder, jobs) if jobs[0].beam else run_row_batch(holder, jobs)
    pad = holder.tokenizer.pad_token_id
    return [[_strip_pad(row, pad) for row in job_rows] for job_rows in rows]


def _strip_pad(row: list[int], pad: int | None) -> list[int]:
    end = len(row)
    while end and row[end - 1] == pad:
        end -= 1
    return row[:end]


def _left_pad(holder, prompts: list[list[int]]):
    """Batch tensors for prompts of different lengths: left padding plus an attention mask."""
    import torch

    width = max(len(p) for p in prompts)
    pad = holder.tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=holder.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=holder.device)
    return input_ids, mask, width


def run_beam_batch(holder, batch: list[Job]) -> list[list[list[int]]]:
    """Beam search for jobs that share num_beams, no_repeat_ngram_size and length."""
    import torch

    first = batch[0].request
    returns = max(job.request.num_return_sequences for job in batch)
    input_ids, mask, width = _left_pad(holder, [job.ids for job in batch])
    request = GenerationRequest(
        input="",
        mode="beam",
        num_beams=first.num_beams,
        no_repeat_ngram_size=first.no_repeat_ngram_size,
        num_return_sequences=returns,
    )
    config = holder.generation_config(request, batch[0].new_tokens)
    with torch.inference_mode():
        output = holder.model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config)
    rows = output[:, width:].tolist()
    # generate() returns `returns` rows per prompt, best first; each job keeps its own count.
    return [rows[i * returns : i * returns + job.request.num_return_sequences] for i, job in enumerate(batch)]


def run_row_batch(holder, batch: list[Job]) -> list[list[list[int]]]:
    """Greedy and sampling jobs in one call: each row keeps its own settings, seed stream and length."""
    import torch
    from transformers import LogitsProcessorList, StoppingCriteriaList

    prompts, row_jobs = [], []
    for job in batch:
        for _ in range(job.request.num_return_sequences):
            prompts.append(job.ids)
            row_jobs.append(job)
    input_ids, mask, width = _left_pad(holder, prompts)
    sampler = RowSampler(row_jobs, holder.device)
    limits = RowLimits(row_jobs, width, holder.device)
    greedy = GenerationRequest(input="", mode="greedy", num_return_sequences=1)
    config = holder.generation_config(greedy, max(job.new_tokens for job in batch))
    with torch.inference_mode():
        output = holder.model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            generation_config=config,
            logits_processor=LogitsProcessorList([sampler]),
            stopping_criteria=StoppingCriteriaList([limits]),
        )
    rows = output[:, width:].tolist()
    results, start = [], 0
    for job in batch:
        count = job.request.num_return_sequences
        results.append([row[: job.new_tokens] for row in rows[start : start + count]])
        start += count
    return results


class RowSampler:
    """A logits processor that picks each row's next token with that row's own decoding settings.

    It applies temperature, top-k and top-p exactly as transformers' warpers do (in that order),
    then samples with the row's request generator, and returns scores whose argmax is the chosen
    token, so generate() runs in its greedy mode. Greedy rows take the argmax.
    """

    def __init__(self, row_jobs: list[Job], device):
        import torch

        self.torch = torch
        kwargs = [to_generate_kwargs(job.request) for job in row_jobs]
        self.sample = [kw["do_sample"] for kw in kwargs]
        # Temperatures beyond float32's range would divide by 0 or inf: clamp them to it (a tiny
        # temperature is greedy, a huge one uniform, either way).
        f32 = torch.finfo(torch.float32)
        temperatures = [min(max(kw.get("temperature", 1.0), f32.tiny), f32.max) for kw in kwargs]
        self.temperature = torch.tensor(temperatures, device=device).unsqueeze(1)
        self.top_k = [kw.get("top_k", 0) for kw in kwargs]
        self.top_p = [kw.get("top_p", 1.0) for kw in kwargs]
        # One generator per request; its rows draw from it in row order, one draw per row and step.
        generators: dict[int, object] = {}
        self.generators = []
        for job in row_jobs:
            if id(job) not in generators:
                generator = torch.Generator(device=device)
                generator.manual_seed(job.seed)
                generators[id(job)] = generator
            self.generators.append(generators[id(job)])

    # Candidate widths tried in turn for a row without top-k, until they hold top_p of its mass.
    WIDTHS = (1024, 8192)

    def __call__(self, input_ids, scores):
        torch = self.torch
        # Shift each row so its best score is 0 before dividing by the temperature: the distribution
        # is unchanged, and a tiny temperature gives -inf for the rest instead of inf/NaN.
        scores = scores.float()
        scores = (scores - scores.max(dim=-1, keepdim=True).values) / self.temperature
        rows, vocab = scores.shape
        chosen = scores.argmax(dim=-1, keepdim=True)  # greedy rows
        if not any(self.sample):
            return self._one_hot(scores, chosen)
        # One top-k over the batch for the rows that limit k (a full sort of the vocabulary costs
        # more than the rest of a step); each row then works only on its own slice of it, so what a
        # row draws does not depend on which other rows share the batch.
        limited = [k for k, s in zip(self.top_k, self.sample, strict=True) if s and k > 0]
        top_values = top_indices = None
        if limited:
            top_values, top_indices = torch.topk(scores, min(max(limited), vocab), dim=-1)
        for row, sample in enumerate(self.sample):
            if sample:
                probs, ids = self._row_distribution(row, scores, top_values, top_indices)
                draw = torch.multinomial(probs, 1, generator=self.generators[row])
                chosen[row, 0] = ids[draw[0]]
        return self._one_hot(scores, chosen)

    def _row_distribution(self, row: int, scores, top_values, top_indices):
        """A sampling row's distribution after temperature, top-k and top-p: the probabilities of the
        tokens it keeps (best first) and their vocabulary ids."""
        k = self.top_k[row]
        if k > 0:
            k = min(k, scores.shape[1])
            values, indices = top_values[row, :k], top_indices[row, :k]
            probs = (values - values.logsumexp(dim=0)).exp()
        else:
            values, indices, probs = self._unlimited(scores[row], self.top_p[row])
        kept = _top_p_count(probs, self.top_p[row])
        return values[:kept].softmax(dim=0), indices[:kept]

    def _unlimited(self, row_scores, top_p: float):
        """Best-first candidates of a row without top-k: the fewest best tokens that hold top_p of the
        probability mass (the whole vocabulary when top_p is 1), with their full-vocabulary probabilities."""
        torch = self.torch
        vocab = row_scores.shape[0]
        norm = row_scores.logsumexp(dim=0)
        if top_p < 1.0:
            for width in self.WIDTHS:
                if width >= vocab:
                    break
                values, indices = torch.topk(row_scores, width)
                probs = (values - norm).exp()
                if float(probs.sum()) >= top_p:
                    return values, indices, probs
        values, indices = torch.sort(row_scores, descending=True)
        return values, indices, (values - norm).exp()

    def _one_hot(self, scores, chosen):
        out = self.torch.full_like(scores, float("-inf"))
        return out.scatter_(1, chosen, 0.0)


def _top_p_count(probs, top_p: float) -> int:
    """How many best-first tokens top-p keeps: a token stays while the probability of the tokens
    ranked above it is below top_p (transformers' TopPLogitsWarper, written best-first); the best
    token always stays."""
    if top_p >= 1.0:
        return int(probs.shape[0])
    before = probs.cumsum(dim=0) - probs
    return max(1, int((before < top_p).sum()))


class RowLimits:
    """A stopping criterion: each row stops at its own new-token limit, or when its caller left."""

    def __init__(self, row_jobs: list[Job], prompt_width: int, device):
        import torch

        self.torch = torch
        self.jobs = row_jobs
        self.width = prompt_width
        self.limits = torch.tensor([job.new_tokens for job in row_jobs], device=device)

    def __call__(self, input_ids, scores, **kwargs):
        done = (input_ids.shape[1] - self.width) >= self.limits
        cancelled = [row for row, job in enumerate(self.jobs) if job.cancelled]
        if cancelled:
            done[cancelled] = True
        return done
