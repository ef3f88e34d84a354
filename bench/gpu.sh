#!/usr/bin/env bash
# The benchmark on one GPU, sized to finish in under 8 minutes:
#   1. bench/run.py's models (the CPU run's sizes plus a 2e5-parameter full check; torch
#      runs on the host CPU: its full mode is extrapolated past 60 s), at most 300 s;
#   2. the public bug suite, full and fast mode, on the GPU (its verdicts must equal the CPU
#      run's), at most 90 s;
#   3. bench/large_model.py's fast check on one GPU (100.6M float32 parameters), at most 90 s.
# Writes bench/results/gpu-<device>-<date>*.{json,md} and the suite's JSON.
#
#   bash bench/gpu.sh     # from the repository root, with jax's CUDA build installed:
#                         # pip install "jax[cuda12]" numdifftools [torch==2.13.0]
#   DRY_RUN=1 bash bench/gpu.sh   # the same steps on the CPU at tiny sizes (checks plumbing)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
SUITE="${SUITE:-}"
for candidate in shared/bugsuite ../shared/bugsuite; do
    if [ -z "$SUITE" ] && [ -f "$candidate/run_suite.py" ]; then SUITE="$candidate"; fi
done
if [ -n "${DRY_RUN:-}" ]; then
    name="dry-run-cpu"
    run_args=(--quick); large_args=(--width 256 --devices 1 --no-write); suite_only=(--only l2)
else
    "$PYTHON" -c 'import jax; assert jax.default_backend() == "gpu", jax.devices(); print(jax.devices())'
    name="gpu-$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr -c 'A-Za-z0-9\n' '-' | tr -s '-' | sed 's/-$//')"
    run_args=(--sizes 1000 5000 17000 50000 200000 --fast-size 1000000 --torch-cap 60)
    large_args=(--devices 1); suite_only=()
fi
date_tag="$(date +%F)"
timeout 300 "$PYTHON" bench/run.py "${run_args[@]}" --name "$name" || echo "bench/run.py: exit $?"
if [ -n "$SUITE" ]; then
    for mode in full fast; do
        mode_args=(); [ "$mode" = fast ] && mode_args=(--mode fast)
        timeout 45 "$PYTHON" "$SUITE/run_suite.py" public --checker jaxcheck "${mode_args[@]}" \
            "${suite_only[@]}" --json "bench/results/$name-$date_tag-suite-$mode.json" \
            | tail -3 || echo "suite ($mode): exit $?"
    done
else
    echo "no bug suite found (shared/bugsuite): skipped"
fi
timeout 90 "$PYTHON" bench/large_model.py --name "$name" "${large_args[@]}" \
    || echo "bench/large_model.py: exit $?"
