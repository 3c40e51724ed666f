#pragma once
// Every operator's schema, written once: registered as torch.ops.aevb_fast by csrc/ops.cpp and,
// in the development build of the CUDA emulation, as torch.ops.aevb_fast_emulated.
#include <string>

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
  // The decoder's output layer and its likelihood (csrc/linear_log_prob.cpp): per row of h (or
  // summed, or averaged) log p(x | h @ weight.T + bias), chunk_size rows of logits at a time. The
  // Gaussian head's weight stacks the mean's map (through a sigmoid) over the log-variance's.
  // *_with_grads computes a sum or mean and its gradients in one pass, for autograd.
  for (const char* head : {"bernoulli", "gaussian"}) {
    const std::string name = std::string("linear_") + head + "_log_prob";
    const std::string inputs = "Tensor x, Tensor h, Tensor weight, Tensor? bias";
    m.def((name + "(" + inputs + ", str reduction, int chunk_size) -> Tensor").c_str());
    m.def((name + "_backward(Tensor grad, " + inputs + ", int chunk_size) "
           "-> (Tensor grad_h, Tensor grad_weight, Tensor grad_bias)").c_str());
    m.def((name + "_with_grads(" + inputs + ", str reduction, int chunk_size) "
           "-> (Tensor total, Tensor grad_h, Tensor grad_weight, Tensor grad_bias)").c_str());
  }
}

}  // namespace aevb_fast
