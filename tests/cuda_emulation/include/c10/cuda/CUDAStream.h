// The emulation's stand-in: one stream, every launch runs to its end before the next.
#pragma once

namespace c10::cuda {
struct CUDAStream {};
inline CUDAStream getCurrentCUDAStream() { return {}; }
}  // namespace c10::cuda
