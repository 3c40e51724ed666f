// reparameterize, gaussian_kl and sample_and_kl on CUDA (see csrc/cpu/sample_and_kl.cpp for the
// formulas). The KL is a row sum (utils.cuh); z with given eps and the backward are elementwise
// maps; z with drawn noise has its own kernel because its unit of work is the RNG's: one thread
// per 4 consecutive Philox counters, which give, for each of the counter's 4 words, 4 adjacent
// elements of z (a 4-element packed store). The backward with drawn noise regenerates it by the
// same counter groups (sample_backward_drawn_kernel); with given noise it is an elementwise map.
#include <ATen/Dispatch.h>

#include "common/math.h"
#include "cuda/utils.cuh"

namespace aevb_fast::cuda {
namespace {

template <typename scalar_t>
struct KLTerm {
  using acc = acc_t<scalar_t>;
  const scalar_t* mu;
  const scalar_t* logvar;
  int64_t cols;

  template <int N>
  __device__ acc sum(int64_t r, int64_t j) const {
    acc ms[N], lvs[N];
    load_pack<N>(mu, r * cols + j, ms);
    load_pack<N>(logvar, r * cols + j, lvs);
    acc s = 0;
#pragma unroll
    for (int k = 0; k < N; ++k) s += twice_kl_term(ms[k], lvs[k]);
    return s;
  }
};

// z = mu + exp(logvar / 2) * eps with eps given; element i of z uses parameter i % params.
template <typename scalar_t>
struct SampleGiven {
  using acc = acc_t<scalar_t>;
  const scalar_t* mu;
  const scalar_t* logvar;
  const scalar_t* eps;
  scalar_t* z;
  int64_t params;

  template <int N>
  __device__ void apply(int64_t i) const {
    const int64_t p = i % params;
    acc ms[N], lvs[N], es[N], out[N];
    load_pack<N>(mu, p, ms);
    load_pack<N>(logvar, p, lvs);
    load_pack<N>(eps, i, es);
#pragma unroll
    for (int k = 0; k < N; ++k) out[k] = ms[k] + std_from_logvar(lvs[k]) * es[k];
    store_pack<N>(z, i, out);
  }
};

// The drawn-noise kernels give each thread a group of 4 consecutive counters of one noise block.
constexpr int kCountersPerThread = 4;
constexpr int kGroupsPerBlock = kNoiseLanes / kCountersPerThread;

// The counter groups that cover n elements.
__host__ __device__ __forceinline__ int64_t noise_groups(int64_t n) {
  return (n + kNoiseBlock - 1) / kNoiseBlock * kGroupsPerBlock;
}

// The first element that group g fills (its counters fill it and the 3 after it, for each word w
// also the 4 at 16 w past it).
__device__ __forceinline__ int64_t group_first_element(int64_t g) {
  return g / kGroupsPerBlock * kNoiseBlock + g % kGroupsPerBlock * kCountersPerThread;
}

template <typename scalar_t, bool kPacked>
__global__ void sample_drawn_kernel(const scalar_t* __restrict__ mu, const scalar_t* __restrict__ logvar,
                                    const int64_t* __restrict__ seed_ptr, scalar_t* __restrict__ z,
                                    int64_t params, int64_t total) {
  using acc = acc_t<scalar_t>;
  constexpr int G = kCountersPerThread;
  const PhiloxSeed seed = read_seed(seed_ptr);
  const int64_t groups = noise_groups(total);
  for (int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g < groups;
       g += int64_t(gridDim.x) * blockDim.x) {
    // Counters 4g .. 4g + 3 are lanes j0 .. j0 + 3 of noise block b; word w of lane j is element
    // 64 b + 16 w + j.
    float normals[4][G];
    philox_normals<G>(seed, uint64_t(g) * G, normals);
    const int64_t base = group_first_element(g);
#pragma unroll
    for (int word = 0; word < 4; ++word) {
      const int64_t i0 = base + int64_t(word) * kNoiseLanes;
      if constexpr (kPacked) {
        // params % 4 == 0, so the 4 elements are all in range or all out, and in one row.
        if (i0 >= total) continue;
        const int64_t p0 = i0 % params;
        acc ms[G], lvs[G], out[G];
        load_pack<G>(mu, p0, ms);
        load_pack<G>(logvar, p0, lvs);
#pragma unroll
        for (int k = 0; k < G; ++k) out[k] = ms[k] + std_from_logvar(lvs[k]) * acc(normals[word][k]);
        store_pack<G>(z, i0, out);
      } else {
        for (int k = 0; k < G; ++k) {
          const int64_t i = i0 + k;
          if (i >= total) break;
          const int64_t p = i % params;
          z[i] = static_cast<scalar_t>(static_cast<acc>(mu[p]) +
                                       std_from_logvar(static_cast<acc>(logvar[p])) * acc(normals[word][k]));
        }
      }
    }
  }
}

// grad_mu, grad_logvar of parameter p: the sum over the L samples of grad_z (and grad_z * eps),
// plus the KL's gradient; eps given (or no samples: the KL alone).
template <typename scalar_t>
struct SampleGrad {
  using acc = acc_t<scalar_t>;
  const scalar_t* grad_z;
  const acc* grad_kl;  // or nullptr
  const scalar_t* mu;
  const scalar_t* logvar;
  const scalar_t* eps;  // or nullptr when samples == 0
  scalar_t* grad_mu;
  scalar_t* grad_logvar;
  int64_t samples, cols, params;

