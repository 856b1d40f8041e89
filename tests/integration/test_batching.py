"""The batching engine on the tiny GPT-2: routing, seeded invariance, isolation, cancellation, on/off.

Requests meant to share one batch are submitted from one thread while the engine waits
``TEXTGEN_BATCH_WAIT_MS`` (set long here), so the batch composition, and with it the numerics, is the
same on every run; ``engine.batch_sizes`` confirms what ran together.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from textgen import create_app, generation
from textgen.batching import BatchingEngine
from textgen.errors import ApiError, GenerationFailed
from textgen.generation import Job, RowLimits
from textgen.model import GenerationResult
from textgen.schemas import GenerationRequest, parse_request

WAIT_S = 30.0  # bound on anything that must finish; never reached when the engine works
TOGETHER_MS = 150.0  # batch wait long enough for one thread to submit a whole batch


def req(input: str, **payload) -> GenerationRequest:
    return parse_request({"input": input, "max_new_tokens": 8, **payload})


@pytest.fixture
def make_engine(holder):
    """Start BatchingEngines on the module's tiny-model holder (settings overridden); stop them after."""
    engines: list[BatchingEngine] = []

    def build(**overrides) -> BatchingEngine:
        # A request timeout, so that a broken engine fails a test instead of hanging it.
        overrides = {"request_timeout": 120.0, **overrides}
        engine = BatchingEngine(holder, dataclasses.replace(holder.settings, **overrides)).start_engine()
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        engine.stop()
        assert not engine._thread.is_alive(), "engine thread did not stop"


def submit_together(engine: BatchingEngine, requests: list[GenerationRequest]) -> list[Job]:
    """Queue ``requests`` within one batch window (the engine must have batch_wait_ms=TOGETHER_MS)."""
    started = time.monotonic()
    jobs = [engine.submit(r) for r in requests]
    assert time.monotonic() - started < TOGETHER_MS / 1000 / 2, "submitting took too long to share a batch"
    return jobs


def outcome(engine: BatchingEngine, job: Job):
    """The job's GenerationResult, or the exception its caller gets."""
    try:
        return engine.wait(job)
    except Exception as exc:
        return exc


def concurrently(engine: BatchingEngine, requests: list[GenerationRequest]) -> list:
    """Each request from its own thread, all released at once; results (or exceptions) in order."""
    barrier = threading.Barrier(len(requests))

    def call(r: GenerationRequest):
        barrier.wait()
        try:
            return engine.generate(r)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(call, requests))


def rows_of(r: GenerationRequest) -> int:
    return r.num_beams if r.mode == "beam" else r.num_return_sequences


def check_result(result, r: GenerationRequest, prompt_tokens) -> None:
    """Right count, each text starts with its own input, no row longer than its own limit."""
    assert isinstance(result, GenerationResult), f"{r.input!r}: {result!r}"
    assert len(result.texts) == r.num_return_sequences, r.input
    assert all(text.startswith(r.input) for text in result.texts), (r.input, result.texts)
    assert result.prompt_tokens == prompt_tokens(r.input)
    assert all(1 <= n <= r.max_new_tokens for n in result.new_tokens), (r.input, result.new_tokens)
    if r.seed is not None:
        assert result.seed == r.seed


MIXED = [
    {"mode": "greedy"},
    {"mode": "sample-top-p", "num_return_sequences": 2},
    {"mode": "sample-top-k", "top_k": 5, "num_return_sequences": 3},
    {"mode": "sample", "temperature": 1.4, "top_p": 0.8, "top_k": 20},
    {"mode": "beam", "num_beams": 3, "no_repeat_ngram_size": 0, "num_return_sequences": 2},
    {"mode": "sample-top-p", "top_p": 0.5, "top_k": 200},
]


# ---- routing and batch formation ------------------------------------------------------------


def test_concurrent_callers_get_their_own_results_and_batches_form(make_engine, prompt_tokens):
    engine = make_engine(batch_wait_ms=20.0)
    requests = [
        req(f"Caller {i} {'word ' * (i % 5)}writes", max_new_tokens=2 + i % 7, **MIXED[i % len(MIXED)])
        for i in range(24)
    ]
    results = concurrently(engine, requests)
    for r, result in zip(requests, results):
        check_result(result, r, prompt_tokens)
    # Each row is cut at its own limit (a row may end earlier only at the end-of-text token).
    exact = [n == r.max_new_tokens for r, result in zip(requests, results) for n in result.new_tokens]
    assert sum(exact) >= 0.9 * len(exact)
    assert max(engine.batch_sizes) > max(rows_of(r) for r in requests), engine.batch_sizes
    assert sum(engine.batch_sizes) == sum(rows_of(r) for r in requests)


