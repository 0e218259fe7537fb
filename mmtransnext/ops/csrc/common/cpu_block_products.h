// Register-blocked products of one block of queries against all P pooled keys, for a head size D
// known at compile time (24 in every TransNeXt variant). BLAS is slow on these shapes: K = 24 in the
// logit products leaves it little work per output element, and every call repacks the same keys. Here
// each product keeps a small tile of outputs in vector registers over its whole sum (measured on one
// Zen 4 core at the shapes of TransNeXt-T's stage 1: 89 / 76 / 78 GFLOP/s against BLAS's 40 to 45).
// Each output element is still one sum in order of the reduced index, as a naive loop would give.
// Inline only: the callers are built per instruction set (cpu_vectorize.h).
#pragma once

#include <cstdint>

#include "cpu_vectorize.h"

namespace mmtransnext {
namespace block_products {

// c[r, p] (+)= sum_d a[r, d] bt[d, p] for R rows; bt is (D x P) (the keys transposed), c has leading
// dimension ldc. A tile of R rows x 16 columns stays in registers over the whole sum.
template <int D, int R, bool accumulate>
MMTN_INLINE void rows_times_columns(const float* a, const float* bt, int64_t P, float* c, int64_t ldc) {
  constexpr int J = 16;
  int64_t p0 = 0;
  for (; p0 + J <= P; p0 += J) {
    float acc[R][J];
    for (int r = 0; r < R; ++r) {
#pragma omp simd
      for (int j = 0; j < J; ++j) acc[r][j] = accumulate ? c[r * ldc + p0 + j] : 0.f;
    }
#pragma GCC unroll 4
    for (int d = 0; d < D; ++d) {
      const float* bd = bt + d * P + p0;
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const float ad = a[r * D + d];
#pragma omp simd
        for (int j = 0; j < J; ++j) acc[r][j] += ad * bd[j];
      }
    }
    for (int r = 0; r < R; ++r) {
#pragma omp simd
      for (int j = 0; j < J; ++j) c[r * ldc + p0 + j] = acc[r][j];
    }
  }
  for (; p0 < P; ++p0) {
    for (int r = 0; r < R; ++r) {
      float sum = accumulate ? c[r * ldc + p0] : 0.f;
      for (int d = 0; d < D; ++d) sum += a[r * D + d] * bt[d * P + p0];
      c[r * ldc + p0] = sum;
    }
  }
}

// out[r, :] (+)= sum_k a[r * row_stride + k * k_stride] b[k, :] for R rows of out and k < K; b is (K x D).
// Both weighted sums below: a's rows (weights x values) or a's columns (transposed weights x gradients).
template <int D, int R, bool accumulate>
MMTN_INLINE void tile_times_matrix(const float* a, int64_t row_stride, int64_t k_stride, int64_t K, const float* b,
                                   float* out) {
  float acc[R][D];
  for (int r = 0; r < R; ++r) {
#pragma omp simd
    for (int j = 0; j < D; ++j) acc[r][j] = accumulate ? out[r * D + j] : 0.f;
  }
  for (int64_t k = 0; k < K; ++k) {
    const float* bk = b + k * D;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const float ak = a[r * row_stride + k * k_stride];
#pragma omp simd
      for (int j = 0; j < D; ++j) acc[r][j] += ak * bk[j];
    }
  }
  for (int r = 0; r < R; ++r) {
#pragma omp simd
    for (int j = 0; j < D; ++j) out[r * D + j] = acc[r][j];
  }
}

// c (n x P) (+)= a (n x D) bt (D x P)
template <int D, bool accumulate>
MMTN_INLINE void logits(const float* a, int64_t n, const float* bt, int64_t P, float* c) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) rows_times_columns<D, 4, accumulate>(a + i * D, bt, P, c + i * P, P);
  for (; i < n; ++i) rows_times_columns<D, 1, accumulate>(a + i * D, bt, P, c + i * P, P);
}

// out (n x D) = a (n x P) b (P x D)
template <int D>
MMTN_INLINE void weighted_sum(const float* a, int64_t n, const float* b, int64_t P, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) tile_times_matrix<D, 8, false>(a + i * P, P, 1, P, b, out + i * D);
  for (; i < n; ++i) tile_times_matrix<D, 1, false>(a + i * P, P, 1, P, b, out + i * D);
}

// out (P x D) += a^T (P x n) x (n x D), a being (n x P)
template <int D>
MMTN_INLINE void transposed_weighted_sum(const float* a, int64_t n, int64_t P, const float* x, float* out) {
  int64_t p = 0;
  for (; p + 8 <= P; p += 8) tile_times_matrix<D, 8, true>(a + p, 1, P, n, x, out + p * D);
  for (; p < P; ++p) tile_times_matrix<D, 1, true>(a + p, 1, P, n, x, out + p * D);
}

}  // namespace block_products
}  // namespace mmtransnext
