"""``make bench``: start the server (batching on, then off), load it, measure in process, report.

    python bench/run.py [--profile cpu|gpu] [--out bench/results] [--dry-run]

1. For batching on, then batching off: start ``serve`` on a free loopback port with the embedded
   model (one server at a time), start the ping process and the load process (``load.py``), wait
   for the load to finish, stop both, stop the server.
2. In a fresh process, load the same model the same way and time ``generate()`` at the batch sizes
   the engine formed (``inprocess.py``), plus the merge-lengths experiment.
3. Build the results (``report.py``): print the table and the PASS/FAIL line of each target, write
   ``OUT/latest.json`` and ``OUT/latest.png``; the raw data (server logs, per-request records,
   pings) stays in ``OUT/raw/<time>/`` (git-ignored).

Exit status: 0 when every answer was correct, whatever the targets (they are reported, PASS or
FAIL, never the exit status); 1 on a correctness violation; 2 when the benchmark itself could not
run (server did not start, wrong device, ...); 3 when a correctness check could not run at all
(no seeded request finished in time on a server, as on a machine that is far too busy).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import report  # noqa: E402
from common import SCENARIOS  # noqa: E402

from textgen.model import cpu_model  # noqa: E402

PROFILES = {
    # Sized to finish within 10 minutes on the 2-core CPU machine, and within 5 on one H200.
    "cpu": {
        "window": 8.0,
        "window_c1": 12.0,
        "grace": 7.0,
        "inprocess_budget": 60.0,
        "merge_budget": 30.0,
        "time_limit": 570.0,
        "device": "cpu",
    },
    "gpu": {
        "window": 4.0,
        "window_c1": 5.0,
        "grace": 3.0,
        "inprocess_budget": 25.0,
        "merge_budget": 10.0,
        "time_limit": 270.0,
        "device": "cuda",
    },
}


class BenchError(RuntimeError):
    """The benchmark could not run (not a result)."""


def log(message: str) -> None:
    print(f"bench: {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in (
        "torch",
        "transformers",
        "tokenizers",
        "safetensors",
        "accelerate",
        "flask",
        "gunicorn",
        "numpy",
        "matplotlib",
        "textgen",
    ):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state() -> dict:
    """The commit measured (read-only git calls)."""

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain", "--", "textgen"))}


def engine_settings(env: dict) -> dict:
    """The server settings that shape batching, as the servers will read them (defaults included)."""
    from textgen.settings import Settings

    s = Settings.from_env(env)
    return {
        "batch_wait_ms": s.batch_wait_ms,
        "max_batch_rows": s.max_batch_rows,
        "max_queue": s.max_queue,
        "threads": s.threads,
        "workers": s.worker_count,
    }


def gpu_name() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.strip()
        return out or None
    except (OSError, subprocess.SubprocessError):
        return None


class Server:
    """One ``serve`` process (gunicorn) on a free loopback port, its output in a log file."""

    def __init__(self, label: str, env: dict, log_path: Path):
        self.label, self.log_path = label, log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "SAGEMAKER_BIND_TO_PORT": str(self.port)}
        self.process: subprocess.Popen | None = None

    def start(self, deadline_s: float) -> dict:
        self._log = open(self.log_path, "wb")
        command = [sys.executable, "-m", "textgen.serve", "--bind", f"127.0.0.1:{self.port}"]
        self.process = subprocess.Popen(
            command, cwd=REPO, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        started = time.monotonic()
        while time.monotonic() - started < deadline_s:
            if self.process.poll() is not None:
                raise BenchError(
                    f"server ({self.label}) exited with {self.process.returncode} before /ping was 200; "
                    f"log: {self.log_path}\n{self.tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise BenchError(
                f"server ({self.label}) did not answer /ping 200 within {deadline_s:.0f}s; "
                f"log: {self.log_path}\n{self.tail()}"
            )
        ready = report.READY.search(self.log_path.read_text(errors="replace"))
        info = ready.groupdict() if ready else {}
        info["startup_s"] = round(time.monotonic() - started, 1)
        return info

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # the session this process started
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()


def stop_process(process: subprocess.Popen | None, timeout: float = 10.0) -> None:
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def target_phases(args) -> list[tuple[str, int]]:
    """The phases the targets compare: greedy at concurrency 1 and 16 (those in the plan)."""
    return [("greedy", c) for c in (1, 16) if c in args.concurrency and "greedy" in args.scenarios]


def phase_order(label: str, args) -> list[tuple[str, int]]:
    """The phases each server runs, in order. The target phases of the servers are adjacent in time:
    batching on runs them last, off first, and a second batching-on server ("on2") runs them again
    right after, so on brackets off and the in-process measurement follows on2 (drift cancels)."""
    conc = sorted(args.concurrency)
    others = [(s, c) for s in args.scenarios if s != "greedy" for c in conc]
    targets = target_phases(args)
    greedy = []
    if "greedy" in args.scenarios:
        greedy = targets + [("greedy", c) for c in conc if ("greedy", c) not in targets]
    if label == "on":
        return others + greedy[::-1]
    if label == "on2":
        return targets
    return greedy + others


SERVERS = (("on", "on"), ("off", "off"), ("on2", "on"))  # (label, TEXTGEN_BATCHING), run one at a time


def estimate_seconds(args) -> float:
    """A rough upper bound of the run's length (the phases are time-boxed; the rest is estimated)."""
    total = 30 + args.inprocess_budget * 1.5 + args.merge_budget * 1.5
    for label, _ in SERVERS:
        phases = phase_order(label, args)
        if phases:
            total += len(phases) * (args.window + args.grace + 3) + (args.window_c1 - args.window) + 40
    return total


