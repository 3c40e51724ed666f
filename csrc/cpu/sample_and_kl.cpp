// reparameterize, gaussian_kl and sample_and_kl on the CPU: one kernel for all three.
// Forward:  z[l, r, j] = mu[r, j] + exp(logvar[r, j] / 2) * eps[l, r, j];  kl[r] = KL of row r
//           (or kl[r, j], the KL of each element), to N(0, I) or to a prior N(prior_mu,
//           exp(prior_logvar)) (csrc/common/math.h).
// Backward: grad_mu = sum_l grad_z + grad_kl * dKL/dmu
//           grad_logvar = sigma / 2 * sum_l grad_z * eps + grad_kl * dKL/dlogvar
//           grad_prior_mu, grad_prior_logvar = grad_kl * dKL/dprior_mu, dKL/dprior_logvar
// The noise is either given or regenerated from the seed (it is never stored).
//
// Each thread takes a range of rows and works through its flat range of the (R, J) parameters in
// tiles of kTile elements, whole vectors even when rows are short (a latent of 20 would otherwise
// be one vector and a scalar tail per row). A tile visits every sample l (z[l] holds the same
// elements) with one noise stream per sample, so that each sample's noise is drawn in order.
// The parameters are read through RowInput: a broadcast one (a prior shared by the batch, a
// per-example or scalar value) is gathered per tile, never copied whole.
#include <vector>

#include "cpu/loops.h"

