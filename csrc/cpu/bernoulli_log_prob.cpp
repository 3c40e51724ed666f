// bernoulli_log_prob on the CPU.
// Forward:  out[r] = sum_e x[r % Rx, e] * l[r, e] - softplus(l[r, e])
// Backward: grad_logits[r, e] = grad[r] * (x[r % Rx, e] - sigmoid(l[r, e]))
#include "cpu/loops.h"

namespace aevb_fast {
inline namespace CPU_CAPABILITY {
namespace cpu {
namespace {

template <typename scalar_t>
void bernoulli_forward_typed(const at::Tensor& x_t, const at::Tensor& logits_t,
                             const at::Tensor& out_t) {
  using acc = acc_t<scalar_t>;
  const int64_t rows = logits_t.size(0), cols = logits_t.size(1), x_rows = x_t.size(0);
  const scalar_t* x_p = x_t.const_data_ptr<scalar_t>();
  const scalar_t* logits_p = logits_t.const_data_ptr<scalar_t>();
  acc* out_p = out_t.data_ptr<acc>();
  at::parallel_for(0, rows, row_grain(cols), [&](int64_t r0, int64_t r1) {
    InputTile<scalar_t> x_tile, logits_tile;
    for (int64_t r = r0; r < r1; ++r) {
      RowSum<acc> sum;
      for (int64_t j0 = 0; j0 < cols; j0 += kTile) {
        const int64_t n = std::min(kTile, cols - j0);
        const acc* x = x_tile.load(x_p + (r % x_rows) * cols + j0, n);
        const acc* logits = logits_tile.load(logits_p + r * cols + j0, n);
        vectorized_loop<acc>(n, [&](auto t, int64_t i) {
          using T = decltype(t);
          sum.add(bernoulli_log_prob_term(load<T>(x + i), load<T>(logits + i)));
        });
      }
      out_p[r] = sum.total();
    }
  });
}

template <typename scalar_t>
void bernoulli_backward_typed(const at::Tensor& grad_t, const at::Tensor& x_t,
                              const at::Tensor& logits_t, const at::Tensor& grad_logits_t) {
  using acc = acc_t<scalar_t>;
  const int64_t rows = logits_t.size(0), cols = logits_t.size(1), x_rows = x_t.size(0);
  const acc* grad_p = grad_t.const_data_ptr<acc>();
  const scalar_t* x_p = x_t.const_data_ptr<scalar_t>();
  const scalar_t* logits_p = logits_t.const_data_ptr<scalar_t>();
  scalar_t* grad_logits_p = grad_logits_t.data_ptr<scalar_t>();
  at::parallel_for(0, rows, row_grain(cols), [&](int64_t r0, int64_t r1) {
    InputTile<scalar_t> x_tile, logits_tile;
    OutputTile<scalar_t> grad_tile;
    for (int64_t r = r0; r < r1; ++r) {
      const acc g = grad_p[r];
      for (int64_t j0 = 0; j0 < cols; j0 += kTile) {
        const int64_t n = std::min(kTile, cols - j0);
        const acc* x = x_tile.load(x_p + (r % x_rows) * cols + j0, n);
        const acc* logits = logits_tile.load(logits_p + r * cols + j0, n);
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

void bernoulli_forward(const at::Tensor& x, const at::Tensor& logits, const at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "bernoulli_forward",
                                  [&] { bernoulli_forward_typed<scalar_t>(x, logits, out); });
}

void bernoulli_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& logits,
                        const at::Tensor& grad_logits) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "bernoulli_backward",
                                  [&] { bernoulli_backward_typed<scalar_t>(grad, x, logits, grad_logits); });
}

}  // namespace cpu
}  // namespace CPU_CAPABILITY
}  // namespace aevb_fast
