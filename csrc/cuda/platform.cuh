#pragma once
// The little the kernels need from the CUDA runtime and c10: a device guard, the grid limit and
// the launch. With nvcc these are the real ones; with AEVB_EMULATED_CUDA (the development build
// of aevb_fast.emulated_cuda) the same kernel sources run on the CPU emulation of
// csrc/emulation/, which is why the launch goes through a function and not <<<...>>> directly.
#include <cstdint>
#include <utility>

#if defined(AEVB_EMULATED_CUDA)
#include <c10/core/Device.h>

#include "emulation/cuda_emulation.h"
#else
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace aevb_fast::cuda {

#if defined(AEVB_EMULATED_CUDA)

struct DeviceGuard {
  explicit DeviceGuard(c10::Device) {}
};

inline int64_t max_grid_blocks() { return emulation::max_grid_blocks(); }

template <auto Kernel, typename... Args>
void launch(unsigned int blocks, unsigned int threads, Args&&... args) {
  emulation::launch<Kernel>(blocks, threads, std::forward<Args>(args)...);
}

#else

using DeviceGuard = c10::cuda::CUDAGuard;

// Enough blocks to fill any current GPU several times over.
inline int64_t max_grid_blocks() { return 65535LL * 8; }

// Kernel<<<blocks, threads>>>(args...) on the current stream, launch errors checked.
template <auto Kernel, typename... Args>
void launch(unsigned int blocks, unsigned int threads, Args&&... args) {
  // clang-format off: it reads a .cuh as C++ and would split <<< >>> into a comparison
  Kernel<<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(std::forward<Args>(args)...);
  // clang-format on
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

#endif

}  // namespace aevb_fast::cuda
