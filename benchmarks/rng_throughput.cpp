// The CPU RNG alone: nanoseconds per normal of one noise block (64 normals) drawn in a loop on one
// thread, for one instruction set, with no tensor, memory or call overhead. A development tool
// for issue 12 (the op-level figure is benchmarks/call_overhead.py). Build and run from the
// project's root, for example for AVX2:
//   g++ -std=c++20 -O3 -ffp-contract=off -fno-math-errno -mavx2 -mfma -DCPU_CAPABILITY=AVX2 \
//       -DCPU_CAPABILITY_AVX2 -Icsrc benchmarks/rng_throughput.cpp -o /tmp/rng && /tmp/rng
// (AVX-512: -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -DCPU_CAPABILITY=AVX512
// -DCPU_CAPABILITY_AVX512; no flags and -DCPU_CAPABILITY=DEFAULT: the one-lane loop.)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "cpu/simd_lanes.h"

int main() {
  using namespace aevb_fast;
  const PhiloxSeed seed{123, 456};
  alignas(64) float block[4][kNoiseLanes];
  const int blocks = 1 << 20;
  float checksum = 0;
  std::vector<double> ns;
  for (int round = 0; round < 7; ++round) {
    const auto start = std::chrono::steady_clock::now();
    for (int b = 0; b < blocks; ++b) {
      cpu::noise_block(seed, uint64_t(b) * kNoiseLanes, block);
      checksum += block[0][0];
    }
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    ns.push_back(elapsed.count() * 1e9 / (double(blocks) * kNoiseBlock));
  }
  std::sort(ns.begin(), ns.end());
  std::printf("%.3f ns per normal (median of 7), checksum %g\n", ns[3], checksum);
}
