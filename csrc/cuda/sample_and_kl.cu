// reparameterize, gaussian_kl and sample_and_kl on CUDA (see csrc/cpu/sample_and_kl.cpp for the
// formulas). The KL is a row sum (utils.cuh) or, per element, a map; z with given eps and the
// backward are elementwise maps; z with drawn noise has its own kernel because its unit of work is
// the RNG's: one thread per 4 consecutive Philox counters, which give, for each of the counter's 4
// words, 4 adjacent elements of z (a 4-element packed store), for 16 parameters read once and
// every sample (sample_drawn_kernel). The backward with drawn noise regenerates it by the same
// counter groups (sample_backward_drawn_kernel); with given noise it is an elementwise map. The
// parameters (mu, logvar, the prior) are read through RowInput, so a broadcast one is never copied
// whole.
#include <ATen/Dispatch.h>

#include <type_traits>

#include "common/math.h"
#include "cuda/utils.cuh"

namespace aevb_fast::cuda {
namespace {

// mu, logvar and the optional prior N(prior_mu, exp(prior_logvar)), as (R, cols) inputs.
template <typename scalar_t>
struct Latents {
  using acc = acc_t<scalar_t>;
  RowInput<scalar_t> mu, logvar, prior_mu, prior_logvar;  // without a prior, both read mu (unused)
  bool prior;
  Divider cols;

  Latents(const at::Tensor& mu_t, const at::Tensor& logvar_t, const at::Tensor& prior_mu_t,
          const at::Tensor& prior_logvar_t, int64_t cols_)
      : mu(mu_t),
        logvar(logvar_t),
        prior_mu(prior_mu_t.defined() ? prior_mu_t : mu_t),
        prior_logvar(prior_logvar_t.defined() ? prior_logvar_t : mu_t),
        prior(prior_mu_t.defined()),
        cols(cols_) {}

  // Whether N-element packs of every parameter and of `others` are aligned (see can_pack).
  template <int N = kPack<scalar_t>>
  bool can_pack_with(std::initializer_list<const void*> others) const {
    return can_pack<scalar_t, N>(cols.value, others) &&
           can_pack<scalar_t, N>(cols.value, {mu.pack_pointer(), logvar.pack_pointer(), prior_mu.pack_pointer(),
                                              prior_logvar.pack_pointer()});
  }

  // Row r's view of the parameters.
  struct Row {
    InputRow<scalar_t> mu, logvar, prior_mu, prior_logvar;
    bool prior;

    // Twice the KL of elements j .. j + N - 1 of the row.
    template <int N>
    __device__ __forceinline__ void twice_kl(int64_t j, acc (&out)[N]) const {
      acc ms[N], lvs[N];
      mu.template load<N>(j, ms);
      logvar.template load<N>(j, lvs);
      if (prior) {
        acc pms[N], plvs[N];
        prior_mu.template load<N>(j, pms);
        prior_logvar.template load<N>(j, plvs);
#pragma unroll
        for (int k = 0; k < N; ++k) {
          const auto t = prior_terms(ms[k], lvs[k], pms[k], plvs[k]);
          out[k] = twice_kl_term(t.w, t.d);
        }
      } else {
#pragma unroll
        for (int k = 0; k < N; ++k) out[k] = twice_kl_term(ms[k], lvs[k]);
      }
    }
  };

  __device__ __forceinline__ Row row(int64_t r) const {
    return {mu.row(r), logvar.row(r), prior_mu.row(r), prior_logvar.row(r), prior};
  }

  template <int N>
  __device__ __forceinline__ void twice_kl(int64_t r, int64_t j, acc (&out)[N]) const {
    row(r).template twice_kl<N>(j, out);
  }

