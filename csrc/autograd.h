#pragma once
// The autograd formulas of the forward operators, registered at the Autograd key in C++ (as
// torchvision registers its ops) rather than with Python's torch.library.register_autograd: at
// the paper's minibatch the Python layer cost ~4 us per call without grad and ~60 us per
// forward+backward, more than the kernels (benchmarks/call_overhead.py). The backward of each
// forward op is the library's own *_backward operator, called through the dispatcher, so that
// compiled graphs, FakeTensor and torch.export see both.
//
// A back end-independent registration, done once per library:
//   TORCH_LIBRARY_IMPL(aevb_fast, Autograd, m) { register_autograd<MainLibrary>(m); }
#include <optional>
#include <string>
#include <tuple>

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/graph_task.h>
#include <torch/library.h>

namespace aevb_fast {
namespace autograd {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Optional = std::optional<Tensor>;

// The typed handle of operator `Library::name::op`, looked up once.
template <typename Library, typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* op) {
  return c10::Dispatcher::singleton()
      .findSchemaOrThrow((std::string(Library::name) + "::" + op).c_str(), "")
      .template typed<Signature>();
}

template <typename Library>
struct Ops {
  using SampleBackward = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                                    const Optional&, const Optional&);
  using SampleAndKLBackward = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                                         const Tensor&, const Optional&, const Optional&);
  using Pair = std::tuple<Tensor, Tensor>;
  static const Ops& get() {
    static const Ops ops;
    return ops;
  }
  c10::TypedOperatorHandle<Tensor(const Tensor&, const Tensor&, const Optional&, const Optional&, int64_t)>
      reparameterize = find_op<Library, Tensor(const Tensor&, const Tensor&, const Optional&,
                                               const Optional&, int64_t)>("reparameterize");
  c10::TypedOperatorHandle<SampleBackward> reparameterize_backward =
      find_op<Library, SampleBackward>("reparameterize_backward");
  c10::TypedOperatorHandle<Pair(const Tensor&, const Tensor&, const Optional&, const Optional&, int64_t)>
      sample_and_kl = find_op<Library, Pair(const Tensor&, const Tensor&, const Optional&,
                                            const Optional&, int64_t)>("sample_and_kl");
  c10::TypedOperatorHandle<SampleAndKLBackward> sample_and_kl_backward =
      find_op<Library, SampleAndKLBackward>("sample_and_kl_backward");
  c10::TypedOperatorHandle<Tensor(const Tensor&, const Tensor&)> gaussian_kl =
      find_op<Library, Tensor(const Tensor&, const Tensor&)>("gaussian_kl");
  c10::TypedOperatorHandle<Pair(const Tensor&, const Tensor&, const Tensor&)> gaussian_kl_backward =
      find_op<Library, Pair(const Tensor&, const Tensor&, const Tensor&)>("gaussian_kl_backward");
  c10::TypedOperatorHandle<Tensor(const Tensor&, const Tensor&, int64_t)> bernoulli_log_prob =
      find_op<Library, Tensor(const Tensor&, const Tensor&, int64_t)>("bernoulli_log_prob");
  c10::TypedOperatorHandle<Tensor(const Tensor&, const Tensor&, const Tensor&, int64_t)>
      bernoulli_log_prob_backward = find_op<Library, Tensor(const Tensor&, const Tensor&, const Tensor&,
                                                            int64_t)>("bernoulli_log_prob_backward");
  c10::TypedOperatorHandle<Tensor(const Tensor&, const Tensor&, const Tensor&, int64_t)> gaussian_log_prob =
      find_op<Library, Tensor(const Tensor&, const Tensor&, const Tensor&, int64_t)>("gaussian_log_prob");
  c10::TypedOperatorHandle<Pair(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t)>
      gaussian_log_prob_backward =
          find_op<Library, Pair(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t)>(
              "gaussian_log_prob_backward");
};

inline Optional saved_optional(const Tensor& t) { return t.defined() ? Optional(t) : std::nullopt; }

