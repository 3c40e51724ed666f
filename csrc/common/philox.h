#pragma once
// The counter-based RNG shared by the CPU and CUDA kernels: Philox4x32-10 (Salmon et al., 2011)
// followed by a Box-Muller transform written with our own polynomials, so that a given
// (seed, offset, element index) produces the same normal on every back end.
//
// The normal for flat element index i comes from Philox counter i / 4, output lane i % 4.
// Counter = (lo(i/4), hi(i/4), lo(offset), hi(offset)), key = (lo(seed), hi(seed)).
//
// Every function works on N independent lanes at once (N = 1 on the GPU, N = 16 on the CPU so
// that the compiler vectorises the lane loops). The float arithmetic is plain IEEE multiply and
// add, with no fused multiply-add: the CPU kernels are built with -ffp-contract=off and the
// device code uses __fmul_rn/__fadd_rn, so every back end rounds the same way.
#include <cmath>
#include <cstdint>

#include "common/macros.h"

namespace aevb_fast {
inline namespace AEVB_ISA_NAMESPACE {

AEVB_HOST_DEVICE float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

AEVB_HOST_DEVICE float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

AEVB_HOST_DEVICE uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  return __builtin_bit_cast(uint32_t, x);
#endif
}

AEVB_HOST_DEVICE float bits_float(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  return __builtin_bit_cast(float, b);
#endif
}

// The seed of one call, read from the int64 seed tensor [key, offset].
struct PhiloxSeed {
  uint64_t key;
  uint64_t offset;
};

// Philox4x32-10 on N lanes: c[w][lane] holds word w of each lane's counter, replaced by the output.
// The words are kept in 64-bit slots (upper half zero) so that each 32 x 32 -> 64-bit product is
// one vector multiply of the even halves (vpmuludq) when the compiler vectorises the lane loop.
template <int N>
AEVB_HOST_DEVICE void philox4x32_10(uint64_t (&c)[4][N], uint32_t key0, uint32_t key1) {
  constexpr uint64_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  constexpr uint64_t kLow = 0xFFFFFFFFu;
  for (int lane = 0; lane < N; ++lane) {
    uint64_t c0 = c[0][lane], c1 = c[1][lane], c2 = c[2][lane], c3 = c[3][lane];
    uint32_t k0 = key0, k1 = key1;
    for (int round = 0; round < 10; ++round) {
      const uint64_t p0 = kMul0 * uint64_t(uint32_t(c0));  // a 32 x 32 -> 64-bit product
      const uint64_t p1 = kMul1 * uint64_t(uint32_t(c2));
      c0 = (p1 >> 32) ^ c1 ^ k0;
      c1 = p1 & kLow;
      c2 = (p0 >> 32) ^ c3 ^ k1;
      c3 = p0 & kLow;
      k0 += kWeyl0;
      k1 += kWeyl1;
    }
    c[0][lane] = c0;
    c[1][lane] = c1;
    c[2][lane] = c2;
    c[3][lane] = c3;
  }
}

// Natural log for u in [2^-25, 1]: the Cephes single-precision polynomial on [sqrt(1/2), sqrt(2)).
AEVB_HOST_DEVICE float log_unit_interval(float u) {
  // u = m * 2^exponent with m in [sqrt(1/2), sqrt(2)), found by integer arithmetic on the bits
  // (no branches, so that the lane loop vectorises).
  constexpr uint32_t kSqrtHalfBits = 0x3f3504f3u, kOneBits = 0x3f800000u;
  const uint32_t shifted = float_bits(u) + (kOneBits - kSqrtHalfBits);
  const int exponent = int(shifted >> 23) - 127;
  const float m = bits_float((shifted & 0x007fffffu) + kSqrtHalfBits);
  const float x = add_rn(m, -1.0f);
  const float z = mul_rn(x, x);
  float y = 7.0376836292e-2f;
  y = add_rn(mul_rn(y, x), -1.1514610310e-1f);
  y = add_rn(mul_rn(y, x), 1.1676998740e-1f);
  y = add_rn(mul_rn(y, x), -1.2420140846e-1f);
  y = add_rn(mul_rn(y, x), 1.4249322787e-1f);
  y = add_rn(mul_rn(y, x), -1.6668057665e-1f);
  y = add_rn(mul_rn(y, x), 2.0000714765e-1f);
  y = add_rn(mul_rn(y, x), -2.4999993993e-1f);
  y = add_rn(mul_rn(y, x), 3.3333331174e-1f);
  y = mul_rn(mul_rn(y, x), z);
  const float e = float(exponent);
  y = add_rn(y, mul_rn(e, -2.12194440e-4f));
  y = add_rn(y, mul_rn(-0.5f, z));
  return add_rn(add_rn(x, y), mul_rn(e, 0.693359375f));
}

// cos(2 pi v) and sin(2 pi v) for v in [0, 1): reduce to the nearest quarter turn, then Taylor
// polynomials on |x| <= pi/4 (truncation error below 3e-8).
AEVB_HOST_DEVICE void sincos_turns(float v, float& cos_out, float& sin_out) {
  const int quarter = int(add_rn(mul_rn(v, 4.0f), 0.5f));  // 0..4
  const float x = mul_rn(add_rn(v, mul_rn(float(quarter), -0.25f)), 6.28318530718f);
  const float x2 = mul_rn(x, x);
  float s = 2.75573192240e-6f;
  s = add_rn(mul_rn(s, x2), -1.98412698413e-4f);
  s = add_rn(mul_rn(s, x2), 8.33333333333e-3f);
  s = add_rn(mul_rn(s, x2), -1.66666666667e-1f);
  const float sin_x = add_rn(x, mul_rn(mul_rn(s, x2), x));
  float c = 2.48015873016e-5f;
  c = add_rn(mul_rn(c, x2), -1.38888888889e-3f);
  c = add_rn(mul_rn(c, x2), 4.16666666667e-2f);
  c = add_rn(mul_rn(c, x2), -0.5f);
  const float cos_x = add_rn(mul_rn(c, x2), 1.0f);
  // angle = quarter * pi/2 + x: swap for odd quarters, then flip signs (branch-free, so that the
  // lane loop vectorises): cos is negative in quarters 1 and 2, sin in quarters 2 and 3.
  const uint32_t q = uint32_t(quarter);
  const uint32_t odd = 0u - (q & 1u);  // all ones in odd quarters
  const uint32_t cos_bits = float_bits(cos_x), sin_bits = float_bits(sin_x);
  const uint32_t cos_abs = (sin_bits & odd) | (cos_bits & ~odd);
  const uint32_t sin_abs = (cos_bits & odd) | (sin_bits & ~odd);
  cos_out = bits_float(cos_abs ^ (((q + 1u) & 2u) << 30));
  sin_out = bits_float(sin_abs ^ ((q & 2u) << 30));
}

// Two standard normals from two 32-bit words (Box-Muller).
AEVB_HOST_DEVICE void box_muller(uint32_t a, uint32_t b, float& n0, float& n1) {
  // 24 random bits each (converted through int32, which vector units convert directly).
  const float u = add_rn(mul_rn(float(int32_t(a >> 8)), 5.9604644775390625e-8f), 2.98023223876953125e-8f);  // (0, 1)
  const float v = mul_rn(float(int32_t(b >> 8)), 5.9604644775390625e-8f);  // [0, 1)
  const float radius = ::sqrtf(mul_rn(-2.0f, log_unit_interval(u)));
  float c, s;
  sincos_turns(v, c, s);
  n0 = mul_rn(radius, c);
  n1 = mul_rn(radius, s);
}

constexpr int kNoiseLanes = 16;                    // counters per block
constexpr int kNoiseBlock = 4 * kNoiseLanes;       // elements per block

// The normals of counters counter .. counter + N - 1: out[w][lane] comes from word w of counter
// `counter + lane`. With N = kNoiseLanes and counter = 16 b, out is block b in element order.
template <int N>
AEVB_HOST_DEVICE void philox_normals(PhiloxSeed seed, uint64_t counter, float (&out)[4][N]) {
  uint64_t c[4][N];
  for (int lane = 0; lane < N; ++lane) {
    const uint64_t index = counter + uint64_t(lane);
    c[0][lane] = index & 0xFFFFFFFFu;
    c[1][lane] = index >> 32;
    c[2][lane] = seed.offset & 0xFFFFFFFFu;
    c[3][lane] = seed.offset >> 32;
  }
  philox4x32_10<N>(c, uint32_t(seed.key), uint32_t(seed.key >> 32));
  for (int lane = 0; lane < N; ++lane) {
    box_muller(uint32_t(c[0][lane]), uint32_t(c[1][lane]), out[0][lane], out[1][lane]);
    box_muller(uint32_t(c[2][lane]), uint32_t(c[3][lane]), out[2][lane], out[3][lane]);
  }
}

// The normal of one flat element, for a kernel that cannot visit whole counters (it computes a
// counter's four words and one Box-Muller pair to return one of them). The word is picked with
// selects, not an index, so that no array lands in a GPU thread's local memory.
AEVB_HOST_DEVICE float normal_at(PhiloxSeed seed, uint64_t element) {
  const uint64_t counter = element / kNoiseBlock * kNoiseLanes + element % kNoiseLanes;
  const int word = int(element % kNoiseBlock / kNoiseLanes);
  uint64_t c[4][1] = {{counter & 0xFFFFFFFFu}, {counter >> 32}, {seed.offset & 0xFFFFFFFFu},
                      {seed.offset >> 32}};
  philox4x32_10<1>(c, uint32_t(seed.key), uint32_t(seed.key >> 32));
  float n0, n1;
  const bool high_pair = (word & 2) != 0;
  box_muller(uint32_t(high_pair ? c[2][0] : c[0][0]), uint32_t(high_pair ? c[3][0] : c[1][0]), n0, n1);
  return (word & 1) ? n1 : n0;
}

// The normals of the 16 elements first + 16 w + k (w, k = 0..3; first % 4 == 0) into out[w][k]:
// for each k, words w0 + w (w0 = first % 64 / 16) of counter 16 b + first % 16 + k, running on
// into block b + 1 past word 3 (b = first / 64). With w0 = 0 these are exactly the forward's
// four counters (philox_normals<4>, nothing discarded); otherwise the next block's four as well,
// and only the Box-Muller pairs that hold a needed word. Every array index is a compile-time
// constant, so that a GPU thread keeps all of it in registers.
AEVB_HOST_DEVICE void group_normals(PhiloxSeed seed, uint64_t first, float (&out)[4][4]) {
  const uint64_t counter = first / kNoiseBlock * kNoiseLanes + first % kNoiseLanes;
  const int w0 = int(first % kNoiseBlock / kNoiseLanes);
  uint64_t words[2][4][4];  // [block b or b + 1][word][k]
  AEVB_UNROLL
  for (int h = 0; h < 2; ++h) {
    AEVB_UNROLL
    for (int k = 0; k < 4; ++k) {
      const uint64_t index = counter + uint64_t(h * kNoiseLanes + k);
      words[h][0][k] = index & 0xFFFFFFFFu;
      words[h][1][k] = index >> 32;
      words[h][2][k] = seed.offset & 0xFFFFFFFFu;
      words[h][3][k] = seed.offset >> 32;
    }
  }
  philox4x32_10<4>(words[0], uint32_t(seed.key), uint32_t(seed.key >> 32));
  if (w0 != 0) philox4x32_10<4>(words[1], uint32_t(seed.key), uint32_t(seed.key >> 32));
  // Pair p of the sequence (block b words 0-1, 2-3, block b + 1 words 0-1, 2-3) holds words
  // 2p and 2p + 1; element w needs word w0 + w, so pairs w0 / 2 .. (w0 + 3) / 2. Each normal is
  // moved straight to the element that needs it (a predicated move; an intermediate array read
  // with w0 + w would be a run-time index).
  AEVB_UNROLL
  for (int p = 0; p < 4; ++p) {
    if (p < w0 / 2 || p > (w0 + 3) / 2) continue;
    AEVB_UNROLL
    for (int k = 0; k < 4; ++k) {
      float n0, n1;
      box_muller(uint32_t(words[p / 2][2 * (p % 2)][k]), uint32_t(words[p / 2][2 * (p % 2) + 1][k]), n0, n1);
      AEVB_UNROLL
      for (int w = 0; w < 4; ++w) {
        if (w0 + w == 2 * p) out[w][k] = n0;
        if (w0 + w == 2 * p + 1) out[w][k] = n1;
      }
    }
  }
}

}  // namespace AEVB_ISA_NAMESPACE
}  // namespace aevb_fast
