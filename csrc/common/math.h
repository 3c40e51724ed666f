#pragma once
// The scalar math of every operator, written once. Each formula is a template over T, where T is
// float or double (CPU tail loops and CUDA) or at::vec::Vectorized<float/double> (CPU vector
// loops); the primitives come from Math<T>, specialised here for scalars and in
// csrc/cpu/vec_math.h for vectors.
#include <cmath>

#include "common/macros.h"

namespace aevb_fast {
inline namespace AEVB_ISA_NAMESPACE {

template <typename T>
struct Math;

template <>
struct Math<float> {
  static constexpr bool kDouble = false;
  AEVB_HOST_DEVICE static float exp(float x) { return ::expf(x); }
  AEVB_HOST_DEVICE static float abs(float x) { return ::fabsf(x); }
  // max(x, 0) that lets NaN through.
  AEVB_HOST_DEVICE static float relu(float x) { return x < 0.0f ? 0.0f : x; }
  AEVB_HOST_DEVICE static float select(bool mask, float a, float b) { return mask ? a : b; }
};

template <>
struct Math<double> {
  static constexpr bool kDouble = true;
  AEVB_HOST_DEVICE static double exp(double x) { return ::exp(x); }
  AEVB_HOST_DEVICE static double abs(double x) { return ::fabs(x); }
  AEVB_HOST_DEVICE static double relu(double x) { return x < 0.0 ? 0.0 : x; }
  AEVB_HOST_DEVICE static double select(bool mask, double a, double b) { return mask ? a : b; }
};

// c0 + x * (c1 + x * (c2 + ...)): a polynomial in Horner form.
template <typename T>
AEVB_HOST_DEVICE T horner(T, double c) {
  return T(c);
}

template <typename T, typename... Rest>
AEVB_HOST_DEVICE T horner(T x, double c, Rest... rest) {
  return T(c) + x * horner(x, rest...);
}

// exp(x) - 1 - x without the cancellation of the direct form near 0: its Taylor series for
// |x| < 1/2 (to x^9 in float, x^17 in double: exact to the dtype there), exp elsewhere.
// Built from exp and arithmetic only: the vectorised expm1 costs several times exp.
template <typename T>
AEVB_HOST_DEVICE T exp_minus_1_minus_x(T x) {
  T series;
  if constexpr (Math<T>::kDouble) {
    series = horner(x, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040, 1.0 / 40320,
                    1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600,
                    1.0 / 6227020800, 1.0 / 87178291200, 1.0 / 1307674368000,
                    1.0 / 20922789888000, 1.0 / 355687428096000);
  } else {
    series = horner(x, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040, 1.0 / 40320,
                    1.0 / 362880);
  }
  const T direct = (Math<T>::exp(x) - T(1)) - x;
  return Math<T>::select(Math<T>::abs(x) < T(0.5), x * x * series, direct);
}

// log(1 + t) for t in [0, 1], accurate for tiny t: 2 atanh(s) with s = t / (2 + t) <= 1/3,
// by its odd series (to s^17 in float, s^33 in double).
template <typename T>
AEVB_HOST_DEVICE T log1p_unit_interval(T t) {
  const T s = t / (T(2) + t);
  const T s2 = s * s;
  T series;
  if constexpr (Math<T>::kDouble) {
    series = horner(s2, 1.0, 1.0 / 3, 1.0 / 5, 1.0 / 7, 1.0 / 9, 1.0 / 11, 1.0 / 13, 1.0 / 15,
                    1.0 / 17, 1.0 / 19, 1.0 / 21, 1.0 / 23, 1.0 / 25, 1.0 / 27, 1.0 / 29, 1.0 / 31,
                    1.0 / 33);
  } else {
    series = horner(s2, 1.0, 1.0 / 3, 1.0 / 5, 1.0 / 7, 1.0 / 9, 1.0 / 11, 1.0 / 13, 1.0 / 15,
                    1.0 / 17);
  }
  return T(2) * s * series;
}

// ---- Gaussian posterior: sample and KL to N(0, I) -------------------------------------------

// sigma = exp(logvar / 2)
template <typename T>
AEVB_HOST_DEVICE T std_from_logvar(T logvar) {
  return Math<T>::exp(T(0.5) * logvar);
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

// ---- Bernoulli likelihood from logits ------------------------------------------------------

// log(1 + exp(l)) without overflow for any finite l.
template <typename T>
AEVB_HOST_DEVICE T softplus(T logit) {
  return Math<T>::relu(logit) + log1p_unit_interval(Math<T>::exp(-Math<T>::abs(logit)));
}

// log p(x | l) = x * l - softplus(l)
template <typename T>
AEVB_HOST_DEVICE T bernoulli_log_prob_term(T x, T logit) {
  return x * logit - softplus(logit);
}

// d/dl = x - sigmoid(l); exp(-l) overflowing to inf gives sigmoid 0, never NaN.
template <typename T>
AEVB_HOST_DEVICE T bernoulli_grad_logit(T x, T logit) {
  return x - T(1) / (T(1) + Math<T>::exp(-logit));
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

}  // namespace AEVB_ISA_NAMESPACE
}  // namespace aevb_fast
