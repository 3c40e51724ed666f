// gaussian_log_prob: the log-density of x under N(mean, exp(logvar)), summed over the trailing
// event_dims, x broadcast over the leading (sample) dims of mean, per row or summed or averaged over
// the rows (reduction). Schema, checks, shapes and autograd; the kernels are csrc/cpu/ and
// csrc/cuda/gaussian_log_prob.
#include <ATen/ATen.h>

#include "op_library.h"

// x, mean, logvar: (rows, cols) inputs as broadcast_rows makes them (cols is E or 1; row r of the
// output reads row r % rows of each). Writes out: (R), and grad_scale * d out[r] / d mean, logvar
// into grad_mean, grad_logvar (R, E) unless they are undefined.
AEVB_KERNEL(gaussian_log_prob_forward_kernel,
            (const at::Tensor& x, const at::Tensor& mean, const at::Tensor& logvar, const at::Tensor& out,
             const at::Tensor& grad_mean, const at::Tensor& grad_logvar, double grad_scale, int64_t event))
// grad: (R). Writes grad_mean, grad_logvar: (R, E).
AEVB_KERNEL(gaussian_log_prob_backward_kernel,
            (const at::Tensor& grad, const at::Tensor& x, const at::Tensor& mean, const at::Tensor& logvar,
             const at::Tensor& grad_mean, const at::Tensor& grad_logvar))

namespace aevb_fast::ops {
namespace {

LogProbShape check_inputs(const char* op, const Tensor& x, const Tensor& mean, const Tensor& logvar,
                          int64_t event_dims) {
  const auto s = check_log_prob_inputs(op, x, "mean", mean, event_dims);
  check_float_tensor(op, "logvar", logvar);
  check_same_dtype_device(op, "logvar", logvar, "mean", mean);
  check_same_shape(op, "logvar", logvar, "mean", mean);
  return s;
}

Tensor gaussian_log_prob(const Tensor& x, const Tensor& mean, const Tensor& logvar, int64_t event_dims,
                         c10::string_view reduction) {
  const char* op = "aevb_fast.gaussian_log_prob";
  check_reduction(op, reduction);
  const auto s = check_inputs(op, x, mean, logvar, event_dims);
  Tensor out = at::empty(mean.sizes().slice(0, mean.dim() - event_dims),
                         mean.options().dtype(accumulate_dtype(mean.scalar_type())));
  gaussian_log_prob_forward_kernel(mean.device())(broadcast_rows(x, event_dims), broadcast_rows(mean, event_dims),
                                                  broadcast_rows(logvar, event_dims), out.view({s.rows}), Tensor(),
                                                  Tensor(), 0.0, s.event);
  return reduce_rows(out, reduction);
}

// The sum or mean and its gradients for mean and logvar, in one pass.
std::tuple<Tensor, Tensor, Tensor> gaussian_log_prob_with_grad(const Tensor& x, const Tensor& mean,
                                                               const Tensor& logvar, int64_t event_dims,
                                                               c10::string_view reduction) {
  const char* op = "aevb_fast.gaussian_log_prob_with_grad";
  check_reduction(op, reduction, /*allow_none=*/false);
  const auto s = check_inputs(op, x, mean, logvar, event_dims);
  Tensor out = at::empty({s.rows}, mean.options().dtype(accumulate_dtype(mean.scalar_type())));
  Tensor grad_mean = at::empty(mean.sizes(), mean.options());
  Tensor grad_logvar = at::empty(mean.sizes(), mean.options());
  gaussian_log_prob_forward_kernel(mean.device())(
      broadcast_rows(x, event_dims), broadcast_rows(mean, event_dims), broadcast_rows(logvar, event_dims), out,
      grad_mean.view({s.rows, s.event}), grad_logvar.view({s.rows, s.event}), row_weight(reduction, s.rows), s.event);
  return {reduce_rows(out, reduction), grad_mean, grad_logvar};
}

std::tuple<Tensor, Tensor> gaussian_log_prob_backward(const Tensor& grad, const Tensor& x, const Tensor& mean,
                                                      const Tensor& logvar, int64_t event_dims) {
  const char* op = "aevb_fast.gaussian_log_prob_backward";
  const auto s = check_inputs(op, x, mean, logvar, event_dims);
  const Tensor grad_rows = check_log_prob_grad(op, grad, mean, event_dims, s.rows);
  Tensor grad_mean = at::empty(mean.sizes(), mean.options());
  Tensor grad_logvar = at::empty(mean.sizes(), mean.options());
  gaussian_log_prob_backward_kernel(mean.device())(
      grad_rows, broadcast_rows(x, event_dims), broadcast_rows(mean, event_dims), broadcast_rows(logvar, event_dims),
      grad_mean.view({s.rows, s.event}), grad_logvar.view({s.rows, s.event}));
  return {grad_mean, grad_logvar};
}

// For create_graph=True (op_library.h): with w = (x - mean) / sigma, d/dmean = grad w / sigma and
// d/dlogvar = grad (w^2 - 1) / 2, in ATen ops; factored through 1 / sigma as the kernels are, so
// that a float32 log-variance below -88 stays finite (1 / var would overflow). saved: x, mean, logvar.
std::tuple<Tensor, Tensor> differentiable_backward(const Tensor& grad, const variable_list& saved, int64_t event_dims) {
  const Tensor g = expand_row_grad(grad, event_dims), inv_sigma = at::exp(-0.5 * accumulated(saved[2]));
  const Tensor w = (accumulated(saved[0]) - accumulated(saved[1])) * inv_sigma;
  const auto dtype = saved[1].scalar_type();
  return {(g * w * inv_sigma).to(dtype), (0.5 * g * (w * w - 1)).to(dtype)};
}

}  // namespace

struct GaussianLogProb : torch::autograd::Function<GaussianLogProb> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& mean, const Tensor& logvar,
                        int64_t event_dims) {
    static const auto op = find_op<decltype(gaussian_log_prob)>("gaussian_log_prob");
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->save_for_backward({x, mean, logvar});
    ctx->saved_data["event_dims"] = event_dims;
    return op.call(x, mean, logvar, event_dims, "none");
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = find_op<decltype(gaussian_log_prob_backward)>("gaussian_log_prob_backward");
    const auto saved = ctx->get_saved_variables();
    const int64_t event_dims = ctx->saved_data["event_dims"].toInt();
    auto [grad_mean, grad_logvar] = create_graph() ? differentiable_backward(grads[0], saved, event_dims)
                                                   : op.call(grads[0], saved[0], saved[1], saved[2], event_dims);
    Tensor grad_x = ctx->needs_input_grad(0) ? sum_to_x(-grad_mean, saved[0]) : Tensor();
    return {grad_x, grad_mean, grad_logvar, Tensor()};
  }
};