  // z = mu + exp(logvar / 2) * eps for elements j .. j + N - 1 of row r.
  template <int N>
  __device__ __forceinline__ void sample(int64_t r, int64_t j, const acc (&eps)[N], acc (&z)[N]) const {
    acc ms[N], lvs[N];
    mu.template load<N>(r, j, ms);
    logvar.template load<N>(r, j, lvs);
#pragma unroll
    for (int k = 0; k < N; ++k) z[k] = ms[k] + std_from_logvar(lvs[k]) * eps[k];
  }
};

// The gradients of N parameters, and where they go (the prior's nullptr without a prior).
template <typename scalar_t>
struct LatentGrads {
  scalar_t* mu;
  scalar_t* logvar;
  scalar_t* prior_mu;
  scalar_t* prior_logvar;

  // From grad_kl per element (gkl), and when `sampled`, sum_l grad_z and sum_l grad_z * eps.
  template <int N>
  __device__ __forceinline__ void write(const Latents<scalar_t>& in, int64_t r, int64_t j, int64_t p,
                                        const acc_t<scalar_t> (&gkl)[N], const acc_t<scalar_t> (&sum_grad)[N],
                                        const acc_t<scalar_t> (&sum_grad_eps)[N], bool sampled) const {
    using acc = acc_t<scalar_t>;
    acc ms[N], lvs[N], g_mu[N], g_lv[N], g_pmu[N], g_plv[N];
    in.mu.template load<N>(r, j, ms);
    in.logvar.template load<N>(r, j, lvs);
    if (in.prior) {
      acc pms[N], plvs[N];
      in.prior_mu.template load<N>(r, j, pms);
      in.prior_logvar.template load<N>(r, j, plvs);
#pragma unroll
      for (int k = 0; k < N; ++k) {
        const auto t = prior_terms(ms[k], lvs[k], pms[k], plvs[k]);
        g_mu[k] = gkl[k] * t.w * t.inv_std;
        g_lv[k] = gkl[k] * kl_grad_logvar(t.d);
        g_pmu[k] = -g_mu[k];
        g_plv[k] = -g_lv[k] - gkl[k] * acc(0.5) * t.w * t.w;
      }
    } else {
#pragma unroll
      for (int k = 0; k < N; ++k) {
        g_mu[k] = gkl[k] * ms[k];
        g_lv[k] = gkl[k] * kl_grad_logvar(lvs[k]);
      }
    }
    if (sampled) {
#pragma unroll
      for (int k = 0; k < N; ++k) {
        g_mu[k] += sum_grad[k];
        g_lv[k] += acc(0.5) * std_from_logvar(lvs[k]) * sum_grad_eps[k];
      }
    }
    store_pack<N>(mu, p, g_mu);
    store_pack<N>(logvar, p, g_lv);
    if (in.prior) {
      store_pack<N>(prior_mu, p, g_pmu);
      store_pack<N>(prior_logvar, p, g_plv);
    }
  }
};

template <typename scalar_t>
struct KLTerm {
  Latents<scalar_t> in;

  struct Row {
    typename Latents<scalar_t>::Row in;
    template <int N>
    __device__ acc_t<scalar_t> sum(int64_t j) const {
      acc_t<scalar_t> terms[N];
      in.template twice_kl<N>(j, terms);
      acc_t<scalar_t> s = 0;
#pragma unroll
      for (int k = 0; k < N; ++k) s += terms[k];
      return s;
    }
  };

  __device__ Row row(int64_t r) const { return {in.row(r)}; }
};

// The KL of each element (event_dims=0), in the accumulation type.
template <typename scalar_t>
struct KLPerElement {
  Latents<scalar_t> in;
  acc_t<scalar_t>* kl;
  template <int N>
  __device__ void apply(int64_t i) const {
    acc_t<scalar_t> terms[N];
    const RowCol at(i, in.cols);
    in.template twice_kl<N>(at.r, at.j, terms);
#pragma unroll
    for (int k = 0; k < N; ++k) terms[k] *= acc_t<scalar_t>(0.5);
    store_pack<N>(kl, i, terms);
  }
};

// z = mu + exp(logvar / 2) * eps with eps given; element i of z uses parameter i % params.
template <typename scalar_t>
struct SampleGiven {
  Latents<scalar_t> in;
  const scalar_t* eps;
  scalar_t* z;
  Divider params;

