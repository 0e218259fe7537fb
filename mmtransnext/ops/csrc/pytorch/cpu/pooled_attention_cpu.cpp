// CPU kernels of pooled attention merged with the local logits (split softmax).
//
// One parallel loop over (head, query row); inside a task, batches and blocks of the row's queries.
// A block's (queries x pooled keys) logits live in a per-thread buffer only: register-blocked products
// for float and head size 24 (cpu_block_products.h; BLAS otherwise), the bias read from the per-row
// table, one exponential per logit. Each task owns its
// query rows and the bias-table rows of its (head, y), so no two threads write the same element;
// the pooled key / value gradients are summed per fixed slice of tasks, then in slice order
// (deterministic for a given thread count).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "../../common/cpu_block_products.h"
#include "../../common/cpu_math.h"
#include "../pooled_attention.h"

namespace mmtransnext {
namespace {

// Logits per block buffer: a few blocks of this size stay in a core's L2 cache.
constexpr int64_t kBlockLogits = 32768;

// BLAS. torch does not export its own wrapper (at::native::cpublas), but the libraries it links
// (MKL in x86 wheels, OpenBLAS elsewhere) export the Fortran symbols. They are weak here: where
// none is loaded, the products go through at::mm, which is slower only by its per-call overhead.
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c, const int* ldc)
    __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc) __attribute__((weak));
}

template <typename T>
void gemm_aten(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
               const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  auto view = [&](const T* p, bool trans, int64_t rows, int64_t cols, int64_t ld) {
    at::Tensor t = trans ? at::from_blob(const_cast<T*>(p), {cols, rows}, {ld, 1}, options).t()
                         : at::from_blob(const_cast<T*>(p), {rows, cols}, {ld, 1}, options);
    return t;
  };
  at::Tensor out = at::from_blob(c, {m, n}, {ldc, 1}, options);
  at::Tensor product = at::mm(view(a, trans_a, m, k, lda), view(b, trans_b, k, n, ldb));
  if (beta == T(0)) {
    out.copy_(product.mul_(alpha));
  } else {
    out.mul_(beta).add_(product, alpha);
  }
}

// Row-major C (m x n) = alpha op(A) op(B) + beta C: the column-major BLAS call on the transposes.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
          int64_t ldb, T beta, T* c, int64_t ldc) {
  auto blas = std::is_same<T, float>::value ? reinterpret_cast<void*>(&sgemm_) : reinterpret_cast<void*>(&dgemm_);
  if (blas == nullptr) return gemm_aten(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  const char ta = trans_b ? 'T' : 'N', tb = trans_a ? 'T' : 'N';
  const int mi = static_cast<int>(n), ni = static_cast<int>(m), ki = static_cast<int>(k);
  const int la = static_cast<int>(ldb), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
  if constexpr (std::is_same<T, float>::value) {
    sgemm_(&ta, &tb, &mi, &ni, &ki, &alpha, b, &la, a, &lb, &beta, c, &lc);
  } else {
    dgemm_(&ta, &tb, &mi, &ni, &ki, &alpha, b, &la, a, &lb, &beta, c, &lc);
  }
}

// ----------------------------------------------------------------------------- per-block steps

// Kernel layout: pooled keys in (kx, ky) order and each bias-table row as (U, padded ph), so that a
// query's bias is a sum of contiguous ph-long columns of the table instead of P gathers. The columns
// are read and written padded to whole vectors (ph = 25 would leave a scalar tail in every column):
// what a column writes past its end, the next column (processed after it) overwrites, and buffers
// have a padded column of slack at their end.
constexpr int64_t kColumnAlign = 16;
int64_t padded_column(int64_t ph) { return (ph + kColumnAlign - 1) / kColumnAlign * kColumnAlign; }

struct Bias {
  const int64_t* index;                                             // (T, W, pw)
  int64_t taps, width, pool_height, pool_width, table_len, column;  // column: padded ph
};

// logits[i, (kx, ky)] = sum_t w[t, x, kx] * rows[index[t, x, kx], ky] for the queries x0 .. x0 + n; the
// query . key products are then added onto it. All taps of a column in one pass (TAPS: 1 without
// resizing, 4 with; 0 = any number, read from b).
template <int TAPS, typename T>
MMTN_INLINE void write_bias_impl(T* logits, int64_t n, int64_t x0, const T* rows, const T* weight, const Bias& b) {
  const int64_t P = b.pool_height * b.pool_width, ph = b.pool_height, cw = b.column, taps = TAPS > 0 ? TAPS : b.taps;
  const int64_t tap_stride = b.width * b.pool_width;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t* idx = b.index + (x0 + i) * b.pool_width;
    const T* w = weight + (x0 + i) * b.pool_width;
    T* s = logits + i * P;
    for (int64_t kx = 0; kx < b.pool_width; ++kx, s += ph) {
      const T* r0 = rows + idx[kx] * cw;
      const T w0 = w[kx];
#pragma omp simd
      for (int64_t ky = 0; ky < cw; ++ky) s[ky] = w0 * r0[ky];
      if (TAPS == 4) {
        const T *r1 = rows + idx[tap_stride + kx] * cw, *r2 = rows + idx[2 * tap_stride + kx] * cw;
        const T* r3 = rows + idx[3 * tap_stride + kx] * cw;
        const T w1 = w[tap_stride + kx], w2 = w[2 * tap_stride + kx], w3 = w[3 * tap_stride + kx];
#pragma omp simd
        for (int64_t ky = 0; ky < cw; ++ky) s[ky] += w1 * r1[ky] + w2 * r2[ky] + w3 * r3[ky];
      } else {
        for (int64_t t = 1; t < taps; ++t) {
          const T* r = rows + idx[t * tap_stride + kx] * cw;
          const T wt = w[t * tap_stride + kx];
#pragma omp simd
          for (int64_t ky = 0; ky < cw; ++ky) s[ky] += wt * r[ky];
        }
      }
    }
  }
}

