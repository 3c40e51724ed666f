#include "host_ops.h"

#include <ATen/ATen.h>

#include "common/checks.h"

namespace aevb_fast {
namespace {

int64_t product(at::IntArrayRef sizes) {
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  return n;
}

// (..., J) -> (R, J), contiguous.
at::Tensor as_rows(const at::Tensor& t) {
  const int64_t cols = t.size(-1);
  return t.contiguous().view({product(t.sizes().slice(0, t.dim() - 1)), cols});
}

// Checks mu/logvar and the noise source; returns the noise shape (L, *mu.shape).
std::vector<int64_t> check_sample_inputs(const char* op, const at::Tensor& mu,
                                         const at::Tensor& logvar,
                                         const std::optional<at::Tensor>& eps,
                                         const std::optional<at::Tensor>& seed,
                                         int64_t num_samples, bool need_noise) {
  check_float_tensor(op, "mu", mu);
  check_float_tensor(op, "logvar", logvar);
  check_same_dtype_device(op, "logvar", logvar, "mu", mu);
  check_same_shape(op, "logvar", logvar, "mu", mu);
  std::vector<int64_t> z_shape{num_samples};
  z_shape.insert(z_shape.end(), mu.sizes().begin(), mu.sizes().end());
  if (!need_noise) return z_shape;
  TORCH_CHECK_VALUE(num_samples >= 1, op, ": num_samples must be at least 1, got ", num_samples);
  TORCH_CHECK_VALUE(eps.has_value() != seed.has_value(), op,
                    ": exactly one of eps (given noise) and seed (noise drawn in the kernel) "
                    "must be given");
  if (eps.has_value()) {
    check_float_tensor(op, "eps", *eps);
    check_same_dtype_device(op, "eps", *eps, "mu", mu);
    TORCH_CHECK_VALUE(eps->sizes() == at::IntArrayRef(z_shape), op, ": eps must have shape ",
                      at::IntArrayRef(z_shape), " (num_samples, *mu.shape), got ", eps->sizes());
  } else {
    TORCH_CHECK_VALUE(seed->scalar_type() == at::kLong && seed->numel() == 2, op,
                      ": seed must be an int64 tensor of 2 elements [key, offset], got ",
                      seed->scalar_type(), " of shape ", seed->sizes());
    TORCH_CHECK_VALUE(seed->device() == mu.device(), op, ": seed is on ", seed->device(),
                      " but mu is on ", mu.device(), "; they must be on the same device");
  }
  return z_shape;
}

at::Tensor noise_rows(const std::optional<at::Tensor>& eps, int64_t num_samples, int64_t rows,
                      int64_t cols) {
  return eps.has_value() ? eps->contiguous().view({num_samples, rows, cols}) : at::Tensor();
}

at::Tensor seed_or_undefined(const std::optional<at::Tensor>& seed) {
  return seed.has_value() ? seed->contiguous() : at::Tensor();
}

// The leading dims of mu: the shape of the KL.
at::IntArrayRef batch_shape(const at::Tensor& mu) { return mu.sizes().slice(0, mu.dim() - 1); }

std::tuple<at::Tensor, at::Tensor> sample_forward(const char* op, const Kernels& k,
                                                  const at::Tensor& mu, const at::Tensor& logvar,
                                                  const std::optional<at::Tensor>& eps,
                                                  const std::optional<at::Tensor>& seed,
                                                  int64_t num_samples, bool need_noise,
                                                  bool need_kl) {
  const auto z_shape = check_sample_inputs(op, mu, logvar, eps, seed, num_samples, need_noise);
  at::Tensor z = at::empty(z_shape, mu.options());
  at::Tensor kl;
  if (need_kl) kl = at::empty(batch_shape(mu), mu.options().dtype(accumulate_dtype(mu.scalar_type())));
  const at::Tensor mu_rows = as_rows(mu);
  const int64_t rows = mu_rows.size(0), cols = mu_rows.size(1);
  k.sample_forward(mu_rows, as_rows(logvar), noise_rows(eps, num_samples, rows, cols),
                   seed_or_undefined(seed), z.view({num_samples, rows, cols}),
                   need_kl ? kl.view({rows}) : at::Tensor());
  return {z, kl};
}

std::tuple<at::Tensor, at::Tensor> sample_backward(const char* op, const Kernels& k,
                                                   const at::Tensor& grad_z,
                                                   const at::Tensor& grad_kl, const at::Tensor& mu,
                                                   const at::Tensor& logvar,
                                                   const std::optional<at::Tensor>& eps,
                                                   const std::optional<at::Tensor>& seed) {
  const int64_t num_samples = grad_z.dim() == mu.dim() + 1 ? grad_z.size(0) : -1;
  const bool need_noise = num_samples > 0;
  const auto z_shape =
      check_sample_inputs(op, mu, logvar, eps, seed, std::max<int64_t>(num_samples, 0), need_noise);
  check_float_tensor(op, "grad_z", grad_z);
  TORCH_CHECK_VALUE(grad_z.sizes() == at::IntArrayRef(z_shape), op, ": grad_z must have shape ",
                    "(num_samples, *mu.shape), got ", grad_z.sizes(), " for mu of shape ",
                    mu.sizes());
  check_same_dtype_device(op, "grad_z", grad_z, "mu", mu);
  const at::Tensor mu_rows = as_rows(mu);
  const int64_t rows = mu_rows.size(0), cols = mu_rows.size(1);
  at::Tensor grad_kl_rows;
  if (grad_kl.defined()) {
    TORCH_CHECK_VALUE(grad_kl.sizes() == batch_shape(mu), op, ": grad_kl must have shape ",
                      batch_shape(mu), " (mu.shape[:-1]), got ", grad_kl.sizes());
    TORCH_CHECK_VALUE(grad_kl.device() == mu.device(), op, ": grad_kl is on ", grad_kl.device(),
                      " but mu is on ", mu.device());
    grad_kl_rows =
        grad_kl.to(accumulate_dtype(mu.scalar_type())).contiguous().view({rows});
  }
  at::Tensor grad_mu = at::empty(mu.sizes(), mu.options());
  at::Tensor grad_logvar = at::empty(mu.sizes(), mu.options());
  k.sample_backward(grad_z.contiguous().view({z_shape[0], rows, cols}), grad_kl_rows, mu_rows,
                    as_rows(logvar), need_noise ? noise_rows(eps, z_shape[0], rows, cols) : at::Tensor(),
                    need_noise ? seed_or_undefined(seed) : at::Tensor(), grad_mu.view({rows, cols}),
                    grad_logvar.view({rows, cols}));
  return {grad_mu, grad_logvar};
}

// Shapes of a log-likelihood: `target` (logits or mean) is (*sample, *batch, *event) and x is
// (*batch, *event), a trailing part of it. Returns {R, Rx, E}.
struct LogProbShape {
  int64_t rows, x_rows, event;
};

LogProbShape check_log_prob_inputs(const char* op, const at::Tensor& x, const char* target_name,
                                   const at::Tensor& target, int64_t event_dims) {
  check_float_tensor(op, "x", x);
  check_float_tensor(op, target_name, target);
  check_same_dtype_device(op, "x", x, target_name, target);
  TORCH_CHECK_VALUE(event_dims >= 0 && event_dims <= x.dim(), op, ": event_dims must be between 0 ",
                    "and x.dim() = ", x.dim(), ", got ", event_dims);
  const int64_t lead = target.dim() - x.dim();
  TORCH_CHECK_VALUE(lead >= 0 && target.sizes().slice(lead) == x.sizes(), op, ": x has shape ",
                    x.sizes(), " but ", target_name, " has shape ", target.sizes(), "; x must equal ",
                    "the trailing dimensions of ", target_name,
                    " (a leading sample dimension of ", target_name, " is broadcast over x)");
  const int64_t batch_dims = target.dim() - event_dims;
  return {product(target.sizes().slice(0, batch_dims)),
          product(x.sizes().slice(0, x.dim() - event_dims)),
          product(target.sizes().slice(batch_dims))};
}

at::Tensor check_log_prob_grad(const char* op, const at::Tensor& grad, const at::Tensor& target,
                               int64_t event_dims, int64_t rows) {
  TORCH_CHECK_VALUE(grad.defined() && grad.sizes() == target.sizes().slice(0, target.dim() - event_dims),
                    op, ": grad must have the shape of the forward output ",
                    target.sizes().slice(0, target.dim() - event_dims));
  TORCH_CHECK_VALUE(grad.device() == target.device(), op, ": grad is on ", grad.device(),
                    " but the inputs are on ", target.device());
  return grad.to(accumulate_dtype(target.scalar_type())).contiguous().view({rows});
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> sample_and_kl(const Kernels& k, const at::Tensor& mu,
                                                 const at::Tensor& logvar,
                                                 const std::optional<at::Tensor>& eps,
                                                 const std::optional<at::Tensor>& seed,
                                                 int64_t num_samples) {
  return sample_forward("aevb_fast.sample_and_kl", k, mu, logvar, eps, seed, num_samples, true, true);
}

std::tuple<at::Tensor, at::Tensor> sample_and_kl_backward(
    const Kernels& k, const at::Tensor& grad_z, const at::Tensor& grad_kl, const at::Tensor& mu,
    const at::Tensor& logvar, const std::optional<at::Tensor>& eps,
    const std::optional<at::Tensor>& seed) {
  return sample_backward("aevb_fast.sample_and_kl_backward", k, grad_z, grad_kl, mu, logvar, eps,
                         seed);
}

at::Tensor reparameterize(const Kernels& k, const at::Tensor& mu, const at::Tensor& logvar,
                          const std::optional<at::Tensor>& eps,
                          const std::optional<at::Tensor>& seed, int64_t num_samples) {
  return std::get<0>(sample_forward("aevb_fast.reparameterize", k, mu, logvar, eps, seed,
                                    num_samples, true, false));
}

std::tuple<at::Tensor, at::Tensor> reparameterize_backward(const Kernels& k, const at::Tensor& grad_z,
                                                           const at::Tensor& mu,
                                                           const at::Tensor& logvar,
                                                           const std::optional<at::Tensor>& eps,
                                                           const std::optional<at::Tensor>& seed) {
  return sample_backward("aevb_fast.reparameterize_backward", k, grad_z, at::Tensor(), mu, logvar,
                         eps, seed);
}

// The KL alone is the fused kernel with no samples.
at::Tensor gaussian_kl(const Kernels& k, const at::Tensor& mu, const at::Tensor& logvar) {
  return std::get<1>(sample_forward("aevb_fast.gaussian_kl", k, mu, logvar, std::nullopt,
                                    std::nullopt, 0, false, true));
}

std::tuple<at::Tensor, at::Tensor> gaussian_kl_backward(const Kernels& k, const at::Tensor& grad_kl,
                                                        const at::Tensor& mu,
                                                        const at::Tensor& logvar) {
  const char* op = "aevb_fast.gaussian_kl_backward";
  check_float_tensor(op, "mu", mu);
  TORCH_CHECK_VALUE(grad_kl.defined(), op, ": grad_kl must be a tensor");
  std::vector<int64_t> empty_z{0};
  empty_z.insert(empty_z.end(), mu.sizes().begin(), mu.sizes().end());
  return sample_backward(op, k, at::empty(empty_z, mu.options()), grad_kl, mu, logvar,
                         std::nullopt, std::nullopt);
}

at::Tensor bernoulli_log_prob(const Kernels& k, const at::Tensor& x, const at::Tensor& logits,
                              int64_t event_dims) {
  const char* op = "aevb_fast.bernoulli_log_prob";
  const auto s = check_log_prob_inputs(op, x, "logits", logits, event_dims);
  at::Tensor out = at::empty(logits.sizes().slice(0, logits.dim() - event_dims),
                             logits.options().dtype(accumulate_dtype(logits.scalar_type())));
  k.bernoulli_forward(x.contiguous().view({s.x_rows, s.event}),
                      logits.contiguous().view({s.rows, s.event}), out.view({s.rows}));
  return out;
}

at::Tensor bernoulli_log_prob_backward(const Kernels& k, const at::Tensor& grad, const at::Tensor& x,
                                       const at::Tensor& logits, int64_t event_dims) {
  const char* op = "aevb_fast.bernoulli_log_prob_backward";
  const auto s = check_log_prob_inputs(op, x, "logits", logits, event_dims);
  const at::Tensor grad_rows = check_log_prob_grad(op, grad, logits, event_dims, s.rows);
  at::Tensor grad_logits = at::empty(logits.sizes(), logits.options());
  k.bernoulli_backward(grad_rows, x.contiguous().view({s.x_rows, s.event}),
                       logits.contiguous().view({s.rows, s.event}),
                       grad_logits.view({s.rows, s.event}));
  return grad_logits;
}

at::Tensor gaussian_log_prob(const Kernels& k, const at::Tensor& x, const at::Tensor& mean,
                             const at::Tensor& logvar, int64_t event_dims) {
  const char* op = "aevb_fast.gaussian_log_prob";
  const auto s = check_log_prob_inputs(op, x, "mean", mean, event_dims);
  check_float_tensor(op, "logvar", logvar);
  check_same_dtype_device(op, "logvar", logvar, "mean", mean);
  check_same_shape(op, "logvar", logvar, "mean", mean);
  at::Tensor out = at::empty(mean.sizes().slice(0, mean.dim() - event_dims),
                             mean.options().dtype(accumulate_dtype(mean.scalar_type())));
  k.gaussian_forward(x.contiguous().view({s.x_rows, s.event}),
                     mean.contiguous().view({s.rows, s.event}),
                     logvar.contiguous().view({s.rows, s.event}), out.view({s.rows}));
  return out;
}

std::tuple<at::Tensor, at::Tensor> gaussian_log_prob_backward(const Kernels& k,
                                                              const at::Tensor& grad,
                                                              const at::Tensor& x,
                                                              const at::Tensor& mean,
                                                              const at::Tensor& logvar,
                                                              int64_t event_dims) {
  const char* op = "aevb_fast.gaussian_log_prob_backward";
  const auto s = check_log_prob_inputs(op, x, "mean", mean, event_dims);
  check_float_tensor(op, "logvar", logvar);
  check_same_dtype_device(op, "logvar", logvar, "mean", mean);
  check_same_shape(op, "logvar", logvar, "mean", mean);
  const at::Tensor grad_rows = check_log_prob_grad(op, grad, mean, event_dims, s.rows);
  at::Tensor grad_mean = at::empty(mean.sizes(), mean.options());
  at::Tensor grad_logvar = at::empty(mean.sizes(), mean.options());
  k.gaussian_backward(grad_rows, x.contiguous().view({s.x_rows, s.event}),
                      mean.contiguous().view({s.rows, s.event}),
                      logvar.contiguous().view({s.rows, s.event}),
                      grad_mean.view({s.rows, s.event}), grad_logvar.view({s.rows, s.event}));
  return {grad_mean, grad_logvar};
}

}  // namespace aevb_fast