def run_server(label: str, batching: str, args, env: dict, raw: Path, tokenizer: Path, deadline: float) -> dict:
    """One server's part of the run; ``deadline`` (time.monotonic) bounds its solo reruns."""
    server = Server(label, {**env, "TEXTGEN_BATCHING": batching}, raw / f"server-{label}.log")
    pinger = None
    try:
        log(f"starting the server, batching {batching}, on {server.url}")
        info = server.start(args.startup_deadline)
        log(
            f"server ready in {info['startup_s']}s: {info.get('device')}, {info.get('dtype')}, "
            f"{info.get('threads')} torch threads"
        )
        if args.require_device != "any" and not str(info.get("device", "")).startswith(args.require_device):
            raise BenchError(f"the server runs on {info.get('device')!r}, not {args.require_device!r}")
        pinger = subprocess.Popen(
            [sys.executable, str(HERE / "pinger.py"), "--url", server.url, "--out", str(raw / f"pings-{label}.txt")],
            cwd=REPO,
        )
        command = [
            sys.executable,
            str(HERE / "load.py"),
            "--url",
            server.url,
            "--label",
            label,
            "--out",
            str(raw / f"load-{label}.json"),
            "--server-log",
            str(server.log_path),
            "--tokenizer",
            str(tokenizer),
            "--concurrency",
            ",".join(map(str, args.concurrency)),
            "--scenarios",
            ",".join(args.scenarios),
            "--window",
            str(args.window),
            "--window-c1",
            str(args.window_c1),
            "--grace",
            str(args.grace),
            "--seed",
            str(args.seed),
            "--max-new-tokens",
            str(args.max_new_tokens),
            "--phases",
            ",".join(f"{scenario}:{c}" for scenario, c in phase_order(label, args)),
            "--deadline-s",
            str(max(30.0, deadline - time.monotonic() - 5)),
        ]
        limit = estimate_seconds(args) * 2
        try:
            done = subprocess.run(command, cwd=REPO, timeout=limit)
        except subprocess.TimeoutExpired:
            raise BenchError(f"the load process ran past {limit:.0f}s") from None
        if done.returncode != 0:
            raise BenchError(f"the load process failed ({done.returncode}); server log: {server.log_path}")
        return info
    finally:
        stop_process(pinger)
        server.stop()


