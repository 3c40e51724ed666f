// Which CPU instruction set's kernels this process runs (csrc/kernel.h).
#include "kernel.h"

#include <cstdlib>

#include <ATen/Version.h>

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
#if defined(AEVB_CPU_AVX512)
  if (wanted == "AVX512" && cpu_runs("AVX512")) return "AVX512";
#endif
#if defined(AEVB_CPU_AVX2)
  if (wanted != "DEFAULT" && cpu_runs("AVX2")) return "AVX2";
#endif
  return "DEFAULT";
}

}  // namespace

const std::string& selected_cpu_isa() {
  static const std::string isa = choose_isa();
  return isa;
}

int selected_cpu_isa_index() {
  static const int index = selected_cpu_isa() == "AVX512" ? 2 : selected_cpu_isa() == "AVX2" ? 1 : 0;
  return index;
}

}  // namespace aevb_fast
