// reparameterize, gaussian_kl and sample_and_kl on the CPU: one kernel for all three.
// Forward:  z[l, r, j] = mu[r, j] + exp(logvar[r, j] / 2) * eps[l, r, j];  kl[r] = KL of row r.
// Backward: grad_mu = sum_l grad_z + grad_kl * mu
//           grad_logvar = sigma / 2 * sum_l grad_z * eps + grad_kl * expm1(logvar) / 2
// The noise is either given or regenerated from the seed (it is never stored).
#include "cpu/kernel_table.h"
#include "cpu/loops.h"

namespace aevb_fast {
inline namespace CPU_CAPABILITY {
namespace cpu {
namespace {

// The noise of one tile: given eps, or drawn from the seed for flat elements [first, first + n).
template <typename scalar_t>
struct NoiseTile {
  InputTile<scalar_t> given;
  alignas(64) acc_t<scalar_t> drawn[kTile];
  const acc_t<scalar_t>* get(const scalar_t* eps, PhiloxSeed seed, int64_t first, int64_t n) {
    if (eps != nullptr) return given.load(eps + first, n);
    fill_normals(seed, first, n, drawn);
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
  const PhiloxSeed seed = (samples > 0 && eps_p == nullptr) ? read_seed(seed_t) : PhiloxSeed{0, 0};

  at::parallel_for(0, rows, row_grain(cols * (samples + 1)), [&](int64_t r0, int64_t r1) {
    InputTile<scalar_t> mu_tile, logvar_tile;
    NoiseTile<scalar_t> noise_tile;
    OutputTile<scalar_t> z_tile;
    alignas(64) acc sigma[kTile];
    for (int64_t r = r0; r < r1; ++r) {
      RowSum<acc> kl;
      for (int64_t j0 = 0; j0 < cols; j0 += kTile) {
        const int64_t n = std::min(kTile, cols - j0);
        const acc* mu = mu_tile.load(mu_p + r * cols + j0, n);
        const acc* logvar = logvar_tile.load(logvar_p + r * cols + j0, n);
        if (kl_p != nullptr) {
          vectorized_loop<acc>(n, [&](auto t, int64_t i) {
            using T = decltype(t);
            kl.add(twice_kl_term(load<T>(mu + i), load<T>(logvar + i)));
          });
        }
        if (samples > 0) {
          vectorized_loop<acc>(n, [&](auto t, int64_t i) {
            using T = decltype(t);
            store(std_from_logvar(load<T>(logvar + i)), sigma + i);
          });
        }
        for (int64_t l = 0; l < samples; ++l) {
          const int64_t first = (l * rows + r) * cols + j0;
          const acc* eps = noise_tile.get(eps_p, seed, first, n);
          acc* z = z_tile.begin(z_p + first, n);
          vectorized_loop<acc>(n, [&](auto t, int64_t i) {
            using T = decltype(t);
            store(load<T>(mu + i) + load<T>(sigma + i) * load<T>(eps + i), z + i);
          });
          z_tile.finish();
        }
      }
      if (kl_p != nullptr) kl_p[r] = acc(0.5) * kl.total();
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
  const PhiloxSeed seed = (samples > 0 && eps_p == nullptr) ? read_seed(seed_t) : PhiloxSeed{0, 0};

  at::parallel_for(0, rows, row_grain(cols * (samples + 1)), [&](int64_t r0, int64_t r1) {
    InputTile<scalar_t> mu_tile, logvar_tile, grad_z_tile;
    NoiseTile<scalar_t> noise_tile;
    OutputTile<scalar_t> grad_mu_tile, grad_logvar_tile;
    alignas(64) acc sum_grad[kTile];      // sum_l grad_z
    alignas(64) acc sum_grad_eps[kTile];  // sum_l grad_z * eps
    for (int64_t r = r0; r < r1; ++r) {
      const acc grad_kl = grad_kl_p != nullptr ? grad_kl_p[r] : acc(0);
      for (int64_t j0 = 0; j0 < cols; j0 += kTile) {
        const int64_t n = std::min(kTile, cols - j0);
        std::fill_n(sum_grad, n, acc(0));
        std::fill_n(sum_grad_eps, n, acc(0));
        for (int64_t l = 0; l < samples; ++l) {
          const int64_t first = (l * rows + r) * cols + j0;
          const acc* grad_z = grad_z_tile.load(grad_z_p + first, n);
          const acc* eps = noise_tile.get(eps_p, seed, first, n);
          vectorized_loop<acc>(n, [&](auto t, int64_t i) {
            using T = decltype(t);
            const T g = load<T>(grad_z + i);
            store(load<T>(sum_grad + i) + g, sum_grad + i);
            store(load<T>(sum_grad_eps + i) + g * load<T>(eps + i), sum_grad_eps + i);
          });
        }
        const acc* mu = mu_tile.load(mu_p + r * cols + j0, n);
        const acc* logvar = logvar_tile.load(logvar_p + r * cols + j0, n);
        acc* grad_mu = grad_mu_tile.begin(grad_mu_p + r * cols + j0, n);
        acc* grad_logvar = grad_logvar_tile.begin(grad_logvar_p + r * cols + j0, n);
        vectorized_loop<acc>(n, [&](auto t, int64_t i) {
          using T = decltype(t);
          const T lv = load<T>(logvar + i);
          const T gkl = T(grad_kl);
          store(load<T>(sum_grad + i) + gkl * load<T>(mu + i), grad_mu + i);
          T g = gkl * kl_grad_logvar(lv);
          if (samples > 0) g = g + T(0.5) * std_from_logvar(lv) * load<T>(sum_grad_eps + i);
          store(g, grad_logvar + i);
        });
        grad_mu_tile.finish();
        grad_logvar_tile.finish();
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
