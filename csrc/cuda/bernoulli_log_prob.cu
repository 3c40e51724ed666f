// bernoulli_log_prob on CUDA: the forward is a row sum (a warp per row, a block per long row;
// deterministic), the backward an elementwise map; both take 128-bit packs when aligned. Inputs
// may be broadcast without a copy (RowInput in utils.cuh): x over the leading sample dims, say.
// The summed form's forward also writes the gradient (kGrad), so its backward moves nothing.
#include <ATen/Dispatch.h>

#include "common/math.h"
#include "cuda/utils.cuh"

namespace aevb_fast::cuda {
namespace {

template <typename scalar_t, bool kGrad>
struct BernoulliTerm {
  using acc = acc_t<scalar_t>;
  RowInput<scalar_t> x, logits;
  scalar_t* grad_logits;  // with kGrad: (R, cols), grad_scale * d/dlogits
  acc grad_scale;
  int64_t cols;

  struct Row {
    InputRow<scalar_t> x, logits;
    scalar_t* grad_logits;  // the row's, with kGrad
    acc grad_scale;

    template <int N>
    __device__ acc sum(int64_t j) const {
      acc xs[N], ls[N], grads[N];
      x.template load<N>(j, xs);
      logits.template load<N>(j, ls);
      acc s = 0;
#pragma unroll
      for (int k = 0; k < N; ++k) {
        if constexpr (kGrad) {
          const auto both = bernoulli_log_prob_and_grad<acc, kStored16<scalar_t>>(xs[k], ls[k]);
          s += both.term;
          grads[k] = grad_scale * both.grad;
        } else {
          s += bernoulli_log_prob_term<acc, kStored16<scalar_t>>(xs[k], ls[k]);
        }
      }
      if constexpr (kGrad) store_pack<N>(grad_logits, j, grads);
      return s;
    }
  };

  __device__ Row row(int64_t r) const {
    return {x.row(r), logits.row(r), kGrad ? grad_logits + r * cols : nullptr, grad_scale};
  }
};

template <typename scalar_t>
struct BernoulliGrad {
  using acc = acc_t<scalar_t>;
  const acc* grad;
  RowInput<scalar_t> x, logits;
  scalar_t* grad_logits;
  Divider cols;

  template <int N>
  __device__ void apply(int64_t i) const {
    const RowCol at(i, cols);
    const int64_t r = at.r, j = at.j;
    const acc g = grad[r];
    acc xs[N], ls[N], out[N];
    x.template load<N>(r, j, xs);
    logits.template load<N>(r, j, ls);
#pragma unroll
    for (int k = 0; k < N; ++k) out[k] = g * bernoulli_grad_logit<acc, kStored16<scalar_t>>(xs[k], ls[k]);
    store_pack<N>(grad_logits, i, out);
  }
};

}  // namespace

void bernoulli_log_prob_forward_kernel(const at::Tensor& x, const at::Tensor& logits, const at::Tensor& out,
                                       const at::Tensor& grad_logits, double grad_scale, int64_t cols) {
  const DeviceGuard guard(logits.device());
  const int64_t rows = out.size(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "bernoulli_forward_cuda", [&] {
    using acc = acc_t<scalar_t>;
    const auto run = [&](auto with_grad) {
      constexpr bool kGrad = decltype(with_grad)::value;
      const BernoulliTerm<scalar_t, kGrad> term{RowInput<scalar_t>(x), RowInput<scalar_t>(logits),
                                                kGrad ? grad_logits.data_ptr<scalar_t>() : nullptr, acc(grad_scale),
                                                cols};
      launch_row_sum<scalar_t>(
          term, out.data_ptr<acc>(), rows, cols, acc(1), acc(0),
          can_pack<scalar_t>(cols, {term.x.pack_pointer(), term.logits.pack_pointer(), term.grad_logits}));
    };
    if (grad_logits.defined()) {
      run(std::true_type{});
    } else {
      run(std::false_type{});
    }
  });
}

void bernoulli_log_prob_backward_kernel(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& logits,
                                        const at::Tensor& grad_logits) {
  const DeviceGuard guard(logits.device());
  const int64_t cols = grad_logits.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "bernoulli_backward_cuda", [&] {
    const BernoulliGrad<scalar_t> op{grad.const_data_ptr<acc_t<scalar_t>>(), RowInput<scalar_t>(x),
                                     RowInput<scalar_t>(logits), grad_logits.data_ptr<scalar_t>(), Divider(cols)};
    launch_elementwise<scalar_t>(
        op, grad_logits.numel(),
        can_pack<scalar_t>(cols, {op.x.pack_pointer(), op.logits.pack_pointer(), op.grad_logits}));
  });
}

}  // namespace aevb_fast::cuda
