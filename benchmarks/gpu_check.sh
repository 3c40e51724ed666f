#!/usr/bin/env bash
# The GPU check in one command, for a lent GPU machine (planned to fit in 25 minutes):
#   build with the GPU visible; the full test suite; compute-sanitizer memcheck on the CUDA
#   kernel tests; the op, training-step and linear-head benchmarks on CUDA, saved under
#   benchmarks/results/.
# Everything worth keeping goes to $OUT (default ./gpu_check_out) as at most 8 files: the logs,
# and the results folder as one tar file (commit its contents under benchmarks/results/<gpu>/).
# Written before any GPU was lent to the project: not yet run on one.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
status=0
step() {  # step NAME COMMAND...: runs, logs to $OUT/NAME.log, remembers a failure, goes on
  local name=$1; shift
  echo "gpu_check: $name: $*"
  local start=$SECONDS
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "gpu_check: $name: exit $rc after $((SECONDS - start)) s"
  [ $rc -eq 0 ] || { status=1; tail -n 30 "$OUT/$name.log"; }
  return $rc
}

nvidia-smi > "$OUT/nvidia-smi.log" 2>&1 || true
# The machine's torch and packages are used as they are (nothing can be fetched there).
step build env AEVB_FAST_CUDA=1 "$PY" -m pip install --no-build-isolation --no-deps -v -e . || exit 1
"$PY" -c "import aevb_fast as af; print(af.build_info())" | tee -a "$OUT/build.log"
step tests "$PY" -m pytest -q -p no:cacheprovider tests/
step memcheck compute-sanitizer --tool memcheck --error-exitcode 1 \
  "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu_kernels.py tests/test_cuda.py -k "cuda and not emulated_cuda and not past_2_31"
step bench_ops aevb-fast bench --device cuda --save
step bench_train aevb-fast bench --train --device cuda --save
step bench_head aevb-fast bench --head --device cuda --sizes 65536,262144 --save
tar -cf "$OUT/results.tar" benchmarks/results
echo "gpu_check: done, status $status; logs and results.tar in $OUT"
grep -h -E "passed|failed|error" "$OUT/tests.log" "$OUT/memcheck.log" | tail -n 4
exit $status
