// reparameterize, gaussian_kl and sample_and_kl: one kernel pair for all three (csrc/cpu/ and
// csrc/cuda/sample_and_kl). Their schemas, checks, shapes and autograd.
#include <ATen/ATen.h>

#include "op_library.h"

// mu, logvar, prior_mu, prior_logvar: (rows, J or 1) blocks as broadcast_rows makes them, the
// prior undefined for N(0, I). eps: (L, R, J), or undefined to draw noise from seed (int64 [key,
// offset]). Writes z: (L, R, J) (L may be 0) and, if defined, kl in the accumulation dtype: (R),
// or (R, J) for the KL of each element.
AEVB_KERNEL(sample_and_kl_forward_kernel,
            (const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& prior_mu, const at::Tensor& prior_logvar,
             const at::Tensor& eps, const at::Tensor& seed, const at::Tensor& z, const at::Tensor& kl))
// grad_z: (L, R, J); grad_kl: (R), (R, J) or undefined. Writes grad_mu, grad_logvar and, with a
// prior, grad_prior_mu, grad_prior_logvar: (R, J).
AEVB_KERNEL(sample_and_kl_backward_kernel,
            (const at::Tensor& grad_z, const at::Tensor& grad_kl, const at::Tensor& mu, const at::Tensor& logvar,
             const at::Tensor& prior_mu, const at::Tensor& prior_logvar, const at::Tensor& eps, const at::Tensor& seed,
             const at::Tensor& grad_mu, const at::Tensor& grad_logvar, const at::Tensor& grad_prior_mu,
             const at::Tensor& grad_prior_logvar))

