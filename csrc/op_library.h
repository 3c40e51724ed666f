#pragma once
// What an operator's host file (csrc/ops/<op>.cpp) needs to register itself: its schema, its
// host function for every back end, and its autograd formula, in one block:
//
//   AEVB_OPS(m) {
//     m.def("gaussian_kl(Tensor mu, Tensor logvar) -> Tensor");
//     impl_backends(m, "gaussian_kl", TORCH_FN(gaussian_kl));
//     impl_autograd(m, "gaussian_kl", TORCH_FN(gaussian_kl_autograd));
//   }
//
// The same files build two libraries: torch.ops.aevb_fast (module _C: the CPU kernels, and the
// CUDA kernels when built with CUDA) and, in the development build of the CUDA emulation,
// torch.ops.aevb_fast_emulated (module _emulated_cuda: the CUDA kernels on CPU tensors).
//
// The autograd formulas are registered here in C++ (as torchvision registers its ops) rather
// than with Python's torch.library.register_autograd: at the paper's minibatch the Python layer
// cost ~4 us per call without grad and ~60 us per forward+backward, more than the kernels
// (benchmarks/call_overhead.py). A forward op's backward is the library's own *_backward
// operator, called through the dispatcher, so that compiled graphs, FakeTensor and torch.export
// see both.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/checks.h"
#include "kernel.h"

#if defined(AEVB_EMULATED_CUDA)
#define AEVB_LIBRARY aevb_fast_emulated
#else
#define AEVB_LIBRARY aevb_fast
#endif
#define AEVB_OPS(m) TORCH_LIBRARY_FRAGMENT(AEVB_LIBRARY, m)

namespace aevb_fast::ops {

using at::Tensor;
using Optional = std::optional<at::Tensor>;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// "aevb_fast" or "aevb_fast_emulated": the library these files are built into.
inline const char* library_name() { return C10_STRINGIZE(AEVB_LIBRARY); }

// Registers an op's host function (checks, shapes, kernels) for every device this library runs.
template <typename Fn>
void impl_backends(torch::Library& m, const char* name, Fn fn) {
  m.impl(name, torch::dispatch(c10::DispatchKey::CPU, fn));
#if defined(AEVB_WITH_CUDA) && !defined(AEVB_EMULATED_CUDA)
  m.impl(name, torch::dispatch(c10::DispatchKey::CUDA, fn));
#endif
}

// Registers an op's autograd function (see above).
template <typename Fn>
void impl_autograd(torch::Library& m, const char* name, Fn fn) {
  m.impl(name, torch::dispatch(c10::DispatchKey::Autograd, fn));
}

// The typed handle of operator `name` of this library, found once per call site. Its signature is
// the host function's that implements it, so the signature is written once (the host function),
// and the schema string of m.def is checked against that function when impl_backends registers it:
//   static const auto backward = find_op<decltype(gaussian_kl_backward)>("gaussian_kl_backward");
template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton()
      .findSchemaOrThrow((std::string(library_name()) + "::" + name).c_str(), "")
      .template typed<Signature>();
}

inline Optional saved_optional(const Tensor& t) { return t.defined() ? Optional(t) : std::nullopt; }

// ---- shapes shared by the ops -----------------------------------------------------------------

inline int64_t product(at::IntArrayRef sizes) {
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  return n;
}

// A log-likelihood's shapes: `target` (logits, mean) is (*sample, *batch, *event) and x is
// (*batch, *event), a trailing part of it: the kernels' output has `rows` rows of `event`
// elements, x (x_rows, event) before any broadcast.
struct LogProbShape {
  int64_t rows, x_rows, event;
};

inline LogProbShape check_log_prob_inputs(const char* op, const Tensor& x, const char* target_name,
                                          const Tensor& target, int64_t event_dims) {
  check_float_tensor(op, "x", x);
  check_float_tensor(op, target_name, target);
  check_same_dtype_device(op, "x", x, target_name, target);
  TORCH_CHECK_VALUE(event_dims >= 0 && event_dims <= x.dim(), op, ": event_dims must be between 0 ",
                    "and x.dim() = ", x.dim(), ", got ", event_dims);
  const int64_t lead = target.dim() - x.dim();
  TORCH_CHECK_VALUE(lead >= 0 && target.sizes().slice(lead) == x.sizes(), op, ": x has shape ", x.sizes(), " but ",
                    target_name, " has shape ", target.sizes(), "; x must equal ", "the trailing dimensions of ",
                    target_name, " (a leading sample dimension of ", target_name, " is broadcast over x)");
  const int64_t batch_dims = target.dim() - event_dims;
  return {product(target.sizes().slice(0, batch_dims)), product(x.sizes().slice(0, x.dim() - event_dims)),
          product(target.sizes().slice(batch_dims))};
}