def test_a_padded_mixed_batch_answers_each_request_in_order(make_engine, holder, prompt_tokens):
    """Prompts of different lengths and modes in one left-padded batch: greedy rows match a solo run."""
    engine = make_engine(batch_wait_ms=TOGETHER_MS)
    requests = [
        req("Hi", mode="greedy", max_new_tokens=10),
        req("A much longer prompt that needs a lot of left padding for the others", mode="greedy", max_new_tokens=3),
        req("Sampled", mode="sample", top_k=7, num_return_sequences=3, max_new_tokens=12),
        req("Middle sized prompt here", mode="greedy", max_new_tokens=6),
        req("Top p", mode="sample-top-p", top_p=0.7, max_new_tokens=1),
    ]
    jobs = submit_together(engine, requests)
    results = [outcome(engine, j) for j in jobs]
    assert engine.batch_sizes == [sum(rows_of(r) for r in requests)], "the requests did not share one batch"
    for r, result in zip(requests, results):
        check_result(result, r, prompt_tokens)
    for r, result in zip(requests, results):
        if r.mode == "greedy":
            assert result.texts == holder.generate(r).texts, r.input


def test_beam_requests_sharing_a_batch_each_get_their_solo_answer(make_engine, holder, prompt_tokens):
    """Beam search is deterministic: in a shared (padded) batch each request keeps its own best beams."""
    engine = make_engine(batch_wait_ms=TOGETHER_MS)
    beam = {"mode": "beam", "num_beams": 4, "no_repeat_ngram_size": 2, "max_new_tokens": 9}
    requests = [
        req("The first beam prompt", num_return_sequences=1, **beam),
        req("Short", num_return_sequences=4, **beam),
        req("A third, rather longer prompt for beam search", num_return_sequences=2, **beam),
    ]
    results = [outcome(engine, j) for j in submit_together(engine, requests)]
    assert engine.batch_sizes == [12], "the beam requests did not share a batch"
    for r, result in zip(requests, results):
        check_result(result, r, prompt_tokens)
        assert result.texts == holder.generate(r).texts, r.input


def test_requests_that_fit_alone_but_not_together_never_run_past_the_context_window(
    make_engine, holder, monkeypatch, prompt_tokens
):
    """A batch runs every row for its most new tokens after its longest prompt: that must fit in 128."""
    calls, failures = [], []
    real = generation.run_row_batch

    def run_row_batch(holder_, batch):
        calls.append([job.request.input for job in batch])
        try:
            return real(holder_, batch)
        except Exception as exc:
            failures.append(exc)
            raise

    monkeypatch.setattr(generation, "run_row_batch", run_row_batch)
    engine = make_engine(batch_wait_ms=TOGETHER_MS)
    long_prompt = req("word " * 95, mode="greedy", max_new_tokens=10)
    long_answer = req("Hi", mode="greedy", max_new_tokens=100)
    assert prompt_tokens(long_prompt.input) + 100 > holder.context_window
    results = [outcome(engine, j) for j in submit_together(engine, [long_prompt, long_answer])]
    assert failures == [], f"a batch passed the context window: {failures[0]!r}"
    for r, result in zip([long_prompt, long_answer], results):
        check_result(result, r, prompt_tokens)
        assert result.texts == holder.generate(r).texts


# ---- seeds -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seeded",
    [
        req("A seeded story", mode="sample-top-p", seed=1234, num_return_sequences=2, max_new_tokens=12),
        req("Seeded", mode="sample", temperature=0.8, top_k=0, top_p=0.9, seed=7, max_new_tokens=4),
        req("Seeded beam", mode="beam", num_beams=3, num_return_sequences=2, seed=99),
    ],
    ids=["top-p", "top-k-0", "beam"],
)
def test_a_seeded_request_returns_its_solo_result_under_load(make_engine, holder, seeded):
    engine = make_engine(batch_wait_ms=20.0)
    solo = engine.generate(seeded)
    assert solo.texts == holder.generate(seeded).texts  # the engine and the direct path agree
    others = [req(f"Load {i} {'x ' * i}", max_new_tokens=6, **MIXED[i % len(MIXED)]) for i in range(9)]
    requests = others[:4] + [seeded] + others[4:] + [seeded]
    results = concurrently(engine, requests)
    assert all(isinstance(result, GenerationResult) for result in results), results
    assert results[4].texts == solo.texts and results[4].seed == seeded.seed
    assert results[-1].texts == solo.texts
    assert max(engine.batch_sizes) > 1


