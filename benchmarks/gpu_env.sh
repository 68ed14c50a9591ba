# Sourced by the GPU scripts: repository root as the working folder, $OUT made, $PY the Python
# that has torch (the repository's .venv when there is one, else python3).
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
PY=python3
[ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null && PY=.venv/bin/python