  template <int N>
  __device__ void apply(int64_t i) const {
    const int64_t p = params.mod(i);
    acc_t<scalar_t> es[N], out[N];
    load_pack<N>(eps, i, es);
    const RowCol at(p, in.cols);
    in.template sample<N>(at.r, at.j, es, out);
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

// How the drawn-noise kernels access memory: kPacked when cols % 4 == 0 and the pointers are
// aligned (each run of 4 parameters is one packed access), kAnyLayout otherwise (one element at a
// time). Either way a group's normals are whole counters: every sample starts at a noise block
// (philox.h: noise_element).
enum class GroupLayout { kPacked, kAnyLayout };

// A group's normals for sample l: those of parameters base + 16 w + k (w, k = 0..3), stream
// elements first + 16 w + k with first = noise_element(l, params, base). first % 64 < 16, so they
// are words w of the 4 counters from first's on, whatever the layout.
__device__ __forceinline__ void sample_normals(PhiloxSeed seed, uint64_t first,
                                               float (&normals)[4][kCountersPerThread]) {
  philox_normals<kCountersPerThread>(seed, first / kNoiseBlock * kNoiseLanes + first % kNoiseLanes, normals);
}

// z with drawn noise. Thread g owns the 16 parameters base + 16 w + k (w, k = 0..3; base =
// 64 (g / 4) + 4 (g % 4)): it reads their mu and logvar once, and for each sample l writes
// z[l * params + p] with the normal of stream element noise_element(l, params, p) (sample_normals):
// for every sample, the counters 4g .. 4g + 3 of its first block. Packed: each run of 4 is in one
// row and one packed access; otherwise one element at a time. (Held to 64 registers with
// __launch_bounds__, 4 blocks an SM instead of 2, it spills 72-200 bytes a thread: left to nvcc.)
//
// kKLRowThreads > 0 (sample_and_kl with packed groups and rows of 16 kKLRowThreads elements:
// 64 or 128 latents) also writes the KL's row sums, so that mu and logvar are read once, not
// twice: a row is then kKLRowThreads consecutive threads, each adding its 16 elements' terms,
// summed across them in a fixed order. The loop's trip count is then uniform across a warp (the
// warp's first thread decides it), as the shuffles need every lane.
template <typename scalar_t, GroupLayout kLayout, int kKLRowThreads = 0>
__global__ void sample_drawn_kernel(const Latents<scalar_t> in, const int64_t* __restrict__ seed_ptr,
                                    scalar_t* __restrict__ z, acc_t<scalar_t>* __restrict__ kl, int64_t samples,
                                    int64_t params) {
  using acc = acc_t<scalar_t>;
  constexpr int G = kCountersPerThread;
  constexpr bool kPacked = kLayout != GroupLayout::kAnyLayout;
  static_assert(kKLRowThreads == 0 || kLayout == GroupLayout::kPacked, "the fused KL needs packed groups");
  const PhiloxSeed seed = read_seed(seed_ptr);
  const int64_t groups = noise_groups(params);
  const int lane = kKLRowThreads > 0 ? int(threadIdx.x % kWarp) : 0;
  for (int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g - lane < groups;
       g += int64_t(gridDim.x) * blockDim.x) {
    const bool active = g < groups;  // always, without the fused KL
    const int64_t base = group_first_element(g);
    acc ms[4][G] = {}, sigmas[4][G] = {};
    acc twice_kl = 0;
    if constexpr (kPacked) {
      RowCol at(base, in.cols);
      const int64_t row = at.r;
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        if (w > 0) at.step(kNoiseLanes, in.cols.value);
        if (!active || base + w * kNoiseLanes >= params) break;
        acc lvs[G];
        in.mu.template load<G>(at.r, at.j, ms[w]);
        in.logvar.template load<G>(at.r, at.j, lvs);
#pragma unroll
        for (int k = 0; k < G; ++k) sigmas[w][k] = std_from_logvar(lvs[k]);
        if constexpr (kKLRowThreads > 0) {
          acc terms[G];
          in.template twice_kl<G>(at.r, at.j, terms);  // mu and logvar again, from the L1 cache
#pragma unroll
          for (int k = 0; k < G; ++k) twice_kl += terms[k];
        }
      }
      if constexpr (kKLRowThreads > 0) {
        twice_kl = warp_sum<kKLRowThreads>(twice_kl);
        if (active && threadIdx.x % kKLRowThreads == 0) kl[row] = acc(0.5) * twice_kl;
      }
    } else {
#pragma unroll
      for (int w = 0; w < 4; ++w) {
#pragma unroll
        for (int k = 0; k < G; ++k) {
          const int64_t p = base + w * kNoiseLanes + k;
          acc m[1] = {acc(0)}, lv[1] = {acc(0)};
          if (p < params) {
            const RowCol at(p, in.cols);
            in.mu.template load<1>(at.r, at.j, m);
            in.logvar.template load<1>(at.r, at.j, lv);
          }
          ms[w][k] = m[0];
          sigmas[w][k] = std_from_logvar(lv[0]);
        }
      }
    }
    if (!active) continue;
    for (int64_t l = 0; l < samples; ++l) {
      float normals[4][G];
      sample_normals(seed, noise_element(l, params, base), normals);
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        const int64_t p0 = base + w * kNoiseLanes;
        acc out[G];
#pragma unroll
        for (int k = 0; k < G; ++k) out[k] = ms[w][k] + sigmas[w][k] * acc(normals[w][k]);
        if constexpr (kPacked) {
          if (p0 < params) store_pack<G>(z, l * params + p0, out);  // the run is all in range or all out
        } else {
#pragma unroll
          for (int k = 0; k < G; ++k) {
            if (p0 + k < params) z[l * params + p0 + k] = static_cast<scalar_t>(out[k]);
          }
        }
      }
    }
  }
}

// grad_mu, grad_logvar (and the prior's) of parameter p: the sum over the L samples of grad_z
// (and grad_z * eps), plus the KL's gradient; eps given (or no samples: the KL alone).
template <typename scalar_t>
struct SampleGrad {
  using acc = acc_t<scalar_t>;
  const scalar_t* grad_z;
  const acc* grad_kl;  // (R) or, per element, (R, cols); nullptr without a KL
  bool kl_per_element;
  Latents<scalar_t> in;
  const scalar_t* eps;  // or nullptr when samples == 0
  LatentGrads<scalar_t> out;
  int64_t samples, params;

