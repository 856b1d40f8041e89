"""The batching engine without a model: grouping, queue bound -> 429, readiness, cancellation, isolation.

``run_jobs`` (the only call that needs torch) is replaced by ``FakeRun``, and the model holder by
``FakeHolder``, so the engine's own logic runs for real on its own thread.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from textgen import batching, create_app
from textgen.batching import BatchingEngine, plan_batches
from textgen.errors import ApiError, GenerationFailed, GenerationTimeout, ModelNotReady, Overloaded, ValidationFailed
from textgen.generation import Job
from textgen.model import FAILED, LOADING, READY, GenerationResult
from textgen.schemas import GenerationRequest
from textgen.settings import Settings

WAIT_S = 10.0  # generous bound for anything the engine thread must do; never reached when it works


def job(input: str = "x", *, seed: int | None = None, new_tokens: int = 8, **fields) -> Job:
    """A queued-request record as the engine builds it (seeded when ``seed`` is given)."""
    request = GenerationRequest(input=input, seed=seed, **fields)
    return Job(request, [1, 2, 3], new_tokens, seed if seed is not None else 1234, seed is not None)


def names(batches: list[list[Job]]) -> list[list[str]]:
    return [[j.request.input for j in batch] for batch in batches]


# ---- no torch ------------------------------------------------------------------------------


def test_generation_and_batching_import_without_torch():
    code = (
        "import sys, textgen.generation, textgen.batching\n"
        "print(','.join(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported: {out.stdout.strip()}"


# ---- grouping (plan_batches, Job.group_key, Job.rows) ----------------------------------------


def test_seeded_jobs_each_run_alone_even_when_identical():
    jobs = [
        job("a", seed=1),
        job("b", seed=1),
        job("c", seed=1, mode="greedy", num_return_sequences=1),
        job("d", seed=2, mode="beam"),
    ]
    assert names(plan_batches(jobs)) == [["a"], ["b"], ["c"], ["d"]]


def test_greedy_and_sampling_share_one_group_whatever_their_settings_and_lengths():
    jobs = [
        job("greedy", mode="greedy", num_return_sequences=1, new_tokens=3),
        job("top-p", mode="sample-top-p", top_p=0.5, top_k=0, new_tokens=40),
        job("top-k", mode="sample-top-k", top_k=7, num_return_sequences=5, new_tokens=1),
        job("sample", mode="sample", temperature=1.9, top_p=1.0, top_k=3, new_tokens=17),
        job("default"),
    ]
    assert names(plan_batches(jobs)) == [["greedy", "top-p", "top-k", "sample", "default"]]


def test_beam_jobs_group_by_beams_ngram_and_length_only():
    jobs = [
        job("b5", mode="beam", num_beams=5, no_repeat_ngram_size=2, new_tokens=8, num_return_sequences=1),
        job("b5-more-returns", mode="beam", num_beams=5, no_repeat_ngram_size=2, new_tokens=8, num_return_sequences=4),
        job("b4", mode="beam", num_beams=4, no_repeat_ngram_size=2, new_tokens=8),
        job("b5-ngram0", mode="beam", num_beams=5, no_repeat_ngram_size=0, new_tokens=8),
        job("b5-longer", mode="beam", num_beams=5, no_repeat_ngram_size=2, new_tokens=9),
        job("b5-again", mode="beam", num_beams=5, no_repeat_ngram_size=2, new_tokens=8, top_k=3, top_p=0.1),
    ]
    assert names(plan_batches(jobs)) == [
        ["b5", "b5-more-returns", "b5-again"],
        ["b4"],
        ["b5-ngram0"],
        ["b5-longer"],
    ]


def test_beam_never_shares_with_row_jobs_and_arrival_order_is_kept_in_each_group():
    jobs = [
        job("r0", mode="greedy", num_return_sequences=1),
        job("b0", mode="beam"),
        job("s0", seed=5),
        job("r1"),
        job("b1", mode="beam"),
        job("r2", mode="sample-top-k"),
        job("s1", seed=5),
        job("b2", mode="beam"),
    ]
    batches = plan_batches(jobs)
    assert names(batches) == [["r0", "r1", "r2"], ["b0", "b1", "b2"], ["s0"], ["s1"]]
    # Every job is planned exactly once, and the planned objects are the queued ones.
    planned = [j for batch in batches for j in batch]
    assert sorted(map(id, planned)) == sorted(map(id, jobs))


def test_a_group_is_split_where_its_longest_prompt_plus_most_new_tokens_pass_the_context_window():
    def sized(name: str, prompt: int, new: int, **fields) -> Job:
        j = job(name, new_tokens=new, **fields)
        j.ids = list(range(prompt))
        return j

    jobs = [
        sized("long-prompt", 100, 10),
        sized("long-answer", 5, 100),  # 100 + 100 > 128: not with long-prompt
        sized("small", 10, 10),
        sized("long-answer-2", 20, 90),  # 100 + 90 > 128, but 20 + 100 fits with long-answer
        sized("beam", 100, 28, mode="beam"),
    ]
    batches = plan_batches(jobs, context_window=128)
    assert names(batches) == [["long-prompt", "small"], ["long-answer", "long-answer-2"], ["beam"]]
    for batch in batches:
        assert max(len(j.ids) for j in batch) + max(j.new_tokens for j in batch) <= 128
    assert names(plan_batches(jobs)) == [["long-prompt", "long-answer", "small", "long-answer-2"], ["beam"]]


def test_plan_of_nothing_is_empty():
    assert plan_batches([]) == []


@pytest.mark.parametrize(
    ("fields", "rows"),
    [
        ({"mode": "beam", "num_beams": 6, "num_return_sequences": 2}, 6),
        ({"mode": "beam", "num_beams": 1, "num_return_sequences": 1}, 1),
        ({"mode": "greedy", "num_return_sequences": 1}, 1),
        ({"mode": "sample-top-p", "num_return_sequences": 3}, 3),
        ({"mode": "sample", "num_return_sequences": 16, "num_beams": 2}, 16),
    ],
)
def test_job_rows_count_beams_for_beam_search_and_sequences_otherwise(fields, rows):
    assert job(**fields).rows == rows


# ---- an engine around a fake holder and a fake run_jobs --------------------------------------


class FakeHolder:
    """What the engine needs from a ModelHolder: state, detail, settings, context_window, encode(), result()."""

    def __init__(self, settings: Settings, state: str = READY, detail: str = "ready"):
        self.settings = settings
        self.state = state
        self.detail = detail
        self.context_window = 1024

    def encode(self, request: GenerationRequest) -> tuple[list[int], int]:
        if request.input == "invalid":
            raise ValidationFailed({"input": ["is invalid"]})
        return [ord(c) for c in request.input], request.max_new_tokens or 4

    def result(self, job: Job, rows: list[list[int]]) -> GenerationResult:
        texts = [f"{job.request.input}|{'.'.join(map(str, row))}" for row in rows]
        return GenerationResult(texts, job.seed, len(job.ids), [len(row) for row in rows])


class FakeRun:
    """Stands in for generation.run_jobs: records each call's inputs, can hold calls at a gate or fail."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.error_for: dict[str, BaseException] = {}  # a batch holding this input raises this
        self.delay = 0.0  # seconds each call takes

    def hold(self) -> None:
        self.gate.clear()
        self.entered.clear()

    def release(self) -> None:
        self.gate.set()

    def __call__(self, holder, jobs: list[Job]) -> list[list[list[int]]]:
        self.calls.append([j.request.input for j in jobs])
        self.entered.set()
        assert self.gate.wait(WAIT_S), "test never released the fake run"
        time.sleep(self.delay)
        for j in jobs:
            if j.request.input in self.error_for:
                raise self.error_for[j.request.input]
        # One row per sequence: its job's prompt length and its row number.
        return [[[len(j.ids), row] for row in range(j.request.num_return_sequences)] for j in jobs]


