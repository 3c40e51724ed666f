// The CUDA back end: its kernel table, and every operator registered for CUDA with it.
#include <torch/library.h>

#include "cuda/cuda_kernels.h"
#include "register_backend.h"

namespace aevb_fast {

const Kernels& cuda_kernels() {
  static const Kernels table{&cuda::sample_forward,    &cuda::sample_backward,
                             &cuda::bernoulli_forward, &cuda::bernoulli_backward,
                             &cuda::gaussian_forward,  &cuda::gaussian_backward};
  return table;
}

TORCH_LIBRARY_IMPL(aevb_fast, CUDA, m) { register_backend<cuda_kernels>(m); }

}  // namespace aevb_fast
