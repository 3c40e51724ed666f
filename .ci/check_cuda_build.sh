#!/usr/bin/env bash
# Builds aevb_fast against a CUDA build of torch with this machine's nvcc and no GPU visible, in a
# throwaway virtual environment (never the project's), and checks what the build made:
#   - the configuration message and build_info() report the CUDA architectures;
#   - by default, cuobjdump lists machine code for sm_80 and sm_90 and PTX for compute_90;
#   - with CHECK_SM90_ONLY=1, TORCH_CUDA_ARCH_LIST=9.0 gives sm_90 machine code only;
#   - `import aevb_fast` works there and the CPU op tests pass (the CUDA cases skip: no GPU).
# By default torch 2.11.0, the lent GPU machine's (CI's CPU run covers 2.13.0); TORCH_VERSION=2.15.0
# checks another torch. The registry's torch wheels are CUDA builds (about 530 MB, plus about 3 GB
# of CUDA runtime packages); downloads are kept in
# ${AEVB_FAST_WHEEL_CACHE:-~/.cache/aevb_fast/wheels}, so a second run downloads nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION=${TORCH_VERSION:-2.11.0}
cache=${AEVB_FAST_WHEEL_CACHE:-$HOME/.cache/aevb_fast/wheels}
say() { echo "check_cuda_build: $*"; }
fail() { echo "check_cuda_build: FAILED: $*" >&2; exit 1; }

# nvcc inside its toolkit (a wrapper script elsewhere on PATH would hide the toolkit's root,
# where torch's CMake looks for the CUDA headers and runtime).
NVCC=${NVCC:-}
for candidate in /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc "$(command -v nvcc || true)"; do
  [ -z "$NVCC" ] && [ -x "$candidate" ] && [ -f "$(dirname "$candidate")/../include/cuda_runtime.h" ] && NVCC=$candidate
done
[ -n "$NVCC" ] || fail "no nvcc with its toolkit's headers found; set NVCC=/path/to/toolkit/bin/nvcc"
toolkit=$(cd "$(dirname "$NVCC")/.." && pwd)
export CUDACXX=$NVCC CUDA_HOME=$toolkit CUDA_PATH=$toolkit PATH="$toolkit/bin:$PATH"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# cuobjdump comes from the registry: a minimal toolkit may not have it.
deps=("torch==$TORCH_VERSION" "scikit-build-core>=0.10" ninja numpy pytest expecttest "nvidia-cuda-cuobjdump>=13,<14")
mkdir -p "$cache"
say "torch $TORCH_VERSION and its CUDA runtime packages -> $cache"
pip download --isolated --quiet --progress-bar off -d "$cache" "${deps[@]}"
python -m venv "$work/venv"
py=$work/venv/bin/python
"$py" -m pip install --isolated --quiet --no-index --find-links "$cache" "${deps[@]}"
CUOBJDUMP=$(ls "$work"/venv/lib/python*/site-packages/nvidia/cu13/bin/cuobjdump)
# torch's CMake links NVRTC; a minimal toolkit may lack it, torch's own runtime packages have it.
cmake_args=""
if ! ls "$toolkit"/lib*/libnvrtc.so* > /dev/null 2>&1; then
  nvrtc=$(ls "$work"/venv/lib/python*/site-packages/nvidia/cu13/lib/libnvrtc.so* | head -n 1)
  cmake_args="-DCUDA_nvrtc_LIBRARY=$nvrtc"
fi
(cd "$work" && "$py" -c "import torch; assert torch.version.cuda, 'not a CUDA build of torch'; \
print('check_cuda_build: torch', torch.__version__, 'CUDA', torch.version.cuda, \
'GPU visible:', torch.cuda.is_available())")

# A copy of the working tree (tracked and new files, not build outputs), built in place.
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done |
  tar --null -T - -cf - | tar -xf - -C "$work/src"

# build NAME [VAR=VALUE...]: installs the copy into the venv; its log in $work/NAME.log.
build() {
  local name=$1; shift
  say "build ($name): $*"
  if ! (cd "$work/src" && env -u TORCH_CUDA_ARCH_LIST AEVB_FAST_CUDA=1 CMAKE_ARGS="$cmake_args" "$@" "$py" -m pip install --isolated --no-build-isolation \
        --no-deps -v . > "$work/$name.log" 2>&1); then
    tail -n 60 "$work/$name.log" >&2
    fail "the $name build failed"
  fi
  grep -E "aevb_fast configuration|  (torch|CUDA|CPU ISAs)" "$work/$name.log" | sed 's/^ *//; s/^-- /check_cuda_build:   /'
}

# check NAME ELF PTX: build_info() and cuobjdump of the installed _C agree with the expected lists.
check() {
  local name=$1 want_elf=$2 want_ptx=$3
  local info so elf ptx
  info=$(cd "$work" && "$py" -c "import aevb_fast as af; print(af.build_info()['cuda_archs'])")
  so=$(ls "$work"/venv/lib/python*/site-packages/aevb_fast/_C*.so)
  elf=$("$CUOBJDUMP" --list-elf "$so" | { grep -o 'sm_[0-9a-z]*' || true; } | sort -u | paste -sd, -) ||
    fail "$name: cuobjdump --list-elf $so failed"
  ptx=$("$CUOBJDUMP" --list-ptx "$so" 2>/dev/null | { grep -o 'sm_[0-9a-z]*' || true; } | sort -u | paste -sd, - || true)
  say "$name: build_info cuda_archs=$info; cuobjdump: machine code $elf, PTX ${ptx:-none}"
  [ "$elf" = "$want_elf" ] || fail "$name: machine code for ${elf:-nothing}, expected $want_elf"
  [ "${ptx:-none}" = "$want_ptx" ] || fail "$name: PTX for ${ptx:-none}, expected $want_ptx"
  local expected
  expected=$(echo "$want_elf" | tr , '\n'; [ "$want_ptx" = none ] || echo "$want_ptx" | sed 's/sm_/compute_/g' | tr , '\n')
  [ "$info" = "$(echo "$expected" | paste -sd, -)" ] || fail "$name: build_info reports $info"
}

# The CPU kernels of one instruction set only (AEVB_FAST_CPU_ISAS): the other two are built and
# tested in CI's main run, and skipping them here saves about two minutes.
build default AEVB_FAST_CPU_ISAS=DEFAULT
check default sm_80,sm_90 sm_90
say "CPU op tests against this build (CUDA cases skip without a GPU)"
# From outside the copy, so that the copy's aevb_fast/ (without the built library) is not imported.
(cd "$work" && "$work/venv/bin/pytest" -q -p no:cacheprovider -W ignore::DeprecationWarning \
  src/tests/build/test_build.py src/tests/ops/test_rng.py src/tests/ops/test_bernoulli_log_prob.py \
  src/tests/ops/test_gaussian_log_prob.py src/tests/ops/test_gaussian_kl.py src/tests/ops/test_sample_and_kl.py \
  src/tests/ops/test_compile.py > "$work/tests.log" 2>&1) || { tail -n 60 "$work/tests.log" >&2; fail "CPU tests"; }
tail -n 1 "$work/tests.log"
# The sm_90-only build (what benchmarks/gpu_check.sh builds on an H200) is a second full CUDA build,
# about 5 minutes here: by hand only (CHECK_SM90_ONLY=1), so that CI stays under 30 minutes.
if [ "${CHECK_SM90_ONLY:-0}" = 1 ]; then
  build sm90-only TORCH_CUDA_ARCH_LIST=9.0
  check sm90-only sm_90 none
fi
say "torch $TORCH_VERSION: all checks passed"
