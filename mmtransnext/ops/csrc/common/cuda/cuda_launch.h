// How the launchers start kernels and how a kernel names its dynamic shared memory: CUDA's syntax here, and its
// equivalents in the tests' CPU emulation of the CUDA execution model (tests/cuda_emulation/cuda_emulation.h, which
// defines MMTN_CUDA_EMULATION and these macros), so that the emulation compiles and runs these same sources.
#pragma once

#ifndef MMTN_CUDA_EMULATION
// MMTN_LAUNCH(grid, block, shared_bytes, stream, kernel<...>)(args...) is kernel<...><<<grid, block, ...>>>(args...)
#define MMTN_LAUNCH(grid, block, shared_bytes, stream, ...) __VA_ARGS__<<<grid, block, shared_bytes, stream>>>
#define MMTN_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif
