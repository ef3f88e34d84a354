#!/usr/bin/env bash
# The benchmark on one GPU, sized to finish in under 8 minutes (the CPU run's sizes plus a
# 2e5-parameter full check; torch runs on the CPU there: its full mode is extrapolated past
# 120 s). Writes bench/results/gpu-<device>-<date>.{json,md}.
#
#   bash bench/gpu.sh            # from the repository root, with jax's CUDA build installed:
#                                # pip install "jax[cuda12]" numdifftools [torch==2.13.0]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
"$PYTHON" - <<'PY'
import jax
assert jax.default_backend() == "gpu", f"no GPU visible to jax: {jax.devices()}"
print(jax.devices())
PY
name="gpu-$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr -c 'A-Za-z0-9\n' '-' | tr -s '-' | sed 's/-$//')"
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" timeout 470 "$PYTHON" bench/run.py \
    --sizes 1000 5000 17000 50000 200000 --fast-size 1000000 --torch-cap 120 \
    --name "$name" "$@"
