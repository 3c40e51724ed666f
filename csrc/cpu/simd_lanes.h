#pragma once
// Vector registers as lanes of the RNG in csrc/common/philox.h: FloatLanes and UintLanes give a
// vector of 8 (AVX2) or 16 (AVX-512) lanes the primitives that the one-lane code uses on
// float/uint32_t (IEEE multiply, add, fused multiply-add and square root one instruction at a time, so every lane
// rounds as the scalar code does; 32 x 32 -> 64-bit products from vpmuludq on the even and odd
// lanes). philox_normals_simd then draws a noise block with the shared formulas. GCC did not
// vectorise the one-lane loops well (64-bit vpmullq for the products, scalar tails).
#include <cstdint>

#include <immintrin.h>

#include "common/philox.h"

namespace aevb_fast {
inline namespace CPU_CAPABILITY {
namespace cpu {

#if defined(CPU_CAPABILITY_AVX512)
#define AEVB_SIMD_LANES 16
struct UintLanes {
  __m512i v;
  UintLanes() = default;
  UintLanes(uint32_t x) : v(_mm512_set1_epi32(int(x))) {}  // NOLINT: a broadcast, like the scalar
  explicit UintLanes(__m512i x) : v(x) {}
  static UintLanes lane_index() {
    return UintLanes(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  }
};
struct FloatLanes {
  __m512 v;
  FloatLanes() = default;
  FloatLanes(float x) : v(_mm512_set1_ps(x)) {}  // NOLINT
  explicit FloatLanes(__m512 x) : v(x) {}
  void store(float* p) const { _mm512_storeu_ps(p, v); }
};
inline UintLanes operator+(UintLanes a, UintLanes b) { return UintLanes(_mm512_add_epi32(a.v, b.v)); }
inline UintLanes operator-(UintLanes a, UintLanes b) { return UintLanes(_mm512_sub_epi32(a.v, b.v)); }
inline UintLanes operator&(UintLanes a, UintLanes b) { return UintLanes(_mm512_and_si512(a.v, b.v)); }
inline UintLanes operator|(UintLanes a, UintLanes b) { return UintLanes(_mm512_or_si512(a.v, b.v)); }
inline UintLanes operator^(UintLanes a, UintLanes b) { return UintLanes(_mm512_xor_si512(a.v, b.v)); }
inline UintLanes operator~(UintLanes a) { return UintLanes(_mm512_ternarylogic_epi32(a.v, a.v, a.v, 0x55)); }
inline UintLanes operator>>(UintLanes a, int n) { return UintLanes(_mm512_srli_epi32(a.v, n)); }
inline UintLanes operator<<(UintLanes a, int n) { return UintLanes(_mm512_slli_epi32(a.v, n)); }
inline void mul_hi_lo(UintLanes a, uint32_t m, UintLanes& hi, UintLanes& lo) {
  const __m512i mv = _mm512_set1_epi32(int(m));
  const __m512i even = _mm512_mul_epu32(a.v, mv);                       // lanes 0, 2, ...: 64-bit
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a.v, 32), mv);  // lanes 1, 3, ...
  hi = UintLanes(_mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd));
  lo = UintLanes(_mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32)));
}
// Philox's words in 64-bit slots (the upper half is ignored): a product is then one vpmuludq for
// both words and one shift, instead of two, three shifts and two blends on packed lanes.
struct SlotLanes {
  __m512i v;
  SlotLanes() = default;
  SlotLanes(uint32_t x) : v(_mm512_set1_epi32(int(x))) {}  // NOLINT
  explicit SlotLanes(__m512i x) : v(x) {}
  // Counters first + start, first + start + 2, ...: the even (start 0) or odd (1) lanes.
  static SlotLanes counters(uint32_t first, int start) {
    const __m512i step = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    return SlotLanes(_mm512_add_epi64(_mm512_set1_epi64(int64_t(first) + start), step));
  }
};
inline SlotLanes operator^(SlotLanes a, SlotLanes b) { return SlotLanes(_mm512_xor_si512(a.v, b.v)); }
inline void mul_hi_lo(SlotLanes a, uint32_t m, SlotLanes& hi, SlotLanes& lo) {
  lo = SlotLanes(_mm512_mul_epu32(a.v, _mm512_set1_epi32(int(m))));
  hi = SlotLanes(_mm512_srli_epi64(lo.v, 32));
}
// The words of the even and the odd lanes, packed into 32-bit lanes in counter order.
inline UintLanes interleave(SlotLanes even, SlotLanes odd) {
  return UintLanes(_mm512_mask_blend_epi32(0xAAAA, even.v, _mm512_slli_epi64(odd.v, 32)));
}
inline FloatLanes mul_rn(FloatLanes a, FloatLanes b) { return FloatLanes(_mm512_mul_ps(a.v, b.v)); }
inline FloatLanes add_rn(FloatLanes a, FloatLanes b) { return FloatLanes(_mm512_add_ps(a.v, b.v)); }
inline FloatLanes fma_rn(FloatLanes a, FloatLanes b, FloatLanes c) { return FloatLanes(_mm512_fmadd_ps(a.v, b.v, c.v)); }
inline FloatLanes sqrt_rn(FloatLanes a) { return FloatLanes(_mm512_sqrt_ps(a.v)); }
inline UintLanes float_bits(FloatLanes a) { return UintLanes(_mm512_castps_si512(a.v)); }
inline FloatLanes bits_float(UintLanes a) { return FloatLanes(_mm512_castsi512_ps(a.v)); }
inline FloatLanes int_to_float(UintLanes a) { return FloatLanes(_mm512_cvtepi32_ps(a.v)); }
inline UintLanes float_to_int(FloatLanes a) { return UintLanes(_mm512_cvttps_epi32(a.v)); }

