#pragma once
// The interface between the device-independent host code (csrc/host_ops.cpp: checks, shapes,
// allocation) and a back end's kernels. Every tensor handed to a kernel is contiguous, on the
// back end's device, already validated, and viewed as the flat shapes given below:
//   R = rows (batch), J / E = elements reduced per row, L = samples, Rx = rows of x.
#include <ATen/core/Tensor.h>

namespace aevb_fast {

struct Kernels {
  // mu, logvar: (R, J). eps: (L, R, J), or undefined to draw noise from seed (int64 [key, offset]).
  // Writes z: (L, R, J) (L may be 0) and, if defined, kl: (R) in the accumulation dtype.
  void (*sample_forward)(const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& eps,
                         const at::Tensor& seed, const at::Tensor& z, const at::Tensor& kl);
  // grad_z: (L, R, J); grad_kl: (R) or undefined. Writes grad_mu, grad_logvar: (R, J).
  void (*sample_backward)(const at::Tensor& grad_z, const at::Tensor& grad_kl, const at::Tensor& mu,
                          const at::Tensor& logvar, const at::Tensor& eps, const at::Tensor& seed,
                          const at::Tensor& grad_mu, const at::Tensor& grad_logvar);
  // x: (Rx, E) with R % Rx == 0, row r of logits pairs with row r % Rx of x. out: (R).
  void (*bernoulli_forward)(const at::Tensor& x, const at::Tensor& logits, const at::Tensor& out);
  // grad: (R). Writes grad_logits: (R, E).
  void (*bernoulli_backward)(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& logits,
                             const at::Tensor& grad_logits);
  void (*gaussian_forward)(const at::Tensor& x, const at::Tensor& mean, const at::Tensor& logvar,
                           const at::Tensor& out);
  void (*gaussian_backward)(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& mean,
                            const at::Tensor& logvar, const at::Tensor& grad_mean,
                            const at::Tensor& grad_logvar);
};

// Declares a back end's kernel functions, with the signatures of the members above, in the
// namespace where it is expanded (aevb_fast::<ISA>::cpu, aevb_fast::cuda).
#define AEVB_DECLARE_KERNELS()                                                                   \
  void sample_forward(const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& eps,     \
                      const at::Tensor& seed, const at::Tensor& z, const at::Tensor& kl);        \
  void sample_backward(const at::Tensor& grad_z, const at::Tensor& grad_kl, const at::Tensor& mu, \
                       const at::Tensor& logvar, const at::Tensor& eps, const at::Tensor& seed,   \
                       const at::Tensor& grad_mu, const at::Tensor& grad_logvar);                 \
  void bernoulli_forward(const at::Tensor& x, const at::Tensor& logits, const at::Tensor& out);  \
  void bernoulli_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& logits,  \
                          const at::Tensor& grad_logits);                                         \
  void gaussian_forward(const at::Tensor& x, const at::Tensor& mean, const at::Tensor& logvar,    \
                        const at::Tensor& out);                                                   \
  void gaussian_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& mean,     \
                         const at::Tensor& logvar, const at::Tensor& grad_mean,                   \
                         const at::Tensor& grad_logvar);

}  // namespace aevb_fast
