#pragma once
// The scalar math of every operator, written once. Each formula is a template over T, where T is
// float or double (CPU tail loops and CUDA) or at::vec::Vectorized<float/double> (CPU vector
// loops); the primitives come from Math<T>, specialised here for scalars and in
// csrc/cpu/loops.h for vectors.
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common/macros.h"

namespace aevb_fast {
inline namespace AEVB_ISA_NAMESPACE {

template <typename T>
struct Math;

template <>
struct Math<float> {
  static constexpr bool kDouble = false;
  AEVB_HOST_DEVICE static float round(float x) { return ::rintf(x); }
  // 2^k for integral k in [-126, 127] (clamped there: exp_from_reduction replaces the results
  // outside), built from the exponent bits: ldexpf costs a dozen GPU instructions (issue 30).
  AEVB_HOST_DEVICE static float pow2(float k) {
    const uint32_t biased = uint32_t(int(::fminf(::fmaxf(k, -126.0f), 127.0f)) + 127);
#if defined(__CUDA_ARCH__)
    return __uint_as_float(biased << 23);
#else
    return __builtin_bit_cast(float, biased << 23);
#endif
  }
  AEVB_HOST_DEVICE static float abs(float x) { return ::fabsf(x); }
  // max(x, 0) that lets NaN through.
  AEVB_HOST_DEVICE static float relu(float x) { return x < 0.0f ? 0.0f : x; }
  AEVB_HOST_DEVICE static float select(bool mask, float a, float b) { return mask ? a : b; }
  AEVB_HOST_DEVICE static float fma(float a, float b, float c) { return a * b + c; }
  AEVB_HOST_DEVICE static bool any(bool mask) { return mask; }
};

template <>
struct Math<double> {
  static constexpr bool kDouble = true;
  AEVB_HOST_DEVICE static double round(double x) { return ::rint(x); }
  AEVB_HOST_DEVICE static double pow2(double k) {  // as for float, k in [-1022, 1023]
    const uint64_t biased = uint64_t(int64_t(::fmin(::fmax(k, -1022.0), 1023.0)) + 1023);
#if defined(__CUDA_ARCH__)
    return __longlong_as_double(int64_t(biased << 52));
#else
    return __builtin_bit_cast(double, biased << 52);
#endif
  }
  AEVB_HOST_DEVICE static double abs(double x) { return ::fabs(x); }
  AEVB_HOST_DEVICE static double relu(double x) { return x < 0.0 ? 0.0 : x; }
  AEVB_HOST_DEVICE static double select(bool mask, double a, double b) { return mask ? a : b; }
  AEVB_HOST_DEVICE static double fma(double a, double b, double c) { return a * b + c; }
  AEVB_HOST_DEVICE static bool any(bool mask) { return mask; }
};

// c0 + x * (c1 + x * (c2 + ...)): a polynomial in Horner form.
template <typename T>
AEVB_HOST_DEVICE T horner(T, double c) {
  return T(c);
}

template <typename T, typename... Rest>
AEVB_HOST_DEVICE T horner(T x, double c, Rest... rest) {
  return Math<T>::fma(x, horner(x, rest...), T(c));
}

// ---- exp, and exp(x) - 1 - x, from one range reduction --------------------------------------
// x = k ln2 + r with integral k and |r| <= ln2/2 (Cody-Waite: ln2 split in two so that k * hi is
// exact), exp(r) = 1 + r + q(r) by its Taylor series (to r^7 in float, r^13 in double: exact to
// the dtype on that interval). Written with the Math<T> primitives only, so the CPU vectorises it
// and CUDA runs the same code; faster than the libraries' vector exp and expm1.
template <typename T>
struct ExpReduction {
  T k;  // integral
  T r;  // x - k ln2
  T q;  // exp(r) - 1 - r
};

template <typename T>
AEVB_HOST_DEVICE ExpReduction<T> reduce_exp(T x) {
  using M = Math<T>;
  ExpReduction<T> e;
  if constexpr (M::kDouble) {
    e.k = M::round(x * T(1.4426950408889634));
    e.r = M::fma(e.k, T(-1.9082149292705877e-10), M::fma(e.k, T(-0.6931471803691238), x));
    e.q = e.r * e.r *
          horner(e.r, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040, 1.0 / 40320, 1.0 / 362880,
                 1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600, 1.0 / 6227020800);
  } else {
    e.k = M::round(x * T(1.44269504f));
    e.r = M::fma(e.k, T(2.12194440e-4f), M::fma(e.k, T(-0.693359375f), x));
    e.q = e.r * e.r * horner(e.r, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040);
  }
  return e;
}

// exp(x) = 2^k (1 + r + q): inf past the dtype's range, 0 below its normal range, NaN for NaN.
template <typename T>
AEVB_HOST_DEVICE T exp_from_reduction(T x, const ExpReduction<T>& e) {
  using M = Math<T>;
  constexpr double kMax = M::kDouble ? 709.782712893384 : 88.7228317;  // log(largest finite)
  constexpr double kMin = M::kDouble ? -707.0 : -86.0;                 // 2^(k - 1) stays normal
  // 2^(k - 1) * 2 keeps k = 128 (float) or 1024 (double) representable for x just below kMax.
  T result = M::pow2(e.k - T(1)) * (T(2) * ((e.r + e.q) + T(1)));
  // Rare: fix the lanes outside [kMin, kMax] (NaN fails both comparisons) only when there are any.
  if (M::any((x > T(kMax)) | (x < T(kMin)) | (x != x))) {
    result = M::select(x > T(kMax), T(INFINITY), result);
    result = M::select(x < T(kMin), T(0), result);
    result = M::select(x != x, x, result);
  }
  return result;
}

// exp(x). On the GPU in float it is CUDA's own expf (a range reduction and the hardware's 2^x):
// at most 2 ulp where ours has 1, in 10 instructions where ours takes 28, and the likelihoods'
// kernels are short of instructions there (issue 30). It also keeps the values ours flushes to 0
// below -86 (denormals). The CPU keeps the polynomial; the emulated device takes this branch with
// the host's expf (csrc/emulation/device_math.h), so the CUDA tests run it without a GPU.
template <typename T>
AEVB_HOST_DEVICE T exponential(T x) {
#if defined(AEVB_DEVICE_MATH)
  if constexpr (std::is_same_v<T, float>) {
    return ::expf(x);
  }
#endif
  return exp_from_reduction(x, reduce_exp(x));
}

// exp(x) - 1 - x without the cancellation of the direct form near 0: for |x| <= ln2/2 (k = 0,
// r = x) it is q itself. On the GPU in float, the same series for |x| <= ln2/2 and CUDA's expf
// beyond (exponential above): the KL row sum's hot loop (4 elements) went from 533 to 453 SASS
// instructions (benchmarks/results/sass_sm90.md; issue 30).
template <typename T>
AEVB_HOST_DEVICE T exp_minus_1_minus_x(T x) {
#if defined(AEVB_DEVICE_MATH)
  if constexpr (std::is_same_v<T, float>) {
    const float series = x * x * horner(x, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040);
    return ::fabsf(x) <= 0.3465735903f ? series : (::expf(x) - 1.0f) - x;
  }
#endif
  const ExpReduction<T> e = reduce_exp(x);
  const T direct = (exp_from_reduction(x, e) - T(1)) - x;
  return Math<T>::select(e.k == T(0), e.q, direct);
}

// log(1 + t) for t in [0, 1], accurate for tiny t.
// float: t p(t), p a degree-9 polynomial fitted to log(1 + t) / t on [0, 1] for relative error
// (5e-9; evaluated in float32 about 2 ulp: 1.8 with FMA, 2.2 without), with no division: on the
// GPU a division is a dozen instructions (issue 30). The double's series, in float to s^17, came
// to 2.6 ulp.
// double: 2 atanh(s) with s = t / (2 + t) <= 1/3, by its odd series to s^33.
template <typename T>
AEVB_HOST_DEVICE T log1p_unit_interval(T t) {
  if constexpr (Math<T>::kDouble) {
    const T s = t / (T(2) + t);
    const T s2 = s * s;
    const T series = horner(s2, 1.0, 1.0 / 3, 1.0 / 5, 1.0 / 7, 1.0 / 9, 1.0 / 11, 1.0 / 13, 1.0 / 15, 1.0 / 17,
                            1.0 / 19, 1.0 / 21, 1.0 / 23, 1.0 / 25, 1.0 / 27, 1.0 / 29, 1.0 / 31, 1.0 / 33);
    return T(2) * s * series;
  } else {
    return t * horner(t, 1.0, -0.4999990165233612, 0.3332996368408203, -0.24954134225845337, 0.1967593878507614,
                      -0.15305590629577637, 0.10603651404380798, -0.056959498673677444, 0.01985144428908825,
                      -0.0032440212089568377);
  }
}

// ---- Gaussian posterior: sample and KL to N(0, I) -------------------------------------------

// sigma = exp(logvar / 2)
template <typename T>
AEVB_HOST_DEVICE T std_from_logvar(T logvar) {
  return exponential(T(0.5) * logvar);
}

// Twice the KL summand: mu^2 + exp(logvar) - 1 - logvar.
template <typename T>
AEVB_HOST_DEVICE T twice_kl_term(T mu, T logvar) {
  return mu * mu + exp_minus_1_minus_x(logvar);
}

// d KL / d logvar = (exp(logvar) - 1) / 2;  d KL / d mu = mu.
template <typename T>
AEVB_HOST_DEVICE T kl_grad_logvar(T logvar) {
  return T(0.5) * (exp_minus_1_minus_x(logvar) + logvar);
}

// ---- KL to a learned diagonal Gaussian prior N(prior_mu, exp(prior_logvar)) ------------------
// 2 KL = w^2 + exp(d) - 1 - d with w = (mu - prior_mu) exp(-prior_logvar / 2) and
// d = logvar - prior_logvar: twice_kl_term(w, d), the N(0, I) formula in standardised terms
// (squaring w, not multiplying by exp(-prior_logvar), keeps prior log-variances down to -80
// finite in float32, as in the Gaussian likelihood).
// Gradients: d/dmu = w exp(-prior_logvar / 2) = -d/dprior_mu;  d/dlogvar = kl_grad_logvar(d);
//            d/dprior_logvar = -kl_grad_logvar(d) - w^2 / 2.
template <typename T>
struct PriorTerms {
  T w, d, inv_std;  // inv_std = exp(-prior_logvar / 2)
};

template <typename T>
AEVB_HOST_DEVICE PriorTerms<T> prior_terms(T mu, T logvar, T prior_mu, T prior_logvar) {
  const T inv_std = exponential(T(-0.5) * prior_logvar);
  return {(mu - prior_mu) * inv_std, logvar - prior_logvar, inv_std};
}

// ---- Bernoulli likelihood from logits ------------------------------------------------------
// Each formula is written from e = exp(-|l|), log(1 + e) and (1 or e) / (1 + e). kStored16: the
// inputs are bfloat16 or float16 (computed in float; the gradient is stored in 16 bits, the row
// sums in float32). There the GPU takes e as 2^(-|l| log2 e) from the hardware's ex2.approx.ftz
// and the division from __fdividef: the bfloat16 per-row backward's hot loop (8 elements) went
// from 393 SASS instructions with expf and IEEE division to 218 (benchmarks/results/sass_sm90.md;
// issue 30: the 16-bit kernels were short of instructions, not of bandwidth). Both stay within
// about 2.4e-7 of e and 2 ulp of the quotient, as expf and the division do in absolute terms; for
// a tiny e the relative error grows (about 2 + 0.6 |l| ulp, from rounding the product), a
// negligible amount next to the other terms. The .ftz form flushes e below 2^-126 (|l| > 87.3) to 0, as the CPU's
// exponential does below -86, and saves __expf's 3 instructions an element that keep subnormal results. log(1 + e)
// keeps its polynomial: __logf's absolute error (2^-21) would show in the float32 row sums. The CPU computes everything
// in full float either way; the emulated device runs these branches with host stand-ins for the hardware's functions
// (csrc/emulation/device_math.h).

#if defined(AEVB_DEVICE_MATH)
// 2^p by the hardware's approximation (MUFU.EX2: about 2 ulp), results below 2^-126 flushed to 0.
AEVB_HOST_DEVICE float exp2_approx_ftz(float p) {
#if defined(__CUDA_ARCH__)
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(p));
  return r;
#else
  return emulated_exp2_approx_ftz(p);
#endif
}
#endif

template <typename T, bool kStored16>
AEVB_HOST_DEVICE T exp_minus_abs(T logit) {
#if defined(AEVB_DEVICE_MATH)
  if constexpr (kStored16 && std::is_same_v<T, float>) {
    return exp2_approx_ftz(::fabsf(logit) * -1.44269504f);
  }
#endif
  return exponential(-Math<T>::abs(logit));
}

// sigmoid(l) from e = exp(-|l|): 1 / (1 + e) for l >= 0, e / (1 + e) below (where it keeps
// exp(l)'s relative accuracy).
template <typename T, bool kStored16 = false>
AEVB_HOST_DEVICE T sigmoid_from_exp_minus_abs(T logit, T e) {
  const T numerator = Math<T>::select(logit < T(0), e, T(1));
#if defined(AEVB_DEVICE_MATH)
  if constexpr (kStored16 && std::is_same_v<T, float>) {
    return __fdividef(numerator, 1.0f + e);
  }
#endif
  return numerator / (T(1) + e);
}

// log p(x | l) = x * l - softplus(l), softplus(l) = max(l, 0) + log(1 + exp(-|l|)): no overflow
// for any finite l.
template <typename T, bool kStored16 = false>
AEVB_HOST_DEVICE T bernoulli_log_prob_term(T x, T logit) {
  return x * logit - (Math<T>::relu(logit) + log1p_unit_interval(exp_minus_abs<T, kStored16>(logit)));
}

// 1 / (1 + exp(-l)); exp(-l) overflowing to inf gives 0, never NaN.
template <typename T>
AEVB_HOST_DEVICE T sigmoid(T logit) {
  return T(1) / (T(1) + exponential(-logit));
}

// d/dl = x - sigmoid(l), by the same formula as bernoulli_log_prob_and_grad (so the per-row and
// summed forms' gradients agree to the bit).
template <typename T, bool kStored16 = false>
AEVB_HOST_DEVICE T bernoulli_grad_logit(T x, T logit) {
  return x - sigmoid_from_exp_minus_abs<T, kStored16>(logit, exp_minus_abs<T, kStored16>(logit));
}

// log p(x | l) and d/dl together, from one exponential e = exp(-|l|) (the summed form and the
// linear head write both).
template <typename T>
struct BernoulliTermGrad {
  T term, grad;
};

template <typename T, bool kStored16 = false>
AEVB_HOST_DEVICE BernoulliTermGrad<T> bernoulli_log_prob_and_grad(T x, T logit) {
  const T e = exp_minus_abs<T, kStored16>(logit);
  const T softplus_l = Math<T>::relu(logit) + log1p_unit_interval(e);
  return {x * logit - softplus_l, x - sigmoid_from_exp_minus_abs<T, kStored16>(logit, e)};
}

// ---- Gaussian likelihood with learned diagonal variance --------------------------------------

constexpr double kLog2Pi = 1.8378770664093454836;

// The standardised residual w = (x - mean) * exp(-logvar / 2); squaring w rather than
// multiplying (x - mean)^2 by exp(-logvar) keeps logvar down to -80 finite in float32.
template <typename T>
AEVB_HOST_DEVICE T standardized_residual(T x, T mean, T inv_std) {
  return (x - mean) * inv_std;
}

// log p(x | mean, logvar) + log(2 pi) / 2 = -(logvar + w^2) / 2; the constant is added per row.
template <typename T>
AEVB_HOST_DEVICE T gaussian_log_prob_term(T logvar, T w) {
  return T(-0.5) * (logvar + w * w);
}

// d/dmean = w * exp(-logvar / 2);  d/dlogvar = (w^2 - 1) / 2.
template <typename T>
AEVB_HOST_DEVICE T gaussian_grad_mean(T w, T inv_std) {
  return w * inv_std;
}

template <typename T>
AEVB_HOST_DEVICE T gaussian_grad_logvar(T w) {
  return T(0.5) * (w * w - T(1));
}

// The paper's Gaussian decoder head, mean = sigmoid(a): d/da = d/dmean * mean * (1 - mean).
template <typename T>
AEVB_HOST_DEVICE T sigmoid_grad_from_output(T grad_mean, T mean) {
  return grad_mean * mean * (T(1) - mean);
}

}  // namespace AEVB_ISA_NAMESPACE
}  // namespace aevb_fast
