#pragma once
// The device's own math functions, on the host, for the emulated kernels (AEVB_EMULATED_DEVICE_MATH,
// set for csrc/cuda/*.cu in the emulated build): csrc/common/math.h takes its GPU-only branches
// (CUDA's expf, ex2.approx.ftz, __fdividef) there too, so the CUDA tests run those lines on every CI run,
// and a value the GPU computes differently from the CPU differs in the emulation as well.
//
// These model the dominant error of each, not its bits:
// - expf: the host's expf (glibc: under 1 ulp; CUDA's is at most 2).
// - exp2_approx_ftz(p) (ex2.approx.ftz.f32): 2^p rounded once (the hardware: about 2 ulp), 0
//   below 2^-126. Its callers round their product p to float first, as on the GPU, where most of
//   the error of exp(x) by this route comes from.
// - __fdividef(a, b) = a * rcp.approx(b): 0 for 2^126 < |b| < 2^128, as CUDA documents, else the
//   product with a rounded reciprocal (the GPU's: 2 ulp at most).
#include <cfloat>
#include <cmath>

inline float emulated_exp2_approx_ftz(float p) {
  const double r = std::exp2(double(p));
  if (r < double(FLT_MIN)) return 0.0f;
  return r > double(FLT_MAX) ? INFINITY : float(r);  // a finite double past FLT_MAX: UB as a float
}

inline float __fdividef(float a, float b) {
  const float magnitude = std::fabs(b);
  if (magnitude > std::ldexp(1.0f, 126) && std::isfinite(magnitude)) return 0.0f;
  return a * (1.0f / b);
}