def test_unseeded_twins_in_one_batch_get_independent_randomness(make_engine):
    engine = make_engine(batch_wait_ms=TOGETHER_MS)
    twin = req("Twins", mode="sample-top-p", num_return_sequences=1, max_new_tokens=16)
    first, second = (outcome(engine, j) for j in submit_together(engine, [twin, twin]))
    assert engine.batch_sizes == [2], "the twins did not share a batch"
    assert first.seed != second.seed
    assert first.texts != second.texts


@pytest.mark.parametrize(
    "companion",
    [
        {"mode": "sample-top-p"},  # the same settings
        {"mode": "greedy"},
        {"mode": "sample-top-k", "top_k": 3},  # a smaller top_k
        {"mode": "sample-top-k", "top_k": 200},  # a larger top_k: the sampler looks at more candidates
        {"mode": "sample", "top_k": 0, "top_p": 0.95},  # no top-k: the sampler looks at more candidates
    ],
    ids=["same-settings", "greedy", "smaller-top-k", "larger-top-k", "no-top-k"],
)
def test_an_unseeded_request_replays_from_its_reported_seed_whatever_shared_its_batch(make_engine, companion):
    """README: an unseeded request samples from a generator seeded with the seed it reports, so replaying
    that seed samples the same way (equal prompt lengths here: no padding, no numerics to blame)."""
    engine = make_engine(batch_wait_ms=TOGETHER_MS)
    target = req("Replay me", mode="sample-top-p", num_return_sequences=2, max_new_tokens=12)
    jobs = submit_together(engine, [target, req("Replay us", max_new_tokens=12, **companion)])
    shared = outcome(engine, jobs[0])
    outcome(engine, jobs[1])
    assert len(engine.batch_sizes) == 1, "the two requests did not share a batch"
    replay = engine.generate(dataclasses.replace(target, seed=shared.seed))
    assert replay.texts == shared.texts


# ---- failure isolation -----------------------------------------------------------------------


@pytest.fixture
def failing_batches(monkeypatch):
    """Make run_row_batch raise an out-of-memory error for any batch that holds an input with BOOM."""
    calls: list[list[str]] = []
    real = generation.run_row_batch

    def run_row_batch(holder, batch):
        calls.append([job.request.input for job in batch])
        if any("BOOM" in job.request.input for job in batch):
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(holder, batch)

    monkeypatch.setattr(generation, "run_row_batch", run_row_batch)
    return calls


def test_a_failing_request_fails_only_its_own_caller_and_the_engine_keeps_serving(
    make_engine, failing_batches, prompt_tokens
):
    engine = make_engine(batch_wait_ms=TOGETHER_MS)
    requests = [
        req("ok zero", num_return_sequences=2),
        req("BOOM", mode="greedy"),
        req("ok one", mode="greedy"),
        req("ok two", mode="sample", top_k=3),
    ]
    results = [outcome(engine, j) for j in submit_together(engine, requests)]
    assert failing_batches[0] == [r.input for r in requests], "the requests did not share a batch"
    for r, result in zip(requests, results):
        if r.input == "BOOM":
            assert isinstance(result, GenerationFailed), result
            assert result.status == 500 and "out of memory" in result.message
            json.dumps({"code": result.status, "error": result.error, "message": result.message})
        else:
            check_result(result, r, prompt_tokens)
    # The engine serves afterwards, directly and over HTTP (where the failure is a JSON 500).
    check_result(engine.generate(req("still here")), req("still here"), prompt_tokens)
    client = create_app(settings=engine.settings, generator=engine).test_client()
    response = client.post("/invocations", json={"input": "BOOM again", "max_new_tokens": 2})
    assert response.status_code == 500
    assert response.get_json()["error"] == "generation_failed"
    assert client.post("/invocations", json={"input": "fine", "max_new_tokens": 2}).status_code == 200


# ---- cancellation ----------------------------------------------------------------------------


