// The decoder's output layer fused with its likelihood, shared by every back end: the logits
// (Bernoulli) or the mean's pre-activation and the log-variance (the paper's Gaussian head) are
// made chunk by chunk with at::addmm (MKL/oneDNN on the CPU, cuBLAS on CUDA), and one epilogue
// kernel per chunk turns them into each row's log-likelihood and, when asked, its gradient; the
// gradients of h, weight and bias follow by two more matrix products. So at most chunk_size rows
// of logits exist at once, never R x D.
//
// Chunks never mix the rows of x: with R = L * Rx rows (row r pairs with row r % Rx of x), a chunk
// is either whole samples (x passed whole) or part of one sample (the matching rows of x).
#include <ATen/ATen.h>

#include "op_library.h"

// The epilogues, on one chunk of rows. x: (Rx, E), row r of the chunk paired with row r % Rx.
// Write out: (R) always, and grad_logits (grad_pre): (R, E) when defined, scaled by grad[r] when
// grad (R) is defined, else by 1.
AEVB_KERNEL(linear_bernoulli_log_prob_epilogue_kernel,
            (const at::Tensor& x, const at::Tensor& logits, const at::Tensor& grad, const at::Tensor& out,
             const at::Tensor& grad_logits))
// pre: (R, 2E), per row the mean's pre-activation a (mean = sigmoid(a)), then the log-variance;
// grad_pre: (R, 2E) likewise.
AEVB_KERNEL(linear_gaussian_log_prob_epilogue_kernel,
            (const at::Tensor& x, const at::Tensor& pre, const at::Tensor& grad, const at::Tensor& out,
             const at::Tensor& grad_pre))

namespace aevb_fast::ops {
namespace {

enum class LinearHead { kBernoulli, kSigmoidGaussian };

struct HeadShape {
  int64_t rows, x_rows, cols, hidden, width;  // width = parts * cols: the product's columns
};

HeadShape check_head_inputs(const char* op, int parts, const at::Tensor& x, const at::Tensor& h,
                            const at::Tensor& weight, const std::optional<at::Tensor>& bias, int64_t chunk_size) {
  check_float_tensor(op, "x", x);
  check_float_tensor(op, "h", h);
  check_float_tensor(op, "weight", weight);
  check_same_dtype_device(op, "x", x, "h", h);
  check_same_dtype_device(op, "weight", weight, "h", h);
  const int64_t cols = x.size(-1), hidden = h.size(-1);
  TORCH_CHECK_VALUE(weight.dim() == 2 && weight.size(0) == parts * cols && weight.size(1) == hidden, op,
                    ": weight must have shape (", parts == 1 ? "" : "2 * ", "x.shape[-1], h.shape[-1]) = (",
                    parts * cols, ", ", hidden, "), got ", weight.sizes());
  if (bias.has_value()) {
    check_float_tensor(op, "bias", *bias);
    check_same_dtype_device(op, "bias", *bias, "h", h);
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == parts * cols, op, ": bias must have shape (", parts * cols,
                      ",), got ", bias->sizes());
  }
  const int64_t lead = h.dim() - x.dim();
  TORCH_CHECK_VALUE(lead >= 0 && h.sizes().slice(lead, x.dim() - 1) == x.sizes().slice(0, x.dim() - 1), op,
                    ": x has shape ", x.sizes(), " but h has shape ", h.sizes(), "; x.shape[:-1] must equal ",
                    "the trailing dimensions of h.shape[:-1] (leading sample dimensions of h are broadcast over x)");
  TORCH_CHECK_VALUE(chunk_size >= 1, op, ": chunk_size must be at least 1, got ", chunk_size);
  int64_t rows = 1, x_rows = 1;
  for (int64_t d = 0; d + 1 < h.dim(); ++d) rows *= h.size(d);
  for (int64_t d = 0; d + 1 < x.dim(); ++d) x_rows *= x.size(d);
  return {rows, x_rows, cols, hidden, parts * cols};
}

// A chunk: rows [row, row + count) of h, and the rows of x they pair with.
struct Chunk {
  int64_t row, count, x_row, x_count;
};

template <typename Body>
void for_each_chunk(const HeadShape& s, int64_t chunk_size, const Body& body) {
  if (s.rows == 0 || s.x_rows == 0) return;
  if (chunk_size >= s.x_rows) {  // whole samples at a time
    const int64_t step = (chunk_size / s.x_rows) * s.x_rows;
    for (int64_t r = 0; r < s.rows; r += step) body(Chunk{r, std::min(step, s.rows - r), 0, s.x_rows});
  } else {
    for (int64_t r0 = 0; r0 < s.rows; r0 += s.x_rows) {
      for (int64_t b = 0; b < s.x_rows; b += chunk_size) {
        const int64_t n = std::min(chunk_size, s.x_rows - b);
        body(Chunk{r0 + b, n, b, n});
      }
    }
  }
}

using Epilogue = void(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&);

Epilogue* epilogue_of(LinearHead head, const at::Device& device) {
  return head == LinearHead::kBernoulli ? linear_bernoulli_log_prob_epilogue_kernel(device)
                                        : linear_gaussian_log_prob_epilogue_kernel(device);
}

int parts_of(LinearHead head) { return head == LinearHead::kBernoulli ? 1 : 2; }

// The work of every entry point: the per-row log-likelihoods into `out` (R), and, when
// grad_h is defined, the gradients (each row's scaled by grad[r] when grad is defined).
struct HeadPass {
  LinearHead head;
  const at::Tensor &x, &h, &weight;
  const std::optional<at::Tensor>& bias;
  int64_t chunk_size;

