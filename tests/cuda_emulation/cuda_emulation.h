// The CUDA execution model on CPU threads, so that the op's CUDA sources (mmtransnext/ops/csrc/common/cuda/*.cuh
// and the launchers in pytorch/cuda/*.cu) compile as C++ and run on CPU tensors in tests, without a GPU.
//
// - A launch runs its grid one block after another (a schedule CUDA allows); the threads of a block are real
//   threads running concurrently, so __syncthreads() is a real barrier (std::barrier), and a missing one is a race
//   that wrong results or ThreadSanitizer show.
// - Static shared arrays (MMTN_SHARED, cuda_launch.h) are function-local statics: one instance, shared by the
//   threads of the running block and reused by the next one (as blocks run one at a time); their bytes are counted
//   for the launch's shared memory. A bare __shared__ does not compile here, so that none goes uncounted. Dynamic
//   shared memory (MMTN_DYNAMIC_SHARED) is a buffer of the launch's size, filled with NaN bytes at every block so
//   that a read before a write shows.
// - Every launch is checked against what each GPU architecture of kArchitectures allows a launch (threads, block
//   and grid sizes, shared memory, registers), and logged (launch_log) for the tests; first_block_only runs only
//   each launch's first block, for a training step's launch configurations at a fraction of the cost.
// - atomicAdd is an atomic read-modify-write (std::atomic_ref); threadIdx / blockIdx / blockDim / gridDim are
//   per-thread variables.
// Only tests use it (tests/test_cuda_emulation.py): the shipped extension is built by nvcc as before.
#pragma once

#if __cplusplus < 202002L
#error \
    "the CUDA emulation needs C++20 (std::barrier, std::atomic_ref): compile with -std=c++20 (GCC >= 11, Clang >= 15)"
