// The scheduler of the CUDA emulation (cuda_emulation.h): a block's threads are ucontext fibers
// resumed in thread order, pass after pass, until every one has returned. A fiber gives the CPU
// back only at __syncthreads or a warp shuffle, so a pass in which no fiber arrives anywhere new
// and none returns is a deadlock, reported as an error naming who waits where.
#include "emulation/cuda_emulation.h"

#include <sys/mman.h>
#include <ucontext.h>

#include <atomic>
#include <exception>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include <c10/util/Exception.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define AEVB_EMULATION_ASAN 1
#endif

namespace aevb_fast::emulation {
namespace {

constexpr int kWarpSize = 32;
constexpr unsigned int kMaxThreadsPerBlock = 1024;
constexpr size_t kStackBytes = 256 * 1024;  // AddressSanitizer's frames are large
constexpr size_t kGuardBytes = 4096;        // an overflow faults instead of corrupting a neighbour

std::atomic<int64_t> g_max_grid_blocks{65535LL * 8};
std::atomic<bool> g_recording{false};
std::mutex g_log_mutex;
std::vector<std::string> g_launch_log;

enum class State { kRunning, kAtBarrier, kAtShuffle, kExited };

struct Fiber {
  ucontext_t context;
  char* stack = nullptr;  // kGuardBytes of guard page, then the stack
  ThreadIndex index;
  State state = State::kRunning;
  void* asan_fake_stack = nullptr;
};

struct Warp {
  int lanes = kWarpSize;  // the last warp of a block may be partial
  int arrived = 0;
  uint64_t generation = 0;
  // Double-buffered by generation: a lane cannot reach the next shuffle's slots before every
  // lane has read this one's (the next shuffle completes only when all lanes arrive).
  uint64_t slots[2][kWarpSize] = {};
};

// One per OS thread: its fibers, and the state of the block being run.
class Runner {
 public:
  ~Runner() {
    for (Fiber& f : fibers_) munmap(f.stack, kGuardBytes + kStackBytes);
  }

  void run_grid(unsigned int blocks, unsigned int threads, const std::function<void()>& body) {
    TORCH_CHECK(body_ == nullptr, "emulated CUDA: a kernel launched another kernel");
    body_ = &body;
    try {
      for (unsigned int b = 0; b < blocks; ++b) run_block(b, blocks, threads);
    } catch (...) {
      body_ = nullptr;
      current_ = nullptr;
      throw;
    }
    body_ = nullptr;
    current_ = nullptr;
  }

  const ThreadIndex& index() const {
    TORCH_CHECK(current_ != nullptr, "emulated CUDA: threadIdx/blockIdx read outside a kernel");
    return current_->index;
  }

  // As on sm_70 and later, the barrier waits for the threads that have not exited the kernel.
  void syncthreads() {
    Fiber& f = running_fiber("__syncthreads");
    const uint64_t generation = barrier_generation_;
    f.state = State::kAtBarrier;
    ++progress_;
    ++barrier_arrived_;
    release_barrier_if_complete();
    while (barrier_generation_ == generation) yield(f);
    f.state = State::kRunning;
  }

  uint64_t shuffle(unsigned int mask, uint64_t bits, Shuffle kind, int arg, int width) {
    Fiber& f = running_fiber("__shfl_*_sync");
    const int thread = int(f.index.thread.x), lane = thread % kWarpSize;
    Warp& w = warps_[thread / kWarpSize];
    const unsigned int all_lanes = w.lanes == kWarpSize ? 0xffffffffu : (1u << w.lanes) - 1;
    TORCH_CHECK(mask == all_lanes, "emulated CUDA: a shuffle with mask 0x", std::hex, mask,
                " in a warp of ", std::dec, w.lanes, " lanes; only full-warp masks are emulated");
    TORCH_CHECK(width > 0 && width <= kWarpSize && (width & (width - 1)) == 0,
                "emulated CUDA: shuffle width ", width, " is not a power of two up to 32");
    const uint64_t generation = w.generation;
    w.slots[generation & 1][lane] = bits;
    f.state = State::kAtShuffle;
    ++progress_;
    if (++w.arrived == w.lanes) {
      w.arrived = 0;
      ++w.generation;
    }
    while (w.generation == generation) yield(f);
    f.state = State::kRunning;
    // As PTX's shfl: the lane or offset operand is 5 bits; xor may read an earlier segment.
    arg &= kWarpSize - 1;
    const int base = lane & ~(width - 1), offset = lane - base, last = base | (width - 1);
    int source = lane;
    switch (kind) {
      case Shuffle::kIndex: source = base + (arg & (width - 1)); break;
      case Shuffle::kUp: source = offset >= arg ? lane - arg : lane; break;
      case Shuffle::kDown: source = offset + arg < width ? lane + arg : lane; break;
      case Shuffle::kXor: source = (lane ^ arg) <= last ? lane ^ arg : lane; break;
    }
    return w.slots[generation & 1][source < w.lanes ? source : lane];
  }