// An input of a row kernel, without a copy when its layout allows one: viewed as a contiguous
// (rows, cols) block, cols being the event's size E or 1 (one value for a whole row), and row r of
// the kernel's (R, E) reading row r % rows (R % rows == 0). That covers an input with fewer leading
// dims (x under a sample dim), a broadcast over leading dims (expand of a (J,) or (C, H, W) tensor)
// and over the event (a scalar, (1, 1, 1, 1) or per-row (B, 1) log-variance). Any other layout
// (a transpose, a channel slice) has no such view: nullopt.
inline std::optional<Tensor> rows_in_place(const Tensor& t, int64_t event_dims) {
  const int64_t dims = t.dim(), first_event = dims - event_dims;
  const auto sizes = t.sizes();
  const auto strides = t.strides();
  const int64_t event = product(sizes.slice(first_event));
  if (t.numel() == 0) return std::nullopt;
  bool per_row = true;  // every event dim broadcast
  for (int64_t d = first_event; d < dims; ++d) per_row = per_row && (sizes[d] == 1 || strides[d] == 0);
  int64_t expected = 1;  // the stride the next dim to the left needs to continue the block
  if (!per_row) {
    for (int64_t d = dims - 1; d >= first_event; --d) {
      if (sizes[d] != 1 && strides[d] != expected) return std::nullopt;
      expected *= sizes[d];
    }
  }
  // The leading dims: contiguous ones to the right, then only broadcast ones.
  int64_t rows = 1;
  bool broadcast_seen = false;
  for (int64_t d = first_event - 1; d >= 0; --d) {
    if (sizes[d] == 1) continue;
    if (strides[d] == 0) {
      broadcast_seen = true;
      continue;
    }
    if (broadcast_seen || strides[d] != expected) return std::nullopt;
    expected *= sizes[d];
    rows *= sizes[d];
  }
  const int64_t cols = per_row ? 1 : event;
  return t.as_strided({rows, cols}, {cols, 1});
}

// rows_in_place's block, or else a copy as (R', E), R' the product of the input's own leading dims.
inline Tensor broadcast_rows(const Tensor& t, int64_t event_dims) {
  if (auto block = rows_in_place(t, event_dims)) return *block;
  const int64_t first_event = t.dim() - event_dims;
  return t.contiguous().view({product(t.sizes().slice(0, first_event)), product(t.sizes().slice(first_event))});
}

// The form in which an op's autograd wrapper hands an input to its autograd Function, which saves
// it for the backward and passes it to its op. (Made above the Function, so that a copy stays in
// the autograd graph: a backward with create_graph=True differentiates through it.)
// A view that keeps a larger tensor alive and that the kernels cannot read in place (a channel
// slice of a conv output, as VDVAE's posterior and prior means are) becomes a compact copy: the
// kernels would copy it anyway, in the forward and again in the backward, and saving the copy
// lets the rest of the larger tensor be freed (when nothing else holds it), so the op keeps no
// more memory alive than the eager formula does. Anything else (a broadcast, a slice read in
// place) is kept as it is. (A copied input changed in place after the forward no longer raises
// in the backward: the backward uses the forward's values, the right gradient.)
// Under symbolic shapes (torch.compile with dynamic sizes) the sizes are not known and the input
// is kept as it is.
inline Tensor saved_form(const Tensor& t, int64_t event_dims) {
  // An event_dims out of range is the op's to refuse, with its message.
  if (!t.defined() || !t.has_storage() || t.unsafeGetTensorImpl()->has_symbolic_sizes_strides() || t.is_contiguous() ||
      event_dims < 0 || event_dims > t.dim())
    return t;
  const auto held = t.storage().sym_nbytes().maybe_as_int();  // a view of a dynamic-size tensor: unknown
  if (!held.has_value() || *held <= t.numel() * static_cast<int64_t>(t.element_size()) ||
      rows_in_place(t, event_dims).has_value())
    return t;
  return t.contiguous();
}

