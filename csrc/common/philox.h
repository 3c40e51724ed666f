#pragma once
// The counter-based RNG shared by the CPU and CUDA kernels: Philox4x32-10 (Salmon et al., 2011)
// followed by a Box-Muller transform written with our own polynomials, so that a given
// (seed, offset, element index) produces the same normal on every back end.
//
// The stream's elements come in blocks of 64 from 16 counters: element i is word (i % 64) / 16 of
// counter 16 (i / 64) + i % 16. Counter c = (lo(c), hi(c), lo(offset), hi(offset)),
// key = (lo(seed), hi(seed)). L samples of P parameters: sample l starts at a block boundary,
// parameter p of it being element l * ceil(P / 64) * 64 + p (noise_element), so that a GPU thread
// that owns 4 counters' worth of parameters draws every sample from whole counters.
//
// The float arithmetic is IEEE multiply, add, fused multiply-add and square root, each written out
// (mul_rn, add_rn, fma_rn, sqrt_rn): the CPU kernels are built with -ffp-contract=off, the vector
// lanes call the instructions one by one (AVX2 and AVX-512 have FMA), the scalar code calls fmaf,
// and the device code uses __fmul_rn/__fadd_rn/__fmaf_rn, so every back end rounds the same way.
// The polynomials are fused multiply-adds (issue 30: on the GPU a separate multiply and add cost
// a third more instructions per normal, for the same bits everywhere).
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

// a * b + c rounded once.
AEVB_HOST_DEVICE float fma_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return ::fmaf(a, b, c);
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

// Every function below is written once for one lane (F = float, U = uint32_t: the GPU, and the CPU
// lane loops) and for a vector of lanes (csrc/cpu/simd_lanes.h: AVX2 and AVX-512 registers with the
// same primitives), so that the noise is bit-identical on every back end. The primitives for one
// lane:

// The 32 x 32 -> 64-bit product a * m, as its high and low words. On the GPU as two 32-bit
// multiplies: nvcc's 64-bit product (IMAD.WIDE) came with an add per multiply, a quarter more
// instructions in Philox (issue 30).
AEVB_HOST_DEVICE void mul_hi_lo(uint32_t a, uint32_t m, uint32_t& hi, uint32_t& lo) {
#if defined(__CUDA_ARCH__)
  hi = __umulhi(a, m);
  lo = a * m;
#else
  const uint64_t p = uint64_t(m) * uint64_t(a);
  hi = uint32_t(p >> 32);
  lo = uint32_t(p);
#endif
}
// The bits read as a signed int32, converted to float (exact for the small values used here).
AEVB_HOST_DEVICE float int_to_float(uint32_t bits) { return float(int32_t(bits)); }
// Truncation toward zero, as the bits of an int32.
AEVB_HOST_DEVICE uint32_t float_to_int(float x) { return uint32_t(int32_t(x)); }
AEVB_HOST_DEVICE float sqrt_rn(float x) { return ::sqrtf(x); }

// Philox4x32-10 on the counter (c0, c1, c2, c3), replaced by the output.
template <typename U>
AEVB_HOST_DEVICE void philox_rounds(U& c0, U& c1, U& c2, U& c3, uint32_t key0, uint32_t key1) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  AEVB_UNROLL
  for (int round = 0; round < 10; ++round) {
    U hi0, lo0, hi1, lo1;
    mul_hi_lo(c0, kMul0, hi0, lo0);
    mul_hi_lo(c2, kMul1, hi1, lo1);
    c0 = hi1 ^ c1 ^ U(key0);
    c1 = lo1;
    c2 = hi0 ^ c3 ^ U(key1);
    c3 = lo0;
    key0 += kWeyl0;
    key1 += kWeyl1;
  }
}

// Philox4x32-10 on N lanes: c[w][lane] holds word w of each lane's counter, replaced by the output.
// The words are kept in 64-bit slots (upper half zero), as the CPU's vector lanes keep them.
template <int N>
AEVB_HOST_DEVICE void philox4x32_10(uint64_t (&c)[4][N], uint32_t key0, uint32_t key1) {
  for (int lane = 0; lane < N; ++lane) {
    uint32_t c0 = uint32_t(c[0][lane]), c1 = uint32_t(c[1][lane]), c2 = uint32_t(c[2][lane]), c3 = uint32_t(c[3][lane]);
    philox_rounds(c0, c1, c2, c3, key0, key1);
    c[0][lane] = c0;
    c[1][lane] = c1;
    c[2][lane] = c2;
    c[3][lane] = c3;
  }
}