// rows_grad[index[t, x, kx], ky] += w[t, x, kx] * grad[i, (kx, ky)] (the transpose of write_bias);
// the padding columns of rows_grad collect what the next column's gradients add there: discarded.
template <int TAPS, typename T>
MMTN_INLINE void scatter_bias_grad_impl(const T* grad, int64_t n, int64_t x0, T* rows_grad, const T* weight,
                                        const Bias& b) {
  const int64_t P = b.pool_height * b.pool_width, ph = b.pool_height, cw = b.column, taps = TAPS > 0 ? TAPS : b.taps;
  const int64_t tap_stride = b.width * b.pool_width;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t* idx = b.index + (x0 + i) * b.pool_width;
    const T* w = weight + (x0 + i) * b.pool_width;
    const T* g = grad + i * P;
    for (int64_t kx = 0; kx < b.pool_width; ++kx, g += ph) {
      if (TAPS == 4) {
        T *r0 = rows_grad + idx[kx] * cw, *r1 = rows_grad + idx[tap_stride + kx] * cw;
        T *r2 = rows_grad + idx[2 * tap_stride + kx] * cw, *r3 = rows_grad + idx[3 * tap_stride + kx] * cw;
        const T w0 = w[kx], w1 = w[tap_stride + kx], w2 = w[2 * tap_stride + kx], w3 = w[3 * tap_stride + kx];
        // taps may share a row (their weights then add): one tap at a time keeps that exact
#pragma omp simd
        for (int64_t ky = 0; ky < cw; ++ky) r0[ky] += w0 * g[ky];
#pragma omp simd
        for (int64_t ky = 0; ky < cw; ++ky) r1[ky] += w1 * g[ky];
#pragma omp simd
        for (int64_t ky = 0; ky < cw; ++ky) r2[ky] += w2 * g[ky];
#pragma omp simd
        for (int64_t ky = 0; ky < cw; ++ky) r3[ky] += w3 * g[ky];
      } else {
        for (int64_t t = 0; t < taps; ++t) {
          T* r = rows_grad + idx[t * tap_stride + kx] * cw;
          const T wt = w[t * tap_stride + kx];
#pragma omp simd
          for (int64_t ky = 0; ky < cw; ++ky) r[ky] += wt * g[ky];
        }
      }
    }
  }
}

