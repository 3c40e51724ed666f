#pragma once
// The CPU kernels. Each is compiled once per instruction set into its own namespace
// (aevb_fast::<ISA>::cpu); kernel_table.cpp gathers one ISA's kernels into a Kernels table, and
// register_cpu.cpp picks the best table this CPU can run.
#include <string>

#include <ATen/core/Tensor.h>

#include "common/macros.h"
#include "kernels.h"

namespace aevb_fast {

#if defined(CPU_CAPABILITY)
inline namespace CPU_CAPABILITY {
namespace cpu {
AEVB_DECLARE_KERNELS()
}  // namespace cpu
}  // namespace CPU_CAPABILITY
#endif

// One table per compiled instruction set (only those named in AEVB_COMPILED_ISAS exist).
const Kernels& cpu_kernels_DEFAULT();
const Kernels& cpu_kernels_AVX2();
const Kernels& cpu_kernels_AVX512();

}  // namespace aevb_fast

namespace aevb_fast {
// The instruction set whose kernels this process runs ("AVX512", "AVX2" or "DEFAULT").
const std::string& selected_cpu_isa();
}  // namespace aevb_fast