// d z / d eps = sigma: only when a user's eps requires grad (rare; plain ATen is fine).
inline Tensor grad_eps(AutogradContext* ctx, const Tensor& grad_z, const Tensor& logvar, const Tensor& eps) {
  if (!eps.defined() || !ctx->needs_input_grad(2)) return Tensor();
  return (grad_z * at::exp(0.5 * logvar)).to(eps.scalar_type());
}

// Sums a gradient of the broadcast x (shape of logits/mean) over its extra leading dims.
inline Tensor sum_to_x(Tensor grad, const Tensor& x) {
  const int64_t lead = grad.dim() - x.dim();
  if (lead > 0) {
    std::vector<int64_t> dims(lead);
    for (int64_t d = 0; d < lead; ++d) dims[d] = d;
    grad = grad.sum(dims);
  }
  return grad.to(x.scalar_type());
}

// grad (shape of the output rows) with event_dims trailing ones, to broadcast over the event.
inline Tensor expand_row_grad(const Tensor& grad, int64_t event_dims) {
  std::vector<int64_t> shape(grad.sizes().begin(), grad.sizes().end());
  shape.insert(shape.end(), event_dims, 1);
  return grad.reshape(shape);
}

template <typename Library>
struct Reparameterize : torch::autograd::Function<Reparameterize<Library>> {
  static Tensor forward(AutogradContext* ctx, const Tensor& mu, const Tensor& logvar,
                        const Optional& eps, const Optional& seed, int64_t num_samples) {
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->save_for_backward({mu, logvar, eps.value_or(Tensor()), seed.value_or(Tensor())});
    return Ops<Library>::get().reparameterize.call(mu, logvar, eps, seed, num_samples);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto [grad_mu, grad_logvar] = Ops<Library>::get().reparameterize_backward.call(
        grads[0], saved[0], saved[1], saved_optional(saved[2]), saved_optional(saved[3]));
    return {grad_mu, grad_logvar, grad_eps(ctx, grads[0], saved[1], saved[2]), Tensor(), Tensor()};
  }
};

template <typename Library>
struct SampleAndKL : torch::autograd::Function<SampleAndKL<Library>> {
  static variable_list forward(AutogradContext* ctx, const Tensor& mu, const Tensor& logvar,
                               const Optional& eps, const Optional& seed, int64_t num_samples) {
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->save_for_backward({mu, logvar, eps.value_or(Tensor()), seed.value_or(Tensor())});
    auto [z, kl] = Ops<Library>::get().sample_and_kl.call(mu, logvar, eps, seed, num_samples);
    return {z, kl};
  }
  // An unused output's gradient arrives as zeros (materialize_grads, the default).
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto [grad_mu, grad_logvar] = Ops<Library>::get().sample_and_kl_backward.call(
        grads[0], grads[1], saved[0], saved[1], saved_optional(saved[2]), saved_optional(saved[3]));
    return {grad_mu, grad_logvar, grad_eps(ctx, grads[0], saved[1], saved[2]), Tensor(), Tensor()};
  }
};

template <typename Library>
struct GaussianKL : torch::autograd::Function<GaussianKL<Library>> {
  static Tensor forward(AutogradContext* ctx, const Tensor& mu, const Tensor& logvar) {
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->save_for_backward({mu, logvar});
    return Ops<Library>::get().gaussian_kl.call(mu, logvar);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto [grad_mu, grad_logvar] = Ops<Library>::get().gaussian_kl_backward.call(grads[0], saved[0], saved[1]);
    return {grad_mu, grad_logvar};
  }
};

template <typename Library>
struct BernoulliLogProb : torch::autograd::Function<BernoulliLogProb<Library>> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& logits, int64_t event_dims) {
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->save_for_backward({x, logits});
    ctx->saved_data["event_dims"] = event_dims;
    return Ops<Library>::get().bernoulli_log_prob.call(x, logits, event_dims);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const int64_t event_dims = ctx->saved_data["event_dims"].toInt();
    Tensor grad_logits = Ops<Library>::get().bernoulli_log_prob_backward.call(grads[0], saved[0], saved[1], event_dims);
    Tensor grad_x;
    if (ctx->needs_input_grad(0)) grad_x = sum_to_x(expand_row_grad(grads[0], event_dims) * saved[1], saved[0]);
    return {grad_x, grad_logits, Tensor()};
  }
};