@pytest.fixture
def run(monkeypatch) -> FakeRun:
    fake = FakeRun()
    monkeypatch.setattr(batching, "run_jobs", fake)
    return fake


@pytest.fixture
def make_engine(run):
    """Build a BatchingEngine on a FakeHolder; started unless start=False; stopped at teardown."""
    engines: list[BatchingEngine] = []

    def build(start: bool = True, state: str = READY, detail: str = "ready", **settings) -> BatchingEngine:
        # A request timeout, so that a test of a broken engine fails instead of waiting forever.
        chosen = Settings(**{"batch_wait_ms": 1.0, "request_timeout": WAIT_S, **settings})
        engine = BatchingEngine(FakeHolder(chosen, state, detail), chosen)
        engines.append(engine)
        return engine.start_engine() if start else engine

    yield build
    run.release()
    for engine in engines:
        engine.stop()
        assert engine._thread is None or not engine._thread.is_alive(), "engine thread did not stop"


def request(input: str, **fields) -> GenerationRequest:
    return GenerationRequest(input=input, **{"mode": "greedy", "num_return_sequences": 1, **fields})


def busy(engine: BatchingEngine, run: FakeRun) -> Job:
    """Hold the engine inside a run of one job, so that what is submitted next stays queued."""
    run.hold()
    blocker = engine.submit(request("blocker"))
    assert run.entered.wait(WAIT_S), "the engine never started the blocker"
    assert engine.queued == 0
    return blocker


