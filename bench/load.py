"""The load process: drives one running server through the benchmark's phases and checks every answer.

    python bench/load.py --url http://127.0.0.1:PORT --server-log LOG --tokenizer TOKENIZER_JSON --out OUT.json

For each scenario (greedy, mix) and concurrency, ``C`` client threads each run a closed loop (send,
wait, send the next request of its own seeded stream) for ``--window`` seconds; requests still
running ``--grace`` seconds after the window are abandoned (the connection is closed, which cancels
them in the server) and counted as cut, with their elapsed time as a lower bound of their latency.
A one-token barrier request then waits until the engine is idle, and the next phase starts
``--settle`` seconds later.

Every 200 answer is checked: a JSON list of the expected number of strings, each starting with its
own input, and an X-Textgen-Seed header (equal to the seed sent, when one was). After the phases,
each seeded request is sent again alone and must return the identical list.
Standard library (+ ``tokenizers`` to count tokens after the phases), so it stays light.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SCENARIOS, TokenCounter, make_request  # noqa: E402

HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class Client:
    """One keep-alive connection; a request that outlives its deadline closes it (the server cancels)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def post(self, payload: dict, timeout: float, request_id: str) -> dict:
        """Send one request; returns {status, body, seed_header, latency, cut, error}. A kept-alive
        connection the server has closed meanwhile is reopened once."""
        reused = self.conn is not None
        out = self._post(payload, timeout, request_id)
        if reused and out["error"] is not None and out["latency"] < 1.0:
            out = self._post(payload, timeout, request_id)
        return out

    def _post(self, payload: dict, timeout: float, request_id: str) -> dict:
        body = json.dumps(payload).encode()
        started = time.perf_counter()
        out = {"status": 0, "body": None, "seed_header": None, "cut": False, "error": None}
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=max(0.05, timeout))
            else:
                self.conn.timeout = max(0.05, timeout)
                if self.conn.sock is not None:
                    self.conn.sock.settimeout(max(0.05, timeout))
            self.conn.request("POST", "/invocations", body, {**HEADERS, "X-Request-Id": request_id})
            response = self.conn.getresponse()
            raw = response.read()
            out["status"] = response.status
            out["seed_header"] = response.getheader("X-Textgen-Seed")
            try:
                out["body"] = json.loads(raw)
            except ValueError:
                out["body"] = raw.decode("utf-8", "replace")[:500]
            if response.getheader("Connection", "").lower() == "close":
                self.close()
        except TimeoutError:
            out["cut"] = True
            self.close()  # the server sees the caller leave and cancels the job
        except (OSError, http.client.HTTPException) as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"
            self.close()
        out["latency"] = time.perf_counter() - started
        return out


def check_answer(request: dict, result: dict) -> str | None:
    """The correctness rule for one answer; None when it holds."""
    payload = request["payload"]
    if result["status"] != 200:
        return f"status {result['status']}: {str(result['body'])[:200]}"
    body = result["body"]
    if not isinstance(body, list) or not all(isinstance(t, str) for t in body):
        return f"answer is not a list of strings: {str(body)[:200]}"
    if len(body) != request["expected"]:
        return f"expected {request['expected']} strings, got {len(body)}"
    for text in body:
        if not text.startswith(payload["input"]):
            return f"a string does not start with its input {payload['input']!r}: {text[:80]!r}"
    seed = result["seed_header"]
    if seed is None or not seed.isdigit():
        return f"X-Textgen-Seed missing or not a number: {seed!r}"
    if "seed" in payload and int(seed) != payload["seed"]:
        return f"X-Textgen-Seed {seed} differs from the seed sent {payload['seed']}"
    return None


def log_size(path: str | None) -> int:
    try:
        return os.path.getsize(path) if path else 0
    except OSError:
        return 0


def barrier(client: Client, log: str | None) -> int:
    """A one-token request: it runs after everything queued before it, so the engine is idle after it.
    Returns the server log's size once the engine has logged that batch."""
    result = client.post({"input": "Barrier", "mode": "greedy", "max_new_tokens": 1}, 600, "bench-barrier")
    if result["status"] != 200:
        raise RuntimeError(f"barrier request failed: {result}")
    time.sleep(0.3)  # the engine logs a batch just after answering it
    return log_size(log)