#endif
#include <version>
#if !defined(__cpp_lib_barrier) || !defined(__cpp_lib_atomic_ref)
#error "the CUDA emulation needs a C++20 standard library with std::barrier and std::atomic_ref (libstdc++ >= 11)"
#endif

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#define MMTN_CUDA_EMULATION 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// a static shared array is declared with MMTN_SHARED (below), which counts its bytes for the launch
#define __shared__ static_assert(false, "declare static shared memory with MMTN_SHARED(type, name, [extents])");

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace mmtn_emulation {

// What a launch may ask of each GPU architecture the project is built for: the CUDA programming guide's technical
// specifications per compute capability (https://docs.nvidia.com/cuda/cuda-programming-guide/05-appendices/
// compute-capabilities.html), as NVIDIA's CCCL encodes them (libcudacxx/include/cuda/__device/arch_traits.h).
// Without cudaFuncSetAttribute(..., cudaFuncAttributeMaxDynamicSharedMemorySize, ...) a block's static plus dynamic
// shared memory is at most 48 KB on every one of them; opting in (no launcher does) raises that to shared_optin.
struct Architecture {
  int compute_capability;            // x 10
  const char* gpus;                  // examples
  unsigned int threads_per_block;    // and 1024 x 1024 x 64 per dimension
  unsigned int threads_per_sm;       // a block must fit one multiprocessor
  size_t shared_per_block;           // static + dynamic, without opting in
  size_t shared_optin;               // the most a block may opt in to
  unsigned int registers_per_block;  // 32-bit registers
};
inline constexpr Architecture kArchitectures[] = {
    {75, "T4, RTX 20xx", 1024, 1024, 48 * 1024, 64 * 1024, 64 * 1024},
    {80, "A100", 1024, 2048, 48 * 1024, 163 * 1024, 64 * 1024},
    {86, "A10, RTX 30xx", 1024, 1536, 48 * 1024, 99 * 1024, 64 * 1024},
    {89, "L4, RTX 40xx", 1024, 1536, 48 * 1024, 99 * 1024, 64 * 1024},
    {90, "H100, H200", 1024, 2048, 48 * 1024, 227 * 1024, 64 * 1024},
    {100, "B200", 1024, 2048, 48 * 1024, 227 * 1024, 64 * 1024},
    {120, "RTX 50xx", 1024, 1536, 48 * 1024, 99 * 1024, 64 * 1024},
};
constexpr unsigned int kMaxBlockDim[3] = {1024, 1024, 64};
constexpr unsigned long long kMaxGridDim[3] = {2147483647ull, 65535, 65535};
// Without __launch_bounds__ (no kernel here has one) nvcc may give a kernel up to 255 registers per thread, taken in
// units of 8 per thread: 256 per thread, whatever the kernel turns out to need.
constexpr unsigned int kRegistersPerThreadUnbounded = 256;

// One launch as the log keeps it: static_shared is known once the first block has declared its arrays.
struct LaunchRecord {
  std::string kernel;
  dim3 grid, block;
  size_t static_shared, dynamic_shared;
};
inline std::mutex log_mutex;
inline std::vector<LaunchRecord> launch_log;
inline bool first_block_only = false;

// Why `launch` does not fit `arch` (empty if it does).
inline std::string misfit(const Architecture& arch, const LaunchRecord& launch) {
  const std::string on = " on sm_" + std::to_string(arch.compute_capability) + " (" + arch.gpus + ")";
  const unsigned int threads = launch.block.x * launch.block.y * launch.block.z;
  const unsigned int block[3] = {launch.block.x, launch.block.y, launch.block.z};
  const unsigned long long grid[3] = {launch.grid.x, launch.grid.y, launch.grid.z};
  for (int d = 0; d < 3; ++d) {
    if (block[d] == 0 || block[d] > kMaxBlockDim[d])
      return "block dimension " + std::to_string(d) + " of " + std::to_string(block[d]) + ": 1 to " +
             std::to_string(kMaxBlockDim[d]) + on;
    if (grid[d] == 0 || grid[d] > kMaxGridDim[d])
      return "grid dimension " + std::to_string(d) + " of " + std::to_string(grid[d]) + ": 1 to " +
             std::to_string(kMaxGridDim[d]) + on;
  }
  if (threads > arch.threads_per_block || threads > arch.threads_per_sm)
    return std::to_string(threads) + " threads per block: at most " +
           std::to_string(std::min(arch.threads_per_block, arch.threads_per_sm)) + on;
  const unsigned int warps = (threads + 31) / 32;
  if (warps * 32 * kRegistersPerThreadUnbounded > arch.registers_per_block)
    return std::to_string(threads) + " threads per block: at the 255 registers per thread nvcc may use without " +
           "__launch_bounds__, a block needs " + std::to_string(warps * 32 * kRegistersPerThreadUnbounded) +
           " registers, " + std::to_string(arch.registers_per_block) + on;
  const size_t shared = launch.static_shared + launch.dynamic_shared;
  if (shared > arch.shared_per_block)
    return std::to_string(shared) + " bytes of shared memory per block (" + std::to_string(launch.static_shared) +
           " static, " + std::to_string(launch.dynamic_shared) + " dynamic): at most " +
           std::to_string(arch.shared_per_block) + " without opting in (cudaFuncSetAttribute; at most " +
           std::to_string(arch.shared_optin) + " with it)" + on;
  return {};
}

// Why `launch` does not fit one of kArchitectures (empty if it fits them all).
inline std::string misfit_any(const LaunchRecord& launch) {
  for (const Architecture& arch : kArchitectures) {
    std::string why = misfit(arch, launch);
    if (!why.empty()) return "launch of " + launch.kernel + " with " + why;
  }
  return {};
}

// "ns::kernel<float, 32>" from the signature of kernel_name<&ns::kernel<float, 32>>() (GCC and Clang spell it so).
template <auto Kernel>
std::string kernel_name() {
  const std::string_view signature = __PRETTY_FUNCTION__;
  const size_t begin = signature.find("Kernel = ") + 9;
  size_t end = begin;
  for (int depth = 0; end < signature.size(); ++end) {
    const char c = signature[end];
    if (c == '<') ++depth;
    if (c == '>') --depth;
    if (depth == 0 && (c == ';' || c == ']')) break;
  }
  std::string name(signature.substr(begin, end - begin));
  return name.substr(name.front() == '&' ? 1 : 0);
}

inline thread_local std::barrier<>* block_barrier = nullptr;
inline thread_local unsigned char* dynamic_shared = nullptr;
inline thread_local LaunchRecord* running = nullptr;
inline thread_local std::vector<const void*>* counted_shared = nullptr;

// MMTN_SHARED's count: the first block's first thread adds each static array once, before the block's first barrier.
inline void count_static_shared(const void* array, size_t bytes) {
  if (threadIdx.x || threadIdx.y || threadIdx.z || blockIdx.x || blockIdx.y || blockIdx.z) return;
  if (std::find(counted_shared->begin(), counted_shared->end(), array) != counted_shared->end()) return;
  counted_shared->push_back(array);
  running->static_shared += bytes;
}

// Runs kernel(args...) over the grid: the block's threads concurrently, the blocks one after another (only the first
// one with first_block_only). Throws where the launch does not fit one of kArchitectures: its threads, block and
// grid before it starts, its shared memory once the first block has declared its static arrays.
template <typename Kernel, typename... Args>
void run(std::string name, dim3 grid, dim3 block, size_t shared_bytes, Kernel kernel, Args... args) {
  LaunchRecord record{std::move(name), grid, block, 0, shared_bytes};
  if (std::string why = misfit_any(record); !why.empty()) throw std::invalid_argument(why);
  const unsigned int threads = block.x * block.y * block.z;
  const unsigned long long blocks = first_block_only ? 1 : 1ull * grid.x * grid.y * grid.z;
  std::vector<unsigned char> shared(shared_bytes);
  std::vector<const void*> counted;
  std::string misfit_after_first_block;
  unsigned long long current = 0;
  std::optional<std::barrier<>> sync;
  sync.emplace(threads);
  // between blocks: every thread has left the block; the completion step (one thread) prepares the next one
  auto next_block = [&]() noexcept {
    if (current == 0) {  // the static arrays are all counted: stop here if they do not fit
      misfit_after_first_block = misfit_any(record);
      if (!misfit_after_first_block.empty()) current = blocks - 1;
    }
    ++current;
    sync.emplace(threads);
    std::memset(shared.data(), 0xff, shared.size());  // NaN for floating types: a read before a write shows
  };
  std::barrier between(threads, next_block);
  std::memset(shared.data(), 0xff, shared.size());
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (unsigned int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      threadIdx = dim3(t % block.x, t / block.x % block.y, t / (block.x * block.y));
      blockDim = block;
      gridDim = grid;
      dynamic_shared = shared.data();
      running = &record;
      counted_shared = &counted;
      while (current < blocks) {
        const unsigned long long b = current;
        blockIdx = dim3(b % grid.x, b / grid.x % grid.y, b / (1ull * grid.x * grid.y));
        block_barrier = &*sync;
        kernel(args...);
        block_barrier->arrive_and_drop();  // a thread that has returned no longer holds up __syncthreads()
        between.arrive_and_wait();
      }
    });
  }
  for (auto& thread : pool) thread.join();
  {
    const std::lock_guard<std::mutex> lock(log_mutex);
    launch_log.push_back(record);
  }
  if (!misfit_after_first_block.empty()) throw std::invalid_argument(misfit_after_first_block);
}