def finished(job: Job) -> GenerationResult:
    assert job.done.wait(WAIT_S), f"job {job.request.input!r} never finished"
    assert job.error is None, job.error
    return job.result


# ---- queue bound ---------------------------------------------------------------------------


def test_full_queue_refuses_at_once_with_429_and_retry_after(make_engine, run):
    engine = make_engine(max_queue=2)
    blocker = busy(engine, run)
    queued = [engine.submit(request(f"q{i}")) for i in range(2)]
    assert engine.queued == 2
    started = time.monotonic()
    with pytest.raises(Overloaded) as refused:
        engine.submit(request("one too many"))
    assert time.monotonic() - started < 0.5, "the refusal waited instead of answering at once"
    error = refused.value
    assert error.status == 429 and error.error == "too_many_requests"
    retry = error.headers["Retry-After"]
    assert retry.isdigit() and int(retry) >= 1
    assert "TEXTGEN_MAX_QUEUE" in error.message
    assert engine.queued == 2, "a refused request must not be queued"
    # Once the engine moves on, everything accepted finishes and the queue has room again.
    run.release()
    for j in [blocker, *queued]:
        assert finished(j).texts == [f"{j.request.input}|{len(j.request.input)}.0"]
    assert finished(engine.submit(request("later"))).texts == ["later|5.0"]
    assert "one too many" not in [i for call in run.calls for i in call]


def test_full_queue_is_a_429_json_answer_over_http(make_engine, run):
    engine = make_engine(max_queue=1)
    client = create_app(settings=engine.settings, generator=engine).test_client()
    busy(engine, run)
    engine.submit(request("queued"))
    started = time.monotonic()
    response = client.post("/invocations", json={"input": "Hello", "mode": "greedy"})
    assert time.monotonic() - started < 1.0
    assert response.status_code == 429
    assert response.content_type == "application/json"
    body = response.get_json()
    assert body["code"] == 429 and body["error"] == "too_many_requests" and body["message"]
    assert int(response.headers["Retry-After"]) >= 1


def test_a_request_larger_than_a_batch_is_still_accepted_and_runs_alone(make_engine, run):
    engine = make_engine(max_batch_rows=2)
    busy(engine, run)
    big = engine.submit(request("big", mode="sample", num_return_sequences=5))
    small = engine.submit(request("small"))
    run.release()
    assert len(finished(big).texts) == 5
    finished(small)
    assert ["big"] in run.calls and ["small"] in run.calls


# ---- readiness -------------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "detail"), [(LOADING, "model is loading"), (FAILED, "model failed to load: boom")])
def test_submit_before_the_model_is_ready_is_503_with_the_holders_detail(make_engine, state, detail):
    engine = make_engine(state=state, detail=detail)
    with pytest.raises(ModelNotReady) as refused:
        engine.submit(request("x"))
    assert refused.value.status == 503
    assert refused.value.message == detail
    assert engine.queued == 0