template <typename Library>
struct GaussianLogProb : torch::autograd::Function<GaussianLogProb<Library>> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& mean, const Tensor& logvar,
                        int64_t event_dims) {
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->save_for_backward({x, mean, logvar});
    ctx->saved_data["event_dims"] = event_dims;
    return Ops<Library>::get().gaussian_log_prob.call(x, mean, logvar, event_dims);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto [grad_mean, grad_logvar] = Ops<Library>::get().gaussian_log_prob_backward.call(
        grads[0], saved[0], saved[1], saved[2], ctx->saved_data["event_dims"].toInt());
    Tensor grad_x = ctx->needs_input_grad(0) ? sum_to_x(-grad_mean, saved[0]) : Tensor();
    return {grad_x, grad_mean, grad_logvar, Tensor()};
  }
};

// ---- the linear heads -------------------------------------------------------------------------
// "none" keeps per-row outputs (the IWAE bound needs them) and recomputes each chunk's logits in
// the backward; "sum" and "mean" compute the gradients in the forward's one pass over the chunks,
// so the backward only scales them and no matrix product is done twice. No gradient for x.

struct BernoulliHead {
  static constexpr const char* name = "linear_bernoulli_log_prob";
};
struct GaussianHead {
  static constexpr const char* name = "linear_gaussian_log_prob";
};

// The heads' gradients come from operators with no derivative of their own (and, for sum/mean,
// from the forward pass): a graph of them (create_graph=True) would be silently wrong.
inline void check_no_double_backward(const char* name) {
  TORCH_CHECK(!at::GradMode::is_enabled(), "aevb_fast.", name, ": double backward (create_graph=True) is not "
              "supported; use aevb_fast.reference.", name, " for higher-order gradients");
}

template <typename Library, typename Head>
struct LinearHeadOps {
  using Forward = Tensor(const Tensor&, const Tensor&, const Tensor&, const Optional&, c10::string_view, int64_t);
  using Backward = std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                                      const Optional&, int64_t);
  using WithGrads = std::tuple<Tensor, Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                                               const Optional&, c10::string_view, int64_t);
  static const LinearHeadOps& get() {
    static const LinearHeadOps ops;
    return ops;
  }
  c10::TypedOperatorHandle<Forward> forward = find_op<Library, Forward>(Head::name);
  c10::TypedOperatorHandle<Backward> backward =
      find_op<Library, Backward>((std::string(Head::name) + "_backward").c_str());
  c10::TypedOperatorHandle<WithGrads> with_grads =
      find_op<Library, WithGrads>((std::string(Head::name) + "_with_grads").c_str());
};

template <typename Library, typename Head>
struct LinearHeadRows : torch::autograd::Function<LinearHeadRows<Library, Head>> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& h, const Tensor& weight,
                        const Optional& bias, int64_t chunk_size) {
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->save_for_backward({x, h, weight, bias.value_or(Tensor())});
    ctx->saved_data["chunk_size"] = chunk_size;
    return LinearHeadOps<Library, Head>::get().forward.call(x, h, weight, bias, "none", chunk_size);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    check_no_double_backward(Head::name);
    const auto saved = ctx->get_saved_variables();
    const Optional bias = saved_optional(saved[3]);
    auto [grad_h, grad_weight, grad_bias] = LinearHeadOps<Library, Head>::get().backward.call(
        grads[0], saved[0], saved[1], saved[2], bias, ctx->saved_data["chunk_size"].toInt());
    return {Tensor(), grad_h, grad_weight, bias.has_value() ? grad_bias : Tensor(), Tensor()};
  }
};

