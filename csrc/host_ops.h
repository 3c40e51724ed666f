#pragma once
// The operators' host side, shared by every back end: argument checks with named messages,
// output shapes and dtypes, and the flat views that the kernels in `Kernels` expect.
#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include "kernels.h"

namespace aevb_fast {

std::tuple<at::Tensor, at::Tensor> sample_and_kl(const Kernels& k, const at::Tensor& mu,
                                                 const at::Tensor& logvar,
                                                 const std::optional<at::Tensor>& eps,
                                                 const std::optional<at::Tensor>& seed,
                                                 int64_t num_samples);
std::tuple<at::Tensor, at::Tensor> sample_and_kl_backward(
    const Kernels& k, const at::Tensor& grad_z, const at::Tensor& grad_kl, const at::Tensor& mu,
    const at::Tensor& logvar, const std::optional<at::Tensor>& eps,
    const std::optional<at::Tensor>& seed);

at::Tensor reparameterize(const Kernels& k, const at::Tensor& mu, const at::Tensor& logvar,
                          const std::optional<at::Tensor>& eps,
                          const std::optional<at::Tensor>& seed, int64_t num_samples);
std::tuple<at::Tensor, at::Tensor> reparameterize_backward(const Kernels& k, const at::Tensor& grad_z,
                                                           const at::Tensor& mu,
                                                           const at::Tensor& logvar,
                                                           const std::optional<at::Tensor>& eps,
                                                           const std::optional<at::Tensor>& seed);

at::Tensor gaussian_kl(const Kernels& k, const at::Tensor& mu, const at::Tensor& logvar);
std::tuple<at::Tensor, at::Tensor> gaussian_kl_backward(const Kernels& k, const at::Tensor& grad_kl,
                                                        const at::Tensor& mu,
                                                        const at::Tensor& logvar);

at::Tensor bernoulli_log_prob(const Kernels& k, const at::Tensor& x, const at::Tensor& logits,
                              int64_t event_dims);
at::Tensor bernoulli_log_prob_backward(const Kernels& k, const at::Tensor& grad, const at::Tensor& x,
                                       const at::Tensor& logits, int64_t event_dims);

at::Tensor gaussian_log_prob(const Kernels& k, const at::Tensor& x, const at::Tensor& mean,
                             const at::Tensor& logvar, int64_t event_dims);
std::tuple<at::Tensor, at::Tensor> gaussian_log_prob_backward(const Kernels& k,
                                                              const at::Tensor& grad,
                                                              const at::Tensor& x,
                                                              const at::Tensor& mean,
                                                              const at::Tensor& logvar,
                                                              int64_t event_dims);

// The linear heads (csrc/linear_log_prob.cpp): log p(x | head(h @ weight.T + bias)) without the
// logits ever stored whole.
enum class LinearHead { kBernoulli, kSigmoidGaussian };

at::Tensor linear_log_prob(const Kernels& k, LinearHead head, const at::Tensor& x, const at::Tensor& h,
                           const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                           c10::string_view reduction, int64_t chunk_size);
std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_log_prob_backward(
    const Kernels& k, LinearHead head, const at::Tensor& grad, const at::Tensor& x, const at::Tensor& h,
    const at::Tensor& weight, const std::optional<at::Tensor>& bias, int64_t chunk_size);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_log_prob_with_grads(
    const Kernels& k, LinearHead head, const at::Tensor& x, const at::Tensor& h, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, c10::string_view reduction, int64_t chunk_size);

}  // namespace aevb_fast