  template <int N>
  __device__ void apply(int64_t p) const {
    acc sum_grad[N] = {}, sum_grad_eps[N] = {};
    for (int64_t l = 0; l < samples; ++l) {
      const int64_t i = l * params + p;
      acc gs[N], es[N];
      load_pack<N>(grad_z, i, gs);
      load_pack<N>(eps, i, es);
#pragma unroll
      for (int k = 0; k < N; ++k) {
        sum_grad[k] += gs[k];
        sum_grad_eps[k] += gs[k] * es[k];
      }
    }
    acc ms[N], lvs[N], g_mu[N], g_lv[N];
    load_pack<N>(mu, p, ms);
    load_pack<N>(logvar, p, lvs);
    const acc gkl = grad_kl != nullptr ? grad_kl[p / cols] : acc(0);  // the N elements share a row
#pragma unroll
    for (int k = 0; k < N; ++k) {
      g_lv[k] = gkl * kl_grad_logvar(lvs[k]);
      if (samples > 0) g_lv[k] += acc(0.5) * std_from_logvar(lvs[k]) * sum_grad_eps[k];
      g_mu[k] = sum_grad[k] + gkl * ms[k];
    }
    store_pack<N>(grad_mu, p, g_mu);
    store_pack<N>(grad_logvar, p, g_lv);
  }
};

// The same gradients with drawn noise, regenerated by the forward's counter groups: thread g owns
// the 16 parameters base + 16 w + k (w, k = 0..3; base = 64 (g / 4) + 4 (g % 4)), whose sample-0
// elements are what the forward's thread g filled; for sample l it regenerates the normals of
// elements l * params + base + 16 w + k with group_normals (the forward's group itself when
// l * params is a multiple of 64). kPacked: params % 4 == 0 and every pointer 4-element aligned,
// so each run of 4 is one packed access; otherwise one element at a time (and a run that does
// not start on a counter boundary takes normal_at per element).
template <typename scalar_t, bool kPacked>
__global__ void sample_backward_drawn_kernel(const scalar_t* __restrict__ grad_z, const acc_t<scalar_t>* grad_kl,
                                             const scalar_t* __restrict__ mu, const scalar_t* __restrict__ logvar,
                                             const int64_t* __restrict__ seed_ptr, scalar_t* __restrict__ grad_mu,
                                             scalar_t* __restrict__ grad_logvar, int64_t samples, int64_t cols,
                                             int64_t params) {
  using acc = acc_t<scalar_t>;
  constexpr int G = kCountersPerThread;
  const PhiloxSeed seed = read_seed(seed_ptr);
  const int64_t groups = noise_groups(params);
  for (int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g < groups;
       g += int64_t(gridDim.x) * blockDim.x) {
    const int64_t base = group_first_element(g);
    acc sum_grad[4][G] = {}, sum_grad_eps[4][G] = {};
    for (int64_t l = 0; l < samples; ++l) {
      const int64_t first = l * params + base;
      float normals[4][G];
      if (kPacked || first % G == 0) {
        group_normals(seed, uint64_t(first), normals);
      } else {
#pragma unroll
        for (int w = 0; w < 4; ++w) {
#pragma unroll
          for (int k = 0; k < G; ++k) normals[w][k] = normal_at(seed, uint64_t(first + w * kNoiseLanes + k));
        }
      }
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        const int64_t p0 = base + w * kNoiseLanes;
        acc gs[G];
        if constexpr (kPacked) {
          if (p0 >= params) continue;  // params % 4 == 0: the run is all in range or all out
          load_pack<G>(grad_z, l * params + p0, gs);
        } else {
#pragma unroll
          for (int k = 0; k < G; ++k) gs[k] = p0 + k < params ? acc(grad_z[l * params + p0 + k]) : acc(0);
        }
#pragma unroll
        for (int k = 0; k < G; ++k) {
          sum_grad[w][k] += gs[k];
          sum_grad_eps[w][k] += gs[k] * acc(normals[w][k]);
        }
      }
    }
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const int64_t p0 = base + w * kNoiseLanes;
      acc ms[G], lvs[G], g_mu[G], g_lv[G];
      if constexpr (kPacked) {
        if (p0 >= params) continue;
        load_pack<G>(mu, p0, ms);
        load_pack<G>(logvar, p0, lvs);
      } else {
#pragma unroll
        for (int k = 0; k < G; ++k) {
          ms[k] = p0 + k < params ? acc(mu[p0 + k]) : acc(0);
          lvs[k] = p0 + k < params ? acc(logvar[p0 + k]) : acc(0);
        }
      }
#pragma unroll
      for (int k = 0; k < G; ++k) {
        const acc gkl = grad_kl != nullptr && p0 + k < params ? grad_kl[(p0 + k) / cols] : acc(0);
        g_lv[k] = gkl * kl_grad_logvar(lvs[k]) + acc(0.5) * std_from_logvar(lvs[k]) * sum_grad_eps[w][k];
        g_mu[k] = sum_grad[w][k] + gkl * ms[k];
      }
      if constexpr (kPacked) {
        store_pack<G>(grad_mu, p0, g_mu);
        store_pack<G>(grad_logvar, p0, g_lv);
      } else {
#pragma unroll
        for (int k = 0; k < G; ++k) {
          if (p0 + k < params) {
            grad_mu[p0 + k] = static_cast<scalar_t>(g_mu[k]);
            grad_logvar[p0 + k] = static_cast<scalar_t>(g_lv[k]);
          }
        }
      }
    }
  }
}

}  // namespace