// One softmax over each query's [local logits, pooled logits]: the pooled ones are replaced by
// their weights in place, the local weights written out, the log-sum-exp returned per query.
template <typename T>
MMTN_INLINE void softmax_impl(T* logits, int64_t n, int64_t P, const T* local_logits, T* local_weights, int64_t L,
                              T* lse) {
  for (int64_t i = 0; i < n; ++i) {
    T* s = logits + i * P;
    const T* sl = local_logits + i * L;
    T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
    for (int64_t p = 0; p < P; ++p) m = s[p] > m ? s[p] : m;
    for (int64_t l = 0; l < L; ++l) m = sl[l] > m ? sl[l] : m;
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t p = 0; p < P; ++p) {
      s[p] = exp_any(s[p] - m);
      sum += s[p];
    }
    for (int64_t l = 0; l < L; ++l) {
      local_weights[i * L + l] = exp_any(sl[l] - m);
      sum += local_weights[i * L + l];
    }
    const T inv = T(1) / sum;
#pragma omp simd
    for (int64_t p = 0; p < P; ++p) s[p] *= inv;
    for (int64_t l = 0; l < L; ++l) local_weights[i * L + l] *= inv;
    lse[i] = m + std::log(sum);
  }
}

// Pooled weights of a block recomputed from the saved log-sum-exp: logits -> exp(logits - lse).
template <typename T>
MMTN_INLINE void recompute_weights_impl(T* logits, int64_t n, int64_t P, const T* lse) {
  for (int64_t i = 0; i < n; ++i) {
    T* s = logits + i * P;
    const T m = lse[i];
#pragma omp simd
    for (int64_t p = 0; p < P; ++p) s[p] = exp_any(s[p] - m);
  }
}

// Backward of the softmax for a block: `grad` holds d loss / d pooled weight and becomes d loss /
// d pooled logit; the local part is written out. With delta = sum_j a_j g_j over local and pooled
// keys: d logit_j = a_j (g_j - delta + d lse).
template <typename T>
MMTN_INLINE void softmax_backward_impl(const T* weights, T* grad, int64_t n, int64_t P, const T* grad_lse,
                                       const T* delta_pool, const T* local_weights, const T* grad_local_weights,
                                       T* grad_local_logits, int64_t L) {
  for (int64_t i = 0; i < n; ++i) {
    const T* a = weights + i * P;
    T* g = grad + i * P;
    T delta = delta_pool[i];
    for (int64_t l = 0; l < L; ++l) delta += local_weights[i * L + l] * grad_local_weights[i * L + l];
    const T shift = grad_lse[i] - delta;
#pragma omp simd
    for (int64_t p = 0; p < P; ++p) g[p] = a[p] * (g[p] + shift);
    for (int64_t l = 0; l < L; ++l)
      grad_local_logits[i * L + l] = local_weights[i * L + l] * (grad_local_weights[i * L + l] + shift);
  }
}

// Vectorised builds of the float steps (the double ones serve gradcheck).
MMTN_VECTOR_CLONES void write_bias(float* s, int64_t n, int64_t x0, const float* rows, const float* w, const Bias& b) {
  if (b.taps == 4) return write_bias_impl<4>(s, n, x0, rows, w, b);
  write_bias_impl<0>(s, n, x0, rows, w, b);
}
MMTN_VECTOR_CLONES void softmax(float* s, int64_t n, int64_t P, const float* sl, float* wl, int64_t L, float* lse) {
  softmax_impl(s, n, P, sl, wl, L, lse);
}
MMTN_VECTOR_CLONES void recompute_weights(float* s, int64_t n, int64_t P, const float* lse) {
  recompute_weights_impl(s, n, P, lse);
}
MMTN_VECTOR_CLONES void softmax_backward(const float* a, float* g, int64_t n, int64_t P, const float* dlse,
                                         const float* dp, const float* wl, const float* gwl, float* gsl, int64_t L) {
  softmax_backward_impl(a, g, n, P, dlse, dp, wl, gwl, gsl, L);
}
MMTN_VECTOR_CLONES void scatter_bias_grad(const float* g, int64_t n, int64_t x0, float* r, const float* w,
                                          const Bias& b) {
  if (b.taps == 4) return scatter_bias_grad_impl<4>(g, n, x0, r, w, b);
  scatter_bias_grad_impl<0>(g, n, x0, r, w, b);
}
void write_bias(double* s, int64_t n, int64_t x0, const double* rows, const double* w, const Bias& b) {
  if (b.taps == 4) return write_bias_impl<4>(s, n, x0, rows, w, b);
  write_bias_impl<0>(s, n, x0, rows, w, b);
}
void softmax(double* s, int64_t n, int64_t P, const double* sl, double* wl, int64_t L, double* lse) {
  softmax_impl(s, n, P, sl, wl, L, lse);
}
void recompute_weights(double* s, int64_t n, int64_t P, const double* lse) { recompute_weights_impl(s, n, P, lse); }
void softmax_backward(const double* a, double* g, int64_t n, int64_t P, const double* dlse, const double* dp,
                      const double* wl, const double* gwl, double* gsl, int64_t L) {
  softmax_backward_impl(a, g, n, P, dlse, dp, wl, gwl, gsl, L);
}
void scatter_bias_grad(const double* g, int64_t n, int64_t x0, double* r, const double* w, const Bias& b) {
  if (b.taps == 4) return scatter_bias_grad_impl<4>(g, n, x0, r, w, b);
  scatter_bias_grad_impl<0>(g, n, x0, r, w, b);
}