def test_submit_to_a_ready_model_whose_engine_has_not_started_is_503(make_engine):
    engine = make_engine(start=False)
    with pytest.raises(ModelNotReady):
        engine.submit(request("x"))
    assert engine.queued == 0


def test_invalid_request_is_refused_before_it_is_queued(make_engine, run):
    engine = make_engine()
    busy(engine, run)
    with pytest.raises(ValidationFailed):
        engine.submit(request("invalid"))
    assert engine.queued == 0


# ---- cancellation ----------------------------------------------------------------------------


def test_cancel_removes_a_queued_job_and_it_never_runs(make_engine, run):
    engine = make_engine()
    blocker = busy(engine, run)
    keep = engine.submit(request("keep"))
    drop = engine.submit(request("drop"))
    assert engine.queued == 2
    engine.cancel(drop)
    assert engine.queued == 1 and drop.cancelled
    run.release()
    finished(blocker)
    finished(keep)
    assert not drop.done.is_set() and drop.result is None
    assert "drop" not in [i for call in run.calls for i in call]


def test_wait_on_a_gone_caller_raises_and_cancels_the_queued_job(make_engine, run):
    engine = make_engine()
    busy(engine, run)
    job_ = engine.submit(request("leaver"))
    polls = []

    def gone() -> bool:  # the caller leaves on the third look
        polls.append(1)
        return len(polls) >= 3

    with pytest.raises(ApiError) as raised:
        engine.wait(job_, gone=gone)
    assert "disconnected" in raised.value.message
    json.dumps(raised.value.message)
    assert job_.cancelled and engine.queued == 0
    run.release()
    assert finished(engine.submit(request("after"))).texts == ["after|5.0"]
    assert "leaver" not in [i for call in run.calls for i in call]
    assert job_.result is None


def test_generate_with_a_gone_caller_returns_no_result(make_engine, run):
    engine = make_engine()
    busy(engine, run)
    with pytest.raises(ApiError):
        engine.generate(request("leaver"), gone=lambda: True)
    assert engine.queued == 0


def test_request_timeout_cancels_the_job_with_504(make_engine, run):
    engine = make_engine(request_timeout=0.2)
    busy(engine, run)
    late = engine.submit(request("late"))
    started = time.monotonic()
    with pytest.raises(GenerationTimeout) as raised:
        engine.wait(late)
    assert raised.value.status == 504
    assert time.monotonic() - started < 2.0
    assert late.cancelled and engine.queued == 0


def test_a_cancelled_job_taken_with_others_is_skipped(make_engine, run):
    engine = make_engine(start=False)
    jobs = [Job(request(name), [1], 4, 0, False) for name in ("a", "b", "c")]
    jobs[1].cancelled = True
    engine._run_isolated(jobs)
    assert run.calls == [["a", "c"]]
    assert finished(jobs[0]).texts and finished(jobs[2]).texts
    assert not jobs[1].done.is_set()


# ---- results, batching and failure isolation -------------------------------------------------


def test_queued_jobs_share_a_batch_and_each_caller_gets_its_own_result(make_engine, run):
    engine = make_engine(max_batch_rows=64)
    blocker = busy(engine, run)
    jobs = [
        engine.submit(request(f"job-{i}" + "." * i, mode="sample", num_return_sequences=1 + i % 3)) for i in range(8)
    ]
    run.release()
    finished(blocker)
    for i, j in enumerate(jobs):
        result = finished(j)
        assert result.texts == [f"job-{i}{'.' * i}|{len(j.ids)}.{row}" for row in range(1 + i % 3)]
    # All eight were queued together, so they ran as one call, in arrival order.
    assert run.calls[1] == [j.request.input for j in jobs]
    assert engine.batch_sizes[-1] == sum(j.rows for j in jobs)


def test_a_batch_takes_at_most_max_batch_rows(make_engine, run):
    engine = make_engine(max_batch_rows=4)
    busy(engine, run)
    jobs = [engine.submit(request(f"j{i}", mode="sample", num_return_sequences=2)) for i in range(5)]
    run.release()
    for j in jobs:
        finished(j)
    assert run.calls[1:] == [["j0", "j1"], ["j2", "j3"], ["j4"]]
    assert engine.batch_sizes[1:] == [4, 4, 2]