  void run(const HeadShape& s, const at::Tensor& grad, const at::Tensor& out, const at::Tensor& grad_h,
           const at::Tensor& grad_weight_acc, const at::Tensor& grad_bias_acc) const {
    const at::Tensor x_rows = x.contiguous().view({s.x_rows, s.cols});
    const at::Tensor h_rows = h.contiguous().view({s.rows, s.hidden});
    const at::Tensor weight_t = weight.t();
    const int64_t buffer_rows = std::min(chunk_size, s.rows);
    at::Tensor pre = at::empty({buffer_rows, s.width}, h.options());
    at::Tensor grad_pre = grad_h.defined() ? at::empty({buffer_rows, s.width}, h.options()) : at::Tensor();
    const bool accumulate_in_place = grad_weight_acc.defined() && grad_weight_acc.scalar_type() == weight.scalar_type();
    for_each_chunk(s, chunk_size, [&](const Chunk& c) {
      const at::Tensor h_chunk = h_rows.narrow(0, c.row, c.count);
      at::Tensor pre_chunk = pre.narrow(0, 0, c.count);
      if (bias.has_value()) {
        at::addmm_out(pre_chunk, *bias, h_chunk, weight_t);
      } else {
        at::mm_out(pre_chunk, h_chunk, weight_t);
      }
      at::Tensor grad_chunk = grad_h.defined() ? grad_pre.narrow(0, 0, c.count) : at::Tensor();
      epilogue_of(head, h.device())(x_rows.narrow(0, c.x_row, c.x_count), pre_chunk,
                                    grad.defined() ? grad.narrow(0, c.row, c.count) : at::Tensor(),
                                    out.narrow(0, c.row, c.count), grad_chunk);
      if (!grad_h.defined()) return;
      at::Tensor grad_h_chunk = grad_h.narrow(0, c.row, c.count);
      at::mm_out(grad_h_chunk, grad_chunk, weight);
      if (accumulate_in_place) {
        grad_weight_acc.addmm_(grad_chunk.t(), h_chunk);
      } else {  // reduced precision: each chunk's product made and accumulated in float32
        grad_weight_acc.addmm_(grad_chunk.t().to(at::kFloat), h_chunk.to(at::kFloat));
      }
      grad_bias_acc.add_(at::sum(grad_chunk, {0}, /*keepdim=*/false, grad_bias_acc.scalar_type()));
    });
  }
};

at::Tensor row_output_shape_like(const at::Tensor& h, const at::Tensor& rows) {
  return rows.view(h.sizes().slice(0, h.dim() - 1));
}

const char* forward_name(LinearHead head) {
  return head == LinearHead::kBernoulli ? "aevb_fast.linear_bernoulli_log_prob" : "aevb_fast.linear_gaussian_log_prob";
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gradient_buffers(const at::Tensor& h, const at::Tensor& weight,
                                                                const HeadShape& s) {
  const auto acc = accumulate_dtype(weight.scalar_type());
  return {at::empty({s.rows, s.hidden}, h.options()), at::zeros(weight.sizes(), weight.options().dtype(acc)),
          at::zeros({s.width}, weight.options().dtype(acc))};
}

at::Tensor linear_log_prob(LinearHead head, const at::Tensor& x, const at::Tensor& h, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias, c10::string_view reduction, int64_t chunk_size) {
  const char* op = forward_name(head);
  TORCH_CHECK_VALUE(reduction == "none" || reduction == "sum" || reduction == "mean", op,
                    ": reduction must be 'none', 'sum' or 'mean', got '", reduction, "'");
  const HeadShape s = check_head_inputs(op, parts_of(head), x, h, weight, bias, chunk_size);
  at::Tensor out = at::empty({s.rows}, h.options().dtype(accumulate_dtype(h.scalar_type())));
  HeadPass{head, x, h, weight, bias, chunk_size}.run(s, at::Tensor(), out, at::Tensor(), at::Tensor(), at::Tensor());
  if (reduction == "sum") return out.sum();
  if (reduction == "mean") return out.mean();
  return row_output_shape_like(h, out);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_log_prob_backward(LinearHead head, const at::Tensor& grad,
                                                                        const at::Tensor& x, const at::Tensor& h,
                                                                        const at::Tensor& weight,
                                                                        const std::optional<at::Tensor>& bias,
                                                                        int64_t chunk_size) {
  const char* op = head == LinearHead::kBernoulli ? "aevb_fast.linear_bernoulli_log_prob_backward"
                                                  : "aevb_fast.linear_gaussian_log_prob_backward";
  const HeadShape s = check_head_inputs(op, parts_of(head), x, h, weight, bias, chunk_size);
  TORCH_CHECK_VALUE(grad.sizes() == h.sizes().slice(0, h.dim() - 1), op,
                    ": grad must have the shape of the forward output ", h.sizes().slice(0, h.dim() - 1), ", got ",
                    grad.sizes());
  TORCH_CHECK_VALUE(grad.device() == h.device(), op, ": grad is on ", grad.device(), " but h is on ", h.device());
  const at::Tensor grad_rows = grad.to(accumulate_dtype(h.scalar_type())).contiguous().view({s.rows});
  auto [grad_h, grad_weight, grad_bias] = gradient_buffers(h, weight, s);
  at::Tensor out = at::empty({s.rows}, grad_rows.options());
  HeadPass{head, x, h, weight, bias, chunk_size}.run(s, grad_rows, out, grad_h, grad_weight, grad_bias);
  return {grad_h.view(h.sizes()), grad_weight.to(weight.scalar_type()), grad_bias.to(weight.scalar_type())};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_log_prob_with_grads(
    LinearHead head, const at::Tensor& x, const at::Tensor& h, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, c10::string_view reduction, int64_t chunk_size) {
  const char* op = head == LinearHead::kBernoulli ? "aevb_fast.linear_bernoulli_log_prob_with_grads"
                                                  : "aevb_fast.linear_gaussian_log_prob_with_grads";
  TORCH_CHECK_VALUE(reduction == "sum" || reduction == "mean", op, ": reduction must be 'sum' or 'mean', got '",
                    reduction, "'");
  const HeadShape s = check_head_inputs(op, parts_of(head), x, h, weight, bias, chunk_size);
  auto [grad_h, grad_weight, grad_bias] = gradient_buffers(h, weight, s);
  at::Tensor out = at::empty({s.rows}, h.options().dtype(accumulate_dtype(h.scalar_type())));
  HeadPass{head, x, h, weight, bias, chunk_size}.run(s, at::Tensor(), out, grad_h, grad_weight, grad_bias);
  at::Tensor total = out.sum();
  if (reduction == "mean") {
    // The gradients of the mean: each row's weighs 1 / R (R = 0 leaves them zero, the mean NaN).
    const double scale = s.rows > 0 ? 1.0 / double(s.rows) : 0.0;
    total = out.mean();
    grad_h.mul_(scale), grad_weight.mul_(scale), grad_bias.mul_(scale);
  }
  return {total, grad_h.view(h.sizes()), grad_weight.to(weight.scalar_type()), grad_bias.to(weight.scalar_type())};
}

// The registered host functions: one set per head.
template <LinearHead kHead>
struct HeadOps {
  static Tensor forward(const Tensor& x, const Tensor& h, const Tensor& weight, const Optional& bias,
                        c10::string_view reduction, int64_t chunk_size) {
    return linear_log_prob(kHead, x, h, weight, bias, reduction, chunk_size);
  }
  static std::tuple<Tensor, Tensor, Tensor> backward(const Tensor& grad, const Tensor& x, const Tensor& h,
                                                     const Tensor& weight, const Optional& bias, int64_t chunk_size) {
    return linear_log_prob_backward(kHead, grad, x, h, weight, bias, chunk_size);
  }
  static std::tuple<Tensor, Tensor, Tensor, Tensor> with_grads(const Tensor& x, const Tensor& h, const Tensor& weight,
                                                               const Optional& bias, c10::string_view reduction,
                                                               int64_t chunk_size) {
    return linear_log_prob_with_grads(kHead, x, h, weight, bias, reduction, chunk_size);
  }
};

// The heads' gradients come from operators with no derivative of their own (and, for sum/mean,
// from the forward pass): a graph of them (create_graph=True) would be silently wrong.
void check_no_double_backward(const char* name) {
  TORCH_CHECK(!create_graph(), "aevb_fast.", name,
              ": double backward (create_graph=True) is not "
              "supported; for higher-order gradients use aevb_fast.reference.",
              name, " (for the ELBO: elbo(..., reduction='none', fused_head=False))");
}

}  // namespace

// ---- autograd ---------------------------------------------------------------------------------
// "none" keeps per-row outputs (the IWAE bound needs them) and recomputes each chunk's logits in
// the backward; "sum" and "mean" compute the gradients in the forward's one pass over the chunks,
// so the backward only scales them and no matrix product is done twice. No gradient for x.

struct BernoulliHead {
  static constexpr const char* name = "linear_bernoulli_log_prob";
};
struct GaussianHead {
  static constexpr const char* name = "linear_gaussian_log_prob";
};

// The operators of one head, found in this library.
template <typename Head>
struct LinearHeadOps {
  // The operators' signatures are their host functions' (HeadOps, registered below).
  using Forward = decltype(HeadOps<LinearHead::kBernoulli>::forward);
  using Backward = decltype(HeadOps<LinearHead::kBernoulli>::backward);
  using WithGrads = decltype(HeadOps<LinearHead::kBernoulli>::with_grads);
  static const LinearHeadOps& get() {
    static const LinearHeadOps ops;
    return ops;
  }
  c10::TypedOperatorHandle<Forward> forward = find_op<Forward>(Head::name);
  c10::TypedOperatorHandle<Backward> backward = find_op<Backward>((std::string(Head::name) + "_backward").c_str());
  c10::TypedOperatorHandle<WithGrads> with_grads =
      find_op<WithGrads>((std::string(Head::name) + "_with_grads").c_str());
};

template <typename Head>
struct LinearHeadRows : torch::autograd::Function<LinearHeadRows<Head>> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& h, const Tensor& weight,
                        const Optional& bias, int64_t chunk_size) {
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->save_for_backward({x, h, weight, bias.value_or(Tensor())});
    ctx->saved_data["chunk_size"] = chunk_size;
    return LinearHeadOps<Head>::get().forward.call(x, h, weight, bias, "none", chunk_size);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    check_no_double_backward(Head::name);
    const auto saved = ctx->get_saved_variables();
    const Optional bias = saved_optional(saved[3]);
    auto [grad_h, grad_weight, grad_bias] = LinearHeadOps<Head>::get().backward.call(
        grads[0], saved[0], saved[1], saved[2], bias, ctx->saved_data["chunk_size"].toInt());
    return {Tensor(), grad_h, grad_weight, bias.has_value() ? grad_bias : Tensor(), Tensor()};
  }
};

// The gradients made in the forward are kept for the backward, which scales them in place by the
// incoming gradient (on CUDA on the device, and not at all when it is one) and hands them on
// (op_library.h: keep_gradients, hand_on_gradients): no second (R x H) tensor ever exists.
template <typename Head>
struct LinearHeadTotal : torch::autograd::Function<LinearHeadTotal<Head>> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& h, const Tensor& weight,
                        const Optional& bias, const std::string& reduction, int64_t chunk_size) {
    at::AutoDispatchBelowADInplaceOrView below;
    auto [total, grad_h, grad_weight, grad_bias] =
        LinearHeadOps<Head>::get().with_grads.call(x, h, weight, bias, reduction, chunk_size);
    keep_gradients(ctx, {grad_h, grad_weight, bias.has_value() ? grad_bias : Tensor()});
    return total;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    check_no_double_backward(Head::name);  // before hand_on_gradients' advice, which fits the other ops
    const std::string op = std::string("aevb_fast.") + Head::name;
    const std::vector<Tensor> made = hand_on_gradients(ctx, grads[0], op.c_str());
    return {Tensor(), made[0], made[1], made[2], Tensor(), Tensor()};
  }
};