// The incoming gradient of a log-likelihood, one per output row, in the accumulation dtype.
inline Tensor check_log_prob_grad(const char* op, const Tensor& grad, const Tensor& target, int64_t event_dims,
                                  int64_t rows) {
  TORCH_CHECK_VALUE(grad.defined() && grad.sizes() == target.sizes().slice(0, target.dim() - event_dims), op,
                    ": grad must have the shape of the forward output ",
                    target.sizes().slice(0, target.dim() - event_dims));
  TORCH_CHECK_VALUE(grad.device() == target.device(), op, ": grad is on ", grad.device(), " but the inputs are on ",
                    target.device());
  return grad.to(accumulate_dtype(target.scalar_type())).contiguous().view({rows});
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

// ---- double backward --------------------------------------------------------------------------
// The *_backward operators have no derivative of their own: under create_graph=True (a gradient
// penalty, a Hessian-vector product, gradgradcheck) a gradient taken from them would be a constant
// to autograd, and every second derivative through it silently zero. So a backward run with
// create_graph=True makes its gradients from differentiable ATen ops instead (slower; only then).
inline bool create_graph() { return at::GradMode::is_enabled(); }

// t in its accumulation dtype (float32 for float16 and bfloat16), as the kernels compute.
inline Tensor accumulated(const Tensor& t) { return t.to(accumulate_dtype(t.scalar_type())); }

// ---- the summed and averaged forms, their gradients made in the forward ---------------------
// A log-likelihood summed or averaged over its rows (as an ELBO uses it) has a gradient that its
// forward pass can write while it reads the inputs (the *_with_grad operators); the backward then
// only scales it by the incoming gradient, which for loss.backward() on the sum is 1: no byte
// moves (as Liger's cross-entropy does it).

inline void check_reduction(const char* op, c10::string_view reduction, bool allow_none = true) {
  TORCH_CHECK_VALUE((allow_none && reduction == "none") || reduction == "sum" || reduction == "mean", op,
                    ": reduction must be ", allow_none ? "'none', 'sum' or 'mean'" : "'sum' or 'mean'", ", got '",
                    reduction, "'");
}

// The per-row output reduced: itself, its sum or its mean (the mean of no rows is NaN, as torch's).
inline Tensor reduce_rows(const Tensor& rows, c10::string_view reduction) {
  if (reduction == "sum") return rows.sum();
  if (reduction == "mean") return rows.mean();
  return rows;
}

// What each row's gradient weighs in the reduced output: 1 for a sum, 1 / R for a mean.
inline double row_weight(c10::string_view reduction, int64_t rows) {
  return reduction == "mean" ? (rows > 0 ? 1.0 / double(rows) : 0.0) : 1.0;
}

}  // namespace aevb_fast::ops

#if defined(AEVB_WITH_CUDA) || defined(AEVB_EMULATED_CUDA)
namespace aevb_fast::cuda {
// t *= *grad in place unless *grad == 1, tested on the device (csrc/cuda/gradient_scale.cu).
void scale_unless_one(const at::Tensor& t, const at::Tensor& grad);
}  // namespace aevb_fast::cuda
#endif

namespace aevb_fast::ops {

// Whether a kernel may touch t's memory itself: not a FakeTensor, functional tensor or functorch
// wrapper (torch.compile's tracing, vmap), where only dispatcher operators run.
inline bool holds_data(const Tensor& t) {
  constexpr c10::DispatchKeySet wrappers({c10::DispatchKey::Python, c10::DispatchKey::Functionalize,
                                          c10::DispatchKey::FuncTorchBatched, c10::DispatchKey::FuncTorchGradWrapper,
                                          c10::DispatchKey::PythonTLSSnapshot});
  return t.has_storage() && !t.is_meta() && (t.key_set() & wrappers).empty();
}

// t *= grad (the incoming gradient of a 0-dim output) in place, where grad == 1 changes nothing.
// On CUDA the test is made on the device (no synchronisation; a CUDA graph replays it), on the
// CPU on the host; traced tensors take the dispatcher's mul_.
inline void scale_by_grad_(const Tensor& t, const Tensor& grad) {
  if (!holds_data(t) || !holds_data(grad)) {
    t.mul_(grad);
    return;
  }
#if defined(AEVB_WITH_CUDA) || defined(AEVB_EMULATED_CUDA)
#if !defined(AEVB_EMULATED_CUDA)
  if (t.is_cuda())
#endif
  {
    cuda::scale_unless_one(t, grad.to(t.options().dtype(accumulate_dtype(t.scalar_type()))).contiguous());
    return;
  }
#endif
  if (grad.item<double>() != 1.0) t.mul_(grad);
}

// The gradients a forward made, saved for the backward (where undefined, none was needed). A
// backward that frees the graph (the usual one) scales them in place and hands them on: autograd
// has released its own reference by then, so it accumulates them without a copy, and no second
// tensor of their size ever exists. A backward that keeps the graph (retain_graph=True, gradcheck)
// scales copies.
inline void keep_gradients(AutogradContext* ctx, const std::vector<Tensor>& gradients) {
  ctx->save_for_backward(gradients);
}

inline std::vector<Tensor> hand_on_gradients(AutogradContext* ctx, const Tensor& grad, const char* op) {
  TORCH_CHECK(!create_graph(), op,
              ": double backward (create_graph=True) is not supported: its gradients were made in the forward "
              "pass; for higher-order gradients take reduction='none' and reduce the result yourself (for the "
              "ELBO: elbo(..., reduction='none', fused_head=False).mean())");
  std::vector<Tensor> made = ctx->get_saved_variables();
  const bool keep = torch::autograd::get_current_graph_task_keep_graph();
  for (Tensor& t : made) {
    if (!t.defined()) continue;
    if (keep) {
      t = t * grad;
    } else {
      scale_by_grad_(t, grad);
    }
  }
  return made;
}

}  // namespace aevb_fast::ops
