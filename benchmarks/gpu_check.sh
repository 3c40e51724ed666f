#!/usr/bin/env bash
# The GPU check in one command, for a lent GPU machine (one H200: 16 cores, torch 2.11.0+cu130 on
# Python 3.12, nvcc 13.0, no network):
#     bash benchmarks/gpu_check.sh              # the device tool's run, timeout_s=600
#     bash benchmarks/gpu_check.sh --dry-run    # the same steps on this CPU, as CI runs them
#     bash benchmarks/gpu_check.sh --prepare    # here, before the device call: MNIST gzipped into
#                                               # .device_data/ (ignored, ~11 MB) for the speedrun;
#                                               # then call with carry=[".device_data"]
#     GPU_CHECK_ONLY=speedrun,bench_train bash benchmarks/gpu_check.sh   # the build, then only these
#                                               # steps (a second call on the warm machine)
# The whole check no longer fits one call (about 660 s expected, below). In two calls, the second
# within 30 s of the first (the machine stays warm that long; the build is then seconds):
#     GPU_CHECK_ONLY=tests,memcheck,noise_cost,bench_ops,bench_prior,bench_summed bash benchmarks/gpu_check.sh
#     GPU_CHECK_ONLY=bench_head,bench_train,speedrun bash benchmarks/gpu_check.sh   # carry .device_data
# It ends within GPU_CHECK_BUDGET_S seconds (default 570, inside one device call's 10 minutes; 900
# for the dry run, whose limits are 3 times the GPU's):
# each step runs under its own limit, cut to what is left of the budget, and a step with no time
# left is skipped and said to be. Most valuable first:
#
#   step          limit  on the H200, 2026-11-30 (measured)             dry run here (2 cores, measured)
#   build          120    77: sm_90 only, jobs = cores; build_info()    3 (pip --dry-run of the same install)
#   tests          200    78: pytest -n <cores>, every CUDA case        28 (the emulated empty-input cases)
#                         (542 passed; the two 2^31-element cases
#                         move ~30 GB each); 1052 cases now: ~150
#   memcheck_probe  30     7: is compute-sanitizer allowed here?         skipped
#   memcheck        60    20: 12 tests, one per kernel path, under      17 (the same tests, emulated: ASan
#                         compute-sanitizer memcheck (the kernel-path      stands in for memcheck)
#                         names are checked in `tests`: the profiler
#                         gets no events under the sanitizer)
#   noise_cost      30   ~10: the noise identity's cost, 4 ways x      ~5 (compiled, not run)
#                         f32/bf16 x L=1,5 at 2^26 parameters (new)
#   bench_ops      200  ~170: 5 ops x L=1,5 x f32/bf16 x B=65536,     14-51 (B = 64, float32, CPU;
#                         1048576: 28 cases, ~6 s each, most of it        Inductor's cache warm or cold)
#                         Inductor's compilation; a copy before each
#   bench_prior     60   ~25: the KL to a learned prior and its        (not yet measured)
#                         sample, (256, 16, 32, 32), f32/bf16 (new)
#   bench_summed    60   ~50: the likelihoods summed as an ELBO sums    (not yet measured)
#                         them (gradient made in the forward), 8 cases
#                         at the op sizes (new)
#   bench_head      90   ~70: the fused head, B = 65536 (23 s),         37 (B = 64, CPU)
#                         262144 (46 s), L=1
#   bench_train    100    61: training steps at M = 4096, 65536, with   66 (M = 64, CPU)
#                         each step's peak memory (compiled providers
#                         compile twice: timing and memory)
#   speedrun       150     -: time to each MNIST test bound, the M =     7 (a 20000-sample CPU run)
#                         4096 recipe (issue 31): only in a call of
#                         its own (GPU_CHECK_ONLY=speedrun), with
#                         --prepare's data carried
#   total          ~660 expected, 570 budget a call (the last steps are cut first)                          ~170-210, 900 budget
#
# Written to $OUT (default ./gpu_check_out), refreshed as each step ends (at most 8 files come back
# from a device call):
#   summary.txt                          one line per step: name, exit code, seconds, limit, note
#   logs.tar                             every step's log so far, nvidia-smi's and build_info()'s
#   noise_cost.jsonl                     the noise identity's cost (benchmarks/noise_cost.cu)
#   speedrun.jsonl                       the speedrun's row (its learning curve is in logs.tar)
#   ops.jsonl, head.jsonl, train.jsonl   benchmark rows, each saved as soon as its case is measured;
#                                        commit them under benchmarks/results/<gpu>/ (summary.txt
#                                        names the folder)
# The exit code is 0 when every step that ran passed (a refused compute-sanitizer is a note, not a
# failure), 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=${GPU_CHECK_DRY_RUN:-0}
PREPARE=0
for arg in "$@"; do
  case $arg in
    --dry-run) DRY_RUN=1 ;;
    --prepare) PREPARE=1 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check: unknown argument '$arg' (use --dry-run, --prepare or --help)" >&2; exit 2 ;;
  esac