#elif defined(CPU_CAPABILITY_AVX2)
#define AEVB_SIMD_LANES 8
struct UintLanes {
  __m256i v;
  UintLanes() = default;
  UintLanes(uint32_t x) : v(_mm256_set1_epi32(int(x))) {}  // NOLINT
  explicit UintLanes(__m256i x) : v(x) {}
  static UintLanes lane_index() { return UintLanes(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }
};
struct FloatLanes {
  __m256 v;
  FloatLanes() = default;
  FloatLanes(float x) : v(_mm256_set1_ps(x)) {}  // NOLINT
  explicit FloatLanes(__m256 x) : v(x) {}
  void store(float* p) const { _mm256_storeu_ps(p, v); }
};
inline UintLanes operator+(UintLanes a, UintLanes b) { return UintLanes(_mm256_add_epi32(a.v, b.v)); }
inline UintLanes operator-(UintLanes a, UintLanes b) { return UintLanes(_mm256_sub_epi32(a.v, b.v)); }
inline UintLanes operator&(UintLanes a, UintLanes b) { return UintLanes(_mm256_and_si256(a.v, b.v)); }
inline UintLanes operator|(UintLanes a, UintLanes b) { return UintLanes(_mm256_or_si256(a.v, b.v)); }
inline UintLanes operator^(UintLanes a, UintLanes b) { return UintLanes(_mm256_xor_si256(a.v, b.v)); }
inline UintLanes operator~(UintLanes a) { return UintLanes(_mm256_xor_si256(a.v, _mm256_set1_epi32(-1))); }
inline UintLanes operator>>(UintLanes a, int n) { return UintLanes(_mm256_srli_epi32(a.v, n)); }
inline UintLanes operator<<(UintLanes a, int n) { return UintLanes(_mm256_slli_epi32(a.v, n)); }
inline void mul_hi_lo(UintLanes a, uint32_t m, UintLanes& hi, UintLanes& lo) {
  const __m256i mv = _mm256_set1_epi32(int(m));
  const __m256i even = _mm256_mul_epu32(a.v, mv);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a.v, 32), mv);
  hi = UintLanes(_mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA));
  lo = UintLanes(_mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA));
}
struct SlotLanes {
  __m256i v;
  SlotLanes() = default;
  SlotLanes(uint32_t x) : v(_mm256_set1_epi32(int(x))) {}  // NOLINT
  explicit SlotLanes(__m256i x) : v(x) {}
  static SlotLanes counters(uint32_t first, int start) {
    return SlotLanes(_mm256_add_epi64(_mm256_set1_epi64x(int64_t(first) + start), _mm256_setr_epi64x(0, 2, 4, 6)));
  }
};
inline SlotLanes operator^(SlotLanes a, SlotLanes b) { return SlotLanes(_mm256_xor_si256(a.v, b.v)); }
inline void mul_hi_lo(SlotLanes a, uint32_t m, SlotLanes& hi, SlotLanes& lo) {
  lo = SlotLanes(_mm256_mul_epu32(a.v, _mm256_set1_epi32(int(m))));
  hi = SlotLanes(_mm256_srli_epi64(lo.v, 32));
}
inline UintLanes interleave(SlotLanes even, SlotLanes odd) {
  return UintLanes(_mm256_blend_epi32(even.v, _mm256_slli_epi64(odd.v, 32), 0xAA));
}
inline FloatLanes mul_rn(FloatLanes a, FloatLanes b) { return FloatLanes(_mm256_mul_ps(a.v, b.v)); }
inline FloatLanes add_rn(FloatLanes a, FloatLanes b) { return FloatLanes(_mm256_add_ps(a.v, b.v)); }
inline FloatLanes fma_rn(FloatLanes a, FloatLanes b, FloatLanes c) { return FloatLanes(_mm256_fmadd_ps(a.v, b.v, c.v)); }
inline FloatLanes sqrt_rn(FloatLanes a) { return FloatLanes(_mm256_sqrt_ps(a.v)); }
inline UintLanes float_bits(FloatLanes a) { return UintLanes(_mm256_castps_si256(a.v)); }
inline FloatLanes bits_float(UintLanes a) { return FloatLanes(_mm256_castsi256_ps(a.v)); }
inline FloatLanes int_to_float(UintLanes a) { return FloatLanes(_mm256_cvtepi32_ps(a.v)); }
inline UintLanes float_to_int(FloatLanes a) { return UintLanes(_mm256_cvttps_epi32(a.v)); }
#endif

