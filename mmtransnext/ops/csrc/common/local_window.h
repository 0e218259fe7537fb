// Geometry of the local window of aggregated attention, shared by the CPU and CUDA kernels.
//
// Neighbour l of pixel (y, x) in a ws x ws window is (y + l / ws - ws / 2, x + l % ws - ws / 2):
// the order of F.unfold's kernel positions, which the PyTorch reference path uses.
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define MMTN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MMTN_HOST_DEVICE inline
#endif

namespace mmtransnext {

struct LocalWindow {
  int64_t height, width, size;  // feature map H, W and the window side ws (odd)

  MMTN_HOST_DEVICE int64_t length() const { return size * size; }
  MMTN_HOST_DEVICE int64_t pixels() const { return height * width; }

  // Neighbour `l` of pixel `n`; false when it falls outside the feature map.
  MMTN_HOST_DEVICE bool neighbour(int64_t n, int64_t l, int64_t* m) const {
    const int64_t y = n / width + l / size - size / 2;
    const int64_t x = n % width + l % size - size / 2;
    if (y < 0 || y >= height || x < 0 || x >= width) return false;
    *m = y * width + x;
    return true;
  }

  // The pixel whose neighbour `l` is pixel `m` (the transpose of `neighbour`, used by the
  // backward passes to gather gradients instead of scattering them).
  MMTN_HOST_DEVICE bool source(int64_t m, int64_t l, int64_t* n) const {
    const int64_t y = m / width - l / size + size / 2;
    const int64_t x = m % width - l % size + size / 2;
    if (y < 0 || y >= height || x < 0 || x >= width) return false;
    *n = y * width + x;
    return true;
  }
};

}  // namespace mmtransnext
