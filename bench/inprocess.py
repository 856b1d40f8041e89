"""In-process generation: the model's own limit on this machine, and the merge-lengths experiment.

    python bench/inprocess.py --sizes 1,4,16,32 --out OUT.json   (TEXTGEN_MODEL / TEXTGEN_DTYPE from the env)

Loads the model exactly as a server worker does (``textgen.model.ModelHolder``: same source, device,
dtype and torch threads), then, for each batch size B, times

- ``run_jobs``: the engine's own code path (``textgen.generation.run_jobs``) on B greedy requests,
  the same requests the load process sends first at concurrency B;
- ``plain``: one ``model.generate()`` on the same B left-padded prompts with the same config.

Repeats are interleaved over the sizes (so a burst of machine noise hits all sizes alike) and stop
once ``--budget`` seconds are spent (at least one each); the JSON keeps every time.

The merge experiment (``--merge``) runs greedy and sampling requests of two lengths (8 and 32 new
tokens; then 8/16/24/32) merged in one ``run_jobs`` call, as the engine does now, and apart (one call
per length), alternating ABBA, and reports the time ratio apart / merged (> 1: merging is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TokenCounter, make_request, median  # noqa: E402


def load_holder():
    from textgen.model import ModelHolder
    from textgen.settings import Settings

    return ModelHolder(Settings.from_env()).load()


def parse(holder, payload: dict):
    from textgen.schemas import Limits, parse_request

    s = holder.settings
    return parse_request(payload, Limits(s.max_beams, s.max_return_sequences, s.max_total_tokens))


def make_jobs(holder, requests, seed0: int = 1):
    from textgen.generation import Job

    jobs = []
    for i, request in enumerate(requests):
        ids, new_tokens = holder.encode(request)
        jobs.append(Job(request, ids, new_tokens, seed0 + i, False))
    return jobs


def sync(holder) -> None:
    if str(holder.device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_run_jobs(holder, counter, requests) -> dict:
    from textgen.generation import run_jobs

    jobs = make_jobs(holder, requests)
    sync(holder)
    started = time.perf_counter()
    outputs = run_jobs(holder, jobs)
    sync(holder)
    seconds = time.perf_counter() - started
    tokens = exact = 0
    for job, rows in zip(jobs, outputs):
        result = holder.result(job, rows)
        exact += sum(len(row) for row in rows)
        tokens += sum(counter.count(job.request.input, text) for text in result.texts)
    return {"seconds": seconds, "tokens": tokens, "tokens_exact": exact, "rows": sum(j.rows for j in jobs)}


def time_plain(holder, counter, requests, new_tokens: int) -> dict:
    import torch

    from textgen.generation import _strip_pad
    from textgen.model import decode_continuation
    from textgen.schemas import GenerationRequest

    prompts = [r.input for r in requests]
    encoded = holder.tokenizer(prompts, return_tensors="pt", padding=True).to(holder.device)
    width = encoded["input_ids"].shape[1]
    config = holder.generation_config(GenerationRequest(input="", mode="greedy", num_return_sequences=1), new_tokens)
    sync(holder)
    started = time.perf_counter()
    with torch.inference_mode():
        output = holder.model.generate(
            input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"], generation_config=config
        )
    rows = output[:, width:].tolist()
    seconds = time.perf_counter() - started
    pad = holder.tokenizer.pad_token_id
    rows = [_strip_pad(row, pad) for row in rows]
    tokens = sum(counter.count("", decode_continuation(holder.tokenizer, row)) for row in rows)
    return {"seconds": seconds, "tokens": tokens, "tokens_exact": sum(len(r) for r in rows), "rows": len(rows)}


def batch_requests(holder, args, size: int, concurrencies: list[int]):
    """The first ``size`` greedy requests of the load plan: phase C=size round 0 when that phase exists."""
    source = size if size in concurrencies else max(concurrencies)
    payloads = [
        make_request(args.seed, "greedy", source, i % source, i // source, args.max_new_tokens)["payload"]
        for i in range(size)
    ]
    return [parse(holder, p) for p in payloads]


def summarize_sizes(runs: dict) -> dict:
    out = {}
    for b, kinds in runs.items():
        entry = {"batch": b}
        for kind, items in kinds.items():
            if not items:
                continue
            seconds = median([i["seconds"] for i in items])
            tokens = median([i["tokens"] for i in items])
            entry[kind] = {
                "runs": items,
                "seconds_median": seconds,
                "tokens_per_s": tokens / seconds,
                "requests_per_s": b / seconds,
                "tokens_per_s_runs": [i["tokens"] / i["seconds"] for i in items],
            }
        if "run_jobs" in entry and "plain" in entry:
            out[str(b)] = entry
    return out


def measure_sizes(holder, counter, args, save) -> dict:
    """Time every size once per repeat (the --first size first); ``save`` gets the summary so far."""
    first = [int(s) for s in args.first.split(",") if s]
    sizes = sorted({int(s) for s in args.sizes.split(",") if s}, key=lambda b: (b not in first, b))
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    requests = {b: batch_requests(holder, args, b, concurrencies) for b in sizes}
    runs: dict[int, dict[str, list]] = {b: {"run_jobs": [], "plain": []} for b in sizes}
    began = time.perf_counter()
    for rep in range(args.reps):
        if rep and time.perf_counter() - began > args.budget:
            break
        for b in sizes:
            runs[b]["run_jobs"].append(time_run_jobs(holder, counter, requests[b]))
            runs[b]["plain"].append(time_plain(holder, counter, requests[b], args.max_new_tokens))
            save(summarize_sizes(runs))
        print(f"inprocess: rep {rep + 1} done at {time.perf_counter() - began:.0f}s", flush=True)
    return summarize_sizes(runs)


def _merge_jobs(holder, args, lengths: list[int]):
    """Half greedy requests (1 row), half default sampling requests (3 rows), with these lengths."""
    payloads = []
    for i, length in enumerate(lengths):
        payload = {"input": make_request(args.seed, "mix", 99, i, 0, 32)["payload"]["input"], "max_new_tokens": length}
        if i < len(lengths) // 2:
            payload["mode"] = "greedy"
        payloads.append(payload)
    return make_jobs(holder, [parse(holder, p) for p in payloads], seed0=100)


def _run_merged(holder, jobs) -> tuple[float, float]:
    """One run_jobs call for every length (the engine's way); (total, shortest requests') seconds."""
    from textgen.generation import run_jobs

    sync(holder)
    started = time.perf_counter()
    run_jobs(holder, jobs)
    sync(holder)
    seconds = time.perf_counter() - started
    return seconds, seconds


def _run_apart(holder, jobs) -> tuple[float, float]:
    """One run_jobs call per length, shortest first; (total, shortest requests') seconds."""
    from textgen.generation import run_jobs

    groups: dict[int, list] = {}
    for job in jobs:
        groups.setdefault(job.new_tokens, []).append(job)
    sync(holder)
    started = time.perf_counter()
    shortest = None
    for length in sorted(groups):
        run_jobs(holder, groups[length])
        sync(holder)
        if shortest is None:
            shortest = time.perf_counter() - started
    return time.perf_counter() - started, shortest


def merge_experiment(holder, args, save) -> dict:
    """Different lengths merged in one call (the engine's way) vs one call per length, ABBA order."""
    cases = {
        "two-lengths-8-32": [8, 32, 8, 32, 8, 32, 8, 32],  # 4 greedy (1 row) + 4 sampling (3 rows): 16 rows
        "four-lengths-8-16-24-32": [8, 16, 24, 32, 8, 16, 24, 32],
    }
    out = {}
    began = time.perf_counter()
    for name, lengths in cases.items():
        if out and time.perf_counter() - began > args.merge_budget:
            break
        times: dict[str, list[tuple[float, float]]] = {"merged": [], "apart": []}
        order = ["merged", "apart", "apart", "merged"] * args.merge_reps
        for kind in order[: 2 * args.merge_reps]:
            jobs = _merge_jobs(holder, args, lengths)
            times[kind].append((_run_merged if kind == "merged" else _run_apart)(holder, jobs))
            if time.perf_counter() - began > args.merge_budget * 1.5 and min(map(len, times.values())):
                break
        merged = [t for t, _ in times["merged"]]
        apart = [t for t, _ in times["apart"]]
        out[name] = {
            "lengths": lengths,
            "rows": sum(j.rows for j in _merge_jobs(holder, args, lengths)),
            "merged_s": merged,
            "apart_s": apart,
            "ratio_apart_over_merged": median(apart) / median(merged) if merged and apart else None,
            "shortest_latency_merged_s": median([s for _, s in times["merged"]]) if merged else None,
            "shortest_latency_apart_s": median([s for _, s in times["apart"]]) if apart else None,
        }
        save(out)
        print(f"inprocess: merge {name}: merged {median(merged):.2f}s apart {median(apart):.2f}s", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,4,16,32")
    parser.add_argument("--first", default="16", help="sizes measured first in each repeat (the targets')")
    parser.add_argument("--concurrency", default="1,4,16,32", help="the load plan's concurrencies (for prompts)")
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--budget", type=float, default=90.0, help="seconds after which no new repeat starts")
    parser.add_argument("--merge", action="store_true")
    parser.add_argument("--merge-reps", type=int, default=3)
    parser.add_argument("--merge-budget", type=float, default=40.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import torch

    started = time.perf_counter()
    holder = load_holder()
    counter = TokenCounter(args.tokenizer)
    # Warm-up outside the clock (the server does the same before its phases).
    warm = [parse(holder, {"input": f"Warm up {i}", "mode": "greedy", "max_new_tokens": 4}) for i in range(4)]
    time_run_jobs(holder, counter, warm)
    result = {
        "device": str(holder.device),
        "dtype": str(holder.dtype).removeprefix("torch."),
        "torch_threads": torch.get_num_threads(),
        "pid": os.getpid(),
        "load_s": time.perf_counter() - started,
        "sizes": {},
    }
    out = Path(args.out)

    def save(key):
        def store(value):
            result[key] = value
            # Written after every measurement, so a run stopped at its deadline keeps what it measured.
            out.with_suffix(".tmp").write_text(json.dumps(result))
            out.with_suffix(".tmp").replace(out)

        return store

    save("sizes")(measure_sizes(holder, counter, args, save("sizes")))
    if args.merge:
        save("merge")(merge_experiment(holder, args, save("merge")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
