"""Merge concurrent requests into batched ``generate()`` calls, one engine thread per worker.

Request threads tokenize and validate their request, queue it, and wait. The engine thread owns
the model: it collects what is queued for up to ``TEXTGEN_BATCH_WAIT_MS`` (or until
``TEXTGEN_MAX_BATCH_ROWS`` rows wait), groups compatible requests (``Job.group_key``), and runs
each group as one left-padded batch (``textgen.generation``).

- A request that carries a seed runs in a fixed composition (alone), so it returns exactly what it
  returns under no load. Unseeded requests draw a seed each and may share a batch.
- A failing batch is retried one request at a time, so an error (out of memory, say) reaches only
  the request that causes it. A caller that disconnects or passes its deadline is cancelled: a
  queued job is dropped, a running one's rows stop at the next step.
- The queue is bounded (``TEXTGEN_MAX_QUEUE``): beyond it a request is refused with 429 at once.
- ``TEXTGEN_BATCHING=off`` runs one request per ``generate()`` call, through the same code.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections import deque

from .errors import ApiError, GenerationFailed, GenerationTimeout, ModelNotReady, Overloaded
from .generation import Job, run_jobs
from .model import READY, GenerationResult, ModelHolder
from .schemas import GenerationRequest
from .settings import Settings

log = logging.getLogger(__name__)

# How long the expectation of returning callers holds after a batch (see BatchingEngine._take).
EXPECTATION_TTL_S = 1.0
# How often a waiting caller checks that its client is still connected. Each check takes the GIL
# from the engine thread, so dozens of waiting callers polling fast would slow generation down.
CANCEL_POLL_S = 0.25


def plan_batches(jobs: list[Job], context_window: int | None = None) -> list[list[Job]]:
    """Group jobs (in arrival order) into batches that one generate() call can run.

    In a batch every row runs as many steps as its longest job, so a batch is also split where the
    longest prompt plus the most new tokens would pass the model's context window (positions past it
    do not exist in GPT-2).
    """
    groups: dict[tuple, list[list[Job]]] = {}
    for job in jobs:
        batches = groups.setdefault(job.group_key(), [])
        for batch in batches:
            if context_window is None or _fits(batch + [job], context_window):
                batch.append(job)
                break
        else:
            batches.append([job])
    return [batch for batches in groups.values() for batch in batches]


def _fits(batch: list[Job], context_window: int) -> bool:
    return max(len(job.ids) for job in batch) + max(job.new_tokens for job in batch) <= context_window


class BatchingEngine:
    """A ``Generator`` that batches requests across threads in front of one ``ModelHolder``."""

    def __init__(self, holder: ModelHolder, settings: Settings | None = None):
        self.holder = holder
        self.settings = settings or holder.settings
        self._queue: deque[Job] = deque()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._tokenizer_lock = threading.Lock()  # the fast tokenizer is not thread-safe
        self._batch_seconds = 1.0  # running estimate, for Retry-After
        self._expected_rows = 0  # rows likely to be queued soon (see _take)
        self._last_batch_end = float("-inf")
        self.batches_run = 0
        self.batch_sizes: list[int] = []

    # ---- the Generator protocol ------------------------------------------------------------
    @property
    def state(self) -> str:
        return self.holder.state

    @property
    def detail(self) -> str:
        return self.holder.detail

    def start(self, worker_index: int = 0, worker_count: int = 1) -> threading.Thread:
        """Load the model in the background, then start the engine thread."""

        def load_then_serve():
            self.holder._load_logged(worker_index, worker_count)
            if self.holder.state == READY:
                self.start_engine()

        thread = threading.Thread(target=load_then_serve, name="textgen-load", daemon=True)
        thread.start()
        return thread

    def start_engine(self) -> BatchingEngine:
        """Start the engine thread (the holder must be loaded)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="textgen-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread:
            self._thread.join(timeout=30)

    def generate(self, request: GenerationRequest, gone=None) -> GenerationResult:
        """Queue ``request`` and wait for its result; ``gone()`` true means the caller left."""
        return self.wait(self.submit(request), gone=gone)

    def submit(self, request: GenerationRequest) -> Job:
        """Validate and queue ``request``; raises ModelNotReady, ValidationFailed or Overloaded (429)."""
        if self.holder.state != READY or self._thread is None:
            raise ModelNotReady(self.holder.detail if self.holder.state != READY else "model is starting")
        with self._tokenizer_lock:
            ids, new_tokens = self.holder.encode(request)
        seeded = request.seed is not None
        job = Job(request, ids, new_tokens, request.seed if seeded else secrets.randbits(32), seeded)
        if job.rows > self.settings.max_batch_rows:
            log.info(
                "request of %d rows exceeds TEXTGEN_MAX_BATCH_ROWS %d; it runs alone",
                job.rows,
                self.settings.max_batch_rows,
            )
        with self._cv:
            if len(self._queue) >= self.settings.max_queue:
                retry = max(1, math.ceil(self._batch_seconds * (1 + len(self._queue) / max(1, self._rows_per_batch()))))
                raise Overloaded(
                    f"server is at capacity: {len(self._queue)} requests are queued (TEXTGEN_MAX_QUEUE "
                    f"{self.settings.max_queue}); retry after {retry} s",
                    headers={"Retry-After": str(retry)},
                )
            self._queue.append(job)
            self._cv.notify_all()
        return job

    def wait(self, job: Job, gone=None) -> GenerationResult:
        """Block until ``job`` is done; cancel it if the caller left or TEXTGEN_REQUEST_TIMEOUT passed."""
        timeout = self.settings.request_timeout
        deadline = time.monotonic() + timeout if timeout else None
        while not job.done.wait(CANCEL_POLL_S):
            if gone is not None and gone():
                self.cancel(job)
                raise ApiError("request cancelled: the caller disconnected")
            if deadline is not None and time.monotonic() > deadline:
                self.cancel(job)
                raise GenerationTimeout(
                    f"generation did not finish within TEXTGEN_REQUEST_TIMEOUT ({timeout:g} s); "
                    "ask for fewer tokens or sequences"
                )
        if job.error is not None:
            raise job.error
        return job.result

    def cancel(self, job: Job) -> None:
        """Drop a queued job, or stop its rows at the next generation step."""
        with self._cv:
            job.cancelled = True
            try:
                self._queue.remove(job)
            except ValueError:
                pass  # already running: the stopping criterion ends its rows

    @property
    def queued(self) -> int:
        with self._cv:
            return len(self._queue)

    # ---- the engine thread -----------------------------------------------------------------
    def _rows_per_batch(self) -> int:
        return self.settings.max_batch_rows if self.settings.batching else 1

    def _take(self) -> list[Job]:
        """Wait for work, then collect up to a batch's worth of queued jobs.

        The engine waits at most TEXTGEN_BATCH_WAIT_MS for more requests, and stops waiting as soon
        as as many rows are queued as it expects: the rows of its last batch plus those that were
        waiting when it ended. Callers it just answered usually send their next request within a few
        milliseconds, so a steady load keeps forming full batches instead of splitting into cohorts
        that take turns, and a lone caller is served at once.
        """
        with self._cv:
            while not self._queue and not self._stopping:
                self._cv.wait()
            if self._stopping:
                return []
            limit = self._rows_per_batch()
            if self.settings.batching:
                expected = limit
                if time.monotonic() - self._last_batch_end < EXPECTATION_TTL_S:
                    expected = min(limit, max(1, self._expected_rows))
                deadline = time.monotonic() + self.settings.batch_wait_ms / 1000
                while sum(j.rows for j in self._queue) < expected:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cv.wait(remaining)
            taken, rows = [], 0
            while self._queue and (not taken or rows + self._queue[0].rows <= limit):
                job = self._queue.popleft()
                taken.append(job)
                rows += job.rows
            return taken

    def _serve(self) -> None:
        while True:
            jobs = self._take()
            if not jobs:
                return
            try:
                for batch in plan_batches(jobs, self.holder.context_window or None):
                    self._run_isolated(batch)
            except Exception as exc:  # the engine must outlive any bug: fail what it held, go on
                log.exception("batching engine error")
                for job in jobs:
                    if not job.done.is_set():
                        job.finish(error=_as_api_error(exc))

    def _run_isolated(self, batch: list[Job]) -> None:
        """Run a batch; if it fails, run its jobs one by one so only the failing one errs."""
        batch = [job for job in batch if not job.cancelled]
        if not batch:
            return
        try:
            self._run(batch)
        except Exception as exc:
            if len(batch) == 1:
                log.exception("generation failed")
                batch[0].finish(error=_as_api_error(exc))
                return
            log.warning("a batch of %d requests failed (%s); retrying them one by one", len(batch), exc)
            for job in batch:
                self._run_isolated([job])

    def _run(self, batch: list[Job]) -> None:
        started = time.monotonic()
        outputs = run_jobs(self.holder, batch)
        with self._tokenizer_lock:
            for job, rows in zip(batch, outputs, strict=True):
                job.finish(self.holder.result(job, rows))
        seconds = time.monotonic() - started
        self._batch_seconds = 0.7 * self._batch_seconds + 0.3 * seconds
        with self._cv:
            self._expected_rows = sum(job.rows for job in batch) + sum(job.rows for job in self._queue)
            self._last_batch_end = time.monotonic()
        self.batches_run += 1
        self.batch_sizes.append(sum(job.rows for job in batch))
        if len(self.batch_sizes) > 1000:
            del self.batch_sizes[:500]
        log.debug("batch of %d requests, %d rows in %.2fs", len(batch), self.batch_sizes[-1], seconds)


def _as_api_error(exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if "out of memory" in str(exc).lower():
        return GenerationFailed("generation ran out of memory; try fewer sequences or tokens")
    return GenerationFailed("generation failed; the server log has the details")
