#pragma once
// The CUDA kernels, with the interface of csrc/kernels.h (same arguments as the CPU kernels).
#include <ATen/core/Tensor.h>

#include "kernels.h"

namespace aevb_fast::cuda {
void sample_forward(const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& eps,
                    const at::Tensor& seed, const at::Tensor& z, const at::Tensor& kl);
void sample_backward(const at::Tensor& grad_z, const at::Tensor& grad_kl, const at::Tensor& mu,
                     const at::Tensor& logvar, const at::Tensor& eps, const at::Tensor& seed,
                     const at::Tensor& grad_mu, const at::Tensor& grad_logvar);
void bernoulli_forward(const at::Tensor& x, const at::Tensor& logits, const at::Tensor& out);
void bernoulli_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& logits,
                        const at::Tensor& grad_logits);
void gaussian_forward(const at::Tensor& x, const at::Tensor& mean, const at::Tensor& logvar,
                      const at::Tensor& out);
void gaussian_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& mean,
                       const at::Tensor& logvar, const at::Tensor& grad_mean,
                       const at::Tensor& grad_logvar);
}  // namespace aevb_fast::cuda
