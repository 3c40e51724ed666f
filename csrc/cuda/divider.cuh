#pragma once
// Division by a number fixed at launch, for the kernels' index arithmetic (csrc/cuda/utils.cuh).
#include <cstdint>

#include "common/macros.h"
#include "cuda/platform.cuh"  // __device__, also under the emulation

namespace aevb_fast::cuda {

// n / d and n % d for a divisor d fixed at launch (a row's length, a row count, the parameters of a
// sample): for n and d below 2^31 a multiply-high, an add and a shift (Granlund and Montgomery,
// 1994, as PyTorch's IntDivider), where a 64-bit division is about 20 instructions inline and a
// call, once per pack in the elementwise kernels (issue 30). Larger values divide, out of line.
struct Divider {
  int64_t value;
  uint32_t magic, shift;
  uint64_t fast_below;  // 2^31 when d < 2^31, else 0 (every n divides the slow way)

  explicit Divider(int64_t d) : value(d), magic(0), shift(0), fast_below(0) {
    if (d < 1 || d >= (int64_t(1) << 31)) return;
    while ((int64_t(1) << shift) < d) ++shift;
    magic = uint32_t(((uint64_t(1) << 32) * ((uint64_t(1) << shift) - uint64_t(d))) / uint64_t(d) + 1);
    fast_below = uint64_t(1) << 31;
  }

  __device__ __forceinline__ int64_t div(int64_t n) const {
    if (uint64_t(n) < fast_below) {
      const uint32_t n32 = uint32_t(n);
#if defined(__CUDA_ARCH__)
      const uint32_t hi = __umulhi(n32, magic);
#else
      const uint32_t hi = uint32_t((uint64_t(n32) * magic) >> 32);
#endif
      return int64_t((hi + n32) >> shift);  // hi + n32 < 2^32 for n32 < 2^31
    }
    return divide_out_of_line(n, value);
  }
  __device__ __forceinline__ int64_t mod(int64_t n) const { return n - div(n) * value; }

 private:
  static __device__ AEVB_NOINLINE int64_t divide_out_of_line(int64_t n, int64_t d) { return n / d; }
};

// The row and column of flat index p in rows of cols.value elements; step() moves along without
// dividing again.
struct RowCol {
  int64_t r, j;
  __device__ __forceinline__ RowCol(int64_t p, const Divider& cols) : r(cols.div(p)), j(p - r * cols.value) {}
  __device__ __forceinline__ void step(int64_t by, int64_t cols) {
    for (j += by; j >= cols; j -= cols) ++r;  // one test when cols >= by
  }
};

}  // namespace aevb_fast::cuda
