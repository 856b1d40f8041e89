#!/usr/bin/env bash
# The benchmark on a CUDA machine: the same run as `make bench`, with the GPU profile (shorter
# time boxes, sized for about 4 minutes on one H200), TEXTGEN_DTYPE=bfloat16, the servers required
# to run on cuda, and every result in bench/results/gpu/. Installs nothing: it needs a .venv with a
# CUDA build of torch and the converted model (`make install model` beforehand, or carry both).
#
#   bench/gpu.sh [--dry-run] [extra bench/run.py options]
#
# --dry-run: no GPU needed. Checks the same prerequisites (and says what a real run would refuse),
# prints the plan and the exact command, and exercises bench/run.py's setup with --dry-run.
# Environment: PYTHON (default .venv/bin/python), MODEL_DIR (default .model/smollm2-135m-instruct),
# BENCH_GPU_OUT (default bench/results/gpu).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
MODEL_DIR=${MODEL_DIR:-.model/smollm2-135m-instruct}
OUT=${BENCH_GPU_OUT:-bench/results/gpu}
DRY_RUN=0
ARGS=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    *) ARGS+=("$arg") ;;
  esac
done

fail() { echo "bench-gpu: error: $*" >&2; exit 2; }
note() { echo "bench-gpu: $*"; }

[ -x "$PYTHON" ] || fail "no Python at $PYTHON: run \`make install\` first (with a CUDA build of torch); this script installs nothing"
[ -f "$MODEL_DIR/config.json" ] || fail "no converted model at $MODEL_DIR: run \`make model\` first"

# The CUDA check: torch must be a CUDA build and see at least one device.
cuda_report=$("$PYTHON" - <<'EOF' 2>&1
import sys
try:
    import torch
except Exception as exc:  # noqa: BLE001
    print(f"torch cannot be imported: {exc}")
    sys.exit(1)
if not torch.cuda.is_available():
    build = torch.version.cuda or "none (a CPU-only build)"
    print(f"no CUDA device: torch {torch.__version__}, CUDA build {build}, devices {torch.cuda.device_count()}")
    sys.exit(1)
props = torch.cuda.get_device_properties(0)
bf16 = torch.cuda.is_bf16_supported()
print(f"{torch.cuda.device_count()} x {props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}, bf16 {'yes' if bf16 else 'NO'}")
sys.exit(0 if bf16 else 1)
EOF
) && cuda_ok=1 || cuda_ok=0

COMMAND=("$PYTHON" bench/run.py --profile gpu --dtype bfloat16 --require-device cuda
         --model-dir "$MODEL_DIR" --out "$OUT" --command "bench/gpu.sh${ARGS[*]:+ ${ARGS[*]}}" "${ARGS[@]}")

if [ "$DRY_RUN" = 1 ]; then
  if [ "$cuda_ok" = 1 ]; then
    note "CUDA: $cuda_report"
  else
    note "CUDA: $cuda_report -- a real run would stop here with exit 2"
  fi
  note "would run: CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} ${COMMAND[*]}"
  exec "${COMMAND[@]}" --dry-run
fi

[ "$cuda_ok" = 1 ] || fail "$cuda_report. bench-gpu needs an NVIDIA GPU and a CUDA build of torch in $PYTHON (make bench runs on CPU)"
note "CUDA: $cuda_report"
# One GPU: one gunicorn worker, so the servers and the in-process model use the same device.
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
export SAGEMAKER_MODEL_SERVER_WORKERS=1
exec "${COMMAND[@]}"