 private:
  void release_barrier_if_complete() {
    if (barrier_arrived_ > 0 && barrier_arrived_ == int(block_threads_ - exited_)) {
      barrier_arrived_ = 0;
      ++barrier_generation_;
    }
  }

  Fiber& running_fiber(const char* what) {
    TORCH_CHECK(current_ != nullptr, "emulated CUDA: ", what, " called outside a kernel");
    return *current_;
  }

  void ensure_fibers(unsigned int threads) {
    while (fibers_.size() < threads) {
      void* p = mmap(nullptr, kGuardBytes + kStackBytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      TORCH_CHECK(p != MAP_FAILED, "emulated CUDA: could not map a fiber stack");
      mprotect(p, kGuardBytes, PROT_NONE);
      fibers_.emplace_back();
      fibers_.back().stack = static_cast<char*>(p);
    }
  }

  void run_block(unsigned int block, unsigned int blocks, unsigned int threads) {
    ensure_fibers(threads);
    block_threads_ = threads;
    barrier_arrived_ = 0;
    exited_ = 0;
    warps_.assign((threads + kWarpSize - 1) / kWarpSize, Warp{});
    warps_.back().lanes = int(threads - (warps_.size() - 1) * kWarpSize);
    for (unsigned int t = 0; t < threads; ++t) {
      Fiber& f = fibers_[t];
      f.index = {dim3(t), dim3(block), dim3(threads), dim3(blocks)};
      f.state = State::kRunning;
      getcontext(&f.context);
      f.context.uc_stack.ss_sp = f.stack + kGuardBytes;
      f.context.uc_stack.ss_size = kStackBytes;
      f.context.uc_link = nullptr;
      makecontext(&f.context, &Runner::fiber_main, 0);
    }
    while (exited_ < threads) {
      const uint64_t before = progress_;
      for (unsigned int t = 0; t < threads; ++t) {
        if (fibers_[t].state != State::kExited) resume(fibers_[t]);
        if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
      }
      TORCH_CHECK(exited_ == threads || progress_ != before, describe_deadlock(block));
    }
  }

  std::string describe_deadlock(unsigned int block) const {
    std::ostringstream out;
    out << "emulated CUDA: deadlock in block " << block << ": ";
    int at_barrier = 0, exited = 0;
    for (unsigned int t = 0; t < block_threads_; ++t) {
      at_barrier += fibers_[t].state == State::kAtBarrier;
      exited += fibers_[t].state == State::kExited;
    }
    for (size_t w = 0; w < warps_.size(); ++w) {
      int waiting = 0, gone = 0, lanes = warps_[w].lanes;
      for (int lane = 0; lane < lanes; ++lane) {
        const State s = fibers_[w * kWarpSize + lane].state;
        waiting += s == State::kAtShuffle;
        gone += s == State::kExited;
      }
      if (waiting > 0) {
        out << "a full-mask shuffle in warp " << w << " was reached by " << waiting << " of its " << lanes
            << " lanes (" << gone << " exited the kernel, " << lanes - waiting - gone << " wait at __syncthreads)";
        return out.str();
      }
    }
    out << "__syncthreads was reached by " << at_barrier << " of the block's " << block_threads_
        << " threads (" << exited << " exited the kernel)";
    return out.str();
  }

  void resume(Fiber& f) {
    current_ = &f;
#if defined(AEVB_EMULATION_ASAN)
    __sanitizer_start_switch_fiber(&main_fake_stack_, f.stack + kGuardBytes, kStackBytes);
#endif
    swapcontext(&main_context_, &f.context);
#if defined(AEVB_EMULATION_ASAN)
    __sanitizer_finish_switch_fiber(main_fake_stack_, nullptr, nullptr);
#endif
    current_ = nullptr;
  }

  void yield(Fiber& f) {
#if defined(AEVB_EMULATION_ASAN)
    __sanitizer_start_switch_fiber(&f.asan_fake_stack, main_stack_bottom_, main_stack_size_);
#endif
    swapcontext(&f.context, &main_context_);
#if defined(AEVB_EMULATION_ASAN)
    __sanitizer_finish_switch_fiber(f.asan_fake_stack, &main_stack_bottom_, &main_stack_size_);
#endif
  }

  static void fiber_main();

  std::vector<Fiber> fibers_;
  std::vector<Warp> warps_;
  const std::function<void()>* body_ = nullptr;
  Fiber* current_ = nullptr;
  ucontext_t main_context_;
  unsigned int block_threads_ = 0;
  unsigned int exited_ = 0;
  int barrier_arrived_ = 0;
  uint64_t barrier_generation_ = 0;
  uint64_t progress_ = 0;  // arrivals at barriers and shuffles, and exits
  std::exception_ptr error_;
  void* main_fake_stack_ = nullptr;
  const void* main_stack_bottom_ = nullptr;
  size_t main_stack_size_ = 0;
};

thread_local Runner t_runner;

void Runner::fiber_main() {
  Runner& r = t_runner;
#if defined(AEVB_EMULATION_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &r.main_stack_bottom_, &r.main_stack_size_);
#endif
  Fiber& f = *r.current_;
  try {
    (*r.body_)();
  } catch (...) {
    if (!r.error_) r.error_ = std::current_exception();
  }
  f.state = State::kExited;
  ++r.exited_;
  ++r.progress_;
  r.release_barrier_if_complete();  // the others may have been waiting only for this one
#if defined(AEVB_EMULATION_ASAN)
  __sanitizer_start_switch_fiber(nullptr, r.main_stack_bottom_, r.main_stack_size_);
#endif
  setcontext(&r.main_context_);  // never returns; the fiber is restarted by the next block
}

}  // namespace

const ThreadIndex& current() { return t_runner.index(); }

int64_t max_grid_blocks() { return g_max_grid_blocks.load(); }

void set_max_grid_blocks(int64_t blocks) {
  TORCH_CHECK_VALUE(blocks >= 1, "emulated CUDA: max_grid_blocks must be at least 1, got ", blocks);
  g_max_grid_blocks.store(blocks);
}

void run_grid(unsigned int blocks, unsigned int threads, const std::function<void()>& body) {
  TORCH_CHECK(blocks >= 1 && int64_t(blocks) <= max_grid_blocks(), "emulated CUDA: a launch of ", blocks,
              " blocks; the grid limit is ", max_grid_blocks());
  TORCH_CHECK(threads >= 1 && threads <= kMaxThreadsPerBlock, "emulated CUDA: a launch of ", threads,
              " threads per block; the limit is ", kMaxThreadsPerBlock);
  t_runner.run_grid(blocks, threads, body);
}

void syncthreads() { t_runner.syncthreads(); }

bool recording_launches() { return g_recording.load(); }

void record_launch(const char* signature) {
  // "... [with auto Kernel = aevb_fast::cuda::row_sum_kernel<1, 32, ...>; Args = ...]": keep the kernel.
  std::string name(signature);
  const size_t begin = name.find("Kernel = ");
  if (begin != std::string::npos) {
    name = name.substr(begin + 9);
    name = name.substr(0, name.find("; Args"));
  }
  const std::lock_guard<std::mutex> lock(g_log_mutex);
  g_launch_log.push_back(std::move(name));
}

void set_recording_launches(bool on) {
  const std::lock_guard<std::mutex> lock(g_log_mutex);
  g_recording.store(on);
  g_launch_log.clear();
}

std::vector<std::string> launch_log() {
  const std::lock_guard<std::mutex> lock(g_log_mutex);
  return g_launch_log;
}

uint64_t shuffle_bits(unsigned int mask, uint64_t bits, Shuffle kind, int arg, int width) {
  return t_runner.shuffle(mask, bits, kind, arg, width);
}

}  // namespace aevb_fast::emulation
