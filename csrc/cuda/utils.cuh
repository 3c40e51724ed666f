#pragma once
// Helpers of the CUDA kernels: launch geometry, warp reductions, loads in the accumulation type.
#include <algorithm>
#include <cstdint>

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common/philox.h"

namespace aevb_fast::cuda {

// float for float/float16/bfloat16, double for double.
template <typename scalar_t>
using acc_t = at::opmath_type<scalar_t>;

constexpr int kThreads = 256;
constexpr int kWarp = 32;

// Enough blocks to fill the GPU several times over; kernels use grid-stride loops, so any
// count is correct.
inline unsigned int blocks_for(int64_t work_items, int threads = kThreads) {
  const int64_t needed = (work_items + threads - 1) / threads;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(needed, 65535LL * 8)));
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

template <typename scalar_t>
__device__ __forceinline__ acc_t<scalar_t> load(const scalar_t* p, int64_t i) {
  return static_cast<acc_t<scalar_t>>(p[i]);
}

// The seed is read on the device: no host synchronisation, and a CUDA graph replays the read.
__device__ __forceinline__ PhiloxSeed read_seed(const int64_t* seed) {
  return {static_cast<uint64_t>(seed[0]), static_cast<uint64_t>(seed[1])};
}

}  // namespace aevb_fast::cuda