done

# MNIST for the speedrun on the device machine, where ../shared does not travel: gzipped into an
# ignored folder that the device call carries.
DATA_DIR=${GPU_CHECK_DATA_DIR:-.device_data}
if [ "$PREPARE" = 1 ]; then
  src=${AEVB_FAST_DATA:-../shared/data}/mnist
  mkdir -p "$DATA_DIR/mnist"
  for f in train-images-idx3-ubyte t10k-images-idx3-ubyte; do
    if [ -f "$src/$f.gz" ]; then
      cp "$src/$f.gz" "$DATA_DIR/mnist/"
    elif [ -f "$src/$f" ]; then
      gzip -c "$src/$f" > "$DATA_DIR/mnist/$f.gz.tmp" && mv "$DATA_DIR/mnist/$f.gz.tmp" "$DATA_DIR/mnist/$f.gz"
    else
      echo "gpu_check: --prepare: neither $src/$f nor $src/$f.gz exists (set AEVB_FAST_DATA to the folder holding mnist/)" >&2
      exit 1
    fi
  done
  echo "gpu_check: MNIST in $DATA_DIR ($(du -sh "$DATA_DIR" | cut -f1)); call the device with carry=[\"$DATA_DIR\"]"
  exit 0
fi

ONLY=${GPU_CHECK_ONLY:-}
STEPS=(build tests memcheck noise_cost bench_ops bench_prior bench_summed bench_head bench_train speedrun)
for name in ${ONLY//,/ }; do  # a misspelt step would run nothing and pass
  if [[ " ${STEPS[*]} " != *" $name "* ]]; then
    echo "gpu_check: GPU_CHECK_ONLY names '$name', which is not a step (steps: ${STEPS[*]})" >&2
    exit 2
  fi
done
OUT=${OUT:-$PWD/gpu_check_out}
BUDGET=${GPU_CHECK_BUDGET_S:-570}
PY=${PYTHON:-python3}
JOBS=$(nproc)
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOGS=$(mktemp -d)/logs
mkdir -p "$LOGS"
trap 'rm -rf "$(dirname "$LOGS")"' EXIT
: > "$OUT/summary.txt"
[ -n "$ONLY" ] || rm -f "$OUT"/{ops,head,train,noise_cost,speedrun}.jsonl "$OUT/logs.tar"  # a selection adds to them

# What changes between the GPU and the dry run: the device, the sizes, the test selection. The
# commands and their flags below are the same for both.
if [ "$DRY_RUN" = 1 ]; then
  TEST_DEVICE=emulated_cuda  # the CUDA kernels' code run on CPU tensors, under ASan and UBSan
  TEST_SELECTION="emulated_cuda and test_empty"
  BENCH_DEVICE=cpu OP_SIZES=64 OP_DTYPES=float32 HEAD_SIZES=64 TRAIN_SIZES=64 REPEATS=1
  PRIOR_SIZES=4 PRIOR_LATENT=64
  PIP_DRY_RUN=--dry-run
  LIMIT_SCALE=3  # the limits are the GPU's; 2 CPU cores compile and measure memory more slowly
  BUDGET=${GPU_CHECK_BUDGET_S:-900}
else
  TEST_DEVICE=cuda
  TEST_SELECTION="cuda and not emulated"
  BENCH_DEVICE=cuda OP_SIZES=65536,1048576 OP_DTYPES=float32,bfloat16 HEAD_SIZES=65536,262144
  TRAIN_SIZES=4096,65536 REPEATS=5 PIP_DRY_RUN= LIMIT_SCALE=1
  PRIOR_SIZES=256 PRIOR_LATENT=16384
fi
# One test per CUDA kernel path for memcheck (float32): each op on warp rows with 128-bit packs and
# on block rows one element at a time, drawn noise with 5 samples (packed and aligned groups), rows
# that share a warp (the KL of 64 latents), the linear heads' epilogues.
d=$TEST_DEVICE
MEMCHECK_TESTS=(
  "tests/ops/test_gpu_kernels.py::test_matches_the_cpu_kernels_on_every_path[$d-reparameterize-5-(37, 784)-packed-dtype0]"
  "tests/ops/test_gpu_kernels.py::test_matches_the_cpu_kernels_on_every_path[$d-sample_and_kl-5-(37, 784)-packed-dtype0]"
  "tests/ops/test_gpu_kernels.py::test_matches_the_cpu_kernels_on_every_path[$d-gaussian_kl-1-(37, 784)-packed-dtype0]"
  "tests/ops/test_gpu_kernels.py::test_matches_the_cpu_kernels_on_every_path[$d-bernoulli_log_prob-5-(37, 784)-packed-dtype0]"
  "tests/ops/test_gpu_kernels.py::test_matches_the_cpu_kernels_on_every_path[$d-gaussian_log_prob-1-(37, 784)-packed-dtype0]"
  "tests/ops/test_gpu_kernels.py::test_matches_the_cpu_kernels_on_every_path[$d-sample_and_kl-1-(2, 4097)-one-element-dtype0]"
  "tests/ops/test_gpu_kernels.py::test_matches_the_cpu_kernels_on_every_path[$d-gaussian_kl-1-(2, 4097)-one-element-dtype0]"
  "tests/ops/test_gpu_kernels.py::test_matches_the_cpu_kernels_on_every_path[$d-bernoulli_log_prob-1-(2, 4097)-one-element-dtype0]"
  "tests/ops/test_gpu_kernels.py::test_matches_the_cpu_kernels_on_every_path[$d-gaussian_log_prob-5-(2, 4097)-one-element-dtype0]"
  "tests/ops/test_gpu_kernels.py::test_drawn_noise_gradients_match_the_cpu[$d-5-(37, 784)-packed-dtype0]"
  "tests/ops/test_gpu_kernels.py::test_drawn_noise_gradients_match_the_cpu[$d-5-(16, 64)-packed-dtype0]"
  "tests/ops/test_gpu_kernels.py::test_matches_the_cpu_kernels_on_every_path[$d-sample_and_kl-1-(37, 64)-packed-dtype0]"
  "tests/ops/test_linear_log_prob.py::TestLinearBernoulliLogProbSum::test_matches_reference_float64[$d]"
  "tests/ops/test_gpu_kernels.py::test_matches_the_cpu_kernels_on_every_path[$d-gaussian_log_prob_mean-5-(37, 784)-packed-dtype0]"
  "tests/ops/test_gpu_kernels.py::test_summed_backward_scales_on_the_device[$d-1.0]"
  "tests/ops/test_linear_log_prob.py::TestLinearGaussianLogProb::test_matches_reference_float64[$d]"
)

deadline=$((SECONDS + BUDGET))
failed=0
save() {  # the logs so far into $OUT (the results rows are written there directly)
  tar -cf "$OUT/logs.tar.tmp" -C "$(dirname "$LOGS")" logs && mv "$OUT/logs.tar.tmp" "$OUT/logs.tar"
}
selected() {  # whether step NAME runs: every step, or those GPU_CHECK_ONLY names (the build always)
  local name=${1%_probe}  # memcheck_probe goes with memcheck
  [ -z "$ONLY" ] || [ "$name" = build ] || [[ ",$ONLY," == *",$name,"* ]]
}
record() {  # record NAME CODE SECONDS LIMIT NOTE: one line of summary.txt, echoed
  local line
  line=$(printf '%-15s exit %-4s %4s s  (limit %3s s)  %s' "$1" "$2" "$3" "$4" "$5")
  echo "$line" >> "$OUT/summary.txt"
  echo "gpu_check: $line"
}
step() {  # step NAME LIMIT COMMAND...: runs under min(LIMIT, what is left), logs to NAME.log
  local name=$1 limit=$(($2 * LIMIT_SCALE)); shift 2
  if ! selected "$name"; then
    record "$name" - 0 "$limit" "not selected (GPU_CHECK_ONLY=$ONLY)"; return 1
  fi
  local left=$((deadline - SECONDS - 5))
  if [ "$left" -lt 15 ]; then
    record "$name" - 0 "$limit" "skipped: ${BUDGET} s budget spent"; failed=1; return 1
  fi
  [ "$limit" -le "$left" ] || limit=$left
  echo "gpu_check: $name: $*" | tee "$LOGS/$name.log"
  local start=$SECONDS rc note
  timeout --kill-after=10 "$limit" "$@" >> "$LOGS/$name.log" 2>&1
  rc=$?
  note=$(grep -a -E "[0-9]+ (passed|failed)|rows added|identity costs|sustained:|Successfully installed|Would install|Error|error:" "$LOGS/$name.log" | tail -n 1 | cut -c1-160)
  case $rc in
    0) ;;
    124|137) note="timed out at the step's limit; ${note}"; failed=1 ;;
    *) failed=1; tail -n 25 "$LOGS/$name.log" ;;
  esac
  record "$name" "$rc" $((SECONDS - start)) "$limit" "$note"
  save
  return $rc
}

