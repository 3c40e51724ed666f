// reparameterize, gaussian_kl and sample_and_kl on the CPU: one kernel for all three.
// Forward:  z[l, r, j] = mu[r, j] + exp(logvar[r, j] / 2) * eps[l, r, j];  kl[r] = KL of row r.
// Backward: grad_mu = sum_l grad_z + grad_kl * mu
//           grad_logvar = sigma / 2 * sum_l grad_z * eps + grad_kl * (exp(logvar) - 1) / 2
// The noise is either given or regenerated from the seed (it is never stored).
//
// Each thread takes a range of rows and works through its flat range of mu and logvar in tiles
// of kTile elements, whole vectors even when rows are short (a latent of 20 would otherwise be
// one vector and a scalar tail per row). A tile visits every sample l (z[l] holds the same
// elements) with one noise stream per sample, so that each sample's noise is drawn in order.
#include <vector>

#include "cpu/loops.h"

namespace aevb_fast {
inline namespace CPU_CAPABILITY {
namespace cpu {
namespace {

// Calls f(row, i, m) for each row that flat elements [first, first + n) of rows of `cols`
// overlap: its elements are i .. i + m - 1 of that range.
template <typename F>
inline void for_each_row_segment(int64_t first, int64_t n, int64_t cols, const F& f) {
  for (int64_t i = 0, r = first / cols, j = first % cols; i < n; ++r, j = 0) {
    const int64_t m = std::min(cols - j, n - i);
    f(r, i, m);
    i += m;
  }
}

template <typename acc>
inline acc sum_of(const acc* p, int64_t n) {
  RowSum<acc> sum;
  vectorized_loop<acc>(n, [&](auto t, int64_t i) { sum.add(load<decltype(t)>(p + i)); });
  return sum.total();
}

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
    alignas(64) acc sigma[kTile];
    alignas(64) acc kl_terms[kTile];
    std::vector<NoiseStream<acc>> streams(samples, NoiseStream<acc>(seed));
    if (kl_p != nullptr) std::fill(kl_p + r0, kl_p + r1, acc(0));
    for (int64_t p = r0 * cols; p < r1 * cols; p += kTile) {
      const int64_t n = std::min(kTile, r1 * cols - p);
      const acc* mu = mu_tile.load(mu_p + p, n);
      const acc* logvar = logvar_tile.load(logvar_p + p, n);
      vectorized_loop<acc>(n, [&](auto t, int64_t i) {
        using T = decltype(t);
        const T lv = load<T>(logvar + i);
        if (samples > 0) store(std_from_logvar(lv), sigma + i);
        if (kl_p != nullptr) store(T(0.5) * twice_kl_term(load<T>(mu + i), lv), kl_terms + i);
      });
      if (kl_p != nullptr) {
        for_each_row_segment(p, n, cols, [&](int64_t r, int64_t i, int64_t m) { kl_p[r] += sum_of(kl_terms + i, m); });
      }
      for (int64_t l = 0; l < samples; ++l) {
        const int64_t z_offset = l * rows * cols;
        const acc* eps = noise_tile.get(eps_p, streams[l], z_offset + p, n);
        acc* z = z_tile.begin(z_p + z_offset + p, n);
        vectorized_loop<acc>(n, [&](auto t, int64_t i) {
          using T = decltype(t);
          store(load<T>(mu + i) + load<T>(sigma + i) * load<T>(eps + i), z + i);
        });
        z_tile.finish();
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
    // Per tile: sum_l grad_z, sum_l grad_z * eps, and grad_kl[r] spread over row r's elements.
    alignas(64) acc sum_grad[kTile];
    alignas(64) acc sum_grad_eps[kTile];
    alignas(64) acc grad_kl_spread[kTile];
    std::vector<NoiseStream<acc>> streams(samples, NoiseStream<acc>(seed));
    for (int64_t p = r0 * cols; p < r1 * cols; p += kTile) {
      const int64_t n = std::min(kTile, r1 * cols - p);
      std::fill_n(sum_grad, n, acc(0));
      std::fill_n(sum_grad_eps, n, acc(0));
      for (int64_t l = 0; l < samples; ++l) {
        const int64_t z_offset = l * rows * cols;
        const acc* grad_z = grad_z_tile.load(grad_z_p + z_offset + p, n);
        const acc* eps = noise_tile.get(eps_p, streams[l], z_offset + p, n);
        vectorized_loop<acc>(n, [&](auto t, int64_t i) {
          using T = decltype(t);
          const T g = load<T>(grad_z + i);
          store(load<T>(sum_grad + i) + g, sum_grad + i);
          store(load<T>(sum_grad_eps + i) + g * load<T>(eps + i), sum_grad_eps + i);
        });
      }
      if (grad_kl_p != nullptr) {
        for_each_row_segment(p, n, cols, [&](int64_t r, int64_t i, int64_t m) {
          std::fill_n(grad_kl_spread + i, m, grad_kl_p[r]);
        });
      }
      const acc* mu = mu_tile.load(mu_p + p, n);
      const acc* logvar = logvar_tile.load(logvar_p + p, n);
      acc* grad_mu = grad_mu_tile.begin(grad_mu_p + p, n);
      acc* grad_logvar = grad_logvar_tile.begin(grad_logvar_p + p, n);
      vectorized_loop<acc>(n, [&](auto t, int64_t i) {
        using T = decltype(t);
        const T lv = load<T>(logvar + i);
        T g_mu = T(0), g_lv = T(0);
        if (grad_kl_p != nullptr) {
          const T gkl = load<T>(grad_kl_spread + i);
          g_mu = gkl * load<T>(mu + i);
          g_lv = gkl * kl_grad_logvar(lv);
        }
        if (samples > 0) {
          g_mu = g_mu + load<T>(sum_grad + i);
          g_lv = g_lv + T(0.5) * std_from_logvar(lv) * load<T>(sum_grad_eps + i);
        }
        store(g_mu, grad_mu + i);
        store(g_lv, grad_logvar + i);
      });
      grad_mu_tile.finish();
      grad_logvar_tile.finish();
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
