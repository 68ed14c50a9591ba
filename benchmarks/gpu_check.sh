#!/usr/bin/env bash
# The prepared H200 check (see benchmarks/gpu_check.py): at most ~8 minutes, results under $OUT.
#   OUT=/some/dir bash benchmarks/gpu_check.sh [extra args for gpu_check.py, e.g. --quick]
. "$(dirname "$0")/gpu_env.sh"
if ! $PY -c "import torch, timm, tqdm" 2>"$OUT/import_error.txt"; then
    echo "torch/timm/tqdm not importable with $PY (see $OUT/import_error.txt)"; exit 3
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia_smi.csv" 2>&1 || true
# hard stop at 470 s; the script itself skips sections past its 420 s budget
timeout -k 10 470 $PY benchmarks/gpu_check.py --out "$OUT" --budget 420 "$@" 2>&1 | tee "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
