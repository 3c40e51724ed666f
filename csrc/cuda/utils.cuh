#pragma once
// Helpers of the CUDA kernels: 128-bit packed loads and stores, deterministic row reductions
// (a warp per row, or a block per row for long rows), and the two kernel shapes every operator
// uses: a row sum and an elementwise map. An operator supplies a small functor with its math
// (from csrc/common/math.h) and these helpers do the traversal.
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>

#include "common/philox.h"
#include "cuda/divider.cuh"
#include "cuda/platform.cuh"

namespace aevb_fast::cuda {

// float for float/float16/bfloat16, double for double.
template <typename scalar_t>
using acc_t = at::opmath_type<scalar_t>;

// Whether results are stored in 16 bits (float16, bfloat16): math.h's Bernoulli formulas then take
// the GPU's approximate exp, log and division.
template <typename scalar_t>
constexpr bool kStored16 = sizeof(scalar_t) == 2;

constexpr int kThreads = 256;
constexpr int kWarp = 32;
// Rows at least this long get a whole block each (a warp per row would leave most of the GPU's
// warps idle per byte in flight); shorter rows get a warp each.
constexpr int64_t kBlockRowMin = 4096;

// Elements in one 128-bit access.
template <typename scalar_t>
constexpr int kPack = 16 / int(sizeof(scalar_t)) > 0 ? 16 / int(sizeof(scalar_t)) : 1;

// A block per `threads` work items, at most max_grid_blocks() (enough to fill a GPU several times
// over); kernels use grid-stride loops, so any count is correct.
inline unsigned int blocks_for(int64_t work_items, int threads = kThreads) {
  const int64_t needed = (work_items + threads - 1) / threads;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(needed, max_grid_blocks())));
}

// The packed path (N elements per access, 16 bytes by default) needs every pointer aligned to a
// pack and rows a whole number of packs, so that a pack never straddles two rows and every row
// starts aligned; otherwise kernels go one element at a time.
template <typename scalar_t, int N = kPack<scalar_t>>
bool can_pack(int64_t cols, std::initializer_list<const void*> pointers) {
  if (cols % N != 0) return false;
  for (const void* p : pointers) {
    if (p != nullptr && reinterpret_cast<uintptr_t>(p) % (sizeof(scalar_t) * N) != 0) return false;
  }
  return true;
}

template <typename scalar_t, int N>
struct alignas(sizeof(scalar_t) * N) Pack {
  scalar_t v[N];
};

// Elements i .. i + N - 1 in the accumulation type; one 128-bit load when N is the pack size.
template <int N, typename scalar_t>
__device__ __forceinline__ void load_pack(const scalar_t* p, int64_t i, acc_t<scalar_t> (&out)[N]) {
  const Pack<scalar_t, N> pack = *reinterpret_cast<const Pack<scalar_t, N>*>(p + i);
#pragma unroll
  for (int k = 0; k < N; ++k) out[k] = static_cast<acc_t<scalar_t>>(pack.v[k]);
}

template <int N, typename scalar_t>
__device__ __forceinline__ void store_pack(scalar_t* p, int64_t i, const acc_t<scalar_t> (&in)[N]) {
  Pack<scalar_t, N> pack;
#pragma unroll
  for (int k = 0; k < N; ++k) pack.v[k] = static_cast<scalar_t>(in[k]);
  *reinterpret_cast<Pack<scalar_t, N>*>(p + i) = pack;
}

// Row r of a RowInput: where its elements start, or (one_value) the one value of the whole row.
template <typename scalar_t>
struct InputRow {
  const scalar_t* data;
  bool one_value;

  // Elements j .. j + N - 1 of the row.
  template <int N>
  __device__ __forceinline__ void load(int64_t j, acc_t<scalar_t> (&out)[N]) const {
    if (one_value) {
      const acc_t<scalar_t> v = static_cast<acc_t<scalar_t>>(data[0]);
#pragma unroll
      for (int k = 0; k < N; ++k) out[k] = v;
    } else {
      load_pack<N>(data, j, out);
    }
  }
};

