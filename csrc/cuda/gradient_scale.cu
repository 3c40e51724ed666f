// The backward of the log-likelihoods' summed form (csrc/op_library.h, scale_by_grad_): their
// gradient was made in the forward pass, and here it is scaled in place by the incoming gradient,
// read on the device. When that is 1 (loss.backward() on the sum) every thread returns at once and
// no byte moves: no host synchronisation either, so a CUDA graph replays the test.
#include <ATen/Dispatch.h>

#include "cuda/utils.cuh"

namespace aevb_fast::cuda {
namespace {

template <int kVec, typename scalar_t>
__global__ void scale_unless_one_kernel(scalar_t* __restrict__ t, const acc_t<scalar_t>* __restrict__ grad,
                                        int64_t packs) {
  const acc_t<scalar_t> g = *grad;
  if (g == acc_t<scalar_t>(1)) return;
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < packs; k += int64_t(gridDim.x) * blockDim.x) {
    acc_t<scalar_t> v[kVec];
    load_pack<kVec>(t, k * kVec, v);
#pragma unroll
    for (int i = 0; i < kVec; ++i) v[i] *= g;
    store_pack<kVec>(t, k * kVec, v);
  }
}

}  // namespace

// t: contiguous; grad: one value of t's accumulation dtype on t's device.
void scale_unless_one(const at::Tensor& t, const at::Tensor& grad) {
  const DeviceGuard guard(t.device());
  const int64_t n = t.numel();
  if (n == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "scale_unless_one_cuda", [&] {
    constexpr int P = kPack<scalar_t>;
    scalar_t* data = t.data_ptr<scalar_t>();
    const acc_t<scalar_t>* g = grad.const_data_ptr<acc_t<scalar_t>>();
    if (can_pack<scalar_t>(n, {data})) {
      launch<scale_unless_one_kernel<P, scalar_t>>(blocks_for(n / P), kThreads, data, g, n / P);
    } else {
      launch<scale_unless_one_kernel<1, scalar_t>>(blocks_for(n), kThreads, data, g, n);
    }
  });
}

}  // namespace aevb_fast::cuda