  template <int N>
  __device__ void apply(int64_t p) const {
    acc sum_grad[N] = {}, sum_grad_eps[N] = {}, gkl[N];
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
    const RowCol at(p, in.cols);  // the N elements share a row
#pragma unroll
    for (int k = 0; k < N; ++k) {
      gkl[k] = grad_kl == nullptr ? acc(0) : kl_per_element ? grad_kl[p + k] : grad_kl[at.r];
    }
    out.template write<N>(in, at.r, at.j, p, gkl, sum_grad, sum_grad_eps, samples > 0);
  }
};

// The same gradients with drawn noise, regenerated by the forward's counter groups: thread g owns
// the 16 parameters base + 16 w + k (w, k = 0..3; base = 64 (g / 4) + 4 (g % 4)), whose sample-0
// elements are what the forward's thread g filled; for sample l it regenerates the normals of
// parameters base + 16 w + k with sample_normals, as the forward made them. Packed: each run of 4
// is one packed access; otherwise one element at a time.
template <typename scalar_t, GroupLayout kLayout>
__global__ void sample_backward_drawn_kernel(const scalar_t* __restrict__ grad_z, const acc_t<scalar_t>* grad_kl,
                                             bool kl_per_element, const Latents<scalar_t> in,
                                             const int64_t* __restrict__ seed_ptr, const LatentGrads<scalar_t> out,
                                             int64_t samples, int64_t params) {
  using acc = acc_t<scalar_t>;
  constexpr int G = kCountersPerThread;
  constexpr bool kPacked = kLayout != GroupLayout::kAnyLayout;
  const PhiloxSeed seed = read_seed(seed_ptr);
  const int64_t groups = noise_groups(params);
  for (int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g < groups; g += int64_t(gridDim.x) * blockDim.x) {
    const int64_t base = group_first_element(g);
    acc sum_grad[4][G] = {}, sum_grad_eps[4][G] = {};
    for (int64_t l = 0; l < samples; ++l) {
      float normals[4][G];
      sample_normals(seed, noise_element(l, params, base), normals);
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        const int64_t p0 = base + w * kNoiseLanes;
        acc gs[G];
        if constexpr (kPacked) {
          if (p0 >= params) continue;  // cols % 4 == 0: the run is all in range or all out
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
    RowCol at(base, in.cols);
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const int64_t p0 = base + w * kNoiseLanes;
      if constexpr (kPacked) {
        if (w > 0) at.step(kNoiseLanes, in.cols.value);
        if (p0 >= params) break;
        acc gkl[G];
#pragma unroll
        for (int k = 0; k < G; ++k) {
          gkl[k] = grad_kl == nullptr ? acc(0) : kl_per_element ? grad_kl[p0 + k] : grad_kl[at.r];
        }
        out.template write<G>(in, at.r, at.j, p0, gkl, sum_grad[w], sum_grad_eps[w], true);
      } else {
        for (int k = 0; k < G; ++k) {
          const int64_t p = p0 + k;
          if (p >= params) break;
          const RowCol at(p, in.cols);
          const acc gkl[1] = {grad_kl == nullptr ? acc(0) : kl_per_element ? grad_kl[p] : grad_kl[at.r]};
          const acc sg[1] = {sum_grad[w][k]}, sge[1] = {sum_grad_eps[w][k]};
          out.template write<1>(in, at.r, at.j, p, gkl, sg, sge, true);
        }
      }
    }
  }
}

// The drawn-noise kernels' GroupLayout for these parameters' and the outputs' pointers.
template <typename scalar_t>
GroupLayout group_layout(const Latents<scalar_t>& in, std::initializer_list<const void*> outputs) {
  return in.template can_pack_with<kCountersPerThread>(outputs) ? GroupLayout::kPacked : GroupLayout::kAnyLayout;
}

// launch_with(std::integral_constant<GroupLayout, layout>{}): a kernel per layout, chosen at run time.
template <typename Launch>
void for_layout(GroupLayout layout, const Launch& launch_with) {
  switch (layout) {
    case GroupLayout::kPacked:
      return launch_with(std::integral_constant<GroupLayout, GroupLayout::kPacked>{});
    case GroupLayout::kAnyLayout:
      return launch_with(std::integral_constant<GroupLayout, GroupLayout::kAnyLayout>{});
  }
}

}  // namespace

void sample_and_kl_forward_kernel(const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& prior_mu,
                                  const at::Tensor& prior_logvar, const at::Tensor& eps, const at::Tensor& seed,
                                  const at::Tensor& z, const at::Tensor& kl) {
  const DeviceGuard guard(mu.device());
  const int64_t rows = z.size(1), cols = z.size(2), params = rows * cols, total = z.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "sample_forward_cuda", [&] {
    using acc = acc_t<scalar_t>;
    const Latents<scalar_t> in(mu, logvar, prior_mu, prior_logvar, cols);
    scalar_t* z_p = total > 0 ? z.data_ptr<scalar_t>() : nullptr;
    const GroupLayout layout = group_layout(in, {z_p});
    // The KL's row sums inside the drawn-noise kernel: packed groups, rows of 64 or 128 latents.
    const bool kl_rows = kl.defined() && kl.dim() != 2;
    const int fused_kl_threads =
        kl_rows && total > 0 && !eps.defined() && layout == GroupLayout::kPacked && (cols == 64 || cols == 128)
            ? int(cols / kNoiseLanes)
            : 0;
    if (kl.defined() && kl.dim() == 2) {
      const KLPerElement<scalar_t> op{in, kl.data_ptr<acc>()};
      launch_elementwise<scalar_t>(op, params, in.can_pack_with({op.kl}));
    } else if (kl_rows && fused_kl_threads == 0) {
      launch_row_sum<scalar_t>(KLTerm<scalar_t>{in}, kl.data_ptr<acc>(), rows, cols, acc(0.5), acc(0),
                               in.can_pack_with({}));
    }
    if (total == 0) return;
    if (eps.defined()) {
      const SampleGiven<scalar_t> op{in, eps.const_data_ptr<scalar_t>(), z_p, Divider(params)};
      launch_elementwise<scalar_t>(op, total, in.can_pack_with({op.eps, op.z}));
      return;
    }
    const unsigned int blocks = blocks_for(noise_groups(params));
    const int64_t* seed_p = seed.const_data_ptr<int64_t>();
    const int64_t samples = z.size(0);
    if (fused_kl_threads == 4) {
      launch<sample_drawn_kernel<scalar_t, GroupLayout::kPacked, 4>>(blocks, kThreads, in, seed_p, z_p,
                                                                     kl.data_ptr<acc>(), samples, params);
    } else if (fused_kl_threads == 8) {
      launch<sample_drawn_kernel<scalar_t, GroupLayout::kPacked, 8>>(blocks, kThreads, in, seed_p, z_p,
                                                                     kl.data_ptr<acc>(), samples, params);
    } else {
      for_layout(layout, [&](auto layout_constant) {
        launch<sample_drawn_kernel<scalar_t, decltype(layout_constant)::value>>(blocks, kThreads, in, seed_p, z_p,
                                                                                nullptr, samples, params);
      });
    }
  });
}

void sample_and_kl_backward_kernel(const at::Tensor& grad_z, const at::Tensor& grad_kl, const at::Tensor& mu,
                                   const at::Tensor& logvar, const at::Tensor& prior_mu, const at::Tensor& prior_logvar,
                                   const at::Tensor& eps, const at::Tensor& seed, const at::Tensor& grad_mu,
                                   const at::Tensor& grad_logvar, const at::Tensor& grad_prior_mu,
                                   const at::Tensor& grad_prior_logvar) {
  const DeviceGuard guard(mu.device());
  const int64_t samples = grad_z.size(0), cols = grad_mu.size(1), params = grad_mu.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "sample_backward_cuda", [&] {
    using acc = acc_t<scalar_t>;
    const Latents<scalar_t> in(mu, logvar, prior_mu, prior_logvar, cols);
    const scalar_t* grad_z_p = grad_z.const_data_ptr<scalar_t>();
    const acc* grad_kl_p = grad_kl.defined() ? grad_kl.const_data_ptr<acc>() : nullptr;
    const bool kl_per_element = grad_kl.defined() && grad_kl.dim() == 2;
    const LatentGrads<scalar_t> out{grad_mu.data_ptr<scalar_t>(), grad_logvar.data_ptr<scalar_t>(),
                                    in.prior ? grad_prior_mu.data_ptr<scalar_t>() : nullptr,
                                    in.prior ? grad_prior_logvar.data_ptr<scalar_t>() : nullptr};
    if (params == 0) return;
    if (samples > 0 && !eps.defined()) {
      const int64_t* seed_p = seed.const_data_ptr<int64_t>();
      const unsigned int blocks = blocks_for(noise_groups(params));
      const GroupLayout layout = group_layout(in, {grad_z_p, out.mu, out.logvar, out.prior_mu, out.prior_logvar});
      for_layout(layout, [&](auto layout_constant) {
        launch<sample_backward_drawn_kernel<scalar_t, decltype(layout_constant)::value>>(
            blocks, kThreads, grad_z_p, grad_kl_p, kl_per_element, in, seed_p, out, samples, params);
      });
      return;
    }
    const SampleGrad<scalar_t> op{
        grad_z_p, grad_kl_p, kl_per_element, in, eps.defined() ? eps.const_data_ptr<scalar_t>() : nullptr,
        out,      samples,   params};
    launch_elementwise<scalar_t>(
        op, params, in.can_pack_with({grad_z_p, op.eps, out.mu, out.logvar, out.prior_mu, out.prior_logvar}));
  });
}

}  // namespace aevb_fast::cuda