// An input as csrc/op_library.h's broadcast_rows makes it: `rows` rows of `cols` elements, cols
// being the event's size or 1 (one value for a whole row); row r of the output reads row r % rows.
template <typename scalar_t>
struct RowInput {
  const scalar_t* data;
  Divider rows;
  int64_t cols;

  explicit RowInput(const at::Tensor& t)
      : data(t.const_data_ptr<scalar_t>()), rows(std::max<int64_t>(t.size(0), 1)), cols(t.size(1)) {}
  // What can_pack must check: a per-row value is read alone, whatever its alignment.
  const void* pack_pointer() const { return cols == 1 ? nullptr : data; }

  // Output row r's view of this input. A full input (rows == R) needs no division. The row sums
  // take it once a row, so that their loop over the row's packs holds none of this (issue 30).
  __device__ __forceinline__ InputRow<scalar_t> row(int64_t r) const {
    const int64_t at = r < rows.value ? r : rows.mod(r);
    return {data + at * cols, cols == 1};
  }

  // Elements j .. j + N - 1 of output row r.
  template <int N>
  __device__ __forceinline__ void load(int64_t r, int64_t j, acc_t<scalar_t> (&out)[N]) const {
    row(r).template load<N>(j, out);
  }
};

// The sum of v over the kWidth lanes of each kWidth-lane part of a warp, in a fixed order; the
// part's first lane gets it.
template <int kWidth = kWarp, typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = kWidth / 2; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset, kWidth);
  return v;
}

// The sum of v over the kRowThreads threads of a row, in a fixed order (run-to-run identical);
// the first thread of the row gets it. kRowThreads is 1, 8 or 16 (rows sharing a warp), a warp,
// or the whole block.
template <int kRowThreads, typename T>
__device__ __forceinline__ T row_sum(T v, T* shared) {
  if constexpr (kRowThreads <= kWarp) {
    return warp_sum<kRowThreads>(v);
  } else {
    v = warp_sum(v);
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    if (warp == 0) v = warp_sum(lane < kRowThreads / kWarp ? shared[lane] : T(0));
    __syncthreads();  // shared is reused by the block's next row
    return v;
  }
}

// out[r] = scale * sum_j term(r, j) + offset. Term::row(r) is row r's view of the inputs (taken
// once a row, outside the loop over its packs), whose sum<N>(j) returns the sum of the terms of
// elements j .. j + N - 1. A row is kRowThreads threads, each taking kVec elements at a
// time, grid-stride over rows. With rows narrower than a warp, the warp's first row decides the
// loop, so that a warp's threads take the same iterations (its shuffles need them all); a thread
// whose row is past the end adds nothing and writes nothing.
// At most 64 registers a thread (4 blocks of 256 an SM: half the H200's threads), which every row
// sum fits without spilling; the 16-bit KL's would otherwise take 70 and run 3 blocks.
template <int kVec, int kRowThreads, typename Term, typename acc>
__global__ void __launch_bounds__(kThreads, 4)
    row_sum_kernel(Term term, acc* __restrict__ out, int64_t rows, int64_t cols, acc scale, acc offset) {
  __shared__ acc shared[kThreads / kWarp];
  constexpr int kRowsPerBlock = kThreads / kRowThreads;
  const int t = threadIdx.x % kRowThreads;
  const int row_in_warp = kRowThreads < kWarp ? int(threadIdx.x % kWarp) / kRowThreads : 0;
  for (int64_t r = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kRowThreads; r - row_in_warp < rows;
       r += int64_t(gridDim.x) * kRowsPerBlock) {
    acc sum = 0;
    if (r < rows) {
      const auto row = term.row(r);
      for (int64_t j = int64_t(t) * kVec; j < cols; j += int64_t(kRowThreads) * kVec) {
        sum += row.template sum<kVec>(j);
      }
    }
    sum = row_sum<kRowThreads>(sum, shared);
    if (t == 0 && r < rows) out[r] = scale * sum + offset;
  }
}