// ----------------------------------------------------------------------------- a block's products

constexpr int kTiledHeadSize = 24;  // every TransNeXt variant; other sizes (and double) use BLAS

MMTN_VECTOR_CLONES void tiled_logits(const float* a, int64_t n, const float* bt, int64_t P, float* c, bool accumulate) {
  if (accumulate) {
    block_products::logits<kTiledHeadSize, true>(a, n, bt, P, c);
  } else {
    block_products::logits<kTiledHeadSize, false>(a, n, bt, P, c);
  }
}
MMTN_VECTOR_CLONES void tiled_weighted_sum(const float* a, int64_t n, const float* b, int64_t P, float* out) {
  block_products::weighted_sum<kTiledHeadSize>(a, n, b, P, out);
}
MMTN_VECTOR_CLONES void tiled_transposed_weighted_sum(const float* a, int64_t n, int64_t P, const float* x,
                                                      float* out) {
  block_products::transposed_weighted_sum<kTiledHeadSize>(a, n, P, x, out);
}

// The three product shapes of a block of n queries against P keys, with head size d (queries, keys,
// values and their gradients all have it when tiled).
template <typename T>
struct Products {
  int64_t P;
  bool tiled;

  // c (n x P) (+)= a (n x d) b^T for b (P x d); bt = b^T (d x P) is read when tiled
  void logits(const T* a, int64_t n, const T* b, const T* bt, int64_t d, T* c, bool accumulate) const {
    if constexpr (std::is_same<T, float>::value) {
      if (tiled) return tiled_logits(a, n, bt, P, c, accumulate);
    }
    gemm<T>(false, true, n, P, d, 1, a, d, b, d, accumulate ? 1 : 0, c, P);
  }
  // out (n x d) = a (n x P) b (P x d)
  void weighted_sum(const T* a, int64_t n, const T* b, int64_t d, T* out) const {
    if constexpr (std::is_same<T, float>::value) {
      if (tiled) return tiled_weighted_sum(a, n, b, P, out);
    }
    gemm<T>(false, false, n, d, P, 1, a, P, b, d, 0, out, d);
  }
  // out (P x d) += a^T x for a (n x P), x (n x d)
  void transposed_weighted_sum(const T* a, int64_t n, const T* x, int64_t d, T* out) const {
    if constexpr (std::is_same<T, float>::value) {
      if (tiled) return tiled_transposed_weighted_sum(a, n, P, x, out);
    }
    gemm<T>(true, false, P, d, n, 1, a, P, x, d, 1, out, d);
  }
};

bool use_tiles(const at::Tensor& query, const at::Tensor& value) {
  return query.scalar_type() == at::kFloat && query.size(3) == kTiledHeadSize && value.size(3) == kTiledHeadSize;
}

// (B, heads, P, d) -> (B, heads, d, P) for the tiled logits; undefined when not tiled
at::Tensor transposed_if_tiled(const at::Tensor& t, bool tiled) {
  return tiled ? t.transpose(2, 3).contiguous() : at::Tensor();
}

