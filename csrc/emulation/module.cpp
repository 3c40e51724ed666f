// aevb_fast._emulated_cuda (development only): the operators' library torch.ops.aevb_fast_emulated,
// whose CPU kernels are csrc/cuda/*.cu run under the CUDA emulation (csrc/ops/<op>.cpp, built
// with AEVB_EMULATED_CUDA, register each op there), and the emulation's grid limit.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/library.h>

#include "cuda/divider.cuh"
#include "emulation/cuda_emulation.h"

TORCH_LIBRARY(aevb_fast_emulated, m) {}

// Small kernels that check the emulation itself (tests/test_emulation.py): one that must work,
// and the mistakes it must report instead of running on.
namespace {

using aevb_fast::emulation::launch;

// Each block sums its threads' indices: warp shuffles, then shared memory and __syncthreads.
__global__ void block_sum_kernel(int64_t* out) {
  __shared__ int64_t partial[32];
  int64_t v = threadIdx.x;
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    int64_t total = 0;
    for (unsigned int w = 0; w < blockDim.x / 32; ++w) total += partial[w];
    out[blockIdx.x] = total;
  }
}

__global__ void partial_warp_shuffle_kernel(int* out) {
  if (threadIdx.x % 32 >= 16) return;  // half of each warp leaves before the full-mask shuffle
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, int(threadIdx.x), 1);
}

// Thread 0 leaves early; as on sm_70 and later, the barrier then waits for the other threads only.
__global__ void early_exit_barrier_kernel(int* out) {
  if (threadIdx.x == 0) return;
  out[threadIdx.x] = 1;
  __syncthreads();
  out[blockDim.x + threadIdx.x] = out[blockDim.x - threadIdx.x] + 1;  // another thread's, from before the barrier
}

// Lane 0 waits at the barrier, which waits for lanes 1-31, which wait in a shuffle for lane 0.
__global__ void barrier_shuffle_deadlock_kernel(int* out) {
  if (threadIdx.x != 0) out[threadIdx.x] = __shfl_down_sync(0xffffffffu, int(threadIdx.x), 1);
  __syncthreads();
}

__global__ void read_past_end_kernel(const float* in, float* out, int n) {
  out[threadIdx.x] = in[threadIdx.x + n];  // thread 0 reads in[n]: one past the end
}

struct alignas(16) Float4 {
  float v[4];
};

__global__ void misaligned_load_kernel(const float* in, float* out) {
  out[0] = reinterpret_cast<const Float4*>(in + 1)->v[0];  // a 16-byte load 4 bytes off
}

// Divider(d).div(n) for each n, on the device (tests/build/test_emulation.py against Python's //).
__global__ void divide_kernel(aevb_fast::cuda::Divider d, const int64_t* n, int64_t* out, int64_t count) {
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) out[i] = d.div(n[i]);
}

std::vector<int64_t> divide(int64_t d, const std::vector<int64_t>& n) {
  TORCH_CHECK_VALUE(d >= 1, "divide: d must be positive, got ", d);
  std::vector<int64_t> out(n.size());
  aevb_fast::emulation::launch<divide_kernel>(1, 64, aevb_fast::cuda::Divider(d), n.data(), out.data(),
                                              int64_t(n.size()));
  return out;
}

std::vector<int64_t> self_test(const std::string& name) {
  if (name == "block_sum") {
    std::vector<int64_t> out(3);
    launch<block_sum_kernel>(3, 256, out.data());
    return out;
  }
  std::vector<int> ints(256);
  if (name == "partial_warp_shuffle")
    launch<partial_warp_shuffle_kernel>(1, 64, ints.data());
  else if (name == "early_exit_barrier") {
    launch<early_exit_barrier_kernel>(1, 64, ints.data());
    return std::vector<int64_t>(ints.begin(), ints.begin() + 128);
  } else if (name == "barrier_shuffle_deadlock")
    launch<barrier_shuffle_deadlock_kernel>(1, 32, ints.data());
  else if (name == "read_past_end") {
    std::vector<float> in(8), out(1);
    launch<read_past_end_kernel>(1, 1, in.data(), out.data(), 8);
  } else if (name == "misaligned_load") {
    alignas(16) float in[8] = {};
    float out[1];
    launch<misaligned_load_kernel>(1, 1, in, out);
  } else {
    TORCH_CHECK_VALUE(false, "unknown self test ", name);
  }
  return {};
}

}  // namespace

PYBIND11_MODULE(_emulated_cuda, m) {
  m.doc() = "csrc/cuda's kernels on CPU tensors under a CUDA emulation (torch.ops.aevb_fast_emulated)";
  m.def("max_grid_blocks", &aevb_fast::emulation::max_grid_blocks,
        "The largest grid a launch may use; the kernels' host code sizes grids to at most this.");
  m.def("set_max_grid_blocks", &aevb_fast::emulation::set_max_grid_blocks, pybind11::arg("blocks"));
  m.def("set_recording_launches", &aevb_fast::emulation::set_recording_launches, pybind11::arg("on"),
        "Start (clearing the log) or stop logging the name of each launched kernel.");
  m.def("launch_log", &aevb_fast::emulation::launch_log);
  m.def("self_test", &self_test, pybind11::arg("name"));
  m.def("divide", &divide, pybind11::arg("d"), pybind11::arg("n"), "n // d by csrc/cuda/divider.cuh's Divider");
  m.def("sanitizers", [] {
#if defined(__SANITIZE_ADDRESS__)
    return std::string("address,undefined");
#else
    return std::string("");
#endif
  });
}