// Natural log for u in [2^-25, 1]: the Cephes single-precision polynomial on [sqrt(1/2), sqrt(2)).
template <typename F, typename U>
AEVB_HOST_DEVICE F log_unit_interval(F u) {
  // u = m * 2^exponent with m in [sqrt(1/2), sqrt(2)), found by integer arithmetic on the bits
  // (no branches, so that it runs on vector lanes).
  constexpr uint32_t kSqrtHalfBits = 0x3f3504f3u, kOneBits = 0x3f800000u;
  const U shifted = float_bits(u) + U(kOneBits - kSqrtHalfBits);
  const F e = int_to_float((shifted >> 23) - U(127u));  // the exponent
  const F m = bits_float((shifted & U(0x007fffffu)) + U(kSqrtHalfBits));
  const F x = add_rn(m, F(-1.0f));
  const F z = mul_rn(x, x);
  F y = F(7.0376836292e-2f);
  y = fma_rn(y, x, F(-1.1514610310e-1f));
  y = fma_rn(y, x, F(1.1676998740e-1f));
  y = fma_rn(y, x, F(-1.2420140846e-1f));
  y = fma_rn(y, x, F(1.4249322787e-1f));
  y = fma_rn(y, x, F(-1.6668057665e-1f));
  y = fma_rn(y, x, F(2.0000714765e-1f));
  y = fma_rn(y, x, F(-2.4999993993e-1f));
  y = fma_rn(y, x, F(3.3333331174e-1f));
  y = mul_rn(mul_rn(y, x), z);
  y = fma_rn(e, F(-2.12194440e-4f), y);
  y = fma_rn(F(-0.5f), z, y);
  return fma_rn(e, F(0.693359375f), add_rn(x, y));
}

// cos(2 pi v) and sin(2 pi v) for v in [0, 1): reduce to the nearest quarter turn, then Taylor
// polynomials on |x| <= pi/4 (truncation error below 3e-8).
template <typename F, typename U>
AEVB_HOST_DEVICE void sincos_turns(F v, F& cos_out, F& sin_out) {
  const U q = float_to_int(fma_rn(v, F(4.0f), F(0.5f)));  // the quarter, 0..4
  const F x = mul_rn(fma_rn(int_to_float(q), F(-0.25f), v), F(6.28318530718f));
  const F x2 = mul_rn(x, x);
  F s = F(2.75573192240e-6f);
  s = fma_rn(s, x2, F(-1.98412698413e-4f));
  s = fma_rn(s, x2, F(8.33333333333e-3f));
  s = fma_rn(s, x2, F(-1.66666666667e-1f));
  const F sin_x = fma_rn(mul_rn(s, x2), x, x);
  F c = F(2.48015873016e-5f);
  c = fma_rn(c, x2, F(-1.38888888889e-3f));
  c = fma_rn(c, x2, F(4.16666666667e-2f));
  c = fma_rn(c, x2, F(-0.5f));
  const F cos_x = fma_rn(c, x2, F(1.0f));
  // angle = quarter * pi/2 + x: swap for odd quarters, then flip signs (branch-free):
  // cos is negative in quarters 1 and 2, sin in quarters 2 and 3.
  const U odd = U(0u) - (q & U(1u));  // all ones in odd quarters
  const U cos_bits = float_bits(cos_x), sin_bits = float_bits(sin_x);
  const U cos_abs = (sin_bits & odd) | (cos_bits & ~odd);
  const U sin_abs = (cos_bits & odd) | (sin_bits & ~odd);
  cos_out = bits_float(cos_abs ^ (((q + U(1u)) & U(2u)) << 30));
  sin_out = bits_float(sin_abs ^ ((q & U(2u)) << 30));
}

// Two standard normals from two 32-bit words (Box-Muller).
template <typename F, typename U>
AEVB_HOST_DEVICE void box_muller(U a, U b, F& n0, F& n1) {
  // 24 random bits each.
  const F u = fma_rn(int_to_float(a >> 8), F(5.9604644775390625e-8f), F(2.98023223876953125e-8f));  // (0, 1)
  const F v = mul_rn(int_to_float(b >> 8), F(5.9604644775390625e-8f));                              // [0, 1)
  const F radius = sqrt_rn(mul_rn(F(-2.0f), log_unit_interval<F, U>(u)));
  F c, s;
  sincos_turns<F, U>(v, c, s);
  n0 = mul_rn(radius, c);
  n1 = mul_rn(radius, s);
}

constexpr int kNoiseLanes = 16;               // counters per block
constexpr int kNoiseBlock = 4 * kNoiseLanes;  // elements per block

// The stream element of parameter p of sample l, with `params` parameters a sample.
AEVB_HOST_DEVICE uint64_t noise_element(int64_t l, int64_t params, int64_t p) {
  return uint64_t(l) * uint64_t((params + kNoiseBlock - 1) / kNoiseBlock * kNoiseBlock) + uint64_t(p);
}

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
    box_muller<float, uint32_t>(uint32_t(c[0][lane]), uint32_t(c[1][lane]), out[0][lane], out[1][lane]);
    box_muller<float, uint32_t>(uint32_t(c[2][lane]), uint32_t(c[3][lane]), out[2][lane], out[3][lane]);
  }
}

}  // namespace AEVB_ISA_NAMESPACE
}  // namespace aevb_fast
