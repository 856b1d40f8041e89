"""Medians over several benchmark runs: each target's ratio per run, and its median.

    python bench/summarize.py [RESULT.json ...]     (default: bench/results/raw/*/result.json)

One run's ratios are measured side by side, but this machine is shared and noisy; the median of a
few runs (``make bench`` again) says more than any one of them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="*")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.results] or sorted(Path("bench/results/raw").glob("*/result.json"))
    runs = []
    for path in paths:
        result = json.loads(path.read_text())
        runs.append((path, result))
    if not runs:
        print("summarize: no results found", file=sys.stderr)
        return 1
    names = []
    for _, result in runs:
        for t in result["targets"]:
            if t["name"] not in names:
                names.append(t["name"])
    merge_names = []
    for _, result in runs:
        for name in result.get("merge") or {}:
            if name not in merge_names:
                merge_names.append(name)
    print(f"{len(runs)} runs:")
    for path, result in runs:
        env = {k: v for k, v in result["meta"].get("env", {}).items() if v}
        print(f"  {result['meta']['date']}  {result['meta']['command']}  {env or ''}  ({path})")
    print()
    print(f"{'target':28s} {'median':>8s} {'threshold':>10s}  per run")
    for name in names:
        values = [t["value"] for _, r in runs for t in r["targets"] if t["name"] == name and t["value"] is not None]
        threshold = next(t["threshold"] for _, r in runs for t in r["targets"] if t["name"] == name)
        shown = " ".join(f"{v:.3g}" for v in values)
        print(f"{name:28s} {median(values):8.3g} {threshold:>10s}  {shown}")
    for name in merge_names:
        values = [
            r["merge"][name]["ratio_apart_over_merged"]
            for _, r in runs
            if name in (r.get("merge") or {}) and r["merge"][name]["ratio_apart_over_merged"] is not None
        ]
        shown = " ".join(f"{v:.3g}" for v in values)
        print(f"{'merge ' + name:28s} {median(values):8.3g} {'(>1: merge)':>10s}  {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
