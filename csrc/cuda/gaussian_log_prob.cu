// gaussian_log_prob on CUDA, laid out like bernoulli_log_prob.cu: a row sum in the forward, an
// elementwise map in the backward, 128-bit packs when aligned; inputs may be broadcast (RowInput).
// The summed form's forward also writes the gradients (kGrad), so its backward moves nothing.
#include <ATen/Dispatch.h>

#include "common/math.h"
#include "cuda/utils.cuh"

namespace aevb_fast::cuda {
namespace {

template <typename scalar_t, bool kGrad>
struct GaussianTerm {
  using acc = acc_t<scalar_t>;
  RowInput<scalar_t> x, mean, logvar;
  scalar_t* grad_mean;  // with kGrad: (R, cols) each, grad_scale * the derivatives
  scalar_t* grad_logvar;
  acc grad_scale;
  int64_t cols;

  struct Row {
    InputRow<scalar_t> x, mean, logvar;
    scalar_t* grad_mean;  // the row's, with kGrad
    scalar_t* grad_logvar;
    acc grad_scale;

    template <int N>
    __device__ acc sum(int64_t j) const {
      acc xs[N], ms[N], lvs[N], g_mean[N], g_logvar[N];
      x.template load<N>(j, xs);
      mean.template load<N>(j, ms);
      logvar.template load<N>(j, lvs);
      acc s = 0;
#pragma unroll
      for (int k = 0; k < N; ++k) {
        const acc inv_std = std_from_logvar(-lvs[k]);
        const acc w = standardized_residual(xs[k], ms[k], inv_std);
        s += gaussian_log_prob_term(lvs[k], w);
        if constexpr (kGrad) {
          g_mean[k] = grad_scale * gaussian_grad_mean(w, inv_std);
          g_logvar[k] = grad_scale * gaussian_grad_logvar(w);
        }
      }
      if constexpr (kGrad) {
        store_pack<N>(grad_mean, j, g_mean);
        store_pack<N>(grad_logvar, j, g_logvar);
      }
      return s;
    }
  };

  __device__ Row row(int64_t r) const {
    return {x.row(r),
            mean.row(r),
            logvar.row(r),
            kGrad ? grad_mean + r * cols : nullptr,
            kGrad ? grad_logvar + r * cols : nullptr,
            grad_scale};
  }
};

template <typename scalar_t>
struct GaussianGrad {
  using acc = acc_t<scalar_t>;
  const acc* grad;
  RowInput<scalar_t> x, mean, logvar;
  scalar_t* grad_mean;
  scalar_t* grad_logvar;
  Divider cols;

  template <int N>
  __device__ void apply(int64_t i) const {
    const RowCol at(i, cols);
    const int64_t r = at.r, j = at.j;
    const acc g = grad[r];
    acc xs[N], ms[N], lvs[N], g_mean[N], g_logvar[N];
    x.template load<N>(r, j, xs);
    mean.template load<N>(r, j, ms);
    logvar.template load<N>(r, j, lvs);
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

void gaussian_log_prob_forward_kernel(const at::Tensor& x, const at::Tensor& mean, const at::Tensor& logvar,
                                      const at::Tensor& out, const at::Tensor& grad_mean, const at::Tensor& grad_logvar,
                                      double grad_scale, int64_t cols) {
  const DeviceGuard guard(mean.device());
  const int64_t rows = out.size(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mean.scalar_type(), "gaussian_forward_cuda", [&] {
    using acc = acc_t<scalar_t>;
    const auto run = [&](auto with_grad) {
      constexpr bool kGrad = decltype(with_grad)::value;
      const GaussianTerm<scalar_t, kGrad> term{RowInput<scalar_t>(x),
                                               RowInput<scalar_t>(mean),
                                               RowInput<scalar_t>(logvar),
                                               kGrad ? grad_mean.data_ptr<scalar_t>() : nullptr,
                                               kGrad ? grad_logvar.data_ptr<scalar_t>() : nullptr,
                                               acc(grad_scale),
                                               cols};
      launch_row_sum<scalar_t>(
          term, out.data_ptr<acc>(), rows, cols, acc(1), acc(-0.5 * kLog2Pi) * acc(cols),
          can_pack<scalar_t>(cols, {term.x.pack_pointer(), term.mean.pack_pointer(), term.logvar.pack_pointer(),
                                    term.grad_mean, term.grad_logvar}));
    };
    if (grad_mean.defined()) {
      run(std::true_type{});
    } else {
      run(std::false_type{});
    }
  });
}

void gaussian_log_prob_backward_kernel(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& mean,
                                       const at::Tensor& logvar, const at::Tensor& grad_mean,
                                       const at::Tensor& grad_logvar) {
  const DeviceGuard guard(mean.device());
  const int64_t cols = grad_mean.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mean.scalar_type(), "gaussian_backward_cuda", [&] {
    const GaussianGrad<scalar_t> op{grad.const_data_ptr<acc_t<scalar_t>>(),
                                    RowInput<scalar_t>(x),
                                    RowInput<scalar_t>(mean),
                                    RowInput<scalar_t>(logvar),
                                    grad_mean.data_ptr<scalar_t>(),
                                    grad_logvar.data_ptr<scalar_t>(),
                                    Divider(cols)};
    launch_elementwise<scalar_t>(op, grad_mean.numel(),
                                 can_pack<scalar_t>(cols, {op.x.pack_pointer(), op.mean.pack_pointer(),
                                                           op.logvar.pack_pointer(), op.grad_mean, op.grad_logvar}));
  });
}

}  // namespace aevb_fast::cuda