void sample_forward(const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& eps,
                    const at::Tensor& seed, const at::Tensor& z, const at::Tensor& kl) {
  const DeviceGuard guard(mu.device());
  const int64_t rows = mu.size(0), cols = mu.size(1), params = rows * cols, total = z.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "sample_forward_cuda", [&] {
    using acc = acc_t<scalar_t>;
    const scalar_t* mu_p = mu.const_data_ptr<scalar_t>();
    const scalar_t* logvar_p = logvar.const_data_ptr<scalar_t>();
    if (kl.defined()) {
      launch_row_sum<scalar_t>(KLTerm<scalar_t>{mu_p, logvar_p, cols}, kl.data_ptr<acc>(), rows, cols, acc(0.5),
                               acc(0), can_pack<scalar_t>(cols, {mu_p, logvar_p}));
    }
    if (total == 0) return;
    if (eps.defined()) {
      const SampleGiven<scalar_t> op{mu_p, logvar_p, eps.const_data_ptr<scalar_t>(), z.data_ptr<scalar_t>(), params};
      launch_elementwise<scalar_t>(op, total, can_pack<scalar_t>(cols, {op.mu, op.logvar, op.eps, op.z}));
    } else {
      const unsigned int blocks = blocks_for(noise_groups(total));
      scalar_t* z_p = z.data_ptr<scalar_t>();
      const int64_t* seed_p = seed.const_data_ptr<int64_t>();
      if (can_pack<scalar_t, kCountersPerThread>(cols, {mu_p, logvar_p, z_p})) {
        launch<sample_drawn_kernel<scalar_t, true>>(blocks, kThreads, mu_p, logvar_p, seed_p, z_p, params, total);
      } else {
        launch<sample_drawn_kernel<scalar_t, false>>(blocks, kThreads, mu_p, logvar_p, seed_p, z_p, params, total);
      }
    }
  });
}

void sample_backward(const at::Tensor& grad_z, const at::Tensor& grad_kl, const at::Tensor& mu,
                     const at::Tensor& logvar, const at::Tensor& eps, const at::Tensor& seed,
                     const at::Tensor& grad_mu, const at::Tensor& grad_logvar) {
  const DeviceGuard guard(mu.device());
  const int64_t samples = grad_z.size(0), cols = mu.size(1), params = mu.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "sample_backward_cuda", [&] {
    using acc = acc_t<scalar_t>;
    const scalar_t* grad_z_p = grad_z.const_data_ptr<scalar_t>();
    const acc* grad_kl_p = grad_kl.defined() ? grad_kl.const_data_ptr<acc>() : nullptr;
    const scalar_t* mu_p = mu.const_data_ptr<scalar_t>();
    const scalar_t* logvar_p = logvar.const_data_ptr<scalar_t>();
    scalar_t* grad_mu_p = grad_mu.data_ptr<scalar_t>();
    scalar_t* grad_logvar_p = grad_logvar.data_ptr<scalar_t>();
    if (params == 0) return;
    if (samples > 0 && !eps.defined()) {
      const int64_t* seed_p = seed.const_data_ptr<int64_t>();
      const unsigned int blocks = blocks_for(noise_groups(params));
      if (can_pack<scalar_t, kCountersPerThread>(cols, {grad_z_p, mu_p, logvar_p, grad_mu_p, grad_logvar_p})) {
        launch<sample_backward_drawn_kernel<scalar_t, true>>(blocks, kThreads, grad_z_p, grad_kl_p, mu_p, logvar_p,
                                                             seed_p, grad_mu_p, grad_logvar_p, samples, cols, params);
      } else {
        launch<sample_backward_drawn_kernel<scalar_t, false>>(blocks, kThreads, grad_z_p, grad_kl_p, mu_p, logvar_p,
                                                              seed_p, grad_mu_p, grad_logvar_p, samples, cols, params);
      }
      return;
    }
    const SampleGrad<scalar_t> op{grad_z_p, grad_kl_p, mu_p, logvar_p,
                                  eps.defined() ? eps.const_data_ptr<scalar_t>() : nullptr,
                                  grad_mu_p, grad_logvar_p, samples, cols, params};
    launch_elementwise<scalar_t>(
        op, params, can_pack<scalar_t>(cols, {op.grad_z, op.mu, op.logvar, op.eps, op.grad_mu, op.grad_logvar}));
  });
}

}  // namespace aevb_fast::cuda