// The summed or averaged form when x needs no gradient: made in the forward pass.
struct GaussianLogProbTotal : torch::autograd::Function<GaussianLogProbTotal> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& mean, const Tensor& logvar,
                        int64_t event_dims, const std::string& reduction) {
    static const auto op = find_op<decltype(gaussian_log_prob_with_grad)>("gaussian_log_prob_with_grad");
    at::AutoDispatchBelowADInplaceOrView below;
    auto [total, grad_mean, grad_logvar] = op.call(x, mean, logvar, event_dims, reduction);
    keep_gradients(ctx, {mean.requires_grad() ? grad_mean : Tensor(), logvar.requires_grad() ? grad_logvar : Tensor()});
    return total;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto made = hand_on_gradients(ctx, grads[0], "aevb_fast.gaussian_log_prob");
    return {Tensor(), made[0], made[1], Tensor(), Tensor()};
  }
};

Tensor gaussian_log_prob_autograd(const Tensor& x, const Tensor& mean, const Tensor& logvar, int64_t event_dims,
                                  c10::string_view reduction) {
  check_reduction("aevb_fast.gaussian_log_prob", reduction);
  if (reduction != "none" && at::GradMode::is_enabled() && (mean.requires_grad() || logvar.requires_grad()) &&
      !x.requires_grad()) {
    return GaussianLogProbTotal::apply(x, mean, logvar, event_dims, std::string(reduction));
  }
  return reduce_rows(GaussianLogProb::apply(saved_form(x, event_dims), saved_form(mean, event_dims),
                                            saved_form(logvar, event_dims), event_dims),
                     reduction);
}

}  // namespace aevb_fast::ops

AEVB_OPS(m) {
  using namespace aevb_fast::ops;
  m.def("gaussian_log_prob(Tensor x, Tensor mean, Tensor logvar, int event_dims, str reduction=\"none\") -> Tensor");
  m.def(
      "gaussian_log_prob_backward(Tensor grad, Tensor x, Tensor mean, Tensor logvar, int event_dims) "
      "-> (Tensor grad_mean, Tensor grad_logvar)");
  impl_backends(m, "gaussian_log_prob", TORCH_FN(gaussian_log_prob));
  m.def(
      "gaussian_log_prob_with_grad(Tensor x, Tensor mean, Tensor logvar, int event_dims, str reduction) "
      "-> (Tensor total, Tensor grad_mean, Tensor grad_logvar)");
  impl_backends(m, "gaussian_log_prob_backward", TORCH_FN(gaussian_log_prob_backward));
  impl_backends(m, "gaussian_log_prob_with_grad", TORCH_FN(gaussian_log_prob_with_grad));
  impl_autograd(m, "gaussian_log_prob", TORCH_FN(gaussian_log_prob_autograd));
}
