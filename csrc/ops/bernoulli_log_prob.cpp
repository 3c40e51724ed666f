// bernoulli_log_prob: sum over the trailing event_dims of x * logits - softplus(logits), x
// broadcast over the leading (sample) dims of logits, per row or summed or averaged over the rows
// (reduction). Schema, checks, shapes and autograd; the kernels are csrc/cpu/ and
// csrc/cuda/bernoulli_log_prob.
#include <ATen/ATen.h>

#include "op_library.h"

// x, logits: (rows, cols) inputs as broadcast_rows makes them (cols is E or 1; row r of the output
// reads row r % rows of each). Writes out: (R), and grad_scale * d out[r] / d logits into
// grad_logits (R, E) unless it is undefined.
AEVB_KERNEL(bernoulli_log_prob_forward_kernel, (const at::Tensor& x, const at::Tensor& logits, const at::Tensor& out,
                                                const at::Tensor& grad_logits, double grad_scale, int64_t event))
// grad: (R). Writes grad_logits: (R, E).
AEVB_KERNEL(bernoulli_log_prob_backward_kernel,
            (const at::Tensor& grad, const at::Tensor& x, const at::Tensor& logits, const at::Tensor& grad_logits))

namespace aevb_fast::ops {
namespace {

Tensor bernoulli_log_prob(const Tensor& x, const Tensor& logits, int64_t event_dims, c10::string_view reduction) {
  const char* op = "aevb_fast.bernoulli_log_prob";
  check_reduction(op, reduction);
  const auto s = check_log_prob_inputs(op, x, "logits", logits, event_dims);
  Tensor out = at::empty(logits.sizes().slice(0, logits.dim() - event_dims),
                         logits.options().dtype(accumulate_dtype(logits.scalar_type())));
  bernoulli_log_prob_forward_kernel(logits.device())(broadcast_rows(x, event_dims), broadcast_rows(logits, event_dims),
                                                     out.view({s.rows}), Tensor(), 0.0, s.event);
  return reduce_rows(out, reduction);
}

// The sum or mean and its gradient for logits, in one pass.
std::tuple<Tensor, Tensor> bernoulli_log_prob_with_grad(const Tensor& x, const Tensor& logits, int64_t event_dims,
                                                        c10::string_view reduction) {
  const char* op = "aevb_fast.bernoulli_log_prob_with_grad";
  check_reduction(op, reduction, /*allow_none=*/false);
  const auto s = check_log_prob_inputs(op, x, "logits", logits, event_dims);
  Tensor out = at::empty({s.rows}, logits.options().dtype(accumulate_dtype(logits.scalar_type())));
  Tensor grad_logits = at::empty(logits.sizes(), logits.options());
  bernoulli_log_prob_forward_kernel(logits.device())(broadcast_rows(x, event_dims), broadcast_rows(logits, event_dims),
                                                     out, grad_logits.view({s.rows, s.event}),
                                                     row_weight(reduction, s.rows), s.event);
  return {reduce_rows(out, reduction), grad_logits};
}

Tensor bernoulli_log_prob_backward(const Tensor& grad, const Tensor& x, const Tensor& logits, int64_t event_dims) {
  const char* op = "aevb_fast.bernoulli_log_prob_backward";
  const auto s = check_log_prob_inputs(op, x, "logits", logits, event_dims);
  const Tensor grad_rows = check_log_prob_grad(op, grad, logits, event_dims, s.rows);
  Tensor grad_logits = at::empty(logits.sizes(), logits.options());
  bernoulli_log_prob_backward_kernel(logits.device())(grad_rows, broadcast_rows(x, event_dims),
                                                      broadcast_rows(logits, event_dims),
                                                      grad_logits.view({s.rows, s.event}));
  return grad_logits;
}

}  // namespace

struct BernoulliLogProb : torch::autograd::Function<BernoulliLogProb> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& logits, int64_t event_dims) {
    static const auto op = find_op<decltype(bernoulli_log_prob)>("bernoulli_log_prob");
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->save_for_backward({x, logits});
    ctx->saved_data["event_dims"] = event_dims;
    return op.call(x, logits, event_dims, "none");
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = find_op<decltype(bernoulli_log_prob_backward)>("bernoulli_log_prob_backward");
    const auto saved = ctx->get_saved_variables();
    const int64_t event_dims = ctx->saved_data["event_dims"].toInt();
    // create_graph=True: d/dlogits = grad * (x - sigmoid(logits)) in ATen ops (op_library.h).
    Tensor grad_logits =
        create_graph()
            ? (expand_row_grad(grads[0], event_dims) * (accumulated(saved[0]) - at::sigmoid(accumulated(saved[1]))))
                  .to(saved[1].scalar_type())
            : op.call(grads[0], saved[0], saved[1], event_dims);
    Tensor grad_x;
    if (ctx->needs_input_grad(0)) grad_x = sum_to_x(expand_row_grad(grads[0], event_dims) * saved[1], saved[0]);
    return {grad_x, grad_logits, Tensor()};
  }
};

// The summed or averaged form when only logits needs a gradient: made in the forward pass.
struct BernoulliLogProbTotal : torch::autograd::Function<BernoulliLogProbTotal> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& logits, int64_t event_dims,
                        const std::string& reduction) {
    static const auto op = find_op<decltype(bernoulli_log_prob_with_grad)>("bernoulli_log_prob_with_grad");
    at::AutoDispatchBelowADInplaceOrView below;
    auto [total, grad_logits] = op.call(x, logits, event_dims, reduction);
    keep_gradients(ctx, {grad_logits});
    return total;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto made = hand_on_gradients(ctx, grads[0], "aevb_fast.bernoulli_log_prob");
    return {Tensor(), made[0], Tensor(), Tensor()};
  }
};

Tensor bernoulli_log_prob_autograd(const Tensor& x, const Tensor& logits, int64_t event_dims,
                                   c10::string_view reduction) {
  check_reduction("aevb_fast.bernoulli_log_prob", reduction);
  if (reduction != "none" && at::GradMode::is_enabled() && logits.requires_grad() && !x.requires_grad()) {
    return BernoulliLogProbTotal::apply(x, logits, event_dims, std::string(reduction));
  }
  return reduce_rows(BernoulliLogProb::apply(saved_form(x, event_dims), saved_form(logits, event_dims), event_dims),
                     reduction);
}

}  // namespace aevb_fast::ops

AEVB_OPS(m) {
  using namespace aevb_fast::ops;
  m.def("bernoulli_log_prob(Tensor x, Tensor logits, int event_dims, str reduction=\"none\") -> Tensor");
  m.def("bernoulli_log_prob_backward(Tensor grad, Tensor x, Tensor logits, int event_dims) -> Tensor");
  m.def(
      "bernoulli_log_prob_with_grad(Tensor x, Tensor logits, int event_dims, str reduction) "
      "-> (Tensor total, Tensor grad_logits)");
  impl_backends(m, "bernoulli_log_prob", TORCH_FN(bernoulli_log_prob));
  impl_backends(m, "bernoulli_log_prob_backward", TORCH_FN(bernoulli_log_prob_backward));
  impl_backends(m, "bernoulli_log_prob_with_grad", TORCH_FN(bernoulli_log_prob_with_grad));
  impl_autograd(m, "bernoulli_log_prob", TORCH_FN(bernoulli_log_prob_autograd));
}
