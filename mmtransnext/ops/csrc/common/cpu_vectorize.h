// Builds of the CPU hot loops for several instruction sets, chosen per CPU when the library loads.
// The baseline x86-64 target has SSE2 only; the clones add AVX2/FMA (x86-64-v3) and AVX-512 (v4).
// Functions called from a clone must be inlined into it to get its instruction set: MMTN_INLINE.
#pragma once

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define MMTN_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define MMTN_INLINE __attribute__((always_inline)) inline
#else
#define MMTN_VECTOR_CLONES
#define MMTN_INLINE inline
#endif
