"""RowSampler against transformers' own warpers, on random score tensors (no model needed).

The tokens a sampling row can choose must be exactly those that TemperatureLogitsWarper,
TopKLogitsWarper and TopPLogitsWarper (transformers' order) leave finite, with the same
probabilities; greedy rows take the argmax; and a row's draws depend on its seed only, not on the
rows that share its batch.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from textgen.generation import Job, RowSampler
from textgen.schemas import GenerationRequest

VOCAB = 3000  # more than RowSampler.WIDTHS[0] + the largest top_k below, so its fast path is used
TEMPERATURES = (0.5, 1.0, 1.7)
TOP_KS = (0, 1, 7, 50, VOCAB + 5)
TOP_PS = (0.3, 0.9, 1.0)
GRID = list(itertools.product(TEMPERATURES, TOP_KS, TOP_PS))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread, as tests/integration/conftest.py explains."""
    torch.set_num_threads(1)


def sample_job(temperature: float, top_k: int, top_p: float, seed: int = 0, rows: int = 1) -> Job:
    request = GenerationRequest(
        input="x", mode="sample", temperature=temperature, top_k=top_k, top_p=top_p, num_return_sequences=rows
    )
    return Job(request, [1], 8, seed, True)


def greedy_job() -> Job:
    return Job(GenerationRequest(input="x", mode="greedy", num_return_sequences=1), [1], 8, 0, False)