namespace aevb_fast {
inline namespace CPU_CAPABILITY {
namespace cpu {
namespace {

// The noise of n elements of z: the given eps, or drawn from the stream (philox.h: noise_element).
template <typename scalar_t>
struct NoiseTile {
  InputTile<scalar_t> given;
  alignas(64) acc_t<scalar_t> drawn[kTile];
  // eps given: its elements first .. first + n - 1; drawn: the stream's from noise_first on.
  const acc_t<scalar_t>* get(const scalar_t* eps, NoiseStream<acc_t<scalar_t>>& stream, int64_t first,
                             uint64_t noise_first, int64_t n) {
    if (eps != nullptr) return given.load(eps + first, n);
    stream.fill(int64_t(noise_first), n, drawn);
    return drawn;
  }
};

// mu, logvar and the optional prior of one call, and a tile of each.
template <typename scalar_t>
struct LatentParams {
  using acc = acc_t<scalar_t>;
  RowInput<scalar_t> mu, logvar, prior_mu, prior_logvar;
  bool prior;
  int64_t rows, cols;
  LatentParams(const at::Tensor& mu_t, const at::Tensor& logvar_t, const at::Tensor& prior_mu_t,
               const at::Tensor& prior_logvar_t, int64_t rows_, int64_t cols_)
      : mu(mu_t),
        logvar(logvar_t),
        prior_mu(prior_mu_t.defined() ? prior_mu_t : mu_t),
        prior_logvar(prior_logvar_t.defined() ? prior_logvar_t : mu_t),
        prior(prior_mu_t.defined()),
        rows(rows_),
        cols(cols_) {}

  struct Tile {
    InputTile<scalar_t> mu_tile, logvar_tile, prior_mu_tile, prior_logvar_tile;
    const acc *mu = nullptr, *logvar = nullptr, *prior_mu = nullptr, *prior_logvar = nullptr;
  };
  void load(Tile& t, int64_t first, int64_t n) const {
    t.mu = mu.load_flat(t.mu_tile, first, n, rows, cols);
    t.logvar = logvar.load_flat(t.logvar_tile, first, n, rows, cols);
    if (prior) {
      t.prior_mu = prior_mu.load_flat(t.prior_mu_tile, first, n, rows, cols);
      t.prior_logvar = prior_logvar.load_flat(t.prior_logvar_tile, first, n, rows, cols);
    }
  }
};

template <typename scalar_t>
void sample_forward_typed(const LatentParams<scalar_t>& params, const at::Tensor& eps_t, const at::Tensor& seed_t,
                          const at::Tensor& z_t, const at::Tensor& kl_t) {
  using acc = acc_t<scalar_t>;
  const int64_t samples = z_t.size(0), rows = params.rows, cols = params.cols;
  const scalar_t* eps_p = eps_t.defined() ? eps_t.const_data_ptr<scalar_t>() : nullptr;
  scalar_t* z_p = z_t.data_ptr<scalar_t>();
  acc* kl_p = kl_t.defined() ? kl_t.data_ptr<acc>() : nullptr;
  const bool kl_per_element = kl_t.defined() && kl_t.dim() == 2;
  // Whether eps was given is eps_t.defined(), not its pointer: an empty eps has a null one.
  const PhiloxSeed seed = (samples > 0 && !eps_t.defined()) ? read_seed(seed_t) : PhiloxSeed{0, 0};

  at::parallel_for(0, rows, row_grain(cols * (samples + 1)), [&](int64_t r0, int64_t r1) {
    typename LatentParams<scalar_t>::Tile tile;
    NoiseTile<scalar_t> noise_tile;
    OutputTile<scalar_t> z_tile;
    alignas(64) acc sigma[kTile];
    alignas(64) acc kl_terms[kTile];
    std::vector<NoiseStream<acc>> streams(samples, NoiseStream<acc>(seed));
    if (kl_p != nullptr && !kl_per_element) std::fill(kl_p + r0, kl_p + r1, acc(0));
    for (int64_t p = r0 * cols, n = 0; p < r1 * cols; p += n) {
      n = tile_length(p, r1 * cols, cols);
      params.load(tile, p, n);
      acc* kl_out = kl_per_element ? kl_p + p : kl_terms;
      vectorized_loop<acc>(n, [&](auto t, int64_t i) {
        using T = decltype(t);
        const T lv = load<T>(tile.logvar + i);
        if (samples > 0) store(std_from_logvar(lv), sigma + i);
        if (kl_p == nullptr) return;
        if (params.prior) {
          const auto k =
              prior_terms(load<T>(tile.mu + i), lv, load<T>(tile.prior_mu + i), load<T>(tile.prior_logvar + i));
          store(T(0.5) * twice_kl_term(k.w, k.d), kl_out + i);
        } else {
          store(T(0.5) * twice_kl_term(load<T>(tile.mu + i), lv), kl_out + i);
        }
      });
      if (kl_p != nullptr && !kl_per_element) {
        add_row_sums(kl_terms, p, n, cols, kl_p);
      }
      for (int64_t l = 0; l < samples; ++l) {
        const int64_t z_offset = l * rows * cols;
        const acc* eps = noise_tile.get(eps_p, streams[l], z_offset + p, noise_element(l, rows * cols, p), n);
        acc* z = z_tile.begin(z_p + z_offset + p, n);
        vectorized_loop<acc>(n, [&](auto t, int64_t i) {
          using T = decltype(t);
          store(load<T>(tile.mu + i) + load<T>(sigma + i) * load<T>(eps + i), z + i);
        });
        z_tile.finish();
      }
    }
  });
}

template <typename scalar_t>
void sample_backward_typed(const at::Tensor& grad_z_t, const at::Tensor& grad_kl_t,
                           const LatentParams<scalar_t>& params, const at::Tensor& eps_t, const at::Tensor& seed_t,
                           const at::Tensor& grad_mu_t, const at::Tensor& grad_logvar_t,
                           const at::Tensor& grad_prior_mu_t, const at::Tensor& grad_prior_logvar_t) {
  using acc = acc_t<scalar_t>;
  const int64_t samples = grad_z_t.size(0), rows = params.rows, cols = params.cols;
  const scalar_t* grad_z_p = grad_z_t.const_data_ptr<scalar_t>();
  const acc* grad_kl_p = grad_kl_t.defined() ? grad_kl_t.const_data_ptr<acc>() : nullptr;
  const bool kl_per_element = grad_kl_t.defined() && grad_kl_t.dim() == 2;
  const scalar_t* eps_p = eps_t.defined() ? eps_t.const_data_ptr<scalar_t>() : nullptr;
  scalar_t* grad_mu_p = grad_mu_t.data_ptr<scalar_t>();
  scalar_t* grad_logvar_p = grad_logvar_t.data_ptr<scalar_t>();
  scalar_t* grad_prior_mu_p = params.prior ? grad_prior_mu_t.data_ptr<scalar_t>() : nullptr;
  scalar_t* grad_prior_logvar_p = params.prior ? grad_prior_logvar_t.data_ptr<scalar_t>() : nullptr;
  const PhiloxSeed seed = (samples > 0 && !eps_t.defined()) ? read_seed(seed_t) : PhiloxSeed{0, 0};

  at::parallel_for(0, rows, row_grain(cols * (samples + 1)), [&](int64_t r0, int64_t r1) {
    typename LatentParams<scalar_t>::Tile tile;
    InputTile<scalar_t> grad_z_tile;
    NoiseTile<scalar_t> noise_tile;
    OutputTile<scalar_t> grad_mu_tile, grad_logvar_tile, grad_prior_mu_tile, grad_prior_logvar_tile;
    // Per tile: sum_l grad_z, sum_l grad_z * eps, and grad_kl[r] spread over row r's elements.
    alignas(64) acc sum_grad[kTile];
    alignas(64) acc sum_grad_eps[kTile];
    alignas(64) acc grad_kl_spread[kTile];
    std::vector<NoiseStream<acc>> streams(samples, NoiseStream<acc>(seed));
    for (int64_t p = r0 * cols, n = 0; p < r1 * cols; p += n) {
      n = tile_length(p, r1 * cols, cols);
      std::fill_n(sum_grad, n, acc(0));
      std::fill_n(sum_grad_eps, n, acc(0));
      for (int64_t l = 0; l < samples; ++l) {
        const int64_t z_offset = l * rows * cols;
        const acc* grad_z = grad_z_tile.load(grad_z_p + z_offset + p, n);
        const acc* eps = noise_tile.get(eps_p, streams[l], z_offset + p, noise_element(l, rows * cols, p), n);
        vectorized_loop<acc>(n, [&](auto t, int64_t i) {
          using T = decltype(t);
          const T g = load<T>(grad_z + i);
          store(load<T>(sum_grad + i) + g, sum_grad + i);
          store(load<T>(sum_grad_eps + i) + g * load<T>(eps + i), sum_grad_eps + i);
        });
      }
      const acc* grad_kl = kl_per_element ? grad_kl_p + p : grad_kl_spread;
      if (grad_kl_p != nullptr && !kl_per_element) spread_rows(grad_kl_p, p, n, cols, grad_kl_spread);
      params.load(tile, p, n);
      acc* grad_mu = grad_mu_tile.begin(grad_mu_p + p, n);
      acc* grad_logvar = grad_logvar_tile.begin(grad_logvar_p + p, n);
      acc* grad_prior_mu = params.prior ? grad_prior_mu_tile.begin(grad_prior_mu_p + p, n) : nullptr;
      acc* grad_prior_logvar = params.prior ? grad_prior_logvar_tile.begin(grad_prior_logvar_p + p, n) : nullptr;
      vectorized_loop<acc>(n, [&](auto t, int64_t i) {
        using T = decltype(t);
        const T lv = load<T>(tile.logvar + i);
        T g_mu = T(0), g_lv = T(0);
        if (params.prior) {
          const T gkl = grad_kl_p != nullptr ? load<T>(grad_kl + i) : T(0);
          const auto k =
              prior_terms(load<T>(tile.mu + i), lv, load<T>(tile.prior_mu + i), load<T>(tile.prior_logvar + i));
          g_mu = gkl * k.w * k.inv_std;
          g_lv = gkl * kl_grad_logvar(k.d);
          store(T(0) - g_mu, grad_prior_mu + i);
          store(T(0) - g_lv - gkl * T(0.5) * k.w * k.w, grad_prior_logvar + i);
        } else if (grad_kl_p != nullptr) {
          const T gkl = load<T>(grad_kl + i);
          g_mu = gkl * load<T>(tile.mu + i);
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
      if (params.prior) {
        grad_prior_mu_tile.finish();
        grad_prior_logvar_tile.finish();
      }
    }
  });
}

}  // namespace

void sample_and_kl_forward_kernel(const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& prior_mu,
                                  const at::Tensor& prior_logvar, const at::Tensor& eps, const at::Tensor& seed,
                                  const at::Tensor& z, const at::Tensor& kl) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "sample_and_kl_forward_kernel", [&] {
    const LatentParams<scalar_t> params(mu, logvar, prior_mu, prior_logvar, z.size(1), z.size(2));
    sample_forward_typed<scalar_t>(params, eps, seed, z, kl);
  });
}

void sample_and_kl_backward_kernel(const at::Tensor& grad_z, const at::Tensor& grad_kl, const at::Tensor& mu,
                                   const at::Tensor& logvar, const at::Tensor& prior_mu, const at::Tensor& prior_logvar,
                                   const at::Tensor& eps, const at::Tensor& seed, const at::Tensor& grad_mu,
                                   const at::Tensor& grad_logvar, const at::Tensor& grad_prior_mu,
                                   const at::Tensor& grad_prior_logvar) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "sample_and_kl_backward_kernel", [&] {
    const LatentParams<scalar_t> params(mu, logvar, prior_mu, prior_logvar, grad_mu.size(0), grad_mu.size(1));
    sample_backward_typed<scalar_t>(grad_z, grad_kl, params, eps, seed, grad_mu, grad_logvar, grad_prior_mu,
                                    grad_prior_logvar);
  });
}

}  // namespace cpu
}  // namespace CPU_CAPABILITY
}  // namespace aevb_fast
