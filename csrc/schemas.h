#pragma once
// Every operator's schema, written once: registered as torch.ops.aevb_fast by csrc/ops.cpp and,
// in the development build of the CUDA emulation, as torch.ops.aevb_fast_emulated.
#include <torch/library.h>

namespace aevb_fast {

inline void define_schemas(torch::Library& m) {
  // z = mu + exp(logvar / 2) * eps, z of shape (num_samples, *mu.shape). Exactly one of eps
  // (shape of z) and seed (int64 [key, offset]; noise drawn in the kernel) is given.
  m.def("reparameterize(Tensor mu, Tensor logvar, Tensor? eps, Tensor? seed, int num_samples) -> Tensor");
  m.def("reparameterize_backward(Tensor grad_z, Tensor mu, Tensor logvar, Tensor? eps, Tensor? seed) "
        "-> (Tensor grad_mu, Tensor grad_logvar)");
  // KL(N(mu, exp(logvar)) || N(0, I)) summed over the last dim.
  m.def("gaussian_kl(Tensor mu, Tensor logvar) -> Tensor");
  m.def("gaussian_kl_backward(Tensor grad_kl, Tensor mu, Tensor logvar) "
        "-> (Tensor grad_mu, Tensor grad_logvar)");
  // reparameterize and gaussian_kl in one pass.
  m.def("sample_and_kl(Tensor mu, Tensor logvar, Tensor? eps, Tensor? seed, int num_samples) "
        "-> (Tensor z, Tensor kl)");
  m.def("sample_and_kl_backward(Tensor grad_z, Tensor grad_kl, Tensor mu, Tensor logvar, Tensor? eps, "
        "Tensor? seed) -> (Tensor grad_mu, Tensor grad_logvar)");
  // sum over the trailing event_dims of x * logits - softplus(logits); x is broadcast over the
  // leading (sample) dims of logits.
  m.def("bernoulli_log_prob(Tensor x, Tensor logits, int event_dims) -> Tensor");
  m.def("bernoulli_log_prob_backward(Tensor grad, Tensor x, Tensor logits, int event_dims) -> Tensor");
  // Diagonal Gaussian with learned variance, summed over the trailing event_dims.
  m.def("gaussian_log_prob(Tensor x, Tensor mean, Tensor logvar, int event_dims) -> Tensor");
  m.def("gaussian_log_prob_backward(Tensor grad, Tensor x, Tensor mean, Tensor logvar, int event_dims) "
        "-> (Tensor grad_mean, Tensor grad_logvar)");
}

}  // namespace aevb_fast
