// reparameterize, gaussian_kl and sample_and_kl: one kernel pair for all three (csrc/cpu/ and
// csrc/cuda/sample_and_kl). Their schemas, checks, shapes and autograd.
#include <ATen/ATen.h>

#include "op_library.h"

// mu, logvar: (R, J). eps: (L, R, J), or undefined to draw noise from seed (int64 [key, offset]).
// Writes z: (L, R, J) (L may be 0) and, if defined, kl: (R) in the accumulation dtype.
AEVB_KERNEL(sample_forward, (const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& eps,
                             const at::Tensor& seed, const at::Tensor& z, const at::Tensor& kl))
// grad_z: (L, R, J); grad_kl: (R) or undefined. Writes grad_mu, grad_logvar: (R, J).
AEVB_KERNEL(sample_backward, (const at::Tensor& grad_z, const at::Tensor& grad_kl, const at::Tensor& mu,
                              const at::Tensor& logvar, const at::Tensor& eps, const at::Tensor& seed,
                              const at::Tensor& grad_mu, const at::Tensor& grad_logvar))

namespace aevb_fast::ops {
namespace {

using Pair = std::tuple<Tensor, Tensor>;

// Checks mu/logvar and the noise source; returns the noise shape (L, *mu.shape).
std::vector<int64_t> check_sample_inputs(const char* op, const Tensor& mu, const Tensor& logvar,
                                         const Optional& eps, const Optional& seed, int64_t num_samples,
                                         bool need_noise) {
  check_float_tensor(op, "mu", mu);
  check_float_tensor(op, "logvar", logvar);
  check_same_dtype_device(op, "logvar", logvar, "mu", mu);
  check_same_shape(op, "logvar", logvar, "mu", mu);
  std::vector<int64_t> z_shape{num_samples};
  z_shape.insert(z_shape.end(), mu.sizes().begin(), mu.sizes().end());
  if (!need_noise) return z_shape;
  TORCH_CHECK_VALUE(num_samples >= 1, op, ": num_samples must be at least 1, got ", num_samples);
  TORCH_CHECK_VALUE(eps.has_value() != seed.has_value(), op,
                    ": exactly one of eps (given noise) and seed (noise drawn in the kernel) must be given");
  if (eps.has_value()) {
    check_float_tensor(op, "eps", *eps);
    check_same_dtype_device(op, "eps", *eps, "mu", mu);
    TORCH_CHECK_VALUE(eps->sizes() == at::IntArrayRef(z_shape), op, ": eps must have shape ",
                      at::IntArrayRef(z_shape), " (num_samples, *mu.shape), got ", eps->sizes());
  } else {
    TORCH_CHECK_VALUE(seed->scalar_type() == at::kLong && seed->numel() == 2, op,
                      ": seed must be an int64 tensor of 2 elements [key, offset], got ", seed->scalar_type(),
                      " of shape ", seed->sizes());
    TORCH_CHECK_VALUE(seed->device() == mu.device(), op, ": seed is on ", seed->device(), " but mu is on ",
                      mu.device(), "; they must be on the same device");
  }
  return z_shape;
}

Tensor noise_rows(const Optional& eps, int64_t num_samples, int64_t rows, int64_t cols) {
  return eps.has_value() ? eps->contiguous().view({num_samples, rows, cols}) : Tensor();
}

Tensor seed_or_undefined(const Optional& seed) { return seed.has_value() ? seed->contiguous() : Tensor(); }

// The leading dims of mu: the shape of the KL.
at::IntArrayRef batch_shape(const Tensor& mu) { return mu.sizes().slice(0, mu.dim() - 1); }

Pair forward(const char* op, const Tensor& mu, const Tensor& logvar, const Optional& eps, const Optional& seed,
             int64_t num_samples, bool need_noise, bool need_kl) {
  const auto z_shape = check_sample_inputs(op, mu, logvar, eps, seed, num_samples, need_noise);
  Tensor z = at::empty(z_shape, mu.options());
  Tensor kl;
  if (need_kl) kl = at::empty(batch_shape(mu), mu.options().dtype(accumulate_dtype(mu.scalar_type())));
  const Tensor mu_rows = as_rows(mu);
  const int64_t rows = mu_rows.size(0), cols = mu_rows.size(1);
  sample_forward(mu.device())(mu_rows, as_rows(logvar), noise_rows(eps, num_samples, rows, cols),
                              seed_or_undefined(seed), z.view({num_samples, rows, cols}),
                              need_kl ? kl.view({rows}) : Tensor());
  return {z, kl};
}

Pair backward(const char* op, const Tensor& grad_z, const Tensor& grad_kl, const Tensor& mu, const Tensor& logvar,
              const Optional& eps, const Optional& seed) {
  const int64_t num_samples = grad_z.dim() == mu.dim() + 1 ? grad_z.size(0) : -1;
  const bool need_noise = num_samples > 0;
  const auto z_shape =
      check_sample_inputs(op, mu, logvar, eps, seed, std::max<int64_t>(num_samples, 0), need_noise);
  check_float_tensor(op, "grad_z", grad_z);
  TORCH_CHECK_VALUE(grad_z.sizes() == at::IntArrayRef(z_shape), op, ": grad_z must have shape ",
                    "(num_samples, *mu.shape), got ", grad_z.sizes(), " for mu of shape ", mu.sizes());
  check_same_dtype_device(op, "grad_z", grad_z, "mu", mu);
  const Tensor mu_rows = as_rows(mu);
  const int64_t rows = mu_rows.size(0), cols = mu_rows.size(1);
  Tensor grad_kl_rows;
  if (grad_kl.defined()) {
    TORCH_CHECK_VALUE(grad_kl.sizes() == batch_shape(mu), op, ": grad_kl must have shape ", batch_shape(mu),
                      " (mu.shape[:-1]), got ", grad_kl.sizes());
    TORCH_CHECK_VALUE(grad_kl.device() == mu.device(), op, ": grad_kl is on ", grad_kl.device(),
                      " but mu is on ", mu.device());
    grad_kl_rows = grad_kl.to(accumulate_dtype(mu.scalar_type())).contiguous().view({rows});
  }
  Tensor grad_mu = at::empty(mu.sizes(), mu.options());
  Tensor grad_logvar = at::empty(mu.sizes(), mu.options());
  sample_backward(mu.device())(grad_z.contiguous().view({z_shape[0], rows, cols}), grad_kl_rows, mu_rows,
                               as_rows(logvar), need_noise ? noise_rows(eps, z_shape[0], rows, cols) : Tensor(),
                               need_noise ? seed_or_undefined(seed) : Tensor(), grad_mu.view({rows, cols}),
                               grad_logvar.view({rows, cols}));
  return {grad_mu, grad_logvar};
}

// ---- the operators ----------------------------------------------------------------------------

Pair sample_and_kl(const Tensor& mu, const Tensor& logvar, const Optional& eps, const Optional& seed,
                   int64_t num_samples) {
  return forward("aevb_fast.sample_and_kl", mu, logvar, eps, seed, num_samples, true, true);
}

Pair sample_and_kl_backward(const Tensor& grad_z, const Tensor& grad_kl, const Tensor& mu, const Tensor& logvar,
                            const Optional& eps, const Optional& seed) {
  return backward("aevb_fast.sample_and_kl_backward", grad_z, grad_kl, mu, logvar, eps, seed);
}

Tensor reparameterize(const Tensor& mu, const Tensor& logvar, const Optional& eps, const Optional& seed,
                      int64_t num_samples) {
  return std::get<0>(forward("aevb_fast.reparameterize", mu, logvar, eps, seed, num_samples, true, false));
}

Pair reparameterize_backward(const Tensor& grad_z, const Tensor& mu, const Tensor& logvar, const Optional& eps,
                             const Optional& seed) {
  return backward("aevb_fast.reparameterize_backward", grad_z, Tensor(), mu, logvar, eps, seed);
}

// The KL alone is the fused kernel with no samples.
Tensor gaussian_kl(const Tensor& mu, const Tensor& logvar) {
  return std::get<1>(forward("aevb_fast.gaussian_kl", mu, logvar, std::nullopt, std::nullopt, 0, false, true));
}

Pair gaussian_kl_backward(const Tensor& grad_kl, const Tensor& mu, const Tensor& logvar) {
  const char* op = "aevb_fast.gaussian_kl_backward";
  check_float_tensor(op, "mu", mu);
  TORCH_CHECK_VALUE(grad_kl.defined(), op, ": grad_kl must be a tensor");
  std::vector<int64_t> empty_z{0};
  empty_z.insert(empty_z.end(), mu.sizes().begin(), mu.sizes().end());
  return backward(op, at::empty(empty_z, mu.options()), grad_kl, mu, logvar, std::nullopt, std::nullopt);
}

// ---- autograd ---------------------------------------------------------------------------------

// d z / d eps = sigma: only when a user's eps requires grad (rare; plain ATen is fine).
Tensor grad_eps(AutogradContext* ctx, const Tensor& grad_z, const Tensor& logvar, const Tensor& eps) {
  if (!eps.defined() || !ctx->needs_input_grad(2)) return Tensor();
  return (grad_z * at::exp(0.5 * logvar)).to(eps.scalar_type());
}

}  // namespace

// In a named namespace: autograd shows the class name (grad_fn=<aevb_fast::ops::GaussianKL>).

struct Reparameterize : torch::autograd::Function<Reparameterize> {
  static Tensor forward(AutogradContext* ctx, const Tensor& mu, const Tensor& logvar, const Optional& eps,
                        const Optional& seed, int64_t num_samples) {
    static const auto op =
        find_op<Tensor(const Tensor&, const Tensor&, const Optional&, const Optional&, int64_t)>("reparameterize");
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->save_for_backward({mu, logvar, eps.value_or(Tensor()), seed.value_or(Tensor())});
    return op.call(mu, logvar, eps, seed, num_samples);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = find_op<Pair(const Tensor&, const Tensor&, const Tensor&, const Optional&,
                                        const Optional&)>("reparameterize_backward");
    const auto saved = ctx->get_saved_variables();
    auto [grad_mu, grad_logvar] =
        op.call(grads[0], saved[0], saved[1], saved_optional(saved[2]), saved_optional(saved[3]));
    return {grad_mu, grad_logvar, grad_eps(ctx, grads[0], saved[1], saved[2]), Tensor(), Tensor()};
  }
};

struct SampleAndKL : torch::autograd::Function<SampleAndKL> {
  static variable_list forward(AutogradContext* ctx, const Tensor& mu, const Tensor& logvar, const Optional& eps,
                               const Optional& seed, int64_t num_samples) {
    static const auto op =
        find_op<Pair(const Tensor&, const Tensor&, const Optional&, const Optional&, int64_t)>("sample_and_kl");
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->save_for_backward({mu, logvar, eps.value_or(Tensor()), seed.value_or(Tensor())});
    auto [z, kl] = op.call(mu, logvar, eps, seed, num_samples);
    return {z, kl};
  }
  // An unused output's gradient arrives as zeros (materialize_grads, the default).
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = find_op<Pair(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                        const Optional&, const Optional&)>("sample_and_kl_backward");
    const auto saved = ctx->get_saved_variables();
    auto [grad_mu, grad_logvar] =
        op.call(grads[0], grads[1], saved[0], saved[1], saved_optional(saved[2]), saved_optional(saved[3]));
    return {grad_mu, grad_logvar, grad_eps(ctx, grads[0], saved[1], saved[2]), Tensor(), Tensor()};
  }
};