echo "gpu_check: $([ "$DRY_RUN" = 1 ] && echo "dry run on this CPU" || echo "on the GPU"), budget ${BUDGET} s, $JOBS jobs, out $OUT"
{ nvidia-smi || echo "no nvidia-smi"; } > "$LOGS/nvidia-smi.log" 2>&1

# 1. Build for this GPU only (sm_90 on an H200), as many compile jobs as cores; with the machine's
#    torch and packages as they are (nothing can be fetched there).
if ! step build 120 env AEVB_FAST_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" \
    "$PY" -m pip install --no-build-isolation --no-deps $PIP_DRY_RUN -v -e .; then
  echo "gpu_check: the build failed; nothing else can run"; exit 1
fi
"$PY" -c "import aevb_fast as af; print(af.build_info())" > "$LOGS/build_info.log" 2>&1
cat "$LOGS/build_info.log"
save

# 2. Every CUDA test case, in parallel (the 2^31-element ones included).
step tests 200 "$PY" -m pytest -n "$JOBS" -q -p no:cacheprovider -k "$TEST_SELECTION" tests/

# 3. compute-sanitizer memcheck, one test per kernel path, without PyTorch's caching allocator (so
#    that an access past a tensor's end leaves its allocation). Some machines refuse the tool (gVisor:
#    "Device not supported"): a probe says so in one line instead of a failed step.
if [ "$DRY_RUN" = 1 ]; then
  record memcheck_probe - 0 0 "dry run: the emulation's ASan stands in for compute-sanitizer"
  step memcheck 60 "$PY" -m pytest -q -p no:cacheprovider "${MEMCHECK_TESTS[@]}"
