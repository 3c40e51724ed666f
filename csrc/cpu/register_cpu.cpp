// The CPU back end: picks the kernel table of the best instruction set this CPU runs, and
// registers every operator for the CPU with it.
#include <cstdlib>
#include <string>

#include <ATen/Version.h>
#include <torch/library.h>

#include "cpu/kernel_table.h"
#include "register_backend.h"

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

TORCH_LIBRARY_IMPL(aevb_fast, CPU, m) { register_backend<cpu_kernels>(m); }

}  // namespace aevb_fast
