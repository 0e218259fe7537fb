// The CUDA execution model on CPU threads, so that the op's CUDA sources (mmtransnext/ops/csrc/common/cuda/*.cuh
// and the launchers in pytorch/cuda/*.cu) compile as C++ and run on CPU tensors in tests, without a GPU.
//
// - A launch runs its grid one block after another (a schedule CUDA allows); the threads of a block are real
//   threads running concurrently, so __syncthreads() is a real barrier (std::barrier), and a missing one is a race
//   that wrong results or ThreadSanitizer show.
// - __shared__ variables are function-local statics: one instance, shared by the threads of the running block and
//   reused by the next one (as blocks run one at a time). Dynamic shared memory (MMTN_DYNAMIC_SHARED) is a buffer
//   of the launch's size, filled with NaN bytes at every block so that a read before a write shows.
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
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#define MMTN_CUDA_EMULATION 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace mmtn_emulation {

// CUDA's limits that a launch must respect (sm_80 / sm_90 without opting in to more shared memory)
constexpr unsigned int kMaxThreadsPerBlock = 1024;
constexpr size_t kMaxDynamicShared = 48 * 1024;

inline thread_local std::barrier<>* block_barrier = nullptr;
inline thread_local unsigned char* dynamic_shared = nullptr;

// Runs kernel(args...) over the grid: the block's threads concurrently, the blocks one after another.
template <typename Kernel, typename... Args>
void run(dim3 grid, dim3 block, size_t shared_bytes, Kernel kernel, Args... args) {
  const unsigned int threads = block.x * block.y * block.z;
  const unsigned long long blocks = 1ull * grid.x * grid.y * grid.z;
  if (threads == 0 || threads > kMaxThreadsPerBlock)
    throw std::invalid_argument("launch with " + std::to_string(threads) + " threads per block (CUDA: 1 to 1024)");
  if (grid.y > 65535 || grid.z > 65535) throw std::invalid_argument("launch with gridDim.y / z above 65535");
  if (shared_bytes > kMaxDynamicShared)
    throw std::invalid_argument("launch with " + std::to_string(shared_bytes) + " bytes of dynamic shared memory");
  if (blocks == 0) throw std::invalid_argument("launch with an empty grid (CUDA: invalid configuration)");
  std::vector<unsigned char> shared(shared_bytes);
  unsigned long long current = 0;
  std::optional<std::barrier<>> sync;
  sync.emplace(threads);
  // between blocks: every thread has left the block; the completion step (one thread) prepares the next one
  auto next_block = [&]() noexcept {
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
}

// MMTN_LAUNCH(grid, block, shared, stream, kernel)(args...): the emulation's kernel<<<grid, block, shared, stream>>>
template <typename Kernel>
struct Launch {
  dim3 grid, block;
  size_t shared_bytes;
  Kernel kernel;
  template <typename... Args>
  void operator()(Args... args) const {
    run(grid, block, shared_bytes, kernel, args...);
  }
};
template <typename Kernel>
Launch<Kernel> launch(dim3 grid, dim3 block, size_t shared_bytes, Kernel kernel) {
  return {grid, block, shared_bytes, kernel};
}

}  // namespace mmtn_emulation

inline void __syncthreads() { mmtn_emulation::block_barrier->arrive_and_wait(); }

template <typename T>
inline T atomicAdd(T* address, T value) {
  return std::atomic_ref<T>(*address).fetch_add(value);
}

#define MMTN_LAUNCH(grid, block, shared_bytes, stream, ...) \
  ::mmtn_emulation::launch(grid, block, shared_bytes, &__VA_ARGS__)
#define MMTN_DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(::mmtn_emulation::dynamic_shared)

// CUDA's device math for float and double, found by the kernels' unqualified calls
namespace mmtransnext {
using std::exp;
using std::log;
using std::max;
using std::min;
}  // namespace mmtransnext