// The gradients made in the forward are kept in saved_data rather than saved as variables, so
// that a backward that frees the graph (the usual one) can take them out, scale them in place
// and hand them on: autograd then accumulates them without a copy, and no second (R x H) tensor
// ever exists. A backward that keeps the graph (retain_graph=True, gradcheck) scales copies.
template <typename Library, typename Head>
struct LinearHeadTotal : torch::autograd::Function<LinearHeadTotal<Library, Head>> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& h, const Tensor& weight,
                        const Optional& bias, const std::string& reduction, int64_t chunk_size) {
    at::AutoDispatchBelowADInplaceOrView below;
    auto [total, grad_h, grad_weight, grad_bias] =
        LinearHeadOps<Library, Head>::get().with_grads.call(x, h, weight, bias, reduction, chunk_size);
    ctx->saved_data["grad_h"] = grad_h;
    ctx->saved_data["grad_weight"] = grad_weight;
    ctx->saved_data["grad_bias"] = bias.has_value() ? grad_bias : Tensor();
    return total;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    check_no_double_backward(Head::name);
    TORCH_CHECK(ctx->saved_data.count("grad_h") == 1, "aevb_fast.", Head::name, ": trying to backward through "
                "the graph a second time; pass retain_graph=True to the first backward");
    const bool keep = torch::autograd::get_current_graph_task_keep_graph();
    const auto scaled = [&](const char* name) {
      Tensor t = ctx->saved_data[name].toTensor();
      if (!t.defined()) return t;
      if (keep) return t * grads[0];
      ctx->saved_data.erase(name);
      return t.mul_(grads[0]);
    };
    return {Tensor(), scaled("grad_h"), scaled("grad_weight"), scaled("grad_bias"), Tensor(), Tensor()};
  }
};

template <typename Library, typename Head>
void register_linear_head_autograd(torch::Library& m) {
  m.impl(Head::name, [](const Tensor& x, const Tensor& h, const Tensor& weight, const Optional& bias,
                        c10::string_view reduction, int64_t chunk_size) -> Tensor {
    if (reduction == "none") return LinearHeadRows<Library, Head>::apply(x, h, weight, bias, chunk_size);
    const bool needs_grad = at::GradMode::is_enabled() &&
                            (h.requires_grad() || weight.requires_grad() || (bias && bias->requires_grad()));
    if (needs_grad) {
      return LinearHeadTotal<Library, Head>::apply(x, h, weight, bias, std::string(reduction), chunk_size);
    }
    at::AutoDispatchBelowADInplaceOrView below;
    return LinearHeadOps<Library, Head>::get().forward.call(x, h, weight, bias, reduction, chunk_size);
  });
}

template <typename Library>
void register_autograd(torch::Library& m) {
  register_linear_head_autograd<Library, BernoulliHead>(m);
  register_linear_head_autograd<Library, GaussianHead>(m);
  m.impl("reparameterize", [](const Tensor& mu, const Tensor& logvar, const Optional& eps,
                              const Optional& seed, int64_t num_samples) {
    return Reparameterize<Library>::apply(mu, logvar, eps, seed, num_samples);
  });
  m.impl("sample_and_kl", [](const Tensor& mu, const Tensor& logvar, const Optional& eps,
                             const Optional& seed, int64_t num_samples) {
    auto out = SampleAndKL<Library>::apply(mu, logvar, eps, seed, num_samples);
    return std::make_tuple(out[0], out[1]);
  });
  m.impl("gaussian_kl", [](const Tensor& mu, const Tensor& logvar) {
    return GaussianKL<Library>::apply(mu, logvar);
  });
  m.impl("bernoulli_log_prob", [](const Tensor& x, const Tensor& logits, int64_t event_dims) {
    return BernoulliLogProb<Library>::apply(x, logits, event_dims);
  });
  m.impl("gaussian_log_prob", [](const Tensor& x, const Tensor& mean, const Tensor& logvar,
                                 int64_t event_dims) {
    return GaussianLogProb<Library>::apply(x, mean, logvar, event_dims);
  });
}

}  // namespace autograd
}  // namespace aevb_fast
