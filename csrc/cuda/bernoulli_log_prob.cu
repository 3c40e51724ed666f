// bernoulli_log_prob on CUDA: the forward is one warp per output row (a warp-shuffle sum,
// deterministic), the backward one thread per element. Row r of logits pairs with row r % Rx
// of x (x broadcast over the leading sample dims without a copy).
#include <ATen/Dispatch.h>

#include "common/math.h"
#include "cuda/cuda_kernels.h"
#include "cuda/utils.cuh"

namespace aevb_fast::cuda {
namespace {

template <typename scalar_t>
__global__ void bernoulli_forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ logits,
                                         acc_t<scalar_t>* __restrict__ out, int64_t rows, int64_t cols,
                                         int64_t x_rows) {
  using acc = acc_t<scalar_t>;
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / kWarp);
  for (int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp; r < rows; r += warps) {
    const int64_t x_row = (r % x_rows) * cols;
    acc sum = 0;
    for (int64_t j = lane; j < cols; j += kWarp) {
      sum += bernoulli_log_prob_term(load(x, x_row + j), load(logits, r * cols + j));
    }
    sum = warp_sum(sum);
    if (lane == 0) out[r] = sum;
  }
}

template <typename scalar_t>
__global__ void bernoulli_backward_kernel(const acc_t<scalar_t>* __restrict__ grad,
                                          const scalar_t* __restrict__ x,
                                          const scalar_t* __restrict__ logits,
                                          scalar_t* __restrict__ grad_logits, int64_t total,
                                          int64_t cols, int64_t x_rows) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, j = i - r * cols;
    const auto g = grad[r];
    grad_logits[i] = static_cast<scalar_t>(g * bernoulli_grad_logit(load(x, (r % x_rows) * cols + j), load(logits, i)));
  }
}

}  // namespace

void bernoulli_forward(const at::Tensor& x, const at::Tensor& logits, const at::Tensor& out) {
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t rows = logits.size(0), cols = logits.size(1), x_rows = x.size(0);
  if (rows == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "bernoulli_forward_cuda", [&] {
    bernoulli_forward_kernel<scalar_t><<<blocks_for(rows * kWarp), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        x.const_data_ptr<scalar_t>(), logits.const_data_ptr<scalar_t>(), out.data_ptr<acc_t<scalar_t>>(),
        rows, cols, std::max<int64_t>(x_rows, 1));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void bernoulli_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& logits,
                        const at::Tensor& grad_logits) {
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t total = logits.numel(), cols = logits.size(1), x_rows = x.size(0);
  if (total == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "bernoulli_backward_cuda", [&] {
    bernoulli_backward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        grad.const_data_ptr<acc_t<scalar_t>>(), x.const_data_ptr<scalar_t>(), logits.const_data_ptr<scalar_t>(),
        grad_logits.data_ptr<scalar_t>(), total, cols, x_rows);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace aevb_fast::cuda
