#pragma once
// The CUDA kernels, with the interface of csrc/kernels.h (same arguments as the CPU kernels).
#include <ATen/core/Tensor.h>

#include "kernels.h"

namespace aevb_fast::cuda {
AEVB_DECLARE_KERNELS()
}  // namespace aevb_fast::cuda