// MMTN_LAUNCH(grid, block, shared, stream, kernel)(args...): the emulation's kernel<<<grid, block, shared, stream>>>
template <auto Kernel>
struct Launch {
  dim3 grid, block;
  size_t shared_bytes;
  template <typename... Args>
  void operator()(Args... args) const {
    run(kernel_name<Kernel>(), grid, block, shared_bytes, Kernel, args...);
  }
};
template <auto Kernel>
Launch<Kernel> launch(dim3 grid, dim3 block, size_t shared_bytes) {
  return {grid, block, shared_bytes};
}

}  // namespace mmtn_emulation

inline void __syncthreads() { mmtn_emulation::block_barrier->arrive_and_wait(); }

template <typename T>
inline T atomicAdd(T* address, T value) {
  return std::atomic_ref<T>(*address).fetch_add(value);
}

#define MMTN_LAUNCH(grid, block, shared_bytes, stream, ...) \
  ::mmtn_emulation::launch<&__VA_ARGS__>(grid, block, shared_bytes)
#define MMTN_DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(::mmtn_emulation::dynamic_shared)
#define MMTN_SHARED(type, name, ...) \
  static type name __VA_ARGS__;      \
  ::mmtn_emulation::count_static_shared(&name, sizeof(name))

// CUDA's device math for float and double, found by the kernels' unqualified calls
namespace mmtransnext {
using std::exp;
using std::log;
using std::max;
using std::min;
}  // namespace mmtransnext
