# Benchmark targets, included by the main Makefile (`-include bench/bench.mk`).
#   make bench                      batching on vs off vs in-process generate() on this machine (< 10 min)
#   make bench BENCH_ARGS="--concurrency 1,16"   any bench/run.py option
#   make bench-gpu                  the same on a CUDA machine in bf16 (bench/gpu.sh; installs nothing)
#   make bench-gpu-dry-run          check bench/gpu.sh's setup and plan without a GPU
# Results: bench/results/latest.{json,png,txt} (GPU: bench/results/gpu/); raw data under raw/ (git-ignored).

BENCH_REQUIREMENTS := requirements-bench.txt
BENCH_INSTALLED := $(VENV)/.bench-installed
BENCH_OUT ?= bench/results
BENCH_ARGS ?=

.PHONY: bench bench-install bench-gpu bench-gpu-dry-run bench-report

bench-install: $(BENCH_INSTALLED)  ## add the benchmark's pinned tools (matplotlib) to .venv (idempotent)

$(BENCH_INSTALLED): $(BENCH_REQUIREMENTS) | $(INSTALLED)
	$(PIP) install --disable-pip-version-check -q -r $(BENCH_REQUIREMENTS)
	touch $@

bench: install model bench-install  ## benchmark batching on vs off vs in-process generate(); writes bench/results/
	$(PYTHON) bench/run.py --model-dir $(MODEL_DIR) --out $(BENCH_OUT) --command "make bench $(BENCH_ARGS)" $(BENCH_ARGS)

bench-report:  ## print the latest results' table and targets again, and redraw the plot
	$(PYTHON) bench/report.py $(BENCH_OUT)/latest.json --png $(BENCH_OUT)/latest.png

bench-gpu:  ## the benchmark with CUDA and bf16 (bench/gpu.sh: installs nothing, fails without a CUDA device)
	PYTHON=$(PYTHON) MODEL_DIR=$(MODEL_DIR) bench/gpu.sh $(BENCH_ARGS)

bench-gpu-dry-run:  ## check bench/gpu.sh's setup and print its plan (no GPU needed, nothing started)
	PYTHON=$(PYTHON) MODEL_DIR=$(MODEL_DIR) bench/gpu.sh --dry-run $(BENCH_ARGS)
