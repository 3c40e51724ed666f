// bernoulli_log_prob on the CPU.
// Forward:  out[r] = sum_e x[r % Rx, e] * l[r, e] - softplus(l[r, e])
// Backward: grad_logits[r, e] = grad[r] * (x[r % Rx, e] - sigmoid(l[r, e]))
// The forward also writes grad_scale * (x - sigmoid(l)) when grad_logits is defined (the summed
// form's gradient, made in the same pass).
// x and logits may be broadcast without a copy; rows are walked flat, in tiles (RowInput, cpu/loops.h).
#include "cpu/loops.h"

namespace aevb_fast {
inline namespace CPU_CAPABILITY {
namespace cpu {
namespace {

template <typename scalar_t, bool kGrad>
void bernoulli_forward_typed(const at::Tensor& x_t, const at::Tensor& logits_t, const at::Tensor& out_t,
                             const at::Tensor& grad_logits_t, double grad_scale, int64_t cols) {
  using acc = acc_t<scalar_t>;
  const int64_t rows = out_t.size(0);
  const RowInput<scalar_t> x_in(x_t), logits_in(logits_t);
  acc* out_p = out_t.data_ptr<acc>();
  scalar_t* grad_logits_p = kGrad ? grad_logits_t.data_ptr<scalar_t>() : nullptr;
  const acc scale = acc(grad_scale);
  at::parallel_for(0, rows, row_grain(cols), [&](int64_t r0, int64_t r1) {
    InputTile<scalar_t> x_tile, logits_tile;
    OutputTile<scalar_t> grad_tile;
    alignas(64) acc terms[kTile];
    std::fill(out_p + r0, out_p + r1, acc(0));
    for (int64_t p = r0 * cols, n = 0; p < r1 * cols; p += n) {
      n = tile_length(p, r1 * cols, cols);
      const acc* x = x_in.load_flat(x_tile, p, n, rows, cols);
      const acc* logits = logits_in.load_flat(logits_tile, p, n, rows, cols);
      acc* grad_logits = kGrad ? grad_tile.begin(grad_logits_p + p, n) : nullptr;
      vectorized_loop<acc>(n, [&](auto t, int64_t i) {
        using T = decltype(t);
        const T xi = load<T>(x + i), li = load<T>(logits + i);
        if constexpr (kGrad) {
          const auto both = bernoulli_log_prob_and_grad(xi, li);
          store(both.term, terms + i);
          store(T(scale) * both.grad, grad_logits + i);
        } else {
          store(bernoulli_log_prob_term(xi, li), terms + i);
        }
      });
      if constexpr (kGrad) grad_tile.finish();
      add_row_sums(terms, p, n, cols, out_p);
    }
  });
}

template <typename scalar_t>
void bernoulli_backward_typed(const at::Tensor& grad_t, const at::Tensor& x_t, const at::Tensor& logits_t,
                              const at::Tensor& grad_logits_t) {
  using acc = acc_t<scalar_t>;
  const int64_t rows = grad_logits_t.size(0), cols = grad_logits_t.size(1);
  const acc* grad_p = grad_t.const_data_ptr<acc>();
  const RowInput<scalar_t> x_in(x_t), logits_in(logits_t);
  scalar_t* grad_logits_p = grad_logits_t.data_ptr<scalar_t>();
  at::parallel_for(0, rows, row_grain(cols), [&](int64_t r0, int64_t r1) {
    InputTile<scalar_t> x_tile, logits_tile;
    OutputTile<scalar_t> grad_tile;
    alignas(64) acc grad_spread[kTile];  // grad[r] for each of row r's elements
    for (int64_t p = r0 * cols, n = 0; p < r1 * cols; p += n) {
      n = tile_length(p, r1 * cols, cols);
      spread_rows(grad_p, p, n, cols, grad_spread);
      const acc* x = x_in.load_flat(x_tile, p, n, rows, cols);
      const acc* logits = logits_in.load_flat(logits_tile, p, n, rows, cols);
      acc* grad_logits = grad_tile.begin(grad_logits_p + p, n);
      vectorized_loop<acc>(n, [&](auto t, int64_t i) {
        using T = decltype(t);
        store(load<T>(grad_spread + i) * bernoulli_grad_logit(load<T>(x + i), load<T>(logits + i)), grad_logits + i);
      });
      grad_tile.finish();
    }
  });
}

}  // namespace

void bernoulli_log_prob_forward_kernel(const at::Tensor& x, const at::Tensor& logits, const at::Tensor& out,
                                       const at::Tensor& grad_logits, double grad_scale, int64_t event) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, logits.scalar_type(), "bernoulli_log_prob_forward_kernel", [&] {
        if (grad_logits.defined()) {
          bernoulli_forward_typed<scalar_t, true>(x, logits, out, grad_logits, grad_scale, event);
        } else {
          bernoulli_forward_typed<scalar_t, false>(x, logits, out, grad_logits, grad_scale, event);
        }
      });
}

void bernoulli_log_prob_backward_kernel(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& logits,
                                        const at::Tensor& grad_logits) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "bernoulli_log_prob_backward_kernel",
                                  [&] { bernoulli_backward_typed<scalar_t>(grad, x, logits, grad_logits); });
}

}  // namespace cpu
}  // namespace CPU_CAPABILITY
}  // namespace aevb_fast
