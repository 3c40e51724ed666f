// The CUDA back end: its kernel table, and every operator registered for CUDA with it. In the
// development build of the CUDA emulation the same table serves torch.ops.aevb_fast_emulated on
// CPU tensors (csrc/emulation/).
#include <torch/library.h>

#include "cuda/cuda_kernels.h"
#include "register_backend.h"

namespace aevb_fast {

const Kernels& cuda_kernels() {
  static const Kernels table = AEVB_KERNEL_TABLE(cuda);
  return table;
}

#if defined(AEVB_EMULATED_CUDA)
TORCH_LIBRARY_IMPL(aevb_fast_emulated, CPU, m) { register_backend<cuda_kernels>(m); }
#else
TORCH_LIBRARY_IMPL(aevb_fast, CUDA, m) { register_backend<cuda_kernels>(m); }
#endif

}  // namespace aevb_fast