template <typename Head>
Tensor linear_head_autograd(const Tensor& x, const Tensor& h, const Tensor& weight, const Optional& bias,
                            c10::string_view reduction, int64_t chunk_size) {
  if (reduction == "none") return LinearHeadRows<Head>::apply(x, h, weight, bias, chunk_size);
  const bool needs_grad =
      at::GradMode::is_enabled() && (h.requires_grad() || weight.requires_grad() || (bias && bias->requires_grad()));
  if (needs_grad) return LinearHeadTotal<Head>::apply(x, h, weight, bias, std::string(reduction), chunk_size);
  at::AutoDispatchBelowADInplaceOrView below;
  return LinearHeadOps<Head>::get().forward.call(x, h, weight, bias, reduction, chunk_size);
}

}  // namespace aevb_fast::ops

// The decoder's output layer and its likelihood: per row of h (or summed, or averaged)
// log p(x | h @ weight.T + bias), chunk_size rows of logits at a time. The Gaussian head's weight
// stacks the mean's map (through a sigmoid) over the log-variance's. *_with_grads computes a sum
// or mean and its gradients in one pass, for autograd.
AEVB_OPS(m) {
  using namespace aevb_fast::ops;
  const std::string inputs = "Tensor x, Tensor h, Tensor weight, Tensor? bias";
  for (const std::string name : {"linear_bernoulli_log_prob", "linear_gaussian_log_prob"}) {
    m.def((name + "(" + inputs + ", str reduction, int chunk_size) -> Tensor").c_str());
    m.def((name + "_backward(Tensor grad, " + inputs +
           ", int chunk_size) "
           "-> (Tensor grad_h, Tensor grad_weight, Tensor grad_bias)")
              .c_str());
    m.def((name + "_with_grads(" + inputs +
           ", str reduction, int chunk_size) "
           "-> (Tensor total, Tensor grad_h, Tensor grad_weight, Tensor grad_bias)")
              .c_str());
  }
  using Bernoulli = HeadOps<LinearHead::kBernoulli>;
  using Gaussian = HeadOps<LinearHead::kSigmoidGaussian>;
  impl_backends(m, "linear_bernoulli_log_prob", TORCH_FN(Bernoulli::forward));
  impl_backends(m, "linear_bernoulli_log_prob_backward", TORCH_FN(Bernoulli::backward));
  impl_backends(m, "linear_bernoulli_log_prob_with_grads", TORCH_FN(Bernoulli::with_grads));
  impl_autograd(m, "linear_bernoulli_log_prob", TORCH_FN(linear_head_autograd<BernoulliHead>));
  impl_backends(m, "linear_gaussian_log_prob", TORCH_FN(Gaussian::forward));
  impl_backends(m, "linear_gaussian_log_prob_backward", TORCH_FN(Gaussian::backward));
  impl_backends(m, "linear_gaussian_log_prob_with_grads", TORCH_FN(Gaussian::with_grads));
  impl_autograd(m, "linear_gaussian_log_prob", TORCH_FN(linear_head_autograd<GaussianHead>));
}