#if defined(AEVB_SIMD_LANES)
// philox_normals<kNoiseLanes> on vector lanes: the same counters, words and normals.
inline void philox_normals_simd(PhiloxSeed seed, uint64_t counter, float (&out)[4][kNoiseLanes]) {
  static_assert(kNoiseLanes % AEVB_SIMD_LANES == 0, "a noise block is whole vectors");
  const uint32_t key0 = uint32_t(seed.key), key1 = uint32_t(seed.key >> 32);
  for (int h = 0; h < kNoiseLanes; h += AEVB_SIMD_LANES) {
    // counter is a multiple of kNoiseLanes, so the low word does not carry within a block.
    const uint64_t first = counter + uint64_t(h);
    SlotLanes c[2][4];  // [even, odd lanes][word]
    for (int parity = 0; parity < 2; ++parity) {
      c[parity][0] = SlotLanes::counters(uint32_t(first), parity);
      c[parity][1] = SlotLanes(uint32_t(first >> 32));
      c[parity][2] = SlotLanes(uint32_t(seed.offset));
      c[parity][3] = SlotLanes(uint32_t(seed.offset >> 32));
      philox_rounds(c[parity][0], c[parity][1], c[parity][2], c[parity][3], key0, key1);
    }
    FloatLanes n[4];
    box_muller<FloatLanes, UintLanes>(interleave(c[0][0], c[1][0]), interleave(c[0][1], c[1][1]), n[0], n[1]);
    box_muller<FloatLanes, UintLanes>(interleave(c[0][2], c[1][2]), interleave(c[0][3], c[1][3]), n[2], n[3]);
    for (int w = 0; w < 4; ++w) n[w].store(&out[w][h]);
  }
}
#endif

// The normals of block `counter / kNoiseLanes`: on vector lanes where this build has them.
inline void noise_block(PhiloxSeed seed, uint64_t counter, float (&out)[4][kNoiseLanes]) {
#if defined(AEVB_SIMD_LANES)
  philox_normals_simd(seed, counter, out);
#else
  philox_normals<kNoiseLanes>(seed, counter, out);
#endif
}

}  // namespace cpu
}  // namespace CPU_CAPABILITY
}  // namespace aevb_fast