namespace aevb_fast::ops {
namespace {

using Pair = std::tuple<Tensor, Tensor>;
using Quad = std::tuple<Tensor, Tensor, Tensor, Tensor>;

// mu, logvar and the optional prior, checked, and the kernels' (rows, cols) view of them: cols is
// the product of the last event_dims dims (of the last dim when event_dims is 0: the KL is then
// returned per element).
struct LatentBlocks {
  Tensor mu, logvar, prior_mu, prior_logvar;  // as broadcast_rows blocks
  int64_t rows, cols, event_dims;
  std::vector<int64_t> kl_shape;
};

LatentBlocks check_latents(const char* op, const Tensor& mu, const Tensor& logvar, const Optional& prior_mu,
                           const Optional& prior_logvar, int64_t event_dims) {
  check_float_tensor(op, "mu", mu);
  check_float_tensor(op, "logvar", logvar);
  check_same_dtype_device(op, "logvar", logvar, "mu", mu);
  check_same_shape(op, "logvar", logvar, "mu", mu);
  TORCH_CHECK_VALUE(prior_mu.has_value() == prior_logvar.has_value(), op,
                    ": prior_mu and prior_logvar must be given together (or neither, for N(0, I))");
  if (prior_mu.has_value()) {
    for (const auto& [name, t] : {std::pair{"prior_mu", *prior_mu}, std::pair{"prior_logvar", *prior_logvar}}) {
      check_float_tensor(op, name, t);
      check_same_dtype_device(op, name, t, "mu", mu);
      check_same_shape(op, name, t, "mu", mu);
    }
  }
  TORCH_CHECK_VALUE(event_dims >= 0 && event_dims <= mu.dim(), op,
                    ": event_dims must be between 0 and mu.dim() = ", mu.dim(), ", got ", event_dims);
  const int64_t layout_dims = std::max<int64_t>(event_dims, 1);
  const auto sizes = mu.sizes();
  LatentBlocks l;
  l.mu = broadcast_rows(mu, layout_dims);
  l.logvar = broadcast_rows(logvar, layout_dims);
  if (prior_mu.has_value()) {
    l.prior_mu = broadcast_rows(*prior_mu, layout_dims);
    l.prior_logvar = broadcast_rows(*prior_logvar, layout_dims);
  }
  l.rows = product(sizes.slice(0, mu.dim() - layout_dims));
  l.cols = product(sizes.slice(mu.dim() - layout_dims));
  l.event_dims = event_dims;
  l.kl_shape.assign(sizes.begin(), sizes.begin() + (mu.dim() - event_dims));
  return l;
}

// Checks the noise source; returns the noise shape (L, *mu.shape).
std::vector<int64_t> check_noise(const char* op, const Tensor& mu, const Optional& eps, const Optional& seed,
                                 int64_t num_samples, bool need_noise) {
  std::vector<int64_t> z_shape{num_samples};
  z_shape.insert(z_shape.end(), mu.sizes().begin(), mu.sizes().end());
  if (!need_noise) return z_shape;
  TORCH_CHECK_VALUE(num_samples >= 1, op, ": num_samples must be at least 1, got ", num_samples);
  TORCH_CHECK_VALUE(eps.has_value() != seed.has_value(), op,
                    ": exactly one of eps (given noise) and seed (noise drawn in the kernel) must be given");
  if (eps.has_value()) {
    check_float_tensor(op, "eps", *eps);
    check_same_dtype_device(op, "eps", *eps, "mu", mu);
    TORCH_CHECK_VALUE(eps->sizes() == at::IntArrayRef(z_shape), op, ": eps must have shape ", at::IntArrayRef(z_shape),
                      " (num_samples, *mu.shape), got ", eps->sizes());
  } else {
    TORCH_CHECK_VALUE(seed->scalar_type() == at::kLong && seed->numel() == 2, op,
                      ": seed must be an int64 tensor of 2 elements [key, offset], got ", seed->scalar_type(),
                      " of shape ", seed->sizes());
    TORCH_CHECK_VALUE(seed->device() == mu.device(), op, ": seed is on ", seed->device(), " but mu is on ", mu.device(),
                      "; they must be on the same device");
  }
  return z_shape;
}

Tensor noise_rows(const Optional& eps, int64_t num_samples, int64_t rows, int64_t cols) {
  return eps.has_value() ? eps->contiguous().view({num_samples, rows, cols}) : Tensor();
}

Tensor seed_or_undefined(const Optional& seed) { return seed.has_value() ? seed->contiguous() : Tensor(); }

// The KL in the kernels' layout: (R), or (R, J) per element.
std::vector<int64_t> kl_rows(const LatentBlocks& l) {
  return l.event_dims == 0 ? std::vector<int64_t>{l.rows, l.cols} : std::vector<int64_t>{l.rows};
}

Pair forward(const char* op, const Tensor& mu, const Tensor& logvar, const Optional& prior_mu,
             const Optional& prior_logvar, int64_t event_dims, const Optional& eps, const Optional& seed,
             int64_t num_samples, bool need_noise, bool need_kl) {
  const LatentBlocks l = check_latents(op, mu, logvar, prior_mu, prior_logvar, event_dims);
  const auto z_shape = check_noise(op, mu, eps, seed, num_samples, need_noise);
  Tensor z = at::empty(z_shape, mu.options());
  Tensor kl;
  if (need_kl) kl = at::empty(l.kl_shape, mu.options().dtype(accumulate_dtype(mu.scalar_type())));
  sample_and_kl_forward_kernel(mu.device())(
      l.mu, l.logvar, l.prior_mu, l.prior_logvar, noise_rows(eps, num_samples, l.rows, l.cols), seed_or_undefined(seed),
      z.view({num_samples, l.rows, l.cols}), need_kl ? kl.view(kl_rows(l)) : Tensor());
  return {z, kl};
}

Quad backward(const char* op, const Tensor& grad_z, const Tensor& grad_kl, const Tensor& mu, const Tensor& logvar,
              const Optional& prior_mu, const Optional& prior_logvar, int64_t event_dims, const Optional& eps,
              const Optional& seed) {
  const LatentBlocks l = check_latents(op, mu, logvar, prior_mu, prior_logvar, event_dims);
  const int64_t num_samples = grad_z.dim() == mu.dim() + 1 ? grad_z.size(0) : -1;
  const bool need_noise = num_samples > 0;
  const auto z_shape = check_noise(op, mu, eps, seed, std::max<int64_t>(num_samples, 0), need_noise);
  check_float_tensor(op, "grad_z", grad_z);
  TORCH_CHECK_VALUE(grad_z.sizes() == at::IntArrayRef(z_shape), op, ": grad_z must have shape ",
                    "(num_samples, *mu.shape), got ", grad_z.sizes(), " for mu of shape ", mu.sizes());
  check_same_dtype_device(op, "grad_z", grad_z, "mu", mu);
  Tensor grad_kl_rows;
  if (grad_kl.defined()) {
    TORCH_CHECK_VALUE(grad_kl.sizes() == at::IntArrayRef(l.kl_shape), op, ": grad_kl must have shape ",
                      at::IntArrayRef(l.kl_shape), " (mu.shape[:mu.dim() - event_dims]), got ", grad_kl.sizes());
    TORCH_CHECK_VALUE(grad_kl.device() == mu.device(), op, ": grad_kl is on ", grad_kl.device(), " but mu is on ",
                      mu.device());
    grad_kl_rows = grad_kl.to(accumulate_dtype(mu.scalar_type())).contiguous().view(kl_rows(l));
  }
  const bool prior = prior_mu.has_value();
  Tensor grad_mu = at::empty(mu.sizes(), mu.options());
  Tensor grad_logvar = at::empty(mu.sizes(), mu.options());
  // Without a prior its gradients are empty tensors (an operator returns no None).
  Tensor grad_prior_mu = prior ? at::empty(mu.sizes(), mu.options()) : at::empty({0}, mu.options());
  Tensor grad_prior_logvar = prior ? at::empty(mu.sizes(), mu.options()) : at::empty({0}, mu.options());
  const auto as_block = [&](const Tensor& t) { return prior ? t.view({l.rows, l.cols}) : Tensor(); };
  sample_and_kl_backward_kernel(mu.device())(
      grad_z.contiguous().view({z_shape[0], l.rows, l.cols}), grad_kl_rows, l.mu, l.logvar, l.prior_mu, l.prior_logvar,
      need_noise ? noise_rows(eps, z_shape[0], l.rows, l.cols) : Tensor(),
      need_noise ? seed_or_undefined(seed) : Tensor(), grad_mu.view({l.rows, l.cols}),
      grad_logvar.view({l.rows, l.cols}), as_block(grad_prior_mu), as_block(grad_prior_logvar));
  return {grad_mu, grad_logvar, grad_prior_mu, grad_prior_logvar};
}

// ---- the operators ----------------------------------------------------------------------------

Pair sample_and_kl(const Tensor& mu, const Tensor& logvar, const Optional& eps, const Optional& seed,
                   int64_t num_samples, const Optional& prior_mu, const Optional& prior_logvar, int64_t event_dims) {
  return forward("aevb_fast.sample_and_kl", mu, logvar, prior_mu, prior_logvar, event_dims, eps, seed, num_samples,
                 true, true);
}

Quad sample_and_kl_backward(const Tensor& grad_z, const Tensor& grad_kl, const Tensor& mu, const Tensor& logvar,
                            const Optional& eps, const Optional& seed, const Optional& prior_mu,
                            const Optional& prior_logvar, int64_t event_dims) {
  return backward("aevb_fast.sample_and_kl_backward", grad_z, grad_kl, mu, logvar, prior_mu, prior_logvar, event_dims,
                  eps, seed);
}

Tensor reparameterize(const Tensor& mu, const Tensor& logvar, const Optional& eps, const Optional& seed,
                      int64_t num_samples) {
  return std::get<0>(forward("aevb_fast.reparameterize", mu, logvar, std::nullopt, std::nullopt, 1, eps, seed,
                             num_samples, true, false));
}

Pair reparameterize_backward(const Tensor& grad_z, const Tensor& mu, const Tensor& logvar, const Optional& eps,
                             const Optional& seed) {
  auto grads = backward("aevb_fast.reparameterize_backward", grad_z, Tensor(), mu, logvar, std::nullopt, std::nullopt,
                        1, eps, seed);
  return {std::get<0>(grads), std::get<1>(grads)};
}

// The KL alone is the fused kernel with no samples.
Tensor gaussian_kl(const Tensor& mu, const Tensor& logvar, const Optional& prior_mu, const Optional& prior_logvar,
                   int64_t event_dims) {
  return std::get<1>(forward("aevb_fast.gaussian_kl", mu, logvar, prior_mu, prior_logvar, event_dims, std::nullopt,
                             std::nullopt, 0, false, true));
}

Quad gaussian_kl_backward(const Tensor& grad_kl, const Tensor& mu, const Tensor& logvar, const Optional& prior_mu,
                          const Optional& prior_logvar, int64_t event_dims) {
  const char* op = "aevb_fast.gaussian_kl_backward";
  check_float_tensor(op, "mu", mu);
  TORCH_CHECK_VALUE(grad_kl.defined(), op, ": grad_kl must be a tensor");
  std::vector<int64_t> empty_z{0};
  empty_z.insert(empty_z.end(), mu.sizes().begin(), mu.sizes().end());
  return backward(op, at::empty(empty_z, mu.options()), grad_kl, mu, logvar, prior_mu, prior_logvar, event_dims,
                  std::nullopt, std::nullopt);
}

// ---- autograd ---------------------------------------------------------------------------------

// mu, logvar or a prior in the form the autograd Functions save (op_library.h: saved_form).
Tensor saved_latent(const Tensor& t, int64_t event_dims) { return saved_form(t, std::max<int64_t>(event_dims, 1)); }
Optional saved_latent(const Optional& t, int64_t event_dims) {
  return t.has_value() ? Optional(saved_latent(*t, event_dims)) : std::nullopt;
}

// d z / d eps = sigma: only when a user's eps requires grad (rare; plain ATen is fine).
Tensor grad_eps(AutogradContext* ctx, const Tensor& grad_z, const Tensor& logvar, const Tensor& eps) {
  if (!eps.defined() || !ctx->needs_input_grad(2)) return Tensor();
  return (grad_z * at::exp(0.5 * logvar)).to(eps.scalar_type());
}

// For create_graph=True (op_library.h): the noise of a sampling op's backward, (L, *mu.shape):
// the given eps, or the noise the seed drew. The sampling op's z for mu = 0 and logvar = 0 is that
// noise exactly (sigma = exp(0) = 1).
Tensor noise_of(const Tensor& eps, const Tensor& seed, const Tensor& mu, int64_t num_samples) {
  if (eps.defined()) return eps;
  static const auto op = find_op<decltype(reparameterize)>("reparameterize");
  at::AutoDispatchBelowADInplaceOrView below;
  const Tensor zeros = at::zeros({}, mu.options().dtype(accumulate_dtype(mu.scalar_type()))).expand(mu.sizes());
  return op.call(zeros, zeros, std::nullopt, seed, num_samples);
}

// For create_graph=True (op_library.h): the gradients of z = mu + exp(logvar / 2) eps (grad_z
// and eps (L, *mu.shape), or undefined) and of the KL (grad_kl of its shape, or undefined) in
// ATen ops. in: mu, logvar, prior_mu, prior_logvar (the prior undefined for N(0, I)).
Quad differentiable_backward(const Tensor& grad_z, const Tensor& eps, const Tensor& grad_kl, const variable_list& in,
                             int64_t event_dims) {
  const Tensor mu = accumulated(in[0]), logvar = accumulated(in[1]);
  Tensor grad_mu = at::zeros_like(mu), grad_logvar = at::zeros_like(mu), grad_prior_mu, grad_prior_logvar;
  if (grad_z.defined()) {
    const Tensor gz = accumulated(grad_z);
    grad_mu = grad_mu + gz.sum(0);
    grad_logvar = grad_logvar + 0.5 * at::exp(0.5 * logvar) * (gz * accumulated(eps)).sum(0);
  }
  if (grad_kl.defined()) {
    const Tensor g = expand_row_grad(accumulated(grad_kl), event_dims);
    if (in[2].defined()) {  // KL = (prior_logvar - logvar + (var + (mu - prior_mu)^2) / prior_var - 1) / 2
      // Factored through 1 / prior_sigma and var / prior_var, as the kernels are (finite where they are).
      const Tensor prior_logvar = accumulated(in[3]), inv_prior_sigma = at::exp(-0.5 * prior_logvar);
      const Tensor w = (mu - accumulated(in[2])) * inv_prior_sigma, ratio = at::exp(logvar - prior_logvar);
      grad_mu = grad_mu + g * w * inv_prior_sigma;
      grad_logvar = grad_logvar + 0.5 * g * (ratio - 1);
      grad_prior_mu = -g * w * inv_prior_sigma;
      grad_prior_logvar = 0.5 * g * (1 - ratio - w * w);
    } else {  // KL = (mu^2 + var - 1 - logvar) / 2
      grad_mu = grad_mu + g * mu;
      grad_logvar = grad_logvar + 0.5 * g * (at::exp(logvar) - 1);
    }
  }
  const auto as_input = [&](const Tensor& t) { return t.defined() ? t.expand(mu.sizes()).to(in[0].scalar_type()) : t; };
  return {as_input(grad_mu), as_input(grad_logvar), as_input(grad_prior_mu), as_input(grad_prior_logvar)};
}

}  // namespace

// In a named namespace: autograd shows the class name (grad_fn=<aevb_fast::ops::GaussianKL>).

struct Reparameterize : torch::autograd::Function<Reparameterize> {
  static Tensor forward(AutogradContext* ctx, const Tensor& mu, const Tensor& logvar, const Optional& eps,
                        const Optional& seed, int64_t num_samples) {
    static const auto op = find_op<decltype(reparameterize)>("reparameterize");
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->save_for_backward({mu, logvar, eps.value_or(Tensor()), seed.value_or(Tensor())});
    return op.call(mu, logvar, eps, seed, num_samples);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = find_op<decltype(reparameterize_backward)>("reparameterize_backward");
    const auto saved = ctx->get_saved_variables();
    if (create_graph()) {
      const Tensor eps = noise_of(saved[2], saved[3], saved[0], grads[0].size(0));
      auto grads_in = differentiable_backward(grads[0], eps, Tensor(), {saved[0], saved[1], Tensor(), Tensor()}, 1);
      return {std::get<0>(grads_in), std::get<1>(grads_in), grad_eps(ctx, grads[0], saved[1], saved[2]), Tensor(),
              Tensor()};
    }
    auto [grad_mu, grad_logvar] =
        op.call(grads[0], saved[0], saved[1], saved_optional(saved[2]), saved_optional(saved[3]));
    return {grad_mu, grad_logvar, grad_eps(ctx, grads[0], saved[1], saved[2]), Tensor(), Tensor()};
  }
};

struct SampleAndKL : torch::autograd::Function<SampleAndKL> {
  static variable_list forward(AutogradContext* ctx, const Tensor& mu, const Tensor& logvar, const Optional& eps,
                               const Optional& seed, int64_t num_samples, const Optional& prior_mu,
                               const Optional& prior_logvar, int64_t event_dims) {
    static const auto op = find_op<decltype(sample_and_kl)>("sample_and_kl");
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->save_for_backward({mu, logvar, eps.value_or(Tensor()), seed.value_or(Tensor()), prior_mu.value_or(Tensor()),
                            prior_logvar.value_or(Tensor())});
    ctx->saved_data["event_dims"] = event_dims;
    auto [z, kl] = op.call(mu, logvar, eps, seed, num_samples, prior_mu, prior_logvar, event_dims);
    return {z, kl};
  }
  // An unused output's gradient arrives as zeros (materialize_grads, the default).
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = find_op<decltype(sample_and_kl_backward)>("sample_and_kl_backward");
    const auto saved = ctx->get_saved_variables();
    const int64_t event_dims = ctx->saved_data["event_dims"].toInt();
    auto [grad_mu, grad_logvar, grad_prior_mu, grad_prior_logvar] =
        create_graph()
            ? differentiable_backward(grads[0], noise_of(saved[2], saved[3], saved[0], grads[0].size(0)), grads[1],
                                      {saved[0], saved[1], saved[4], saved[5]}, event_dims)
            : op.call(grads[0], grads[1], saved[0], saved[1], saved_optional(saved[2]), saved_optional(saved[3]),
                      saved_optional(saved[4]), saved_optional(saved[5]), event_dims);
    const bool prior = saved[4].defined();
    return {grad_mu,
            grad_logvar,
            grad_eps(ctx, grads[0], saved[1], saved[2]),
            Tensor(),
            Tensor(),
            prior ? grad_prior_mu : Tensor(),
            prior ? grad_prior_logvar : Tensor(),
            Tensor()};
  }
};

