#!/usr/bin/env bash
# The CUDA-only checks in one run (< 8 minutes): fixture parity on the GPU, a bf16 `salmonn bench`, one training
# step with bf16 autocast and the 8/4-bit bitsandbytes loads (benchmarks/gpu_smoke.py), written to one JSON.
#   bash benchmarks/gpu_smoke.sh [OUT.json]      (default: $OUT/gpu_smoke.json when $OUT is set, else
#                                                 benchmarks/gpu_smoke.json)
# Without CUDA it refuses with exit status 2 and runs nothing. Needs a CUDA build of torch in $PYTHON (default
# .venv/bin/python) and bitsandbytes for the quantized loads (pip install 'salmonn[cuda]').
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
RESULT="${1:-${OUT:-benchmarks}/gpu_smoke.json}"
LIMIT_S="${GPU_SMOKE_LIMIT_S:-470}"

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_smoke: no CUDA device visible to $PYTHON (torch CPU build or no GPU); nothing was run" >&2
    exit 2
fi
mkdir -p "$(dirname "$RESULT")"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
export PYTHONWARNINGS=ignore TRANSFORMERS_VERBOSITY=error
timeout --signal=TERM --kill-after=10 "$LIMIT_S" "$PYTHON" benchmarks/gpu_smoke.py "$RESULT"