def test_batching_off_runs_one_request_per_call(make_engine, run):
    engine = make_engine(batching=False)
    busy(engine, run)
    jobs = [engine.submit(request(f"j{i}", mode="sample", num_return_sequences=2)) for i in range(4)]
    run.release()
    for j in jobs:
        finished(j)
    assert run.calls[1:] == [["j0"], ["j1"], ["j2"], ["j3"]]
    assert engine.batch_sizes[1:] == [2, 2, 2, 2]


@pytest.mark.parametrize(
    ("error", "status", "words"),
    [
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), 500, "out of memory"),
        (ValueError("something internal"), 500, "server log"),
        (ValidationFailed({"input": ["too long for this model"]}), 400, "too long"),
    ],
)
def test_a_failing_request_fails_only_its_own_caller(make_engine, run, error, status, words):
    engine = make_engine(max_batch_rows=64)
    run.error_for["bad"] = error
    blocker = busy(engine, run)
    names_ = ["ok-0", "bad", "ok-1", "ok-2"]
    jobs = [engine.submit(request(name, mode="sample", num_return_sequences=2)) for name in names_]
    run.release()
    finished(blocker)
    for j in jobs:
        assert j.done.wait(WAIT_S)
    bad = jobs[1]
    assert isinstance(bad.error, ApiError) and bad.result is None
    assert bad.error.status == status and words in bad.error.message
    if not isinstance(error, ApiError):
        assert isinstance(bad.error, GenerationFailed)
        assert str(error) not in bad.error.message, "internal details leak to the caller"
    json.dumps(
        {"code": bad.error.status, "error": bad.error.error, "message": bad.error.message, "fields": bad.error.fields}
    )
    for j in (jobs[0], jobs[2], jobs[3]):
        assert finished(j).texts == [f"{j.request.input}|{len(j.ids)}.{row}" for row in range(2)]
    # The batch failed as a whole, then each request ran alone.
    assert run.calls[1] == names_
    assert sorted(map(tuple, run.calls[2:])) == sorted((name,) for name in names_)
    with pytest.raises(ApiError):
        engine.wait(bad)
    # The engine keeps serving.
    assert finished(engine.submit(request("after"))).texts == ["after|5.0"]


def test_concurrent_callers_each_get_their_own_result(make_engine, run):
    engine = make_engine(batch_wait_ms=50.0)
    run.delay = 0.02  # callers that arrive while a batch runs queue up for the next one
    count = 12
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def call(i: int) -> None:
        barrier.wait()
        try:
            results[i] = engine.generate(request(f"caller-{i:02d}", mode="sample", num_return_sequences=1 + i % 4))
        except Exception as exc:  # reported below
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    for i, result in enumerate(results):
        assert isinstance(result, GenerationResult), result
        assert result.texts == [f"caller-{i:02d}|9.{row}" for row in range(1 + i % 4)]
    assert sorted(i for call in run.calls for i in call) == [f"caller-{i:02d}" for i in range(count)]
    assert max(len(call) for call in run.calls) > 1, f"no batch formed: {run.calls}"


def test_an_unexpected_error_outside_a_batch_run_fails_its_callers_and_the_engine_keeps_serving(
    make_engine, run, monkeypatch
):
    """An exception in the engine loop itself (here: planning) must not kill the engine thread: that
    would leave every caller waiting forever while /ping still answers 200."""
    real = batching.plan_batches
    planned = []

    def plan_batches(jobs, *args, **kwargs):
        planned.append(len(jobs))
        if len(planned) == 1:
            raise RuntimeError("unexpected")
        return real(jobs, *args, **kwargs)

    monkeypatch.setattr(batching, "plan_batches", plan_batches)
    engine = make_engine()
    first = engine.submit(request("first"))
    assert first.done.wait(3.0), "the caller of the failed step was never answered"
    assert isinstance(first.error, ApiError) and first.error.status == 500
    second = engine.submit(request("second"))
    assert second.done.wait(3.0), "the engine stopped serving"
    assert finished(second).texts == ["second|6.0"]
