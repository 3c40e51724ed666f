#pragma once
// The device's own math functions, on the host, for the emulated kernels (AEVB_EMULATED_DEVICE_MATH,
// set for csrc/cuda/*.cu in the emulated build): csrc/common/math.h takes its GPU-only branches
// (CUDA's expf, __expf, __fdividef) there too, so the CUDA tests run those lines on every CI run,
// and a value the GPU computes differently from the CPU differs in the emulation as well.
//
// These model the dominant error of each intrinsic, not its bits:
// - expf: the host's expf (glibc: under 1 ulp; CUDA's is at most 2).
// - __expf(x) = ex2.approx(x * log2(e)): the product rounded to float, as on the GPU (the error of
//   2 + 1.17 |x| ulp comes mostly from there), then 2^p rounded once (ex2.approx: about 2 ulp).
// - __fdividef(a, b) = a * rcp.approx(b): 0 for 2^126 < |b| < 2^128, as CUDA documents, else the
//   product with a rounded reciprocal (the GPU's: 2 ulp at most).
#include <cfloat>
#include <cmath>

inline float __expf(float x) {
  const double p = std::exp2(double(x * 1.44269504f));
  return p > double(FLT_MAX) ? INFINITY : float(p);  // a finite double past FLT_MAX: UB as a float
}

inline float __fdividef(float a, float b) {
  const float magnitude = std::fabs(b);
  if (magnitude > std::ldexp(1.0f, 126) && std::isfinite(magnitude)) return 0.0f;
  return a * (1.0f / b);
}
