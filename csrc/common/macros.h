#pragma once
// Lets the scalar math in csrc/common/ compile for the host (CPU kernels) and the device (CUDA).
#if defined(__CUDACC__)
#define AEVB_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define AEVB_HOST_DEVICE inline
#endif

// Keeps a rarely taken path's code out of the caller's loop (the GPU's i-cache and the SASS report's
// count, benchmarks/results/sass_sm90.md).
#if defined(__CUDACC__)
#define AEVB_NOINLINE __noinline__
#else
#define AEVB_NOINLINE __attribute__((noinline))
#endif

// Unrolls a loop whose trip count is a constant, so that the arrays it indexes stay in registers
// on the GPU (a run-time index would put them in local memory).
#if defined(__CUDACC__)
#define AEVB_UNROLL _Pragma("unroll")
#elif defined(__GNUC__) && !defined(__clang__)
#define AEVB_UNROLL _Pragma("GCC unroll 16")
#else
#define AEVB_UNROLL
#endif

// Code compiled once per CPU instruction set (csrc/cpu/) must not share inline functions across
// those builds, or the linker could hand AVX-512 code to a CPU without it. Like at::vec, our
// inline code lives in an inline namespace named after the instruction set being compiled.
#if defined(CPU_CAPABILITY)
#define AEVB_ISA_NAMESPACE CPU_CAPABILITY
#elif defined(AEVB_EMULATED_DEVICE_MATH)
#define AEVB_ISA_NAMESPACE emulated_device
#else
#define AEVB_ISA_NAMESPACE portable
#endif

// The GPU's own math (CUDA's expf and intrinsics, csrc/common/math.h): on the device, and in the
// emulated kernels with the host stand-ins of csrc/emulation/device_math.h, so that the CUDA tests
// run those lines without a GPU. The CPU kernels keep the formulas shared with the vector code.
#if defined(__CUDA_ARCH__)
#define AEVB_DEVICE_MATH 1
#elif defined(AEVB_EMULATED_DEVICE_MATH)
#define AEVB_DEVICE_MATH 1
#include "emulation/device_math.h"
#endif