def run_phase(args, host: str, port: int, scenario: str, concurrency: int, log_start: int) -> dict:
    window = args.window_c1 if concurrency == 1 else args.window
    records, lock = [], threading.Lock()
    start_line = threading.Barrier(concurrency + 1)
    times: dict[str, float] = {}

    def client_loop(index: int) -> None:
        client = Client(host, port)
        start_line.wait()
        k = 0
        try:
            while True:
                now = time.time()
                if now - times["start"] >= window:
                    break
                request = make_request(args.seed, scenario, concurrency, index, k, args.max_new_tokens)
                rid = f"{args.label}-{scenario}-c{concurrency}-{index}-{k}"
                sent = time.time()
                result = client.post(request["payload"], times["hard_deadline"] - now, rid)
                record = {
                    "rid": rid,
                    "client": index,
                    "k": k,
                    "mode": request["mode"],
                    "seeded": request["seeded"],
                    "max_new_tokens": request["payload"]["max_new_tokens"],
                    "expected": request["expected"],
                    "t_send": sent,
                    "t_done": sent + result["latency"],
                    "latency": result["latency"],
                    "status": result["status"],
                    "cut": result["cut"],
                    "error": result["error"],
                    "seed_header": result["seed_header"],
                }
                if not result["cut"] and result["error"] is None:
                    record["violation"] = check_answer(request, result)
                    record["input"] = request["payload"]["input"]
                    record["texts"] = result["body"] if isinstance(result["body"], list) else None
                    if request["seeded"]:
                        record["payload"] = request["payload"]
                elif result["error"] is not None:
                    record["violation"] = f"request failed: {result['error']}"
                with lock:
                    records.append(record)
                k += 1
                if result["cut"]:
                    break
        finally:
            client.close()

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    times["start"] = time.time()
    times["hard_deadline"] = times["start"] + window + args.grace
    load_start = os.getloadavg()[0]
    start_line.wait()
    for thread in threads:
        thread.join()
    ended = time.time()
    done = [r for r in records if not r["cut"] and r["error"] is None]
    last = max((r["t_done"] for r in done), default=ended)
    return {
        "scenario": scenario,
        "concurrency": concurrency,
        "window_s": window,
        "grace_s": args.grace,
        "t_start": times["start"],
        "t_last_done": last,
        "t_end": ended,
        "loadavg_start": load_start,
        "log_start": log_start,
        "records": records,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--label", default="server")
    parser.add_argument("--out", required=True)
    parser.add_argument("--server-log", help="the server's log file (its size marks each phase's batches)")
    parser.add_argument("--tokenizer", required=True, help="tokenizer.json of the served model")
    parser.add_argument("--concurrency", default="1,4,16,32")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument(
        "--phases", help="scenario:concurrency,... in this order (default: each scenario, each concurrency)"
    )
    parser.add_argument("--window", type=float, default=8.0, help="seconds each phase keeps sending")
    parser.add_argument("--window-c1", type=float, default=12.0, help="the same at concurrency 1")
    parser.add_argument("--grace", type=float, default=7.0, help="seconds a request may outlive the window")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--settle", type=float, default=1.5, help="idle seconds before each phase")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--deadline-s", type=float, default=600.0, help="seconds from start after which no solo rerun starts"
    )
    args = parser.parse_args(argv)
    parsed = urllib.parse.urlparse(args.url)
    host, port = parsed.hostname, parsed.port
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    scenarios = args.scenarios.split(",")

    control = Client(host, port)
    began = time.time()
    # Warm-up: a small concurrent batch (allocators, kernels), not measured.
    with ThreadPoolExecutor(4) as pool:
        warm = list(
            pool.map(
                lambda i: Client(host, port).post(
                    {"input": f"Warm up {i}", "mode": "greedy", "max_new_tokens": 4}, 600, f"bench-warmup-{i}"
                ),
                range(4),
            )
        )
    if any(w["status"] != 200 for w in warm):
        print(f"load: warm-up failed: {warm}", file=sys.stderr)
        return 3
    offset = barrier(control, args.server_log)

    if args.phases:
        plan = [(item.split(":")[0], int(item.split(":")[1])) for item in args.phases.split(",")]
    else:
        plan = [(scenario, concurrency) for scenario in scenarios for concurrency in concurrencies]
    phases = []
    for scenario, concurrency in plan:
        # Each phase starts on an idle server that has seen no request for a moment (not right after
        # the one-token barrier, which a batching engine may take as the size of the next batch).
        time.sleep(args.settle)
        phase = run_phase(args, host, port, scenario, concurrency, offset)
        offset = barrier(control, args.server_log)
        phase["log_end"] = offset
        phases.append(phase)
        done = [r for r in phase["records"] if not r["cut"] and r["error"] is None]
        cut = sum(r["cut"] for r in phase["records"])
        print(
            f"load[{args.label}]: {scenario:6s} c={concurrency:<3d} {len(done):4d} done {cut:3d} cut "
            f"in {phase['t_end'] - phase['t_start']:5.1f}s",
            flush=True,
        )

    # Seeded requests again, alone: the answers must be identical.
    solo, unchecked = [], []
    deadline = began + args.deadline_s
    for phase in phases:
        for record in phase["records"]:
            if record["seeded"] and "payload" in record and record.get("violation") is None:
                if time.time() > deadline - 1:
                    unchecked.append(record["rid"])  # out of time: reported, not a violation
                    continue
                result = control.post(record["payload"], deadline - time.time(), record["rid"] + "-solo")
                if result["cut"]:
                    unchecked.append(record["rid"])
                    continue
                identical = result["status"] == 200 and result["body"] == record["texts"]
                solo.append(
                    {
                        "rid": record["rid"],
                        "mode": record["mode"],
                        "identical": identical,
                        "status": result["status"],
                        "seed": record["payload"]["seed"],
                        "texts": record["texts"],
                        "solo_texts": result["body"],
                    }
                )
    control.close()

    counter = TokenCounter(args.tokenizer)
    for phase in phases:
        for record in phase["records"]:
            texts = record.get("texts")
            if texts and record.get("violation") is None:
                record["tokens"] = sum(counter.count(record["input"], t) for t in texts)
            if not record["seeded"]:  # keep the raw file small: texts only for seeded answers
                record.pop("texts", None)
    out = {
        "label": args.label,
        "url": args.url,
        "started": began,
        "ended": time.time(),
        "phases": phases,
        "solo": solo,
        "solo_unchecked": unchecked,
        "args": vars(args),
    }
    Path(args.out).write_text(json.dumps(out))
    bad = sum(1 for p in phases for r in p["records"] if r.get("violation")) + sum(not s["identical"] for s in solo)
    print(
        f"load[{args.label}]: {sum(len(p['records']) for p in phases)} requests, {len(solo)} seeded solo reruns, "
        f"{bad} violations",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
