#!/usr/bin/env bash
# One prepared GPU check for a lent CUDA device (sized for one H200, under 8 minutes):
#   1. the kernel tests with the Triton kernels compiled (not interpreted), GPU tests included;
#   2. every kernel's timings against copy/matmul peaks (benchmarks/bench_kernels.py);
#   3. end-to-end decode tok/s and TTFT of the default model, decode in CUDA graphs, beside
#      transformers (benchmarks/bench_engine.py --batched --device cuda, the engine engineers' script);
#   4. batch-1 decode held as bfloat16, int8 and int4 through the Triton weight-only matmul, with
#      the memory-bandwidth fraction each implies (benchmarks/bench_quant_decode.py, issue 14).
# Each step has its own time limit; a failing step is reported and the next one still runs.
# Logs go to $OUT (default /tmp/cortex-gpu-check); the exit status is non-zero if any step
# failed.
#
#   bash benchmarks/gpu_check.sh            # run it
#   bash benchmarks/gpu_check.sh --dry-run  # print the steps only
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${OUT:-/tmp/cortex-gpu-check}
mkdir -p "$OUT"
FAILED=()

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo
    echo "== $name (limit ${limit}s): $*"
    [ "$DRY" = 1 ] && return 0
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "-- $name: exit $rc after $((SECONDS - start))s"
    [ "$rc" = 0 ] || FAILED+=("$name (exit $rc)")
}

step environment 60 "$PY" -c "
import torch, triton
assert torch.cuda.is_available(), 'no CUDA device: this script is for a GPU machine'
print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'triton', triton.__version__)
"

# TRITON_INTERPRET=0 overrides the interpreter that tests/conftest.py sets by default.
step kernel-tests 200 env CORTEX_KERNELS=triton TRITON_INTERPRET=0 \
    "$PY" -m pytest tests/kernels -m "not slow" -q -p no:cacheprovider --durations=10

step kernel-timings 150 env TRITON_INTERPRET=0 "$PY" benchmarks/bench_kernels.py

if [ "$DRY" = 0 ] && ! "$PY" benchmarks/bench_engine.py --batched --help 2>/dev/null | grep -q -- "--device"; then
    echo
    echo "!! benchmarks/bench_engine.py --batched has no --device option yet:"
    echo "!! the end-to-end GPU numbers (decode tok/s, TTFT, CUDA graphs) cannot be taken."
    FAILED+=("engine-e2e (benchmarks/bench_engine.py --batched lacks --device)")
else
    step engine-e2e 150 env TRITON_INTERPRET=0 \
        "$PY" benchmarks/bench_engine.py --batched --device cuda --dtype bfloat16 --repeats 2
fi

step quant-decode 150 env TRITON_INTERPRET=0 "$PY" benchmarks/bench_quant_decode.py --device cuda

echo
if [ "${#FAILED[@]}" -gt 0 ]; then
    printf '!! FAILED: %s\n' "${FAILED[@]}"
    exit 1
fi
echo "all steps passed; logs in $OUT"
