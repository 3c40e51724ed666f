#pragma once
// How an operator's host code (csrc/ops/<op>.cpp) reaches its kernels. The op declares each
// kernel once, with its signature:
//
//   AEVB_KERNEL(bernoulli_log_prob_forward_kernel,
//               (const at::Tensor& x, const at::Tensor& logits, const at::Tensor& out))
//
// and calls it on the device of its tensors:
//   bernoulli_log_prob_forward_kernel(logits.device())(x, logits, out).
// A kernel is named <family>_<what it does>_kernel, after its family's files.
// Each back end defines a function of that name and signature, with no header in between:
// csrc/cpu/<op>.cpp in aevb_fast::<ISA>::cpu (compiled once per instruction set) and
// csrc/cuda/<op>.cu in aevb_fast::cuda. The parameter types are part of the linked name, so a
// back end whose definition differs leaves the symbol undefined and the module fails to load
// ("undefined symbol: ...bernoulli_log_prob_forward_kernel..."), never a call through the wrong type.
//
// Every tensor handed to a kernel is contiguous, on the device, validated and viewed flat by
// the host code (the op's file says which flat shapes).
#include <c10/core/Device.h>
#include <c10/util/Exception.h>

#include <string>

namespace aevb_fast {

// The instruction set whose CPU kernels this process runs ("AVX512", "AVX2" or "DEFAULT"):
// AEVB_FAST_CPU_ISA if set, else torch's own choice, lowered to what the CPU and the build have.
const std::string& selected_cpu_isa();
// Its index in the kernel tables: 0 DEFAULT, 1 AVX2, 2 AVX512.
int selected_cpu_isa_index();

// One kernel on every back end of this build. A null entry was not compiled.
template <typename Fn>
struct KernelChoice {
  Fn* cpu[3];  // by instruction set, as selected_cpu_isa_index()
  Fn* cuda;
  const char* name;

  Fn* operator()(const c10::Device& device) const {
#if defined(AEVB_EMULATED_CUDA)
    // The CUDA emulation runs the CUDA kernels on CPU tensors (csrc/emulation/).
    Fn* fn = cuda;
#else
    Fn* fn = device.is_cuda() ? cuda : cpu[selected_cpu_isa_index()];
#endif
    TORCH_CHECK(fn != nullptr, "aevb_fast: this build has no ", device.type(), " kernel ", name);
    return fn;
  }
};

}  // namespace aevb_fast

// The back ends this translation unit can link against: the CPU kernels of each compiled
// instruction set (AEVB_CPU_AVX2, AEVB_CPU_AVX512 from CMake) and the CUDA kernels.
#if defined(AEVB_EMULATED_CUDA)
#define AEVB_CPU_KERNEL_(isa, name) nullptr
#else
#define AEVB_CPU_KERNEL_(isa, name) AEVB_CPU_KERNEL_##isa##_(name)
#define AEVB_CPU_KERNEL_DEFAULT_(name) &::aevb_fast::DEFAULT::cpu::name
#endif
#if defined(AEVB_CPU_AVX2)
#define AEVB_CPU_KERNEL_AVX2_(name) &::aevb_fast::AVX2::cpu::name
#else
#define AEVB_CPU_KERNEL_AVX2_(name) nullptr
#endif
#if defined(AEVB_CPU_AVX512)
#define AEVB_CPU_KERNEL_AVX512_(name) &::aevb_fast::AVX512::cpu::name
#else
#define AEVB_CPU_KERNEL_AVX512_(name) nullptr
#endif
#if defined(AEVB_WITH_CUDA) || defined(AEVB_EMULATED_CUDA)
#define AEVB_CUDA_KERNEL_(name) &::aevb_fast::cuda::name
#else
#define AEVB_CUDA_KERNEL_(name) nullptr
#endif

// Declares kernel `name` with parameter list `params` in every back end's namespace, and
// aevb_fast::ops::name, the KernelChoice that picks one for a device. Use it at global scope
// in an op's host file.
#define AEVB_KERNEL(name, params)                                                                      \
  namespace aevb_fast::DEFAULT::cpu {                                                                  \
  void name params;                                                                                    \
  }                                                                                                    \
  namespace aevb_fast::AVX2::cpu {                                                                     \
  void name params;                                                                                    \
  }                                                                                                    \
  namespace aevb_fast::AVX512::cpu {                                                                   \
  void name params;                                                                                    \
  }                                                                                                    \
  namespace aevb_fast::cuda {                                                                          \
  void name params;                                                                                    \
  }                                                                                                    \
  namespace aevb_fast::ops {                                                                           \
  inline constexpr KernelChoice<void params> name{                                                     \
      {AEVB_CPU_KERNEL_(DEFAULT, name), AEVB_CPU_KERNEL_(AVX2, name), AEVB_CPU_KERNEL_(AVX512, name)}, \
      AEVB_CUDA_KERNEL_(name),                                                                         \
      #name};                                                                                          \
  }
