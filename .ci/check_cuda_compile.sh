#!/usr/bin/env bash
# Compile-checks the CUDA sources with nvcc against torch's headers (compile only, no link), on
# machines whose torch is a CPU build. Checks every csrc/cuda/*.cu, and the __host__ __device__
# code of csrc/common/ through a generated file that instantiates it in a kernel.
# Torch's CPU wheel lacks c10/cuda/impl/cuda_cmake_macros.h: a stand-in goes in a temporary
# include dir. Exits non-zero on the first file that does not compile, or whose kernels have a
# local-memory stack frame (ptxas -v: an array indexed at run time, or spilled registers), at the
# build's -O3 (spills depend on the optimisation level).
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC=${NVCC:-$(command -v nvcc || true)}
if [ -z "$NVCC" ]; then
  for candidate in /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc; do
    [ -x "$candidate" ] && NVCC=$candidate && break
  done
fi
if [ -z "$NVCC" ]; then
  echo "check_cuda_compile: nvcc not found; set NVCC=/path/to/nvcc" >&2
  exit 1
fi

torch_include=$(python -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'include'))")
python_include=$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
stand_in=$(mktemp -d)
trap 'rm -rf "$stand_in"' EXIT
mkdir -p "$stand_in/c10/cuda/impl"
if [ ! -f "$torch_include/c10/cuda/impl/cuda_cmake_macros.h" ]; then
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$stand_in/c10/cuda/impl/cuda_cmake_macros.h"
fi

# The device side of csrc/common: every formula instantiated for float and double in a kernel.
cat > "$stand_in/common_on_device.cu" <<'CU'
#include "common/math.h"
#include "common/philox.h"
template <typename T>
__global__ void instantiate(T* out, aevb_fast::PhiloxSeed seed) {
  using namespace aevb_fast;
  float noise[4][1];
  philox_normals<1>(seed, threadIdx.x, noise);
  const T a = T(noise[0][0]), b = out[1], w = standardized_residual(a, b, std_from_logvar(-b));
  out[0] = twice_kl_term(a, b) + kl_grad_logvar(b) + bernoulli_log_prob_term(a, b) +
           bernoulli_grad_logit(a, b) + gaussian_log_prob_term(b, w) + gaussian_grad_mean(w, b) +
           gaussian_grad_logvar(w);
}
template __global__ void instantiate<float>(float*, aevb_fast::PhiloxSeed);
template __global__ void instantiate<double>(double*, aevb_fast::PhiloxSeed);
CU

flags=(-std=c++20 --expt-relaxed-constexpr -arch=sm_90 -O3 -c -o /dev/null -Xptxas -v
       -I csrc -I "$stand_in" -I "$torch_include" -I "$torch_include/torch/csrc/api/include"
       -I "$python_include" -D_GLIBCXX_USE_CXX11_ABI=1)

files=("$stand_in/common_on_device.cu")
shopt -s nullglob
files+=(csrc/cuda/*.cu)
echo "check_cuda_compile: $("$NVCC" --version | tail -n 1)"
# check FILE: compiles one file; non-zero if it fails or a kernel has a stack frame. The files are
# independent, so they compile as many at a time as there are cores.
check() {
  local f=$1 report
  echo "check_cuda_compile: nvcc -c $f"
  report=$("$NVCC" "${flags[@]}" "$f" 2>&1) || { echo "$report" >&2; echo "check_cuda_compile: $f does not compile" >&2; return 1; }
  if echo "$report" | grep -Eq '[1-9][0-9]* bytes stack frame|[1-9][0-9]* bytes spill'; then
    echo "$report" | grep -E -B3 '[1-9][0-9]* bytes (stack frame|spill)' >&2
    echo "check_cuda_compile: $f: a kernel uses a local-memory stack frame (see above)" >&2
    return 1
  fi
}
export -f check
export NVCC
export FLAGS_FILE="$stand_in/flags"
printf '%s\0' "${flags[@]}" > "$FLAGS_FILE"
printf '%s\0' "${files[@]}" |
  xargs -0 -n 1 -P "$(nproc)" bash -c 'mapfile -d "" -t flags < "$FLAGS_FILE"; check "$0"'
echo "check_cuda_compile: ${#files[@]} file(s) compiled"
