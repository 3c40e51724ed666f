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
  AEVB_HOST_DEVICE static float exp(float x) { return ::expf(x); }
  AEVB_HOST_DEVICE static float expm1(float x) { return ::expm1f(x); }
  AEVB_HOST_DEVICE static float log1p(float x) { return ::log1pf(x); }
  AEVB_HOST_DEVICE static float abs(float x) { return ::fabsf(x); }
  // max(x, 0) that lets NaN through.
  AEVB_HOST_DEVICE static float relu(float x) { return x < 0.0f ? 0.0f : x; }
};

template <>
struct Math<double> {
  AEVB_HOST_DEVICE static double exp(double x) { return ::exp(x); }
  AEVB_HOST_DEVICE static double expm1(double x) { return ::expm1(x); }
  AEVB_HOST_DEVICE static double log1p(double x) { return ::log1p(x); }
  AEVB_HOST_DEVICE static double abs(double x) { return ::fabs(x); }
  AEVB_HOST_DEVICE static double relu(double x) { return x < 0.0 ? 0.0 : x; }
};

// ---- Gaussian posterior: sample and KL to N(0, I) -------------------------------------------

// sigma = exp(logvar / 2)
template <typename T>
AEVB_HOST_DEVICE T std_from_logvar(T logvar) {
  return Math<T>::exp(T(0.5) * logvar);
}

// Twice the KL summand: mu^2 + exp(logvar) - 1 - logvar, with expm1 so that logvar near 0 keeps
// its precision.
template <typename T>
AEVB_HOST_DEVICE T twice_kl_term(T mu, T logvar) {
  return mu * mu + (Math<T>::expm1(logvar) - logvar);
}

// d KL / d logvar = (exp(logvar) - 1) / 2;  d KL / d mu = mu.
template <typename T>
AEVB_HOST_DEVICE T kl_grad_logvar(T logvar) {
  return T(0.5) * Math<T>::expm1(logvar);
}

// ---- Bernoulli likelihood from logits ------------------------------------------------------

// log(1 + exp(l)) without overflow for any finite l.
template <typename T>
AEVB_HOST_DEVICE T softplus(T logit) {
  return Math<T>::relu(logit) + Math<T>::log1p(Math<T>::exp(-Math<T>::abs(logit)));
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
