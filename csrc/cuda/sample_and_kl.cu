// reparameterize, gaussian_kl and sample_and_kl on CUDA (see csrc/cpu/sample_and_kl.cpp for the
// formulas). Three kernels:
//  - kl_kernel: one warp per row, warp-shuffle sum of the KL terms (deterministic);
//  - sample_kernel: one thread per Philox counter, writing its 4 normals' z elements (adjacent
//    threads write adjacent addresses), or one thread per element when eps is given;
//  - sample_backward_kernel: one thread per (row, column) of mu, summing over the L samples and
//    regenerating each sample's normal.
#include <ATen/Dispatch.h>

#include "common/math.h"
#include "cuda/cuda_kernels.h"
#include "cuda/utils.cuh"

namespace aevb_fast::cuda {
namespace {

template <typename scalar_t>
__global__ void kl_kernel(const scalar_t* __restrict__ mu, const scalar_t* __restrict__ logvar,
                          acc_t<scalar_t>* __restrict__ kl, int64_t rows, int64_t cols) {
  using acc = acc_t<scalar_t>;
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / kWarp);
  for (int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp; r < rows; r += warps) {
    acc sum = 0;
    for (int64_t j = lane; j < cols; j += kWarp) {
      sum += twice_kl_term(load(mu, r * cols + j), load(logvar, r * cols + j));
    }
    sum = warp_sum(sum);
    if (lane == 0) kl[r] = acc(0.5) * sum;
  }
}

template <typename scalar_t>
__global__ void sample_given_kernel(const scalar_t* __restrict__ mu, const scalar_t* __restrict__ logvar,
                                    const scalar_t* __restrict__ eps, scalar_t* __restrict__ z,
                                    int64_t params, int64_t total) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = i % params;
    z[i] = static_cast<scalar_t>(load(mu, p) + std_from_logvar(load(logvar, p)) * load(eps, i));
  }
}

template <typename scalar_t>
__global__ void sample_drawn_kernel(const scalar_t* __restrict__ mu, const scalar_t* __restrict__ logvar,
                                    const int64_t* __restrict__ seed_ptr, scalar_t* __restrict__ z,
                                    int64_t params, int64_t total) {
  using acc = acc_t<scalar_t>;
  const PhiloxSeed seed = read_seed(seed_ptr);
  const int64_t counters = (total + kNoiseBlock - 1) / kNoiseBlock * kNoiseLanes;
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < counters;
       c += int64_t(gridDim.x) * blockDim.x) {
    float normals[4][1];
    philox_normals<1>(seed, uint64_t(c), normals);
    const int64_t base = c / kNoiseLanes * kNoiseBlock + c % kNoiseLanes;
    for (int word = 0; word < 4; ++word) {
      const int64_t i = base + word * kNoiseLanes;
      if (i < total) {
        const int64_t p = i % params;
        z[i] = static_cast<scalar_t>(load(mu, p) + std_from_logvar(load(logvar, p)) * acc(normals[word][0]));
      }
    }
  }
}

template <typename scalar_t>
__global__ void sample_backward_kernel(const scalar_t* __restrict__ grad_z,
                                       const acc_t<scalar_t>* __restrict__ grad_kl,
                                       const scalar_t* __restrict__ mu, const scalar_t* __restrict__ logvar,
                                       const scalar_t* __restrict__ eps, const int64_t* __restrict__ seed_ptr,
                                       scalar_t* __restrict__ grad_mu, scalar_t* __restrict__ grad_logvar,
                                       int64_t samples, int64_t cols, int64_t params) {
  using acc = acc_t<scalar_t>;
  const PhiloxSeed seed = (samples > 0 && eps == nullptr) ? read_seed(seed_ptr) : PhiloxSeed{0, 0};
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < params;
       p += int64_t(gridDim.x) * blockDim.x) {
    acc sum_grad = 0, sum_grad_eps = 0;
    for (int64_t l = 0; l < samples; ++l) {
      const int64_t i = l * params + p;
      const acc g = load(grad_z, i);
      const acc e = eps != nullptr ? load(eps, i) : acc(normal_at(seed, uint64_t(i)));
      sum_grad += g;
      sum_grad_eps += g * e;
    }
    const acc lv = load(logvar, p);
    const acc gkl = grad_kl != nullptr ? grad_kl[p / cols] : acc(0);
    acc g_lv = gkl * kl_grad_logvar(lv);
    if (samples > 0) g_lv += acc(0.5) * std_from_logvar(lv) * sum_grad_eps;
    grad_mu[p] = static_cast<scalar_t>(sum_grad + gkl * load(mu, p));
    grad_logvar[p] = static_cast<scalar_t>(g_lv);
  }
}

}  // namespace

void sample_forward(const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& eps,
                    const at::Tensor& seed, const at::Tensor& z, const at::Tensor& kl) {
  const c10::cuda::CUDAGuard guard(mu.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t rows = mu.size(0), cols = mu.size(1), params = rows * cols, total = z.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "sample_forward_cuda", [&] {
    const scalar_t* mu_p = mu.const_data_ptr<scalar_t>();
    const scalar_t* logvar_p = logvar.const_data_ptr<scalar_t>();
    if (kl.defined() && rows > 0) {
      kl_kernel<scalar_t><<<blocks_for(rows * kWarp), kThreads, 0, stream>>>(
          mu_p, logvar_p, kl.data_ptr<acc_t<scalar_t>>(), rows, cols);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (total == 0) return;
    if (eps.defined()) {
      sample_given_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
          mu_p, logvar_p, eps.const_data_ptr<scalar_t>(), z.data_ptr<scalar_t>(), params, total);
    } else {
      sample_drawn_kernel<scalar_t><<<blocks_for((total + 3) / 4), kThreads, 0, stream>>>(
          mu_p, logvar_p, seed.const_data_ptr<int64_t>(), z.data_ptr<scalar_t>(), params, total);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void sample_backward(const at::Tensor& grad_z, const at::Tensor& grad_kl, const at::Tensor& mu,
                     const at::Tensor& logvar, const at::Tensor& eps, const at::Tensor& seed,
                     const at::Tensor& grad_mu, const at::Tensor& grad_logvar) {
  const c10::cuda::CUDAGuard guard(mu.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t samples = grad_z.size(0), cols = mu.size(1), params = mu.numel();
  if (params == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "sample_backward_cuda", [&] {
    sample_backward_kernel<scalar_t><<<blocks_for(params), kThreads, 0, stream>>>(
        grad_z.const_data_ptr<scalar_t>(),
        grad_kl.defined() ? grad_kl.const_data_ptr<acc_t<scalar_t>>() : nullptr,
        mu.const_data_ptr<scalar_t>(), logvar.const_data_ptr<scalar_t>(),
        eps.defined() ? eps.const_data_ptr<scalar_t>() : nullptr,
        seed.defined() ? seed.const_data_ptr<int64_t>() : nullptr, grad_mu.data_ptr<scalar_t>(),
        grad_logvar.data_ptr<scalar_t>(), samples, cols, params);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace aevb_fast::cuda