else
  SANITIZER=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  failed_before=$failed
  if step memcheck_probe 30 "$SANITIZER" --tool memcheck --error-exitcode 1 \
      "$PY" -c "import torch; assert torch.ones(8, device='cuda').sum().item() == 8"; then
    step memcheck 60 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 AEVB_FAST_UNDER_SANITIZER=1 "$SANITIZER" --tool memcheck --error-exitcode 1 \
      "$PY" -m pytest -q -p no:cacheprovider "${MEMCHECK_TESTS[@]}"
  elif selected memcheck; then
    failed=$failed_before  # a refused tool is a note, not a failure of the code
    record memcheck - 0 0 "skipped: compute-sanitizer refused this machine ($(grep -a -m1 -i -E "error|not supported" "$LOGS/memcheck_probe.log" | cut -c1-100))"
  fi
fi

# 4. What the CPU/CUDA noise identity costs (issue 30, section 3): the drawn-noise sampling op's
#    pattern with the library's generator and with the hardware's approximations, and with eps
#    saved, beside a copy (benchmarks/noise_cost.cu; the dry run compiles it only). First of the
#    measurements: ten seconds that decide the noise contract, never skipped for a budget the
#    benchmarks spent. nvcc runs without the ASan preload that the tests' dry run inherits (it
#    crashes under it).
NOISE_COST_BIN=$(dirname "$LOGS")/noise_cost
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
step noise_cost 30 env -u LD_PRELOAD bash -c "'$NVCC' -std=c++20 --expt-relaxed-constexpr -O3 -arch=sm_90 -Xcompiler -ffp-contract=off -Icsrc benchmarks/noise_cost.cu \
  -o '$NOISE_COST_BIN' && { [ '$DRY_RUN' = 1 ] || '$NOISE_COST_BIN' --jsonl '$OUT/noise_cost.jsonl'; }"