struct GaussianKL : torch::autograd::Function<GaussianKL> {
  static Tensor forward(AutogradContext* ctx, const Tensor& mu, const Tensor& logvar, const Optional& prior_mu,
                        const Optional& prior_logvar, int64_t event_dims) {
    static const auto op = find_op<decltype(gaussian_kl)>("gaussian_kl");
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->save_for_backward({mu, logvar, prior_mu.value_or(Tensor()), prior_logvar.value_or(Tensor())});
    ctx->saved_data["event_dims"] = event_dims;
    return op.call(mu, logvar, prior_mu, prior_logvar, event_dims);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = find_op<decltype(gaussian_kl_backward)>("gaussian_kl_backward");
    const auto saved = ctx->get_saved_variables();
    const int64_t event_dims = ctx->saved_data["event_dims"].toInt();
    auto [grad_mu, grad_logvar, grad_prior_mu, grad_prior_logvar] =
        create_graph()
            ? differentiable_backward(Tensor(), Tensor(), grads[0], saved, event_dims)
            : op.call(grads[0], saved[0], saved[1], saved_optional(saved[2]), saved_optional(saved[3]), event_dims);
    const bool prior = saved[2].defined();
    return {grad_mu, grad_logvar, prior ? grad_prior_mu : Tensor(), prior ? grad_prior_logvar : Tensor(), Tensor()};
  }
};

}  // namespace aevb_fast::ops

