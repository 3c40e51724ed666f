// The epilogues of the linear heads on CUDA: a row sum (launch_row_sum) whose term also writes the
// gradient of each element it reads, so a chunk of logits (or of the Gaussian head's
// pre-activations) is read once for the log-likelihood and its gradient. Math as in
// csrc/cpu/linear_log_prob.cpp.
#include <ATen/Dispatch.h>

#include <type_traits>

#include "common/math.h"
#include "cuda/utils.cuh"

namespace aevb_fast::cuda {
namespace {

// kGrad: also the logits' gradient, scaled by the row's incoming gradient (grad, or 1 if null).
template <typename scalar_t, bool kGrad>
struct BernoulliEpilogue {
  using acc = acc_t<scalar_t>;
  const scalar_t* x;
  const scalar_t* logits;
  const acc* grad;        // row scales, or null for 1
  scalar_t* grad_logits;  // with kGrad
  int64_t cols, x_rows;

  struct Row {  // row r's x, logits, gradient and scale
    const scalar_t* x;
    const scalar_t* logits;
    scalar_t* grad_logits;
    acc g;

    template <int N>
    __device__ acc sum(int64_t j) const {
      acc xs[N], ls[N], gs[N];
      load_pack<N>(x, j, xs);
      load_pack<N>(logits, j, ls);
      acc s = 0;
      if constexpr (kGrad) {
#pragma unroll
        for (int k = 0; k < N; ++k) {
          const auto both = bernoulli_log_prob_and_grad<acc, kStored16<scalar_t>>(xs[k], ls[k]);
          s += both.term;
          gs[k] = g * both.grad;
        }
        store_pack<N>(grad_logits, j, gs);
      } else {
#pragma unroll
        for (int k = 0; k < N; ++k) s += bernoulli_log_prob_term<acc, kStored16<scalar_t>>(xs[k], ls[k]);
      }
      return s;
    }
  };

  __device__ Row row(int64_t r) const {
    return {x + (r % x_rows) * cols, logits + r * cols, kGrad ? grad_logits + r * cols : nullptr,
            kGrad && grad != nullptr ? grad[r] : acc(1)};
  }
};

template <typename scalar_t>
struct SigmoidGaussianEpilogue {
  using acc = acc_t<scalar_t>;
  const scalar_t* x;
  const scalar_t* pre;  // row r: a (cols), then logvar (cols)
  const acc* grad;
  scalar_t* grad_pre;
  int64_t cols, x_rows;

  struct Row {  // row r's x, a and logvar, their gradients and the row's scale
    const scalar_t* x;
    const scalar_t* a;
    const scalar_t* logvar;
    scalar_t* grad_a;
    scalar_t* grad_logvar;
    acc g;

    template <int N>
    __device__ acc sum(int64_t j) const {
      acc xs[N], as[N], lvs[N], ga[N], glv[N];
      load_pack<N>(x, j, xs);
      load_pack<N>(a, j, as);
      load_pack<N>(logvar, j, lvs);
      acc s = 0;
#pragma unroll
      for (int k = 0; k < N; ++k) {
        const acc mean = sigmoid(as[k]), inv_std = std_from_logvar(-lvs[k]);
        const acc w = standardized_residual(xs[k], mean, inv_std);
        s += gaussian_log_prob_term(lvs[k], w);
        ga[k] = g * sigmoid_grad_from_output(gaussian_grad_mean(w, inv_std), mean);
        glv[k] = g * gaussian_grad_logvar(w);
      }
      if (grad_a != nullptr) {
        store_pack<N>(grad_a, j, ga);
        store_pack<N>(grad_logvar, j, glv);
      }
      return s;
    }
  };

  __device__ Row row(int64_t r) const {
    const int64_t a_at = 2 * r * cols;
    return {x + (r % x_rows) * cols,
            pre + a_at,
            pre + a_at + cols,
            grad_pre != nullptr ? grad_pre + a_at : nullptr,
            grad_pre != nullptr ? grad_pre + a_at + cols : nullptr,
            grad != nullptr ? grad[r] : acc(1)};
  }
};

template <typename scalar_t>
const acc_t<scalar_t>* row_scales(const at::Tensor& grad) {
  return grad.defined() ? grad.const_data_ptr<acc_t<scalar_t>>() : nullptr;
}

template <typename scalar_t>
scalar_t* optional_output(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<scalar_t>() : nullptr;
}

}  // namespace

void linear_bernoulli_log_prob_epilogue_kernel(const at::Tensor& x, const at::Tensor& logits, const at::Tensor& grad,
                                               const at::Tensor& out, const at::Tensor& grad_logits) {
  const DeviceGuard guard(logits.device());
  const int64_t rows = logits.size(0), cols = logits.size(1), x_rows = std::max<int64_t>(x.size(0), 1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "bernoulli_epilogue_cuda", [&] {
    using acc = acc_t<scalar_t>;
    const auto run = [&](auto with_grad) {
      const BernoulliEpilogue<scalar_t, decltype(with_grad)::value> term{x.const_data_ptr<scalar_t>(),
                                                                         logits.const_data_ptr<scalar_t>(),
                                                                         row_scales<scalar_t>(grad),
                                                                         optional_output<scalar_t>(grad_logits),
                                                                         cols,
                                                                         x_rows};
      launch_row_sum<scalar_t>(term, out.data_ptr<acc>(), rows, cols, acc(1), acc(0),
                               can_pack<scalar_t>(cols, {term.x, term.logits, term.grad_logits}));
    };
    if (grad_logits.defined()) {
      run(std::true_type{});
    } else {
      run(std::false_type{});
    }
  });
}

void linear_gaussian_log_prob_epilogue_kernel(const at::Tensor& x, const at::Tensor& pre, const at::Tensor& grad,
                                              const at::Tensor& out, const at::Tensor& grad_pre) {
  const DeviceGuard guard(pre.device());
  const int64_t rows = pre.size(0), cols = pre.size(1) / 2, x_rows = std::max<int64_t>(x.size(0), 1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pre.scalar_type(), "sigmoid_gaussian_epilogue_cuda", [&] {
    using acc = acc_t<scalar_t>;
    const SigmoidGaussianEpilogue<scalar_t> term{x.const_data_ptr<scalar_t>(),
                                                 pre.const_data_ptr<scalar_t>(),
                                                 row_scales<scalar_t>(grad),
                                                 optional_output<scalar_t>(grad_pre),
                                                 cols,
                                                 x_rows};
    launch_row_sum<scalar_t>(term, out.data_ptr<acc>(), rows, cols, acc(1), acc(-0.5 * kLog2Pi) * acc(cols),
                             can_pack<scalar_t>(cols, {term.x, term.pre, term.grad_pre}));
  });
}

}  // namespace aevb_fast::cuda