struct Shape {
  int64_t batch, heads, N, P, D, Dv, L, H, W, block;
};

Shape shape_of(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value, const at::Tensor& local,
               const PooledGrid& grid) {
  const int64_t P = key.size(2);
  const int64_t block = std::max<int64_t>(1, std::min<int64_t>(grid.width, kBlockLogits / P));
  return {query.size(0), query.size(1), query.size(2), P,          query.size(3),
          value.size(3), local.size(3), grid.height,   grid.width, block};
}

Bias bias_of(const at::Tensor& bias_rows, const at::Tensor& cols_index, const PooledGrid& grid) {
  return {cols_index.data_ptr<int64_t>(),
          cols_index.size(0),
          grid.width,
          grid.pool_height,
          grid.pool_width,
          bias_rows.size(2),
          bias_rows.size(3)};
}

template <typename T>
void forward(const at::Tensor& query, const at::Tensor& key, const at::Tensor& key_t, const at::Tensor& value,
             const at::Tensor& bias_rows, const at::Tensor& cols_index, const at::Tensor& cols_weight,
             const at::Tensor& local_logits, const at::Tensor& out, const at::Tensor& local_weights,
             const at::Tensor& lse, const PooledGrid& grid) {
  const Shape s = shape_of(query, key, value, local_logits, grid);
  const Bias bias = bias_of(bias_rows, cols_index, grid);
  const Products<T> products{s.P, key_t.defined()};
  const T *q = query.data_ptr<T>(), *k = key.data_ptr<T>(), *v = value.data_ptr<T>();
  const T* kt = key_t.defined() ? key_t.data_ptr<T>() : nullptr;
  const T *rows = bias_rows.data_ptr<T>(), *w = cols_weight.data_ptr<T>(), *sl = local_logits.data_ptr<T>();
  T *o = out.data_ptr<T>(), *wl = local_weights.data_ptr<T>(), *m = lse.data_ptr<T>();
  const int64_t row_table = bias.column * bias.table_len;
  at::parallel_for(0, s.heads * s.H, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> logits(s.block * s.P + bias.column);  // + slack for the last padded column
    for (int64_t task = begin; task < end; ++task) {
      const int64_t h = task / s.H, y = task % s.H;
      const T* r = rows + task * row_table;
      for (int64_t b = 0; b < s.batch; ++b) {
        const int64_t bh = b * s.heads + h;
        for (int64_t x0 = 0; x0 < s.W; x0 += s.block) {
          const int64_t n = std::min(s.block, s.W - x0), i0 = bh * s.N + y * s.W + x0;
          write_bias(logits.data(), n, x0, r, w, bias);
          products.logits(q + i0 * s.D, n, k + bh * s.P * s.D, kt ? kt + bh * s.P * s.D : nullptr, s.D, logits.data(),
                          true);
          softmax(logits.data(), n, s.P, sl + i0 * s.L, wl + i0 * s.L, s.L, m + i0);
          products.weighted_sum(logits.data(), n, v + bh * s.P * s.Dv, s.Dv, o + i0 * s.Dv);
        }
      }
    }
  });
}

