#pragma once
// A CPU emulation of the CUDA execution model, just enough to run csrc/cuda/*.cu unchanged on CPU
// tensors (development and CI only; see README.md beside this file).
//
// The threads of a block are cooperative fibers (ucontext) on the calling OS thread, resumed in a
// fixed order; blocks run one after another. Fibers rather than OS threads because a block
// barrier or a warp shuffle is then a cheap switch instead of a wake-up of 256 threads on 2
// cores, a run is deterministic, and a deadlock (a barrier or full-mask shuffle that not every
// thread reaches) is known exactly: a pass over the block in which no thread moves.
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// One copy per OS thread; the fibers of a block share it, and blocks run one at a time.
#define __shared__ static thread_local

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
using cudaStream_t = void*;

namespace aevb_fast::emulation {

struct ThreadIndex {
  dim3 thread, block, block_dim, grid_dim;
};
// The running emulated thread's indices (set by the scheduler before it resumes a fiber).
const ThreadIndex& current();

// The largest grid a launch may ask for (a setting, so that tests can make grid-stride loops
// take several passes); a larger launch is an error, as on a GPU.
int64_t max_grid_blocks();
void set_max_grid_blocks(int64_t blocks);

// Runs body once per thread of a grid of `blocks` blocks of `threads` threads.
void run_grid(unsigned int blocks, unsigned int threads, const std::function<void()>& body);

void syncthreads();

enum class Shuffle { kIndex, kUp, kDown, kXor };
// Exchanges 8-byte slots between the 32 lanes of the caller's warp; returns the source lane's.
uint64_t shuffle_bits(unsigned int mask, uint64_t bits, Shuffle kind, int arg, int width);

template <typename T>
T shuffle(unsigned int mask, T value, Shuffle kind, int arg, int width) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffle of a type over 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bits = shuffle_bits(mask, bits, kind, arg, width);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

// While on, each launch appends its kernel's name (with template arguments) to a log, so that
// tests can tell which kernel path ran.
void record_launch(const char* signature);
bool recording_launches();
void set_recording_launches(bool on);  // also clears the log
std::vector<std::string> launch_log();

template <typename... Params>
std::tuple<std::decay_t<Params>...> parameters_of(void (*)(Params...));

// Kernel<<<blocks, threads>>>(args...): the arguments are converted to the kernel's parameter
// types once, as a launch copies them into its parameter space; each thread then gets its own
// copy as by-value parameters.
template <auto Kernel, typename... Args>
void launch(unsigned int blocks, unsigned int threads, Args&&... args) {
  if (recording_launches()) record_launch(__PRETTY_FUNCTION__);
  decltype(parameters_of(Kernel)) params(std::forward<Args>(args)...);
  run_grid(blocks, threads, [&] { std::apply(Kernel, params); });
}

}  // namespace aevb_fast::emulation

#define threadIdx (::aevb_fast::emulation::current().thread)
#define blockIdx (::aevb_fast::emulation::current().block)
#define blockDim (::aevb_fast::emulation::current().block_dim)
#define gridDim (::aevb_fast::emulation::current().grid_dim)

inline void __syncthreads() { ::aevb_fast::emulation::syncthreads(); }

template <typename T>
T __shfl_sync(unsigned int mask, T value, int src_lane, int width = 32) {
  return ::aevb_fast::emulation::shuffle(mask, value, ::aevb_fast::emulation::Shuffle::kIndex, src_lane, width);
}
template <typename T>
T __shfl_up_sync(unsigned int mask, T value, unsigned int delta, int width = 32) {
  return ::aevb_fast::emulation::shuffle(mask, value, ::aevb_fast::emulation::Shuffle::kUp, int(delta), width);
}
template <typename T>
T __shfl_down_sync(unsigned int mask, T value, unsigned int delta, int width = 32) {
  return ::aevb_fast::emulation::shuffle(mask, value, ::aevb_fast::emulation::Shuffle::kDown, int(delta), width);
}
template <typename T>
T __shfl_xor_sync(unsigned int mask, T value, int lane_mask, int width = 32) {
  return ::aevb_fast::emulation::shuffle(mask, value, ::aevb_fast::emulation::Shuffle::kXor, lane_mask, width);
}
