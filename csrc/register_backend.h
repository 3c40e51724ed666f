#pragma once
// Registers every operator for one back end: the shared host code of host_ops.cpp with that back
// end's kernel table. A back end calls it from its TORCH_LIBRARY_IMPL block:
//   TORCH_LIBRARY_IMPL(aevb_fast, CPU, m) { register_backend<cpu_kernels>(m); }
#include <optional>
#include <string>

#include <torch/library.h>

#include "host_ops.h"

namespace aevb_fast {

template <const Kernels& (*K)(), LinearHead kHead>
void register_linear_head(torch::Library& m, const std::string& name) {
  using Tensor = at::Tensor;
  using Optional = std::optional<at::Tensor>;
  m.impl(name.c_str(), [](const Tensor& x, const Tensor& h, const Tensor& weight, const Optional& bias,
                  c10::string_view reduction, int64_t chunk_size) {
    return linear_log_prob(K(), kHead, x, h, weight, bias, reduction, chunk_size);
  });
  m.impl((name + "_backward").c_str(), [](const Tensor& grad, const Tensor& x, const Tensor& h, const Tensor& weight,
                                const Optional& bias, int64_t chunk_size) {
    return linear_log_prob_backward(K(), kHead, grad, x, h, weight, bias, chunk_size);
  });
  m.impl((name + "_with_grads").c_str(), [](const Tensor& x, const Tensor& h, const Tensor& weight, const Optional& bias,
                                  c10::string_view reduction, int64_t chunk_size) {
    return linear_log_prob_with_grads(K(), kHead, x, h, weight, bias, reduction, chunk_size);
  });
}

template <const Kernels& (*K)()>
void register_backend(torch::Library& m) {
  using Tensor = at::Tensor;
  using Optional = std::optional<at::Tensor>;
  m.impl("reparameterize", [](const Tensor& mu, const Tensor& logvar, const Optional& eps,
                              const Optional& seed, int64_t num_samples) {
    return reparameterize(K(), mu, logvar, eps, seed, num_samples);
  });
  m.impl("reparameterize_backward", [](const Tensor& grad_z, const Tensor& mu, const Tensor& logvar,
                                       const Optional& eps, const Optional& seed) {
    return reparameterize_backward(K(), grad_z, mu, logvar, eps, seed);
  });
  m.impl("gaussian_kl",
         [](const Tensor& mu, const Tensor& logvar) { return gaussian_kl(K(), mu, logvar); });
  m.impl("gaussian_kl_backward", [](const Tensor& grad_kl, const Tensor& mu, const Tensor& logvar) {
    return gaussian_kl_backward(K(), grad_kl, mu, logvar);
  });
  m.impl("sample_and_kl", [](const Tensor& mu, const Tensor& logvar, const Optional& eps,
                             const Optional& seed, int64_t num_samples) {
    return sample_and_kl(K(), mu, logvar, eps, seed, num_samples);
  });
  m.impl("sample_and_kl_backward",
         [](const Tensor& grad_z, const Tensor& grad_kl, const Tensor& mu, const Tensor& logvar,
            const Optional& eps, const Optional& seed) {
           return sample_and_kl_backward(K(), grad_z, grad_kl, mu, logvar, eps, seed);
         });
  m.impl("bernoulli_log_prob", [](const Tensor& x, const Tensor& logits, int64_t event_dims) {
    return bernoulli_log_prob(K(), x, logits, event_dims);
  });
  m.impl("bernoulli_log_prob_backward",
         [](const Tensor& grad, const Tensor& x, const Tensor& logits, int64_t event_dims) {
           return bernoulli_log_prob_backward(K(), grad, x, logits, event_dims);
         });
  m.impl("gaussian_log_prob",
         [](const Tensor& x, const Tensor& mean, const Tensor& logvar, int64_t event_dims) {
           return gaussian_log_prob(K(), x, mean, logvar, event_dims);
         });
  m.impl("gaussian_log_prob_backward", [](const Tensor& grad, const Tensor& x, const Tensor& mean,
                                          const Tensor& logvar, int64_t event_dims) {
    return gaussian_log_prob_backward(K(), grad, x, mean, logvar, event_dims);
  });
  register_linear_head<K, LinearHead::kBernoulli>(m, "linear_bernoulli_log_prob");
  register_linear_head<K, LinearHead::kSigmoidGaussian>(m, "linear_gaussian_log_prob");
}

}  // namespace aevb_fast