template <typename T>
void backward(const at::Tensor& grad_out, const at::Tensor& grad_local_weights, const at::Tensor& grad_lse,
              const at::Tensor& query, const at::Tensor& key, const at::Tensor& key_t, const at::Tensor& value,
              const at::Tensor& value_t, const at::Tensor& bias_rows, const at::Tensor& cols_index,
              const at::Tensor& cols_weight, const at::Tensor& out, const at::Tensor& local_weights,
              const at::Tensor& lse, const at::Tensor& grad_query, const at::Tensor& grad_key,
              const at::Tensor& grad_value, const at::Tensor& grad_bias_rows, const at::Tensor& grad_local_logits,
              const PooledGrid& grid) {
  const Shape s = shape_of(query, key, value, local_weights, grid);
  const Bias bias = bias_of(bias_rows, cols_index, grid);
  const Products<T> products{s.P, key_t.defined()};
  const T *q = query.data_ptr<T>(), *k = key.data_ptr<T>(), *v = value.data_ptr<T>();
  const T* kt = key_t.defined() ? key_t.data_ptr<T>() : nullptr;
  const T* vt = value_t.defined() ? value_t.data_ptr<T>() : nullptr;
  const T *rows = bias_rows.data_ptr<T>(), *w = cols_weight.data_ptr<T>(), *o = out.data_ptr<T>();
  const T *wl = local_weights.data_ptr<T>(), *m = lse.data_ptr<T>(), *dout = grad_out.data_ptr<T>();
  const T *dwl = grad_local_weights.data_ptr<T>(), *dlse = grad_lse.data_ptr<T>();
  T *dq = grad_query.data_ptr<T>(), *drows = grad_bias_rows.data_ptr<T>(), *dsl = grad_local_logits.data_ptr<T>();
  const int64_t row_table = bias.column * bias.table_len, tasks = s.heads * s.H;
  grad_bias_rows.zero_();

  // Fixed slices of tasks, each with its own key / value gradient sums for the heads it covers.
  const int64_t slices = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), tasks));
  const int64_t per_slice = (tasks + slices - 1) / slices;
  const int64_t kv = s.P * (s.D + s.Dv);  // one (batch, head)'s key + value gradient
  std::vector<std::vector<T>> partial(slices);
  at::parallel_for(0, slices, 1, [&](int64_t slice_begin, int64_t slice_end) {
    std::vector<T> logits(s.block * s.P + bias.column), grad(s.block * s.P + bias.column), delta(s.block);
    for (int64_t slice = slice_begin; slice < slice_end; ++slice) {
      const int64_t first = slice * per_slice, last = std::min(tasks, first + per_slice);
      if (first >= last) continue;
      const int64_t h_first = first / s.H;
      std::vector<T>& acc = partial[slice];
      acc.assign(((last - 1) / s.H - h_first + 1) * s.batch * kv, T(0));
      for (int64_t task = first; task < last; ++task) {
        const int64_t h = task / s.H, y = task % s.H;
        const T* r = rows + task * row_table;
        T* dr = drows + task * row_table;
        for (int64_t b = 0; b < s.batch; ++b) {
          const int64_t bh = b * s.heads + h;
          T* dk = acc.data() + ((h - h_first) * s.batch + b) * kv;
          T* dv = dk + s.P * s.D;
          const T *kb = k + bh * s.P * s.D, *vb = v + bh * s.P * s.Dv;
          const T *ktb = kt ? kt + bh * s.P * s.D : nullptr, *vtb = vt ? vt + bh * s.P * s.Dv : nullptr;
          for (int64_t x0 = 0; x0 < s.W; x0 += s.block) {
            const int64_t n = std::min(s.block, s.W - x0), i0 = bh * s.N + y * s.W + x0;
            const T *qi = q + i0 * s.D, *doi = dout + i0 * s.Dv, *oi = o + i0 * s.Dv;
            for (int64_t i = 0; i < n; ++i) {
              T acc_delta = 0;
              for (int64_t c = 0; c < s.Dv; ++c) acc_delta += doi[i * s.Dv + c] * oi[i * s.Dv + c];
              delta[i] = acc_delta;
            }
            write_bias(logits.data(), n, x0, r, w, bias);
            products.logits(qi, n, kb, ktb, s.D, logits.data(), true);
            recompute_weights(logits.data(), n, s.P, m + i0);
            products.transposed_weighted_sum(logits.data(), n, doi, s.Dv, dv);
            products.logits(doi, n, vb, vtb, s.Dv, grad.data(), false);
            softmax_backward(logits.data(), grad.data(), n, s.P, dlse + i0, delta.data(), wl + i0 * s.L, dwl + i0 * s.L,
                             dsl + i0 * s.L, s.L);
            products.weighted_sum(grad.data(), n, kb, s.D, dq + i0 * s.D);
            products.transposed_weighted_sum(grad.data(), n, qi, s.D, dk);
            scatter_bias_grad(grad.data(), n, x0, dr, w, bias);
          }
        }
      }
    }
  });
  // sum the slices' key / value gradients, in slice order
  T *dk = grad_key.data_ptr<T>(), *dv = grad_value.data_ptr<T>();
  grad_key.zero_();
  grad_value.zero_();
  for (int64_t slice = 0; slice < slices; ++slice) {
    const int64_t first = slice * per_slice, last = std::min(tasks, first + per_slice);
    if (first >= last) continue;
    const int64_t h_first = first / s.H, h_last = (last - 1) / s.H;
    const T* acc = partial[slice].data();
    for (int64_t h = h_first; h <= h_last; ++h) {
      for (int64_t b = 0; b < s.batch; ++b) {
        const T* src = acc + ((h - h_first) * s.batch + b) * kv;
        const int64_t bh = b * s.heads + h;
        T* dkb = dk + bh * s.P * s.D;
        T* dvb = dv + bh * s.P * s.Dv;
        for (int64_t j = 0; j < s.P * s.D; ++j) dkb[j] += src[j];
        for (int64_t j = 0; j < s.P * s.Dv; ++j) dvb[j] += src[s.P * s.D + j];
      }
    }
  }
}