# 5. The benchmarks: the op suite times a copy before every case (the bandwidth its shares are of).
step bench_ops 200 "$PY" -m aevb_fast.cli bench --device "$BENCH_DEVICE" --sizes "$OP_SIZES" \
  --dtype "$OP_DTYPES" --repeats "$REPEATS" --out "$OUT/ops.jsonl"
# The KL to a learned prior and its sample at a VDVAE-sized latent map, (256, 16, 32, 32) on the
# GPU (issue 30), into the same results file.
step bench_prior 60 "$PY" -m aevb_fast.cli bench --device "$BENCH_DEVICE" --ops kl_to_prior,sample_and_kl_to_prior \
  --sizes "$PRIOR_SIZES" --latent "$PRIOR_LATENT" -L 1 --dtype "$OP_DTYPES" --repeats "$REPEATS" --out "$OUT/ops.jsonl"
# The likelihoods as the ELBO uses them: summed, loss.backward() (issue 30's "summed form").
step bench_summed 60 "$PY" -m aevb_fast.cli bench --device "$BENCH_DEVICE" --ops bernoulli_log_prob_sum,gaussian_log_prob_sum \
  --sizes "$OP_SIZES" --dtype "$OP_DTYPES" --repeats "$REPEATS" --out "$OUT/ops.jsonl"
step bench_head 90 "$PY" -m aevb_fast.cli bench --head --device "$BENCH_DEVICE" --sizes "$HEAD_SIZES" -L 1 \
  --repeats "$REPEATS" --out "$OUT/head.jsonl"
step bench_train 100 "$PY" -m aevb_fast.cli bench --train --device "$BENCH_DEVICE" --sizes "$TRAIN_SIZES" \
  --repeats "$REPEATS" --out "$OUT/train.jsonl"

# 6. Time to quality (issue 31): the speedrun recipe on MNIST, when the data came along
#    (--prepare here, carry=[".device_data"]); its row into $OUT, its learning curve into the logs.
SPEEDRUN_RUN=$(dirname "$LOGS")/speedrun_run
if [ "$DRY_RUN" = 1 ]; then
  SPEEDRUN_ARGS=(--device cpu --batch-size 1000 --samples 20000)
else
  SPEEDRUN_ARGS=(--device cuda)
fi
if [ -f "$DATA_DIR/mnist/train-images-idx3-ubyte.gz" ]; then
  export AEVB_FAST_DATA=$(cd "$DATA_DIR" && pwd)
fi
if [ "$DRY_RUN" != 1 ] && [[ ",$ONLY," != *",speedrun,"* ]]; then
  # It would not fit after the rest of a full check (its budget is spent by then): its own call.
  record speedrun - 0 0 "not in the full check: GPU_CHECK_ONLY=speedrun bash benchmarks/gpu_check.sh, with .device_data carried"
elif "$PY" -c "from aevb_fast.training.data import find_file as f; f('mnist_train_images', download=False); f('mnist_test_images', download=False)" > /dev/null 2>&1; then
  step speedrun 150 "$PY" benchmarks/speedrun.py "${SPEEDRUN_ARGS[@]}" --out "$SPEEDRUN_RUN" \
    --save-to "$OUT/speedrun.jsonl" && cp "$SPEEDRUN_RUN/learning_curve_wall.png" "$LOGS/" && save
elif selected speedrun; then
  record speedrun - 0 0 "skipped: no MNIST here (bash benchmarks/gpu_check.sh --prepare, then carry .device_data)"
fi

folder=$("$PY" -c "from aevb_fast.bench.op_suite import results_path; print(results_path('$BENCH_DEVICE').parent)" 2>/dev/null)
grep -a -h "copy bandwidth" "$LOGS/bench_ops.log" >> "$OUT/summary.txt" 2>/dev/null
echo "results: commit $OUT/{ops,head,train,noise_cost,speedrun}.jsonl under ${folder:-benchmarks/results/<gpu>}/" >> "$OUT/summary.txt"
save
echo "gpu_check: done in $SECONDS s, $([ $failed = 0 ] && echo "every step passed" || echo "FAILED (see summary.txt)")"
cat "$OUT/summary.txt"
exit $failed
