// The epilogues of the linear heads on the CPU: one pass over a chunk of logits (or of the
// Gaussian head's pre-activations) that writes each row's log-likelihood and, when asked, its
// gradient with respect to the chunk, so the chunk is read once.
//   Bernoulli:  out[r] = sum_e x * l - softplus(l);  grad_l = g[r] * (x - sigmoid(l))
//   Gaussian:   m = sigmoid(a), w = (x - m) exp(-lv / 2);  out[r] = -E log(2 pi) / 2 - sum_e (lv + w^2) / 2
//               grad_a = g[r] * w exp(-lv / 2) m (1 - m);  grad_lv = g[r] * (w^2 - 1) / 2
#include "cpu/loops.h"

namespace aevb_fast {
inline namespace CPU_CAPABILITY {
namespace cpu {
namespace {

// The shared row traversal: for every row r, the tiles of x (row r % Rx) and of the chunk's
// `parts` column blocks of width E, handed to body(x, part pointers, grad pointers, n, sum).
template <typename scalar_t, int kParts, typename Body>
void epilogue_rows(const at::Tensor& x_t, const at::Tensor& in_t, const at::Tensor& grad_t, const at::Tensor& out_t,
                   const at::Tensor& grad_in_t, double row_constant, const Body& body) {
  using acc = acc_t<scalar_t>;
  const int64_t rows = in_t.size(0), width = in_t.size(1), cols = width / kParts, x_rows = x_t.size(0);
  const scalar_t* x_p = x_t.const_data_ptr<scalar_t>();
  const scalar_t* in_p = in_t.const_data_ptr<scalar_t>();
  const acc* grad_p = grad_t.defined() ? grad_t.const_data_ptr<acc>() : nullptr;
  scalar_t* grad_in_p = grad_in_t.defined() ? grad_in_t.data_ptr<scalar_t>() : nullptr;
  acc* out_p = out_t.data_ptr<acc>();
  const acc constant = acc(row_constant) * acc(cols);
  at::parallel_for(0, rows, row_grain(width), [&](int64_t r0, int64_t r1) {
    InputTile<scalar_t> x_tile, in_tiles[kParts];
    OutputTile<scalar_t> grad_tiles[kParts];
    for (int64_t r = r0; r < r1; ++r) {
      const acc g = grad_p != nullptr ? grad_p[r] : acc(1);
      RowSum<acc> sum;
      for (int64_t j0 = 0; j0 < cols; j0 += kTile) {
        const int64_t n = std::min(kTile, cols - j0);
        const acc* x = x_tile.load(x_p + (r % x_rows) * cols + j0, n);
        const acc* in[kParts];
        acc* grad_in[kParts];
        for (int p = 0; p < kParts; ++p) {
          in[p] = in_tiles[p].load(in_p + r * width + p * cols + j0, n);
          grad_in[p] = grad_in_p != nullptr ? grad_tiles[p].begin(grad_in_p + r * width + p * cols + j0, n) : nullptr;
        }
        body(x, in, grad_in, g, n, sum);
        if (grad_in_p != nullptr) {
          for (int p = 0; p < kParts; ++p) grad_tiles[p].finish();
        }
      }
      out_p[r] = constant + sum.total();
    }
  });
}

template <typename scalar_t>
void bernoulli_epilogue_typed(const at::Tensor& x, const at::Tensor& logits, const at::Tensor& grad,
                              const at::Tensor& out, const at::Tensor& grad_logits) {
  using acc = acc_t<scalar_t>;
  epilogue_rows<scalar_t, 1>(
      x, logits, grad, out, grad_logits, 0.0,
      [](const acc* x, const acc* const* in, acc* const* grad_in, acc g, int64_t n, RowSum<acc>& sum) {
        vectorized_loop<acc>(n, [&](auto t, int64_t i) {
          using T = decltype(t);
          const T xi = load<T>(x + i), l = load<T>(in[0] + i);
          if (grad_in[0] != nullptr) {
            const auto both = bernoulli_log_prob_and_grad(xi, l);
            sum.add(both.term);
            store(T(g) * both.grad, grad_in[0] + i);
          } else {
            sum.add(bernoulli_log_prob_term(xi, l));
          }
        });
      });
}

template <typename scalar_t>
void sigmoid_gaussian_epilogue_typed(const at::Tensor& x, const at::Tensor& pre, const at::Tensor& grad,
                                     const at::Tensor& out, const at::Tensor& grad_pre) {
  using acc = acc_t<scalar_t>;
  epilogue_rows<scalar_t, 2>(
      x, pre, grad, out, grad_pre, -0.5 * kLog2Pi,
      [](const acc* x, const acc* const* in, acc* const* grad_in, acc g, int64_t n, RowSum<acc>& sum) {
        vectorized_loop<acc>(n, [&](auto t, int64_t i) {
          using T = decltype(t);
          const T mean = sigmoid(load<T>(in[0] + i)), lv = load<T>(in[1] + i);
          const T inv_std = std_from_logvar(-lv);
          const T w = standardized_residual(load<T>(x + i), mean, inv_std);
          sum.add(gaussian_log_prob_term(lv, w));
          if (grad_in[0] != nullptr) {
            store(T(g) * sigmoid_grad_from_output(gaussian_grad_mean(w, inv_std), mean), grad_in[0] + i);
            store(T(g) * gaussian_grad_logvar(w), grad_in[1] + i);
          }
        });
      });
}

}  // namespace

void linear_bernoulli_log_prob_epilogue_kernel(const at::Tensor& x, const at::Tensor& logits, const at::Tensor& grad,
                                               const at::Tensor& out, const at::Tensor& grad_logits) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(),
                                  "linear_bernoulli_log_prob_epilogue_kernel",
                                  [&] { bernoulli_epilogue_typed<scalar_t>(x, logits, grad, out, grad_logits); });
}

void linear_gaussian_log_prob_epilogue_kernel(const at::Tensor& x, const at::Tensor& pre, const at::Tensor& grad,
                                              const at::Tensor& out, const at::Tensor& grad_pre) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pre.scalar_type(),
                                  "linear_gaussian_log_prob_epilogue_kernel",
                                  [&] { sigmoid_gaussian_epilogue_typed<scalar_t>(x, pre, grad, out, grad_pre); });
}

}  // namespace cpu
}  // namespace CPU_CAPABILITY
}  // namespace aevb_fast
