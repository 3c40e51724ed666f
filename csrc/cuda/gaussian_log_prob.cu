// gaussian_log_prob on CUDA, laid out like bernoulli_log_prob.cu: a row sum in the forward, an
// elementwise map in the backward, 128-bit packs when aligned.
#include <ATen/Dispatch.h>

#include "common/math.h"
#include "cuda/utils.cuh"

namespace aevb_fast::cuda {
namespace {

template <typename scalar_t>
struct GaussianTerm {
  using acc = acc_t<scalar_t>;
  const scalar_t* x;
  const scalar_t* mean;
  const scalar_t* logvar;
  int64_t cols, x_rows;

  template <int N>
  __device__ acc sum(int64_t r, int64_t j) const {
    acc xs[N], ms[N], lvs[N];
    load_pack<N>(x, (r % x_rows) * cols + j, xs);
    load_pack<N>(mean, r * cols + j, ms);
    load_pack<N>(logvar, r * cols + j, lvs);
    acc s = 0;
#pragma unroll
    for (int k = 0; k < N; ++k) {
      s += gaussian_log_prob_term(lvs[k], standardized_residual(xs[k], ms[k], std_from_logvar(-lvs[k])));
    }
    return s;
  }
};

template <typename scalar_t>
struct GaussianGrad {
  using acc = acc_t<scalar_t>;
  const acc* grad;
  const scalar_t* x;
  const scalar_t* mean;
  const scalar_t* logvar;
  scalar_t* grad_mean;
  scalar_t* grad_logvar;
  int64_t cols, x_rows;

  template <int N>
  __device__ void apply(int64_t i) const {
    const int64_t r = i / cols, j = i - r * cols;
    const acc g = grad[r];
    acc xs[N], ms[N], lvs[N], g_mean[N], g_logvar[N];
    load_pack<N>(x, (r % x_rows) * cols + j, xs);
    load_pack<N>(mean, i, ms);
    load_pack<N>(logvar, i, lvs);
#pragma unroll
    for (int k = 0; k < N; ++k) {
      const acc inv_std = std_from_logvar(-lvs[k]);
      const acc w = standardized_residual(xs[k], ms[k], inv_std);
      g_mean[k] = g * gaussian_grad_mean(w, inv_std);
      g_logvar[k] = g * gaussian_grad_logvar(w);
    }
    store_pack<N>(grad_mean, i, g_mean);
    store_pack<N>(grad_logvar, i, g_logvar);
  }
};

}  // namespace

void gaussian_forward(const at::Tensor& x, const at::Tensor& mean, const at::Tensor& logvar,
                      const at::Tensor& out) {
  const DeviceGuard guard(mean.device());
  const int64_t rows = mean.size(0), cols = mean.size(1), x_rows = std::max<int64_t>(x.size(0), 1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mean.scalar_type(), "gaussian_forward_cuda", [&] {
    using acc = acc_t<scalar_t>;
    const GaussianTerm<scalar_t> term{x.const_data_ptr<scalar_t>(), mean.const_data_ptr<scalar_t>(),
                                      logvar.const_data_ptr<scalar_t>(), cols, x_rows};
    launch_row_sum<scalar_t>(term, out.data_ptr<acc>(), rows, cols, acc(1), acc(-0.5 * kLog2Pi) * acc(cols),
                             can_pack<scalar_t>(cols, {term.x, term.mean, term.logvar}));
  });
}

void gaussian_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& mean,
                       const at::Tensor& logvar, const at::Tensor& grad_mean,
                       const at::Tensor& grad_logvar) {
  const DeviceGuard guard(mean.device());
  const int64_t cols = mean.size(1), x_rows = std::max<int64_t>(x.size(0), 1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mean.scalar_type(), "gaussian_backward_cuda", [&] {
    const GaussianGrad<scalar_t> op{grad.const_data_ptr<acc_t<scalar_t>>(), x.const_data_ptr<scalar_t>(),
                                    mean.const_data_ptr<scalar_t>(),        logvar.const_data_ptr<scalar_t>(),
                                    grad_mean.data_ptr<scalar_t>(),         grad_logvar.data_ptr<scalar_t>(),
                                    cols,                                   x_rows};
    launch_elementwise<scalar_t>(
        op, mean.numel(), can_pack<scalar_t>(cols, {op.x, op.mean, op.logvar, op.grad_mean, op.grad_logvar}));
  });
}

}  // namespace aevb_fast::cuda