// (B, heads, ph * pw, D) pooled keys or values <-> the kernels' (kx, ky) order.
at::Tensor to_kernel_order(const at::Tensor& t, const PooledGrid& g) {
  return t.view({t.size(0), t.size(1), g.pool_height, g.pool_width, t.size(3)})
      .transpose(2, 3)
      .contiguous()
      .view(t.sizes());
}
void from_kernel_order(const at::Tensor& t, const at::Tensor& out, const PooledGrid& g) {
  out.view({t.size(0), t.size(1), g.pool_height, g.pool_width, t.size(3)})
      .copy_(t.view({t.size(0), t.size(1), g.pool_width, g.pool_height, t.size(3)}).transpose(2, 3));
}

// (heads, H, ph, U) bias rows -> the kernels' (heads, H, U, padded ph), zeros in the padding
at::Tensor padded_rows(const at::Tensor& bias_rows) {
  at::Tensor rows = at::zeros(
      {bias_rows.size(0), bias_rows.size(1), bias_rows.size(3), padded_column(bias_rows.size(2))}, bias_rows.options());
  rows.narrow(3, 0, bias_rows.size(2)).copy_(bias_rows.transpose(2, 3));
  return rows;
}

}  // namespace

void pooled_attention_forward_cpu(const PooledAttentionTensors& t, const PooledGrid& grid) {
  const at::Tensor key_k = to_kernel_order(t.key, grid), value_k = to_kernel_order(t.value, grid);
  const at::Tensor key_t = transposed_if_tiled(key_k, use_tiles(t.query, t.value));
  const at::Tensor rows_k = padded_rows(t.bias_rows);
  AT_DISPATCH_FLOATING_TYPES(t.query.scalar_type(), "pooled_attention_forward_cpu", [&] {
    forward<scalar_t>(t.query, key_k, key_t, value_k, rows_k, t.cols_index, t.cols_weight, t.local_logits, t.out,
                      t.local_weights, t.lse, grid);
  });
}

void pooled_attention_backward_cpu(const PooledAttentionTensors& t, const PooledAttentionGrads& grad,
                                   const PooledGrid& grid) {
  const at::Tensor key_k = to_kernel_order(t.key, grid), value_k = to_kernel_order(t.value, grid);
  const bool tiled = use_tiles(t.query, t.value);
  const at::Tensor key_t = transposed_if_tiled(key_k, tiled), value_t = transposed_if_tiled(value_k, tiled);
  const at::Tensor rows_k = padded_rows(t.bias_rows);
  at::Tensor grad_key_k = at::empty_like(key_k), grad_value_k = at::empty_like(value_k);
  at::Tensor grad_rows_k = at::empty_like(rows_k);
  AT_DISPATCH_FLOATING_TYPES(t.query.scalar_type(), "pooled_attention_backward_cpu", [&] {
    backward<scalar_t>(grad.out, grad.local_weights, grad.lse, t.query, key_k, key_t, value_k, value_t, rows_k,
                       t.cols_index, t.cols_weight, t.out, t.local_weights, t.lse, grad.query, grad_key_k, grad_value_k,
                       grad_rows_k, grad.local_logits, grid);
  });
  from_kernel_order(grad_key_k, grad.key, grid);
  from_kernel_order(grad_value_k, grad.value, grid);
  grad.bias_rows.copy_(grad_rows_k.narrow(3, 0, t.bias_rows.size(2)).transpose(2, 3));
}

}  // namespace mmtransnext
