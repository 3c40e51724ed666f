// The CPU back end: picks the kernel table of the best instruction set this CPU runs, and
// registers every operator's CPU implementation (the shared host code of host_ops.cpp).
#include <cstdlib>
#include <string>

#include <ATen/Version.h>
#include <torch/library.h>

#include "cpu/kernel_table.h"
#include "host_ops.h"

namespace aevb_fast {
namespace {

bool cpu_runs(const std::string& isa) {
#if defined(__x86_64__) || defined(_M_X64)
  if (isa == "AVX512") {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("fma");
  }
  if (isa == "AVX2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return isa == "DEFAULT";
}

// The request: AEVB_FAST_CPU_ISA if set (to compare the builds), else torch's own choice
// (which honours ATEN_CPU_CAPABILITY). Falls back to lower sets the CPU can run.
std::string choose_isa() {
  const char* env = std::getenv("AEVB_FAST_CPU_ISA");
  std::string wanted = env != nullptr && *env != '\0' ? std::string(env) : at::get_cpu_capability();
  if (wanted != "AVX512" && wanted != "AVX2" && wanted != "DEFAULT") {
    wanted = wanted.find("AVX512") != std::string::npos ? "AVX512"
             : wanted.find("AVX2") != std::string::npos ? "AVX2"
                                                        : "DEFAULT";
  }
#if defined(__x86_64__) || defined(_M_X64)
  if (wanted == "AVX512" && cpu_runs("AVX512")) return "AVX512";
  if (wanted != "DEFAULT" && cpu_runs("AVX2")) return "AVX2";
#endif
  return "DEFAULT";
}

}  // namespace

const std::string& selected_cpu_isa() {
  static const std::string isa = choose_isa();
  return isa;
}

const Kernels& cpu_kernels() {
  static const Kernels* table = [] {
#if defined(__x86_64__) || defined(_M_X64)
    if (selected_cpu_isa() == "AVX512") return &cpu_kernels_AVX512();
    if (selected_cpu_isa() == "AVX2") return &cpu_kernels_AVX2();
#endif
    return &cpu_kernels_DEFAULT();
  }();
  return *table;
}

TORCH_LIBRARY_IMPL(aevb_fast, CPU, m) {
  m.impl("reparameterize", [](const at::Tensor& mu, const at::Tensor& logvar,
                              const std::optional<at::Tensor>& eps,
                              const std::optional<at::Tensor>& seed, int64_t num_samples) {
    return reparameterize(cpu_kernels(), mu, logvar, eps, seed, num_samples);
  });
  m.impl("reparameterize_backward",
         [](const at::Tensor& grad_z, const at::Tensor& mu, const at::Tensor& logvar,
            const std::optional<at::Tensor>& eps, const std::optional<at::Tensor>& seed) {
           return reparameterize_backward(cpu_kernels(), grad_z, mu, logvar, eps, seed);
         });
  m.impl("gaussian_kl", [](const at::Tensor& mu, const at::Tensor& logvar) {
    return gaussian_kl(cpu_kernels(), mu, logvar);
  });
  m.impl("gaussian_kl_backward",
         [](const at::Tensor& grad_kl, const at::Tensor& mu, const at::Tensor& logvar) {
           return gaussian_kl_backward(cpu_kernels(), grad_kl, mu, logvar);
         });
  m.impl("sample_and_kl", [](const at::Tensor& mu, const at::Tensor& logvar,
                             const std::optional<at::Tensor>& eps,
                             const std::optional<at::Tensor>& seed, int64_t num_samples) {
    return sample_and_kl(cpu_kernels(), mu, logvar, eps, seed, num_samples);
  });
  m.impl("sample_and_kl_backward",
         [](const at::Tensor& grad_z, const at::Tensor& grad_kl, const at::Tensor& mu,
            const at::Tensor& logvar, const std::optional<at::Tensor>& eps,
            const std::optional<at::Tensor>& seed) {
           return sample_and_kl_backward(cpu_kernels(), grad_z, grad_kl, mu, logvar, eps, seed);
         });
  m.impl("bernoulli_log_prob", [](const at::Tensor& x, const at::Tensor& logits, int64_t event_dims) {
    return bernoulli_log_prob(cpu_kernels(), x, logits, event_dims);
  });
  m.impl("bernoulli_log_prob_backward", [](const at::Tensor& grad, const at::Tensor& x,
                                           const at::Tensor& logits, int64_t event_dims) {
    return bernoulli_log_prob_backward(cpu_kernels(), grad, x, logits, event_dims);
  });
  m.impl("gaussian_log_prob", [](const at::Tensor& x, const at::Tensor& mean,
                                 const at::Tensor& logvar, int64_t event_dims) {
    return gaussian_log_prob(cpu_kernels(), x, mean, logvar, event_dims);
  });
  m.impl("gaussian_log_prob_backward",
         [](const at::Tensor& grad, const at::Tensor& x, const at::Tensor& mean,
            const at::Tensor& logvar, int64_t event_dims) {
           return gaussian_log_prob_backward(cpu_kernels(), grad, x, mean, logvar, event_dims);
         });
}

}  // namespace aevb_fast