AEVB_OPS(m) {
  using namespace aevb_fast::ops;
  // z = mu + exp(logvar / 2) * eps, z of shape (num_samples, *mu.shape). Exactly one of eps
  // (shape of z) and seed (int64 [key, offset]; noise drawn in the kernel) is given.
  m.def("reparameterize(Tensor mu, Tensor logvar, Tensor? eps, Tensor? seed, int num_samples) -> Tensor");
  m.def(
      "reparameterize_backward(Tensor grad_z, Tensor mu, Tensor logvar, Tensor? eps, Tensor? seed) "
      "-> (Tensor grad_mu, Tensor grad_logvar)");
  impl_backends(m, "reparameterize", TORCH_FN(reparameterize));
  impl_backends(m, "reparameterize_backward", TORCH_FN(reparameterize_backward));
  impl_autograd(
      m, "reparameterize",
      [](const Tensor& mu, const Tensor& logvar, const Optional& eps, const Optional& seed, int64_t num_samples) {
        return Reparameterize::apply(saved_latent(mu, 1), saved_latent(logvar, 1), eps, seed, num_samples);
      });

  // KL(N(mu, exp(logvar)) || N(0, I)), or || N(prior_mu, exp(prior_logvar)) (all four of one
  // shape), summed over the last event_dims dims (event_dims=0: per element).
  m.def(
      "gaussian_kl(Tensor mu, Tensor logvar, Tensor? prior_mu=None, Tensor? prior_logvar=None, "
      "int event_dims=1) -> Tensor");
  m.def(
      "gaussian_kl_backward(Tensor grad_kl, Tensor mu, Tensor logvar, Tensor? prior_mu=None, "
      "Tensor? prior_logvar=None, int event_dims=1) -> (Tensor grad_mu, Tensor grad_logvar, "
      "Tensor grad_prior_mu, Tensor grad_prior_logvar)");
  impl_backends(m, "gaussian_kl", TORCH_FN(gaussian_kl));
  impl_backends(m, "gaussian_kl_backward", TORCH_FN(gaussian_kl_backward));
  impl_autograd(m, "gaussian_kl",
                [](const Tensor& mu, const Tensor& logvar, const Optional& prior_mu, const Optional& prior_logvar,
                   int64_t event_dims) {
                  return GaussianKL::apply(saved_latent(mu, event_dims), saved_latent(logvar, event_dims),
                                           saved_latent(prior_mu, event_dims), saved_latent(prior_logvar, event_dims),
                                           event_dims);
                });

  // reparameterize and gaussian_kl in one pass.
  m.def(
      "sample_and_kl(Tensor mu, Tensor logvar, Tensor? eps, Tensor? seed, int num_samples, "
      "Tensor? prior_mu=None, Tensor? prior_logvar=None, int event_dims=1) -> (Tensor z, Tensor kl)");
  m.def(
      "sample_and_kl_backward(Tensor grad_z, Tensor grad_kl, Tensor mu, Tensor logvar, Tensor? eps, "
      "Tensor? seed, Tensor? prior_mu=None, Tensor? prior_logvar=None, int event_dims=1) -> (Tensor grad_mu, "
      "Tensor grad_logvar, Tensor grad_prior_mu, Tensor grad_prior_logvar)");
  impl_backends(m, "sample_and_kl", TORCH_FN(sample_and_kl));
  impl_backends(m, "sample_and_kl_backward", TORCH_FN(sample_and_kl_backward));
  impl_autograd(m, "sample_and_kl",
                [](const Tensor& mu, const Tensor& logvar, const Optional& eps, const Optional& seed,
                   int64_t num_samples, const Optional& prior_mu, const Optional& prior_logvar, int64_t event_dims) {
                  auto out = SampleAndKL::apply(saved_latent(mu, event_dims), saved_latent(logvar, event_dims), eps,
                                                seed, num_samples, saved_latent(prior_mu, event_dims),
                                                saved_latent(prior_logvar, event_dims), event_dims);
                  return std::make_tuple(out[0], out[1]);
                });
}
