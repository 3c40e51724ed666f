// gaussian_log_prob on CUDA, laid out like bernoulli_log_prob.cu: a warp per output row in the
// forward, a thread per element in the backward.
#include <ATen/Dispatch.h>

#include "common/math.h"
#include "cuda/cuda_kernels.h"
#include "cuda/utils.cuh"

namespace aevb_fast::cuda {
namespace {

template <typename scalar_t>
__global__ void gaussian_forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ mean,
                                        const scalar_t* __restrict__ logvar, acc_t<scalar_t>* __restrict__ out,
                                        int64_t rows, int64_t cols, int64_t x_rows) {
  using acc = acc_t<scalar_t>;
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / kWarp);
  for (int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp; r < rows; r += warps) {
    const int64_t x_row = (r % x_rows) * cols;
    acc sum = 0;
    for (int64_t j = lane; j < cols; j += kWarp) {
      const acc lv = load(logvar, r * cols + j);
      const acc w = standardized_residual(load(x, x_row + j), load(mean, r * cols + j), std_from_logvar(-lv));
      sum += gaussian_log_prob_term(lv, w);
    }
    sum = warp_sum(sum);
    if (lane == 0) out[r] = acc(-0.5 * kLog2Pi) * acc(cols) + sum;
  }
}

template <typename scalar_t>
__global__ void gaussian_backward_kernel(const acc_t<scalar_t>* __restrict__ grad, const scalar_t* __restrict__ x,
                                         const scalar_t* __restrict__ mean, const scalar_t* __restrict__ logvar,
                                         scalar_t* __restrict__ grad_mean, scalar_t* __restrict__ grad_logvar,
                                         int64_t total, int64_t cols, int64_t x_rows) {
  using acc = acc_t<scalar_t>;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, j = i - r * cols;
    const acc g = grad[r];
    const acc inv_std = std_from_logvar(-load(logvar, i));
    const acc w = standardized_residual(load(x, (r % x_rows) * cols + j), load(mean, i), inv_std);
    grad_mean[i] = static_cast<scalar_t>(g * gaussian_grad_mean(w, inv_std));
    grad_logvar[i] = static_cast<scalar_t>(g * gaussian_grad_logvar(w));
  }
}

}  // namespace

void gaussian_forward(const at::Tensor& x, const at::Tensor& mean, const at::Tensor& logvar,
                      const at::Tensor& out) {
  const c10::cuda::CUDAGuard guard(mean.device());
  const int64_t rows = mean.size(0), cols = mean.size(1), x_rows = x.size(0);
  if (rows == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mean.scalar_type(), "gaussian_forward_cuda", [&] {
    gaussian_forward_kernel<scalar_t><<<blocks_for(rows * kWarp), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        x.const_data_ptr<scalar_t>(), mean.const_data_ptr<scalar_t>(), logvar.const_data_ptr<scalar_t>(),
        out.data_ptr<acc_t<scalar_t>>(), rows, cols, std::max<int64_t>(x_rows, 1));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void gaussian_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& mean,
                       const at::Tensor& logvar, const at::Tensor& grad_mean,
                       const at::Tensor& grad_logvar) {
  const c10::cuda::CUDAGuard guard(mean.device());
  const int64_t total = mean.numel(), cols = mean.size(1), x_rows = x.size(0);
  if (total == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mean.scalar_type(), "gaussian_backward_cuda", [&] {
    gaussian_backward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        grad.const_data_ptr<acc_t<scalar_t>>(), x.const_data_ptr<scalar_t>(), mean.const_data_ptr<scalar_t>(),
        logvar.const_data_ptr<scalar_t>(), grad_mean.data_ptr<scalar_t>(), grad_logvar.data_ptr<scalar_t>(),
        total, cols, x_rows);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace aevb_fast::cuda