def reference_probs(scores: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """The sampling distribution transformers' generate() builds for one row (as _get_logits_processor
    does: temperature, then top-k unless 0, then top-p unless 1.0)."""
    warpers = [TemperatureLogitsWarper(temperature)]
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    out = scores.unsqueeze(0).clone()
    for warper in warpers:
        out = warper(None, out)
    return out.softmax(dim=-1)[0]


class Spy:
    """Stands in for the sampler's torch module: records each sampling row's distribution (the kept
    tokens' probabilities and ids) and the widths of the top-k / sort calls the sampler made."""

    def __init__(self, sampler: RowSampler):
        self._torch = sampler.torch
        self.offered: list[torch.Tensor] = []
        self.offered_ids: list[torch.Tensor] = []
        self.widths: list[int] = []
        original = sampler._row_distribution

        def row_distribution(*args):
            probs, ids = original(*args)
            self.offered.append(probs.clone())
            self.offered_ids.append(ids.clone())
            return probs, ids

        sampler._row_distribution = row_distribution
        sampler.torch = self

    def __getattr__(self, name):
        return getattr(self._torch, name)

    def topk(self, scores, k, *args, **kwargs):
        self.widths.append(k)
        return self._torch.topk(scores, k, *args, **kwargs)

    def sort(self, scores, *args, **kwargs):
        self.widths.append(scores.shape[-1])
        return self._torch.sort(scores, *args, **kwargs)


def sampler_distributions(jobs: list[Job], scores: torch.Tensor) -> tuple[dict[int, torch.Tensor], Spy, torch.Tensor]:
    """Run RowSampler once; per sampling row, its distribution over the whole vocabulary."""
    sampler = RowSampler(jobs, "cpu")
    spy = Spy(sampler)
    out = sampler(torch.zeros(len(jobs), 1, dtype=torch.long), scores.clone())
    sampling_rows = [row for row, job in enumerate(jobs) if job.request.mode != "greedy"]
    assert len(spy.offered) == len(sampling_rows), "one draw per sampling row"
    dists = {}
    for row, offered, ids in zip(sampling_rows, spy.offered, spy.offered_ids):
        full = torch.zeros(scores.shape[1])
        full[ids] = offered
        dists[row] = full
    return dists, spy, out


def chosen(out: torch.Tensor) -> list[int]:
    """The token each row picked: RowSampler leaves only it finite (0), the rest -inf."""
    assert torch.isfinite(out).sum(dim=-1).tolist() == [1] * out.shape[0]
    return out.argmax(dim=-1).tolist()


def make_scores(rows: int, scale: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, VOCAB, generator=generator) * scale


def assert_same_distribution(got: torch.Tensor, want: torch.Tensor, what) -> None:
    kept, allowed = set(got.nonzero().flatten().tolist()), set(want.nonzero().flatten().tolist())
    assert kept == allowed, f"{what}: {len(kept - allowed)} extra and {len(allowed - kept)} missing tokens"
    assert torch.allclose(got, want, atol=1e-5), f"{what}: probabilities differ"


# ---- the kept candidates equal transformers' ------------------------------------------------


@pytest.mark.parametrize(("scale", "seed"), [(0.5, 0), (3.0, 1), (8.0, 2)], ids=["flat", "peaked", "sharp"])
def test_whole_grid_in_one_batch_keeps_what_transformers_keeps(scale, seed):
    """Every (temperature, top_k, top_p) of the grid as one row of one batch, each on its own scores."""
    jobs = [sample_job(t, k, p, seed=i) for i, (t, k, p) in enumerate(GRID)]
    scores = make_scores(len(jobs), scale, seed)
    dists, _, out = sampler_distributions(jobs, scores)
    picks = chosen(out)
    for row, (t, k, p) in enumerate(GRID):
        want = reference_probs(scores[row], t, k, p)
        assert_same_distribution(dists[row], want, (t, k, p))
        assert want[picks[row]] > 0, f"{(t, k, p)}: picked a token transformers removes"


@pytest.mark.parametrize(("t", "k", "p"), GRID)
def test_each_setting_alone_keeps_what_transformers_keeps(t, k, p):
    scores = make_scores(1, 2.0, seed=hash((t, k, p)) % 1000)
    dists, _, out = sampler_distributions([sample_job(t, k, p)], scores)
    want = reference_probs(scores[0], t, k, p)
    assert_same_distribution(dists[0], want, (t, k, p))
    assert want[chosen(out)[0]] > 0


@pytest.mark.parametrize("top_p", [0.999, 0.9999])
def test_rows_without_top_k_fall_back_to_the_whole_vocabulary_when_the_first_candidates_fall_short(top_p):
    """Flat scores: the best WIDTHS[0] tokens hold far less than top_p of the mass."""
    scores = make_scores(2, 0.3, seed=5)
    jobs = [sample_job(1.0, 0, top_p), sample_job(1.3, 0, top_p, seed=1)]
    dists, spy, _ = sampler_distributions(jobs, scores)
    first = RowSampler.WIDTHS[0]
    assert spy.widths == [first, VOCAB, first, VOCAB], "each row: a first look, then the whole vocabulary"
    for row, job in enumerate(jobs):
        want = reference_probs(scores[row], job.request.temperature, 0, top_p)
        assert (want > 0).sum() > RowSampler.WIDTHS[0]
        assert_same_distribution(dists[row], want, top_p)


def test_rows_without_top_k_stay_on_the_first_candidates_when_they_cover_top_p():
    scores = make_scores(2, 6.0, seed=6)  # peaked: a few tokens hold most of the mass
    jobs = [sample_job(1.0, 0, 0.9), sample_job(0.7, 20, 0.5, seed=1)]
    dists, spy, _ = sampler_distributions(jobs, scores)
    assert spy.widths == [20, RowSampler.WIDTHS[0]], "one top-k for the batch, one first look for the open row"
    for row, job in enumerate(jobs):
        r = job.request
        assert_same_distribution(dists[row], reference_probs(scores[row], r.temperature, r.top_k, r.top_p), row)


def test_top_p_1_without_top_k_keeps_the_whole_vocabulary():
    scores = make_scores(1, 1.0, seed=7)
    dists, spy, _ = sampler_distributions([sample_job(1.2, 0, 1.0)], scores)
    assert spy.widths[-1] == VOCAB
    assert_same_distribution(dists[0], reference_probs(scores[0], 1.2, 0, 1.0), "top_p 1.0")
    assert (dists[0] > 0).all()


# ---- greedy rows ----------------------------------------------------------------------------


def test_greedy_rows_take_the_argmax_beside_sampling_rows():
    scores = make_scores(5, 2.0, seed=8)
    jobs = [greedy_job(), sample_job(1.5, 0, 0.9), greedy_job(), sample_job(0.6, 7, 1.0, seed=3), greedy_job()]
    _, _, out = sampler_distributions(jobs, scores)
    picks = chosen(out)
    for row in (0, 2, 4):
        assert picks[row] == int(scores[row].argmax())


def test_a_batch_of_greedy_rows_only_takes_the_argmax_and_draws_nothing():
    scores = make_scores(3, 2.0, seed=9)
    dists, spy, out = sampler_distributions([greedy_job(), greedy_job(), greedy_job()], scores)
    assert chosen(out) == scores.argmax(dim=-1).tolist()
    assert spy.offered == []


# ---- a row's draws depend on its seed, not on its batch mates -------------------------------


def draws(jobs: list[Job], steps: list[torch.Tensor], rows: list[int]) -> list[list[int]]:
    """Each step's picks for ``rows``; ``steps[i]`` holds one score row per job row, in order."""
    sampler = RowSampler([job for job in jobs for _ in range(job.request.num_return_sequences)], "cpu")
    picks = []
    for scores in steps:
        out = sampler(torch.zeros(scores.shape[0], 1, dtype=torch.long), scores.clone())
        picks.append([chosen(out)[row] for row in rows])
    return picks


COMPANIONS = {
    "same-settings": lambda: [sample_job(0.9, 50, 0.95, seed=77)],
    "greedy": lambda: [greedy_job()],
    "smaller-top-k": lambda: [sample_job(1.0, 3, 1.0, seed=5)],
    "larger-top-k": lambda: [sample_job(1.0, 500, 0.9, seed=5)],
    "no-top-k": lambda: [sample_job(1.0, 0, 0.9, seed=5)],
    "no-top-k-fallback": lambda: [sample_job(1.0, 0, 0.9999, seed=5)],
}


@pytest.mark.parametrize("companions", list(COMPANIONS), ids=list(COMPANIONS))
def test_a_rows_draws_are_the_same_alone_and_in_a_batch(companions):
    """Same seed, same scores -> the same choice sequence, whatever else is in the batch."""
    target = sample_job(0.9, 50, 0.95, seed=1234, rows=2)
    steps_alone = [make_scores(2, 1.0, seed=100 + step) for step in range(12)]
    alone = draws([target], steps_alone, rows=[0, 1])
    others = COMPANIONS[companions]()
    # Batch: a companion row, the target's two rows, another companion row; the target's rows see the
    # same scores as alone.
    steps_batch = []
    for step, scores in enumerate(steps_alone):
        filler = make_scores(2, 1.0, seed=500 + step)
        steps_batch.append(torch.cat([filler[:1], scores, filler[1:]]))
    batch_jobs = [others[0], target, *(COMPANIONS[companions]())]
    together = draws(batch_jobs, steps_batch, rows=[1, 2])
    assert together == alone