template <int kVec, int kRowThreads, typename Term, typename acc>
void launch_row_sum_with(unsigned int blocks, const Term& term, acc* out, int64_t rows, int64_t cols, acc scale,
                         acc offset) {
  launch<row_sum_kernel<kVec, kRowThreads, Term, acc>>(blocks, kThreads, term, out, rows, cols, scale, offset);
}

// A block per row when a row is at least kBlockRowMin elements long (row_sum_kernel's loop over
// rows is then uniform across the block, as its __syncthreads need), a warp per row otherwise,
// and fewer threads a row where a row is too short to give each lane work: 8 or 16 for rows of
// at most 8 or 16 packs (a latent of 64 floats) or unpacked elements, and one thread for rows of
// one element (event_dims=0, which a warp a row ran at 1/32 of its lanes).
template <typename scalar_t, typename Term, typename acc>
void launch_row_sum(const Term& term, acc* out, int64_t rows, int64_t cols, acc scale, acc offset, bool packed) {
  if (rows == 0) return;
  constexpr int P = kPack<scalar_t>;
  const int64_t units = packed ? cols / P : cols;  // what a thread takes at a time: packs or elements
  const int row_threads = cols >= kBlockRowMin   ? kThreads
                          : !packed && cols == 1 ? 1
                          : units <= 8           ? 8
                          : units <= 16          ? 16
                                                 : kWarp;
  const unsigned int blocks = blocks_for(rows * row_threads);
  if (packed) {
    switch (row_threads) {
      case 8:
        return launch_row_sum_with<P, 8>(blocks, term, out, rows, cols, scale, offset);
      case 16:
        return launch_row_sum_with<P, 16>(blocks, term, out, rows, cols, scale, offset);
      case kWarp:
        return launch_row_sum_with<P, kWarp>(blocks, term, out, rows, cols, scale, offset);
      default:
        return launch_row_sum_with<P, kThreads>(blocks, term, out, rows, cols, scale, offset);
    }
  }
  switch (row_threads) {
    case 1:
      return launch_row_sum_with<1, 1>(blocks, term, out, rows, cols, scale, offset);
    case 8:
      return launch_row_sum_with<1, 8>(blocks, term, out, rows, cols, scale, offset);
    case 16:
      return launch_row_sum_with<1, 16>(blocks, term, out, rows, cols, scale, offset);
    case kWarp:
      return launch_row_sum_with<1, kWarp>(blocks, term, out, rows, cols, scale, offset);
    default:
      return launch_row_sum_with<1, kThreads>(blocks, term, out, rows, cols, scale, offset);
  }
}

// op.apply<N>(i) handles flat elements i .. i + N - 1 (in one row when packed); grid-stride.
template <int kVec, typename Op>
__global__ void elementwise_kernel(Op op, int64_t total) {
  const int64_t packs = total / kVec;
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < packs; k += int64_t(gridDim.x) * blockDim.x) {
    op.template apply<kVec>(k * kVec);
  }
}

template <typename scalar_t, typename Op>
void launch_elementwise(const Op& op, int64_t total, bool packed) {
  if (total == 0) return;
  constexpr int P = kPack<scalar_t>;
  if (packed && total % P == 0) {
    launch<elementwise_kernel<P, Op>>(blocks_for(total / P), kThreads, op, total);
  } else {
    launch<elementwise_kernel<1, Op>>(blocks_for(total), kThreads, op, total);
  }
}

// The seed is read on the device: no host synchronisation, and a CUDA graph replays the read.
__device__ __forceinline__ PhiloxSeed read_seed(const int64_t* seed) {
  return {static_cast<uint64_t>(seed[0]), static_cast<uint64_t>(seed[1])};
}

}  // namespace aevb_fast::cuda
