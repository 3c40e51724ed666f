// bernoulli_log_prob on the CPU.
// Forward:  out[r] = sum_e x[r % Rx, e] * l[r, e] - softplus(l[r, e])
// Backward: grad_logits[r, e] = grad[r] * (x[r % Rx, e] - sigmoid(l[r, e]))
// The forward also writes grad_scale * (x - sigmoid(l)) when grad_logits is defined (the summed
// form's gradient, made in the same pass).
// x and logits may be broadcast without a copy (RowInput, cpu/loops.h).
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
    for (int64_t r = r0; r < r1; ++r) {
      RowSum<acc> sum;
      for (int64_t j0 = 0; j0 < cols; j0 += kTile) {
        const int64_t n = std::min(kTile, cols - j0);
        const acc* x = x_in.load(x_tile, r, j0, n);
        const acc* logits = logits_in.load(logits_tile, r, j0, n);
        acc* grad_logits = kGrad ? grad_tile.begin(grad_logits_p + r * cols + j0, n) : nullptr;
        vectorized_loop<acc>(n, [&](auto t, int64_t i) {
          using T = decltype(t);
          const T xi = load<T>(x + i), li = load<T>(logits + i);
          if constexpr (kGrad) {
            const auto both = bernoulli_log_prob_and_grad(xi, li);
            sum.add(both.term);
            store(T(scale) * both.grad, grad_logits + i);
          } else {
            sum.add(bernoulli_log_prob_term(xi, li));
          }
        });
        if constexpr (kGrad) grad_tile.finish();
      }
      out_p[r] = sum.total();
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
    for (int64_t r = r0; r < r1; ++r) {
      const acc g = grad_p[r];
      for (int64_t j0 = 0; j0 < cols; j0 += kTile) {
        const int64_t n = std::min(kTile, cols - j0);
        const acc* x = x_in.load(x_tile, r, j0, n);
        const acc* logits = logits_in.load(logits_tile, r, j0, n);
        acc* grad_logits = grad_tile.begin(grad_logits_p + r * cols + j0, n);
        vectorized_loop<acc>(n, [&](auto t, int64_t i) {
          using T = decltype(t);
          store(T(g) * bernoulli_grad_logit(load<T>(x + i), load<T>(logits + i)), grad_logits + i);
        });
        grad_tile.finish();
      }
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
