#pragma once
// Building blocks of the CPU kernels, compiled once per instruction set (see CMakeLists.txt):
// Math<Vectorized<T>> for the shared formulas of csrc/common/math.h, row tiles converted to the
// accumulation type, a loop that runs a generic body on full vectors and then on the scalar tail,
// and the in-kernel normal noise.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <type_traits>

#include "common/math.h"
#include "common/philox.h"
#include "cpu/simd_lanes.h"

namespace aevb_fast {
inline namespace CPU_CAPABILITY {

using at::vec::Vectorized;

template <typename T>
struct Math<Vectorized<T>> {
  using V = Vectorized<T>;
  static constexpr bool kDouble = std::is_same_v<T, double>;
  static V round(const V& x) { return x.round(); }
  // 2^k for integral k, built in the exponent field.
  static V pow2(const V& k) {
    using Int = std::conditional_t<kDouble, int64_t, int32_t>;
    using IntV = Vectorized<Int>;
    constexpr Int bias = kDouble ? 1023 : 127, mantissa_bits = kDouble ? 52 : 23;
    const IntV biased = at::vec::convert_to_int_of_same_size(k) + IntV(bias);
    return at::vec::cast<T>(biased << IntV(mantissa_bits));
  }
  static V abs(const V& x) { return x.abs(); }
  static V relu(const V& x) { return at::vec::clamp_min(x, V(T(0))); }
  // mask ? a : b, lane by lane (mask lanes are all ones or all zeros).
  static V select(const V& mask, const V& a, const V& b) { return V::blendv(b, a, mask); }
  // a * b + c, fused where the instruction set has FMA (the kernels build with
  // -ffp-contract=off, so only explicit calls like this one fuse).
  static V fma(const V& a, const V& b, const V& c) { return at::vec::fmadd(a, b, c); }
  // Whether any lane of a comparison mask is set (zero_mask has a bit per lane that is 0).
  static bool any(const V& mask) { return mask.zero_mask() != (1 << V::size()) - 1; }
};

namespace cpu {

// float for float/float16/bfloat16, double for double.
template <typename scalar_t>
using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// Rows are processed in tiles of at most kTile elements, converted to acc_t on the stack.
constexpr int64_t kTile = 256;

// The length of the flat tile at element p of rows of `cols` (the walk ends at `end`): kTile, or
// less where a row of kTile or more ends, so that a long row's tiles are its own.
inline int64_t tile_length(int64_t p, int64_t end, int64_t cols) {
  const int64_t n = std::min(kTile, end - p);
  return cols >= kTile ? std::min(n, cols - p % cols) : n;
}

// Rows per parallel chunk: enough elements that a thread's chunk outweighs its start-up cost.
inline int64_t row_grain(int64_t row_elements) {
  return std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(row_elements, 1));
}

// A read-only tile: points into the tensor when it already holds acc_t, else converts.
template <typename scalar_t>
struct InputTile {
  using acc = acc_t<scalar_t>;
  alignas(64) acc buffer[kTile];
  const acc* load(const scalar_t* src, int64_t n) {
    if constexpr (std::is_same_v<scalar_t, acc>) {
      return src;
    } else {
      at::vec::convert(src, buffer, n);
      return buffer;
    }
  }
};

// Calls f(row, i, m) for each row that flat elements [first, first + n) of rows of `cols`
// overlap: its elements are i .. i + m - 1 of that range.
template <typename F>
inline void for_each_row_segment(int64_t first, int64_t n, int64_t cols, const F& f) {
  for (int64_t i = 0, r = first / cols, j = first % cols; i < n; ++r, j = 0) {
    const int64_t m = std::min(cols - j, n - i);
    f(r, i, m);
    i += m;
  }
}

// An input as csrc/op_library.h's broadcast_rows makes it: `rows` rows of `cols` elements, cols
// being the event's size or 1 (one value for a whole row); row r of the output reads row r % rows.
// The kernels walk the output's (R, E) elements flat, in tiles of kTile, whole vectors even where
// rows are short (an event of 10 would otherwise be a scalar tail per row; of 1, a row a value).
template <typename scalar_t>
struct RowInput {
  using acc = acc_t<scalar_t>;
  const scalar_t* data;
  int64_t rows, cols;
  explicit RowInput(const at::Tensor& t)
      : data(t.const_data_ptr<scalar_t>()), rows(std::max<int64_t>(t.size(0), 1)), cols(t.size(1)) {}
  // Flat elements [first, first + n) of the output's (out_rows, out_cols), as acc_t: in place
  // when the input is whole, else gathered row segment by row segment into the tile.
  const acc* load_flat(InputTile<scalar_t>& tile, int64_t first, int64_t n, int64_t out_rows, int64_t out_cols) const {
    if (rows == out_rows && cols == out_cols) return tile.load(data + first, n);
    for_each_row_segment(first, n, out_cols, [&](int64_t r, int64_t i, int64_t m) {
      const scalar_t* row = data + (r % rows) * cols;
      if (cols == 1) {
        std::fill_n(tile.buffer + i, m, acc(row[0]));
      } else {
        at::vec::convert(row + (first + i - r * out_cols), tile.buffer + i, m);
      }
    });
    return tile.buffer;
  }
};

// A write-only tile: begin() gives where to write acc_t values, finish() converts them out.
template <typename scalar_t>
struct OutputTile {
  using acc = acc_t<scalar_t>;
  alignas(64) acc buffer[kTile];
  scalar_t* dst = nullptr;
  int64_t n = 0;
  acc* begin(scalar_t* dst_, int64_t n_) {
    dst = dst_;
    n = n_;
    if constexpr (std::is_same_v<scalar_t, acc>) {
      return dst_;
    } else {
      return buffer;
    }
  }
  void finish() {
    if constexpr (!std::is_same_v<scalar_t, acc>) at::vec::convert(buffer, dst, n);
  }
};

template <typename T>
struct is_vectorized : std::false_type {};
template <typename T>
struct is_vectorized<Vectorized<T>> : std::true_type {};

template <typename T, typename acc>
inline T load(const acc* p) {
  if constexpr (is_vectorized<T>::value) {
    return T::loadu(p);
  } else {
    return *p;
  }
}

template <typename T, typename acc>
inline void store(const T& v, acc* p) {
  if constexpr (is_vectorized<T>::value) {
    v.store(p);
  } else {
    *p = v;
  }
}

// Calls body(T{}, i) with T = Vectorized<acc> for every full vector of [0, n), then with T = acc
// for the remaining elements. The body is a generic lambda, so one body serves both.
template <typename acc, typename Body>
inline void vectorized_loop(int64_t n, const Body& body) {
  using V = Vectorized<acc>;
  int64_t i = 0;
  for (; i + V::size() <= n; i += V::size()) body(V(), i);
  for (; i < n; ++i) body(acc(), i);
}

// A running sum fed by vectors and scalars.
template <typename acc>
struct RowSum {
  Vectorized<acc> vector_sum = Vectorized<acc>(acc(0));
  acc scalar_sum = 0;
  void add(const Vectorized<acc>& v) { vector_sum = vector_sum + v; }
  void add(acc v) { scalar_sum += v; }
  acc total() const {
    return at::vec::vec_reduce_all<acc>([](auto a, auto b) { return a + b; }, vector_sum) + scalar_sum;
  }
};

template <typename acc>
inline acc sum_of(const acc* p, int64_t n) {
  if (n < Vectorized<acc>::size()) {  // no vector to reduce (a short row's segment): RowSum's sum, quicker
    acc sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += p[i];
    return acc(0) + sum;
  }
  RowSum<acc> sum;
  vectorized_loop<acc>(n, [&](auto t, int64_t i) { sum.add(load<decltype(t)>(p + i)); });
  return sum.total();
}

// Flat elements [first, first + n) of rows of `cols`: the row sums of `terms` added into out[r].
template <typename acc>
inline void add_row_sums(const acc* terms, int64_t first, int64_t n, int64_t cols, acc* out) {
  if (cols == 1) {  // a row an element (event_dims=0): the same sums, without a call per element
    vectorized_loop<acc>(n, [&](auto t, int64_t i) {
      using T = decltype(t);
      store(load<T>(out + first + i) + (T(acc(0)) + load<T>(terms + i)), out + first + i);
    });
    return;
  }
  for_each_row_segment(first, n, cols, [&](int64_t r, int64_t i, int64_t m) { out[r] += sum_of(terms + i, m); });
}

// Flat elements [first, first + n) of rows of `cols`: each row's value per_row[r] for each of its
// elements (an incoming gradient of a row sum).
template <typename acc>
inline void spread_rows(const acc* per_row, int64_t first, int64_t n, int64_t cols, acc* out) {
  if (cols == 1) return void(std::copy_n(per_row + first, n, out));
  for_each_row_segment(first, n, cols, [&](int64_t r, int64_t i, int64_t m) { std::fill_n(out + i, m, per_row[r]); });
}

// The in-kernel noise of one call, read in order: fill() writes the normals of any range of flat
// elements, generating whole blocks and keeping the last one, so that consecutive ranges never
// generate a block twice.
template <typename acc>
struct NoiseStream {
  explicit NoiseStream(PhiloxSeed seed_) : seed(seed_) {}
  PhiloxSeed seed;
  int64_t cached = -1;  // the block held in `block`
  alignas(64) float block[4][kNoiseLanes];

  void fill(int64_t first, int64_t n, acc* out) {
    for (int64_t i = 0; i < n;) {
      const int64_t b = (first + i) / kNoiseBlock, start = (first + i) % kNoiseBlock;
      const int64_t count = std::min<int64_t>(kNoiseBlock - start, n - i);
      if constexpr (std::is_same_v<acc, float>) {
        if (count == kNoiseBlock) {  // a whole block: straight into the output
          noise_block(seed, uint64_t(b) * kNoiseLanes, *reinterpret_cast<float (*)[4][kNoiseLanes]>(out + i));
          i += count;
          continue;
        }
      }
      if (b != cached) {
        noise_block(seed, uint64_t(b) * kNoiseLanes, block);
        cached = b;
      }
      std::copy_n(&block[0][0] + start, count, out + i);
      i += count;
    }
  }
};

inline PhiloxSeed read_seed(const at::Tensor& seed) {
  const int64_t* s = seed.data_ptr<int64_t>();
  return {uint64_t(s[0]), uint64_t(s[1])};
}

}  // namespace cpu
}  // namespace CPU_CAPABILITY
}  // namespace aevb_fast
