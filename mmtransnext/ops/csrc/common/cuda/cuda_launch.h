// How the launchers start kernels and how a kernel declares its shared memory: CUDA's syntax here, and its
// equivalents in the tests' CPU emulation of the CUDA execution model (tests/cuda_emulation/cuda_emulation.h, which
// defines MMTN_CUDA_EMULATION and these macros), so that the emulation compiles and runs these same sources and
// checks each launch's shared memory against what every GPU architecture allows.
#pragma once

#ifndef MMTN_CUDA_EMULATION
// MMTN_LAUNCH(grid, block, shared_bytes, stream, kernel<...>)(args...) is kernel<...><<<grid, block, ...>>>(args...)
#define MMTN_LAUNCH(grid, block, shared_bytes, stream, ...) __VA_ARGS__<<<grid, block, shared_bytes, stream>>>
#define MMTN_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
// MMTN_SHARED(type, name, [extents]) is __shared__ type name[extents]: a statically sized shared array
#define MMTN_SHARED(type, name, ...) __shared__ type name __VA_ARGS__
#endif