struct GaussianKL : torch::autograd::Function<GaussianKL> {
  static Tensor forward(AutogradContext* ctx, const Tensor& mu, const Tensor& logvar) {
    static const auto op = find_op<Tensor(const Tensor&, const Tensor&)>("gaussian_kl");
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->save_for_backward({mu, logvar});
    return op.call(mu, logvar);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = find_op<Pair(const Tensor&, const Tensor&, const Tensor&)>("gaussian_kl_backward");
    const auto saved = ctx->get_saved_variables();
    auto [grad_mu, grad_logvar] = op.call(grads[0], saved[0], saved[1]);
    return {grad_mu, grad_logvar};
  }
};

}  // namespace aevb_fast::ops

AEVB_OPS(m) {
  using namespace aevb_fast::ops;
  // z = mu + exp(logvar / 2) * eps, z of shape (num_samples, *mu.shape). Exactly one of eps
  // (shape of z) and seed (int64 [key, offset]; noise drawn in the kernel) is given.
  m.def("reparameterize(Tensor mu, Tensor logvar, Tensor? eps, Tensor? seed, int num_samples) -> Tensor");
  m.def("reparameterize_backward(Tensor grad_z, Tensor mu, Tensor logvar, Tensor? eps, Tensor? seed) "
        "-> (Tensor grad_mu, Tensor grad_logvar)");
  impl_backends(m, "reparameterize", TORCH_FN(reparameterize));
  impl_backends(m, "reparameterize_backward", TORCH_FN(reparameterize_backward));
  impl_autograd(m, "reparameterize", [](const Tensor& mu, const Tensor& logvar, const Optional& eps,
                                        const Optional& seed, int64_t num_samples) {
    return Reparameterize::apply(mu, logvar, eps, seed, num_samples);
  });

  // KL(N(mu, exp(logvar)) || N(0, I)) summed over the last dim.
  m.def("gaussian_kl(Tensor mu, Tensor logvar) -> Tensor");
  m.def("gaussian_kl_backward(Tensor grad_kl, Tensor mu, Tensor logvar) -> (Tensor grad_mu, Tensor grad_logvar)");
  impl_backends(m, "gaussian_kl", TORCH_FN(gaussian_kl));
  impl_backends(m, "gaussian_kl_backward", TORCH_FN(gaussian_kl_backward));
  impl_autograd(m, "gaussian_kl",
                [](const Tensor& mu, const Tensor& logvar) { return GaussianKL::apply(mu, logvar); });

  // reparameterize and gaussian_kl in one pass.
  m.def("sample_and_kl(Tensor mu, Tensor logvar, Tensor? eps, Tensor? seed, int num_samples) "
        "-> (Tensor z, Tensor kl)");
  m.def("sample_and_kl_backward(Tensor grad_z, Tensor grad_kl, Tensor mu, Tensor logvar, Tensor? eps, "
        "Tensor? seed) -> (Tensor grad_mu, Tensor grad_logvar)");
  impl_backends(m, "sample_and_kl", TORCH_FN(sample_and_kl));
  impl_backends(m, "sample_and_kl_backward", TORCH_FN(sample_and_kl_backward));
  impl_autograd(m, "sample_and_kl", [](const Tensor& mu, const Tensor& logvar, const Optional& eps,
                                       const Optional& seed, int64_t num_samples) {
    auto out = SampleAndKL::apply(mu, logvar, eps, seed, num_samples);
    return std::make_tuple(out[0], out[1]);
  });
}
