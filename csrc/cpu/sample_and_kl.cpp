// reparameterize, gaussian_kl and sample_and_kl on the CPU: one kernel for all three.
// Forward:  z[l, r, j] = mu[r, j] + exp(logvar[r, j] / 2) * eps[l, r, j];  kl[r] = KL of row r.
// Backward: grad_mu = sum_l grad_z + grad_kl * mu
//           grad_logvar = sigma / 2 * sum_l grad_z * eps + grad_kl * (exp(logvar) - 1) / 2
// The noise is either given or regenerated from the seed (it is never stored).
//
// Each thread takes a range of rows and works through it in groups of rows of about kGroup
// elements: the elementwise work runs over a group's flat range once per sample l (contiguous in
// mu, logvar and in z[l]), so that the noise of each sample is drawn in order.
#include <vector>

#include "cpu/kernel_table.h"
#include "cpu/loops.h"

namespace aevb_fast {
inline namespace CPU_CAPABILITY {
namespace cpu {
namespace {

constexpr int64_t kGroup = 16 * kTile;

// Rows per group: about kGroup elements, at least one row.
inline int64_t group_rows(int64_t cols) { return std::max<int64_t>(1, kGroup / std::max<int64_t>(cols, 1)); }

// The noise of flat elements [first, first + n): the given eps, or drawn from the stream.
template <typename scalar_t>
struct NoiseTile {
  InputTile<scalar_t> given;
  alignas(64) acc_t<scalar_t> drawn[kTile];
  const acc_t<scalar_t>* get(const scalar_t* eps, NoiseStream<acc_t<scalar_t>>& stream,
                             int64_t first, int64_t n) {
    if (eps != nullptr) return given.load(eps + first, n);
    stream.fill(first, n, drawn);
    return drawn;
  }
};

template <typename scalar_t>
void sample_forward_typed(const at::Tensor& mu_t, const at::Tensor& logvar_t, const at::Tensor& eps_t,
                          const at::Tensor& seed_t, const at::Tensor& z_t, const at::Tensor& kl_t) {
  using acc = acc_t<scalar_t>;
  const int64_t samples = z_t.size(0), rows = mu_t.size(0), cols = mu_t.size(1);
  const scalar_t* mu_p = mu_t.const_data_ptr<scalar_t>();
  const scalar_t* logvar_p = logvar_t.const_data_ptr<scalar_t>();
  const scalar_t* eps_p = eps_t.defined() ? eps_t.const_data_ptr<scalar_t>() : nullptr;
  scalar_t* z_p = z_t.data_ptr<scalar_t>();
  acc* kl_p = kl_t.defined() ? kl_t.data_ptr<acc>() : nullptr;
  // Whether eps was given is eps_t.defined(), not its pointer: an empty eps has a null one.
  const PhiloxSeed seed = (samples > 0 && !eps_t.defined()) ? read_seed(seed_t) : PhiloxSeed{0, 0};

  at::parallel_for(0, rows, row_grain(cols * (samples + 1)), [&](int64_t r0, int64_t r1) {
    InputTile<scalar_t> mu_tile, logvar_tile;
    NoiseTile<scalar_t> noise_tile;
    OutputTile<scalar_t> z_tile;
    for (int64_t g0 = r0; g0 < r1; g0 += group_rows(cols)) {
      const int64_t g1 = std::min(r1, g0 + group_rows(cols));
      for (int64_t r = g0; kl_p != nullptr && r < g1; ++r) {
        RowSum<acc> kl;
        for (int64_t j0 = 0; j0 < cols; j0 += kTile) {
          const int64_t n = std::min(kTile, cols - j0);
          const acc* mu = mu_tile.load(mu_p + r * cols + j0, n);
          const acc* logvar = logvar_tile.load(logvar_p + r * cols + j0, n);
          vectorized_loop<acc>(n, [&](auto t, int64_t i) {
            using T = decltype(t);
            kl.add(twice_kl_term(load<T>(mu + i), load<T>(logvar + i)));
          });
        }
        kl_p[r] = acc(0.5) * kl.total();
      }
      for (int64_t l = 0; l < samples; ++l) {
        NoiseStream<acc> stream(seed);
        const int64_t z_offset = l * rows * cols;
        for (int64_t p0 = g0 * cols; p0 < g1 * cols; p0 += kTile) {
          const int64_t n = std::min(kTile, g1 * cols - p0);
          const acc* mu = mu_tile.load(mu_p + p0, n);
          const acc* logvar = logvar_tile.load(logvar_p + p0, n);
          const acc* eps = noise_tile.get(eps_p, stream, z_offset + p0, n);
          acc* z = z_tile.begin(z_p + z_offset + p0, n);
          vectorized_loop<acc>(n, [&](auto t, int64_t i) {
            using T = decltype(t);
            store(load<T>(mu + i) + std_from_logvar(load<T>(logvar + i)) * load<T>(eps + i), z + i);
          });
          z_tile.finish();
        }
      }
    }
  });
}

template <typename scalar_t>
void sample_backward_typed(const at::Tensor& grad_z_t, const at::Tensor& grad_kl_t,
                           const at::Tensor& mu_t, const at::Tensor& logvar_t,
                           const at::Tensor& eps_t, const at::Tensor& seed_t,
                           const at::Tensor& grad_mu_t, const at::Tensor& grad_logvar_t) {
  using acc = acc_t<scalar_t>;
  const int64_t samples = grad_z_t.size(0), rows = mu_t.size(0), cols = mu_t.size(1);
  const scalar_t* grad_z_p = grad_z_t.const_data_ptr<scalar_t>();
  const acc* grad_kl_p = grad_kl_t.defined() ? grad_kl_t.const_data_ptr<acc>() : nullptr;
  const scalar_t* mu_p = mu_t.const_data_ptr<scalar_t>();
  const scalar_t* logvar_p = logvar_t.const_data_ptr<scalar_t>();
  const scalar_t* eps_p = eps_t.defined() ? eps_t.const_data_ptr<scalar_t>() : nullptr;
  scalar_t* grad_mu_p = grad_mu_t.data_ptr<scalar_t>();
  scalar_t* grad_logvar_p = grad_logvar_t.data_ptr<scalar_t>();
  const PhiloxSeed seed = (samples > 0 && !eps_t.defined()) ? read_seed(seed_t) : PhiloxSeed{0, 0};

  at::parallel_for(0, rows, row_grain(cols * (samples + 1)), [&](int64_t r0, int64_t r1) {
    InputTile<scalar_t> mu_tile, logvar_tile, grad_z_tile;
    NoiseTile<scalar_t> noise_tile;
    OutputTile<scalar_t> grad_mu_tile, grad_logvar_tile;
    // Per group: sum_l grad_z and sum_l grad_z * eps.
    const int64_t group_size = group_rows(cols) * cols;
    std::vector<acc> sum_grad(samples > 0 ? group_size : 0), sum_grad_eps(sum_grad.size());
    for (int64_t g0 = r0; g0 < r1; g0 += group_rows(cols)) {
      const int64_t g1 = std::min(r1, g0 + group_rows(cols));
      const int64_t first = g0 * cols, count = (g1 - g0) * cols;
      if (samples > 0) {
        std::fill_n(sum_grad.begin(), count, acc(0));
        std::fill_n(sum_grad_eps.begin(), count, acc(0));
      }
      for (int64_t l = 0; l < samples; ++l) {
        NoiseStream<acc> stream(seed);
        const int64_t z_offset = l * rows * cols;
        for (int64_t p0 = 0; p0 < count; p0 += kTile) {
          const int64_t n = std::min(kTile, count - p0);
          const acc* grad_z = grad_z_tile.load(grad_z_p + z_offset + first + p0, n);
          const acc* eps = noise_tile.get(eps_p, stream, z_offset + first + p0, n);
          acc* sg = sum_grad.data() + p0;
          acc* sge = sum_grad_eps.data() + p0;
          vectorized_loop<acc>(n, [&](auto t, int64_t i) {
            using T = decltype(t);
            const T g = load<T>(grad_z + i);
            store(load<T>(sg + i) + g, sg + i);
            store(load<T>(sge + i) + g * load<T>(eps + i), sge + i);
          });
        }
      }
      // Row by row, so that grad_kl[r] is one broadcast value.
      for (int64_t r = g0; r < g1; ++r) {
        const acc grad_kl = grad_kl_p != nullptr ? grad_kl_p[r] : acc(0);
        for (int64_t j0 = 0; j0 < cols; j0 += kTile) {
          const int64_t n = std::min(kTile, cols - j0), p = r * cols + j0;
          const acc* mu = mu_tile.load(mu_p + p, n);
          const acc* logvar = logvar_tile.load(logvar_p + p, n);
          const acc* sg = samples > 0 ? sum_grad.data() + (p - first) : nullptr;
          const acc* sge = samples > 0 ? sum_grad_eps.data() + (p - first) : nullptr;
          acc* grad_mu = grad_mu_tile.begin(grad_mu_p + p, n);
          acc* grad_logvar = grad_logvar_tile.begin(grad_logvar_p + p, n);
          vectorized_loop<acc>(n, [&](auto t, int64_t i) {
            using T = decltype(t);
            const T lv = load<T>(logvar + i);
            const T gkl = T(grad_kl);
            T g_mu = gkl * load<T>(mu + i);
            T g_lv = gkl * kl_grad_logvar(lv);
            if (samples > 0) {
              g_mu = g_mu + load<T>(sg + i);
              g_lv = g_lv + T(0.5) * std_from_logvar(lv) * load<T>(sge + i);
            }
            store(g_mu, grad_mu + i);
            store(g_lv, grad_logvar + i);
          });
          grad_mu_tile.finish();
          grad_logvar_tile.finish();
        }
      }
    }
  });
}

}  // namespace

void sample_forward(const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& eps,
                    const at::Tensor& seed, const at::Tensor& z, const at::Tensor& kl) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "sample_forward", [&] {
    sample_forward_typed<scalar_t>(mu, logvar, eps, seed, z, kl);
  });
}

void sample_backward(const at::Tensor& grad_z, const at::Tensor& grad_kl, const at::Tensor& mu,
                     const at::Tensor& logvar, const at::Tensor& eps, const at::Tensor& seed,
                     const at::Tensor& grad_mu, const at::Tensor& grad_logvar) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "sample_backward", [&] {
    sample_backward_typed<scalar_t>(grad_z, grad_kl, mu, logvar, eps, seed, grad_mu, grad_logvar);
  });
}

}  // namespace cpu
}  // namespace CPU_CAPABILITY
}  // namespace aevb_fast