@pytest.fixture
def gated_batches(monkeypatch):
    """run_row_batch waits at a gate (open unless closed) and records each batch's inputs."""
    gate, entered = threading.Event(), threading.Event()
    gate.set()
    calls: list[list[str]] = []
    real = generation.run_row_batch

    def run_row_batch(holder, batch):
        calls.append([job.request.input for job in batch])
        entered.set()
        assert gate.wait(WAIT_S)
        return real(holder, batch)

    monkeypatch.setattr(generation, "run_row_batch", run_row_batch)
    yield gate, entered, calls
    gate.set()


def test_a_queued_job_whose_caller_left_is_dropped_and_never_runs(make_engine, gated_batches):
    gate, entered, calls = gated_batches
    engine = make_engine(batch_wait_ms=1.0)
    gate.clear()
    blocker = engine.submit(req("blocker", mode="greedy"))
    assert entered.wait(WAIT_S)
    leaver = engine.submit(req("leaver", mode="greedy"))
    assert engine.queued == 1
    with pytest.raises(ApiError, match="disconnected"):
        engine.wait(leaver, gone=lambda: True)
    assert engine.queued == 0 and leaver.cancelled
    gate.set()
    assert engine.wait(blocker).texts
    engine.generate(req("after", mode="greedy"))
    assert calls == [["blocker"], ["after"]]
    assert leaver.result is None and not leaver.done.is_set()


@pytest.fixture
def slow_steps(monkeypatch):
    """RowLimits that signal the first decoding step and slow each step, so a run can be caught mid-way."""
    first_step = threading.Event()

    class SlowLimits(RowLimits):
        def __call__(self, input_ids, scores, **kwargs):
            first_step.set()
            time.sleep(0.003)
            return super().__call__(input_ids, scores, **kwargs)

    monkeypatch.setattr(generation, "RowLimits", SlowLimits)
    return first_step


def test_a_running_job_whose_caller_left_stops_early_while_its_batch_mates_finish(make_engine, holder, slow_steps):
    engine = make_engine(batch_wait_ms=TOGETHER_MS)
    long = 110  # the window is 128 tokens
    leaver_request = req("Stop me", mode="greedy", max_new_tokens=long)
    stayer_request = req("Keep me", mode="sample-top-k", top_k=3, max_new_tokens=long, num_return_sequences=2)
    leaver, stayer = submit_together(engine, [leaver_request, stayer_request])
    left = threading.Event()
    raised = {}

    def caller():
        try:
            engine.wait(leaver, gone=left.is_set)
        except ApiError as exc:
            raised["error"] = exc

    thread = threading.Thread(target=caller)
    thread.start()
    assert slow_steps.wait(WAIT_S)
    left.set()
    thread.join(WAIT_S)
    assert "disconnected" in raised["error"].message
    assert leaver.done.wait(WAIT_S), "the engine never let go of the cancelled job"
    assert max(leaver.result.new_tokens) < long / 2, leaver.result.new_tokens
    kept = engine.wait(stayer)
    assert kept.new_tokens == [long, long], "a batch mate of the cancelled job was cut short"
    assert engine.batch_sizes[0] == 3, "the two requests did not share a batch"
    assert engine.generate(req("after")).texts


def test_row_limits_stop_each_row_at_its_own_length_or_when_cancelled():
    import torch

    short = Job(req("a"), [1, 2], 2, 0, False)
    long = Job(req("b"), [1, 2], 5, 0, False)
    limits = RowLimits([short, long, long], prompt_width=3, device="cpu")
    scores = torch.zeros(3, 10)
    assert limits(torch.zeros(3, 4, dtype=torch.long), scores).tolist() == [False, False, False]
    assert limits(torch.zeros(3, 5, dtype=torch.long), scores).tolist() == [True, False, False]
    long.cancelled = True
    assert limits(torch.zeros(3, 5, dtype=torch.long), scores).tolist() == [True, True, True]


# ---- batching on and off ---------------------------------------------------------------------


def test_batching_off_runs_one_request_per_generate_call(make_engine, prompt_tokens):
    engine = make_engine(batching=False, batch_wait_ms=20.0)
    requests = [req(f"Solo {i}", max_new_tokens=4, **MIXED[i % 4]) for i in range(8)]
    results = concurrently(engine, requests)
    for r, result in zip(requests, results):
        check_result(result, r, prompt_tokens)
    assert engine.batches_run == len(requests)
    assert sorted(engine.batch_sizes) == sorted(rows_of(r) for r in requests)