def formed_sizes(raw: Path, args) -> list[int]:
    """Batch sizes to time in process: each concurrency, plus the median size the engine formed per
    greedy phase (when it differs)."""
    sizes = set(args.concurrency)
    path = raw / "load-on.json"
    if path.is_file():
        load = json.loads(path.read_text())
        log_data = report.parse_server_log((raw / "server-on.log").read_bytes())
        for phase in load["phases"]:
            if phase["scenario"] != "greedy":
                continue
            rows = [b["rows"] for b in log_data["batches"] if phase["log_start"] < b["end"] <= phase["log_end"]][:-1]
            if rows:
                sizes.add(max(1, round(report.median(rows))))
    return sorted(sizes)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument(
        "--model-dir", default=os.environ.get("TEXTGEN_DEFAULT_MODEL_DIR", ".model/smollm2-135m-instruct")
    )
    parser.add_argument("--out", default="bench/results", help="results folder (latest.json, latest.png, raw/)")
    parser.add_argument(
        "--dtype",
        default=os.environ.get("TEXTGEN_DTYPE", "bfloat16"),
        help="TEXTGEN_DTYPE for the servers and the in-process model (default: the env's, else bfloat16, "
        "the issue's measured choice on this machine; auto measures it, noisily, at the first server start)",
    )
    parser.add_argument("--concurrency", default="1,4,16,32")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--window", type=float, help="seconds each phase keeps sending (profile default)")
    parser.add_argument("--window-c1", type=float, help="the same for concurrency 1, greedy (profile default)")
    parser.add_argument("--grace", type=float, help="seconds a request may outlive its window (profile default)")
    parser.add_argument("--inprocess-budget", type=float)
    parser.add_argument("--merge-budget", type=float)
    parser.add_argument(
        "--time-limit",
        type=float,
        help="seconds the whole run may take (profile default); solo reruns and in-process repeats stop in time",
    )
    parser.add_argument("--require-device", help="cpu, cuda or any (profile default)")
    parser.add_argument("--startup-deadline", type=float, default=300.0)
    parser.add_argument("--command", default=None, help="the command to record (default: this one)")
    parser.add_argument(
        "--dry-run", action="store_true", help="check the setup and print the plan; start nothing, measure nothing"
    )
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    for name in ("window", "window_c1", "grace", "inprocess_budget", "merge_budget", "time_limit"):
        if getattr(args, name) is None:
            setattr(args, name, profile[name])
    args.require_device = args.require_device or profile["device"]
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    model_dir = (REPO / args.model_dir).resolve()
    out = (REPO / args.out).resolve()
    tokenizer = model_dir / "tokenizer.json"
    command = (args.command or "").strip() or " ".join(
        shlex.quote(a) for a in ["python", "bench/run.py", *sys.argv[1:]]
    )
    plan = {
        "concurrency": args.concurrency,
        "scenarios": args.scenarios,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
        "window_s": args.window,
        "window_c1_s": args.window_c1,
        "grace_s": args.grace,
        "inprocess_budget_s": args.inprocess_budget,
        "merge_budget_s": args.merge_budget,
        "profile": args.profile,
        "require_device": args.require_device,
    }
    problems = []
    if not (model_dir / "config.json").is_file() or not tokenizer.is_file():
        problems.append(f"no converted model at {model_dir} (run `make model`)")
    log(f"plan: {json.dumps(plan)}")
    log(f"at most about {min(estimate_seconds(args), args.time_limit) / 60:.1f} minutes (time-boxed); results in {out}")
    if args.dry_run:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            problems.append("matplotlib is missing: the run would write no PNG (pip install -r requirements-bench.txt)")
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK):
            problems.append(f"{out} is not writable")
        for problem in problems:
            log(f"dry run: problem: {problem}")
        log("dry run: nothing started" + ("" if problems else "; the setup looks complete"))
        return 2 if problems and not (model_dir / "config.json").is_file() else 0
    if problems:
        for problem in problems:
            log(f"error: {problem}")
        return 2

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    raw = out / "raw" / stamp
    raw.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    env = {k: v for k, v in os.environ.items()}
    env.update(
        {
            "TEXTGEN_MODEL": str(model_dir),  # the embedded model, whatever /opt/ml/model holds
            "TEXTGEN_DTYPE": args.dtype,
            "SAGEMAKER_CONTAINER_LOG_LEVEL": "debug",  # the engine logs each batch it forms at debug
            "PYTHONUNBUFFERED": "1",
        }
    )
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "argv": sys.argv,
        "plan": plan,
        "git": git_state(),
        "versions": versions(),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)),
            "platform": platform.platform(),
            "gpu": gpu_name(),
            "loadavg_start": os.getloadavg(),
        },
        "model_dir": str(model_dir.relative_to(REPO)) if model_dir.is_relative_to(REPO) else str(model_dir),
        "env": {
            k: os.environ.get(k)
            for k in (
                "TEXTGEN_BATCH_WAIT_MS",
                "TEXTGEN_MAX_BATCH_ROWS",
                "TEXTGEN_MAX_QUEUE",
                "TEXTGEN_THREADS",
                "TEXTGEN_CACHE_DIR",
                "SAGEMAKER_MODEL_SERVER_WORKERS",
                "OMP_NUM_THREADS",
                "OMP_WAIT_POLICY",
            )
        },
    }
    meta["engine_settings"] = engine_settings(env)
    try:
        # Time left after the in-process part's reserve, shared by the servers by their phase counts.
        reserve = args.inprocess_budget + args.merge_budget + 60
        infos = {}
        weights = {label: len(phase_order(label, args)) for label, _ in SERVERS}
        for label, batching in SERVERS:
            if not weights[label]:
                continue
            left = args.time_limit - reserve - (time.monotonic() - began)
            share = left * weights[label] / sum(w for lb, w in weights.items() if lb not in infos)
            infos[label] = run_server(label, batching, args, env, raw, tokenizer, time.monotonic() + share)
            if args.dtype == "auto":  # the later servers and the in-process model use what the first chose
                env["TEXTGEN_DTYPE"] = infos[label].get("dtype") or "auto"
        info_on, info_off = infos["on"], infos["off"]
        sizes = formed_sizes(raw, args)
        log(f"in-process generate() at batch sizes {sizes}")
        command_ip = [
            sys.executable,
            str(HERE / "inprocess.py"),
            "--sizes",
            ",".join(map(str, sizes)),
            "--concurrency",
            ",".join(map(str, args.concurrency)),
            "--tokenizer",
            str(tokenizer),
            "--seed",
            str(args.seed),
            "--max-new-tokens",
            str(args.max_new_tokens),
            "--budget",
            str(args.inprocess_budget),
            "--merge",
            "--merge-budget",
            str(args.merge_budget),
            "--out",
            str(raw / "inprocess.json"),
        ]
        ip_env = {**env, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        left = max(45.0, args.time_limit - (time.monotonic() - began) - 15)
        process = subprocess.Popen(command_ip, cwd=REPO, env=ip_env)
        try:
            code = process.wait(left)
        except subprocess.TimeoutExpired:
            stop_process(process)
            code = None
            log(f"the in-process measurement was stopped at the time limit ({left:.0f}s); keeping what it measured")
        if code not in (0, None):
            raise BenchError(f"the in-process measurement failed ({code})")
        if not (raw / "inprocess.json").is_file():
            raise BenchError("the in-process measurement produced nothing before the time limit")
    except BenchError as exc:
        log(f"error: {exc}")
        log(f"raw data so far: {raw}")
        return 2
    inprocess = json.loads((raw / "inprocess.json").read_text())
    meta.update(
        {
            "device": info_on.get("device"),
            "dtype": info_on.get("dtype"),
            "torch_threads": {
                **{f"server_{k}": v.get("threads") for k, v in infos.items()},
                "inprocess": inprocess.get("torch_threads"),
            },
            "server_startup_s": {k: v.get("startup_s") for k, v in infos.items()},
        }
    )
    if inprocess.get("dtype") != info_on.get("dtype") or info_off.get("dtype") != info_on.get("dtype"):
        log(
            f"warning: dtypes differ: on {info_on.get('dtype')}, off {info_off.get('dtype')}, "
            f"in-process {inprocess.get('dtype')}"
        )
    meta["machine"]["loadavg_end"] = os.getloadavg()
    meta["duration_s"] = round(time.monotonic() - began, 1)
    meta["raw_dir"] = str(raw.relative_to(REPO)) if raw.is_relative_to(REPO) else str(raw)

    result = report.build(raw, meta, inprocess)
    text = report.table(result)
    verdicts = report.verdict_lines(result)
    print()
    print(text)
    print()
    print("\n".join(verdicts))
    (raw / "result.json").write_text(json.dumps(result, indent=1))
    (out / "latest.json").write_text(json.dumps(result, indent=1))
    if report.plot(result, out / "latest.png"):
        shutil.copy(out / "latest.png", raw / "result.png")
    (out / "latest.txt").write_text(text + "\n\n" + "\n".join(verdicts) + "\n")
    log(f"wrote {out / 'latest.json'}, {out / 'latest.png'}, {out / 'latest.txt'} in {meta['duration_s']:.0f}s")
    if not result["correctness"]["ok"]:
        log("FAIL: correctness violations (see above); targets are reported only")
        return 1
    if not result["correctness"].get("verified", True):
        log("UNVERIFIED: some correctness checks could not run (see above); exit 3")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
