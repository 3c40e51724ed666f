// gaussian_log_prob on the CPU, with w = (x - mean) * exp(-logvar / 2):
// Forward:  out[r] = -E log(2 pi) / 2 - sum_e (logvar + w^2) / 2
// Backward: grad_mean = grad[r] * w * exp(-logvar / 2);  grad_logvar = grad[r] * (w^2 - 1) / 2
// The forward also writes both gradients times grad_scale when grad_mean is defined (the summed
// form's gradients, made in the same pass).
#include "cpu/loops.h"

namespace aevb_fast {
inline namespace CPU_CAPABILITY {
namespace cpu {
namespace {

template <typename scalar_t, bool kGrad>
void gaussian_forward_typed(const at::Tensor& x_t, const at::Tensor& mean_t, const at::Tensor& logvar_t,
                            const at::Tensor& out_t, const at::Tensor& grad_mean_t, const at::Tensor& grad_logvar_t,
                            double grad_scale, int64_t cols) {
  using acc = acc_t<scalar_t>;
  const int64_t rows = out_t.size(0);
  const RowInput<scalar_t> x_in(x_t), mean_in(mean_t), logvar_in(logvar_t);
  acc* out_p = out_t.data_ptr<acc>();
  scalar_t* grad_mean_p = kGrad ? grad_mean_t.data_ptr<scalar_t>() : nullptr;
  scalar_t* grad_logvar_p = kGrad ? grad_logvar_t.data_ptr<scalar_t>() : nullptr;
  const acc constant = acc(-0.5 * kLog2Pi) * acc(cols), scale = acc(grad_scale);
  at::parallel_for(0, rows, row_grain(cols), [&](int64_t r0, int64_t r1) {
    InputTile<scalar_t> x_tile, mean_tile, logvar_tile;
    OutputTile<scalar_t> grad_mean_tile, grad_logvar_tile;
    alignas(64) acc terms[kTile];
    std::fill(out_p + r0, out_p + r1, acc(0));
    for (int64_t p = r0 * cols, n = 0; p < r1 * cols; p += n) {
      n = tile_length(p, r1 * cols, cols);
      const acc* x = x_in.load_flat(x_tile, p, n, rows, cols);
      const acc* mean = mean_in.load_flat(mean_tile, p, n, rows, cols);
      const acc* logvar = logvar_in.load_flat(logvar_tile, p, n, rows, cols);
      acc* grad_mean = kGrad ? grad_mean_tile.begin(grad_mean_p + p, n) : nullptr;
      acc* grad_logvar = kGrad ? grad_logvar_tile.begin(grad_logvar_p + p, n) : nullptr;
      vectorized_loop<acc>(n, [&](auto t, int64_t i) {
        using T = decltype(t);
        const T lv = load<T>(logvar + i), inv_std = std_from_logvar(-lv);
        const T w = standardized_residual(load<T>(x + i), load<T>(mean + i), inv_std);
        store(gaussian_log_prob_term(lv, w), terms + i);
        if constexpr (kGrad) {
          store(T(scale) * gaussian_grad_mean(w, inv_std), grad_mean + i);
          store(T(scale) * gaussian_grad_logvar(w), grad_logvar + i);
        }
      });
      if constexpr (kGrad) grad_mean_tile.finish(), grad_logvar_tile.finish();
      add_row_sums(terms, p, n, cols, out_p);
    }
    for (int64_t r = r0; r < r1; ++r) out_p[r] = constant + out_p[r];
  });
}

template <typename scalar_t>
void gaussian_backward_typed(const at::Tensor& grad_t, const at::Tensor& x_t, const at::Tensor& mean_t,
                             const at::Tensor& logvar_t, const at::Tensor& grad_mean_t,
                             const at::Tensor& grad_logvar_t) {
  using acc = acc_t<scalar_t>;
  const int64_t rows = grad_mean_t.size(0), cols = grad_mean_t.size(1);
  const acc* grad_p = grad_t.const_data_ptr<acc>();
  const RowInput<scalar_t> x_in(x_t), mean_in(mean_t), logvar_in(logvar_t);
  scalar_t* grad_mean_p = grad_mean_t.data_ptr<scalar_t>();
  scalar_t* grad_logvar_p = grad_logvar_t.data_ptr<scalar_t>();
  at::parallel_for(0, rows, row_grain(cols), [&](int64_t r0, int64_t r1) {
    InputTile<scalar_t> x_tile, mean_tile, logvar_tile;
    OutputTile<scalar_t> grad_mean_tile, grad_logvar_tile;
    alignas(64) acc grad_spread[kTile];  // grad[r] for each of row r's elements
    for (int64_t p = r0 * cols, n = 0; p < r1 * cols; p += n) {
      n = tile_length(p, r1 * cols, cols);
      spread_rows(grad_p, p, n, cols, grad_spread);
      const acc* x = x_in.load_flat(x_tile, p, n, rows, cols);
      const acc* mean = mean_in.load_flat(mean_tile, p, n, rows, cols);
      const acc* logvar = logvar_in.load_flat(logvar_tile, p, n, rows, cols);
      acc* grad_mean = grad_mean_tile.begin(grad_mean_p + p, n);
      acc* grad_logvar = grad_logvar_tile.begin(grad_logvar_p + p, n);
      vectorized_loop<acc>(n, [&](auto t, int64_t i) {
        using T = decltype(t);
        const T g = load<T>(grad_spread + i), inv_std = std_from_logvar(-load<T>(logvar + i));
        const T w = standardized_residual(load<T>(x + i), load<T>(mean + i), inv_std);
        store(g * gaussian_grad_mean(w, inv_std), grad_mean + i);
        store(g * gaussian_grad_logvar(w), grad_logvar + i);
      });
      grad_mean_tile.finish();
      grad_logvar_tile.finish();
    }
  });
}

}  // namespace

void gaussian_log_prob_forward_kernel(const at::Tensor& x, const at::Tensor& mean, const at::Tensor& logvar,
                                      const at::Tensor& out, const at::Tensor& grad_mean, const at::Tensor& grad_logvar,
                                      double grad_scale, int64_t event) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, mean.scalar_type(), "gaussian_log_prob_forward_kernel", [&] {
        if (grad_mean.defined()) {
          gaussian_forward_typed<scalar_t, true>(x, mean, logvar, out, grad_mean, grad_logvar, grad_scale, event);
        } else {
          gaussian_forward_typed<scalar_t, false>(x, mean, logvar, out, grad_mean, grad_logvar, grad_scale, event);
        }
      });
}

void gaussian_log_prob_backward_kernel(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& mean,
                                       const at::Tensor& logvar, const at::Tensor& grad_mean,
                                       const at::Tensor& grad_logvar) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, mean.scalar_type(), "gaussian_log_prob_backward_kernel",
      [&] { gaussian_backward_typed<scalar_t>(grad, x, mean, logvar, grad_mean, grad_logvar); });
}

}  // namespace cpu
}  // namespace CPU_CAPABILITY
}  // namespace aevb_fast
