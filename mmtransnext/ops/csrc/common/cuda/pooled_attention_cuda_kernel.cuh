// CUDA kernels of pooled attention merged with the local logits (split softmax).
//
// Forward: one thread per query, pooled keys / values staged in shared memory a tile at a time, an
// online softmax seeded with the query's local logits. Backward recomputes the logits from the
// saved log-sum-exp in three kernels, each owning what it writes:
//   query side: one thread per query -> d query, d local logits and the per-query shift;
//   key side:   one thread per pooled key over a chunk of queries -> d key, d value (one atomic
//               add per key and chunk);
//   bias side:  one block per (head, query row y, key row ky) -> that row of d bias_rows, summed
//               over the batch in shared memory.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_launch.h"

namespace mmtransnext {

template <typename T>
struct PooledArgs {
  const T *query, *key, *value, *bias_rows, *cols_weight;
  const int64_t* cols_index;
  int64_t batch, heads, N, P, D, Dv, L, H, W, ph, pw, U, taps;
};

template <typename T>
__device__ __forceinline__ T exp_of(T x) {
  return exp(x);
}
template <>
__device__ __forceinline__ float exp_of<float>(float x) {
  return expf(x);
}

// bias[h, (y, x), (ky, kx)] from the row table of (h, y): sum_t w[t, x, kx] * rows[ky, index[t, x, kx]]
template <typename T>
__device__ __forceinline__ T pooled_bias(const PooledArgs<T>& a, const T* rows, int64_t x, int64_t ky, int64_t kx) {
  T sum = 0;
  for (int64_t t = 0; t < a.taps; ++t) {
    const int64_t j = (t * a.W + x) * a.pw + kx;
    sum += a.cols_weight[j] * rows[ky * a.U + a.cols_index[j]];
  }
  return sum;
}

template <typename T, int MAXD>
__device__ __forceinline__ T dot(const T* x, const T* y, int64_t d) {
  T s = 0;
#pragma unroll
  for (int c = 0; c < MAXD; ++c)
    if (c < d) s += x[c] * y[c];
  return s;
}

// Rows [first, first + TILE) of two (rows, dim) matrices into shared memory, zero past `rows` / the dims.
template <typename T, int MAXD, int TILE>
__device__ __forceinline__ void load_tile(T (*a_tile)[MAXD], const T* a, int64_t a_dim, T (*b_tile)[MAXD], const T* b,
                                          int64_t b_dim, int64_t first, int64_t rows) {
  for (int64_t i = threadIdx.x; i < TILE * MAXD; i += blockDim.x) {
    const int64_t j = i / MAXD, c = i % MAXD, row = first + j;
    a_tile[j][c] = row < rows && c < a_dim ? a[row * a_dim + c] : T(0);
    b_tile[j][c] = row < rows && c < b_dim ? b[row * b_dim + c] : T(0);
  }
}

// Keys per shared-memory tile: two tiles (key, value) of TILE x MAXD elements.
template <int MAXD>
constexpr int kTile = 2048 / MAXD;

// One thread per query (blockIdx.y = batch * heads + head): the query's map, index, column, validity and
// the position-bias row table of its row.
template <typename T>
struct QueryThread {
  int64_t bh, n, x;
  bool valid;
  const T* rows;
};

template <typename T>
__device__ __forceinline__ QueryThread<T> query_thread(const PooledArgs<T>& a) {
  const int64_t bh = blockIdx.y, n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool valid = n < a.N;
  const int64_t y = valid ? n / a.W : 0;
  return {bh, n, n % a.W, valid, a.bias_rows + ((bh % a.heads) * a.H + y) * a.ph * a.U};
}

// Calls logit(s, key, value) for every pooled key of the thread's map, with s = q . key + position bias.
// The block stages keys and values in shared memory a tile at a time, so every thread of the block calls
// this; only valid ones compute.
template <typename T, int MAXD, typename F>
__device__ __forceinline__ void for_each_pooled_logit(const PooledArgs<T>& a, const QueryThread<T>& t, const T* q,
                                                      const F& logit) {
  constexpr int TILE = kTile<MAXD>;
  MMTN_SHARED(T, keys, [TILE][MAXD]);
  MMTN_SHARED(T, values, [TILE][MAXD]);
  const T *key = a.key + t.bh * a.P * a.D, *value = a.value + t.bh * a.P * a.Dv;
  for (int64_t p0 = 0; p0 < a.P; p0 += TILE) {
    load_tile<T, MAXD, TILE>(keys, key, a.D, values, value, a.Dv, p0, a.P);
    __syncthreads();
    if (t.valid) {
      const int64_t count = min(static_cast<int64_t>(TILE), a.P - p0);
      for (int64_t j = 0; j < count; ++j) {
        const int64_t p = p0 + j;
        logit(dot<T, MAXD>(q, keys[j], a.D) + pooled_bias(a, t.rows, t.x, p / a.pw, p % a.pw), keys[j], values[j]);
      }
    }
    __syncthreads();
  }
}

template <typename T, int MAXD>
__global__ void pooled_attention_forward_kernel(PooledArgs<T> a, const T* local_logits, T* out, T* local_weights,
                                                T* lse) {
  const QueryThread<T> t = query_thread(a);
  const int64_t bh = t.bh, n = t.n;
  const bool valid = t.valid;
  T q[MAXD], acc[MAXD];
#pragma unroll
  for (int c = 0; c < MAXD; ++c) {
    q[c] = valid && c < a.D ? a.query[(bh * a.N + n) * a.D + c] : T(0);
    acc[c] = 0;
  }
  // the local logits seed the running maximum and sum
  T m = -INFINITY, sum = 0;
  const T* local = local_logits + (bh * a.N + (valid ? n : 0)) * a.L;
  if (valid) {
    for (int64_t l = 0; l < a.L; ++l) m = max(m, local[l]);
    if (m > -INFINITY)
      for (int64_t l = 0; l < a.L; ++l) sum += exp_of(local[l] - m);
  }
  for_each_pooled_logit<T, MAXD>(a, t, q, [&](T s, const T*, const T* value) {
    if (s > m) {  // rescale what was summed under the old maximum
      const T scale = exp_of(m - s);
      sum *= scale;
#pragma unroll
      for (int c = 0; c < MAXD; ++c) acc[c] *= scale;
      m = s;
    }
    const T e = exp_of(s - m);
    sum += e;
#pragma unroll
    for (int c = 0; c < MAXD; ++c) acc[c] += e * value[c];
  });
  if (!valid) return;
  const T log_sum = m + log(sum), inv = T(1) / sum;
  lse[bh * a.N + n] = log_sum;
  for (int c = 0; c < a.Dv; ++c) out[(bh * a.N + n) * a.Dv + c] = acc[c] * inv;
  for (int64_t l = 0; l < a.L; ++l) local_weights[(bh * a.N + n) * a.L + l] = exp_of(local[l] - log_sum);
}

// Query side: d query, d local logits, and shift = d lse - delta for the other two kernels, where
// delta = sum_j a_j g_j over local and pooled keys (g_pooled = d out . value).
template <typename T, int MAXD>
__global__ void pooled_attention_backward_query_kernel(PooledArgs<T> a, const T* grad_out, const T* grad_local_weights,
                                                       const T* grad_lse, const T* out, const T* local_weights,
                                                       const T* lse, T* grad_query, T* grad_local_logits, T* shift) {
  const QueryThread<T> t = query_thread(a);
  const bool valid = t.valid;
  const int64_t i = t.bh * a.N + (valid ? t.n : 0);
  T q[MAXD], dout[MAXD], dq[MAXD];
  T delta = 0;
#pragma unroll
  for (int c = 0; c < MAXD; ++c) {
    q[c] = valid && c < a.D ? a.query[i * a.D + c] : T(0);
    dout[c] = valid && c < a.Dv ? grad_out[i * a.Dv + c] : T(0);
    if (valid && c < a.Dv) delta += dout[c] * out[i * a.Dv + c];
    dq[c] = 0;
  }
  T sh = 0, m = 0;
  if (valid) {
    for (int64_t l = 0; l < a.L; ++l) delta += local_weights[i * a.L + l] * grad_local_weights[i * a.L + l];
    sh = grad_lse[i] - delta;
    m = lse[i];
    shift[i] = sh;
    for (int64_t l = 0; l < a.L; ++l)
      grad_local_logits[i * a.L + l] = local_weights[i * a.L + l] * (grad_local_weights[i * a.L + l] + sh);
  }
  for_each_pooled_logit<T, MAXD>(a, t, q, [&](T s, const T* key, const T* value) {
    const T ds = exp_of(s - m) * (dot<T, MAXD>(dout, value, a.Dv) + sh);
#pragma unroll
    for (int c = 0; c < MAXD; ++c) dq[c] += ds * key[c];
  });
  if (valid)
    for (int c = 0; c < a.D; ++c) grad_query[i * a.D + c] = dq[c];
}

// Key side: one thread per pooled key, over the queries [blockIdx.y * chunk, + chunk).
template <typename T, int MAXD>
__global__ void pooled_attention_backward_key_kernel(PooledArgs<T> a, const T* grad_out, const T* lse, const T* shift,
                                                     int64_t chunk, T* grad_key, T* grad_value) {
  constexpr int TILE = kTile<MAXD>;
  MMTN_SHARED(T, queries, [TILE][MAXD]);
  MMTN_SHARED(T, douts, [TILE][MAXD]);
  MMTN_SHARED(T, lses, [TILE]);
  MMTN_SHARED(T, shifts, [TILE]);
  const int64_t bh = blockIdx.z, h = bh % a.heads;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool valid = p < a.P;
  const int64_t ky = p / a.pw, kx = p % a.pw;
  T k[MAXD], v[MAXD], dk[MAXD], dv[MAXD];
#pragma unroll
  for (int c = 0; c < MAXD; ++c) {
    k[c] = valid && c < a.D ? a.key[(bh * a.P + p) * a.D + c] : T(0);
    v[c] = valid && c < a.Dv ? a.value[(bh * a.P + p) * a.Dv + c] : T(0);
    dk[c] = dv[c] = 0;
  }
  const int64_t n_begin = blockIdx.y * chunk, n_end = min(a.N, n_begin + chunk);
  for (int64_t n0 = n_begin; n0 < n_end; n0 += TILE) {
    load_tile<T, MAXD, TILE>(queries, a.query + bh * a.N * a.D, a.D, douts, grad_out + bh * a.N * a.Dv, a.Dv, n0,
                             n_end);
    for (int64_t j = threadIdx.x; j < TILE; j += blockDim.x) {
      const int64_t n = n0 + j;
      lses[j] = n < n_end ? lse[bh * a.N + n] : T(0);
      shifts[j] = n < n_end ? shift[bh * a.N + n] : T(0);
    }
    __syncthreads();
    if (valid) {
      const int64_t count = min(static_cast<int64_t>(TILE), n_end - n0);
      for (int64_t j = 0; j < count; ++j) {
        const int64_t n = n0 + j, y = n / a.W, x = n % a.W;
        const T* rows = a.bias_rows + (h * a.H + y) * a.ph * a.U;
        const T s = dot<T, MAXD>(queries[j], k, a.D) + pooled_bias(a, rows, x, ky, kx);
        const T w = exp_of(s - lses[j]);
        const T ds = w * (dot<T, MAXD>(douts[j], v, a.Dv) + shifts[j]);
#pragma unroll
        for (int c = 0; c < MAXD; ++c) {
          dk[c] += ds * queries[j][c];
          dv[c] += w * douts[j][c];
        }
      }
    }
    __syncthreads();
  }
  if (!valid) return;
  for (int c = 0; c < a.D; ++c) atomicAdd(grad_key + (bh * a.P + p) * a.D + c, dk[c]);
  for (int c = 0; c < a.Dv; ++c) atomicAdd(grad_value + (bh * a.P + p) * a.Dv + c, dv[c]);
}

// Bias side: block (h, y, ky) sums w * d logit over the batch and the row's (x, kx) pairs into the
// U bins of grad_bias_rows[h, y, ky] (in shared memory when they fit, else straight to global).
template <typename T, int MAXD>
__global__ void pooled_attention_backward_bias_kernel(PooledArgs<T> a, const T* grad_out, const T* lse, const T* shift,
                                                      T* grad_bias_rows, bool bins_in_shared) {
  MMTN_DYNAMIC_SHARED(unsigned char, shared_bytes);
  const int64_t row = blockIdx.x;  // (h * H + y) * ph + ky
  const int64_t ky = row % a.ph, y = (row / a.ph) % a.H, h = row / (a.ph * a.H);
  T* out_row = grad_bias_rows + row * a.U;
  T* bins = bins_in_shared ? reinterpret_cast<T*>(shared_bytes) : out_row;
  if (bins_in_shared)
    for (int64_t u = threadIdx.x; u < a.U; u += blockDim.x) bins[u] = 0;
  __syncthreads();
  const T* rows = a.bias_rows + (h * a.H + y) * a.ph * a.U;
  for (int64_t b = 0; b < a.batch; ++b) {
    const int64_t bh = b * a.heads + h;
    for (int64_t pair = threadIdx.x; pair < a.W * a.pw; pair += blockDim.x) {
      const int64_t x = pair / a.pw, kx = pair % a.pw, i = bh * a.N + y * a.W + x, p = ky * a.pw + kx;
      const T s = dot<T, MAXD>(a.query + i * a.D, a.key + (bh * a.P + p) * a.D, a.D) + pooled_bias(a, rows, x, ky, kx);
      const T ds =
          exp_of(s - lse[i]) * (dot<T, MAXD>(grad_out + i * a.Dv, a.value + (bh * a.P + p) * a.Dv, a.Dv) + shift[i]);
      for (int64_t t = 0; t < a.taps; ++t) {
        const int64_t j = (t * a.W + x) * a.pw + kx;
        atomicAdd(bins + a.cols_index[j], a.cols_weight[j] * ds);
      }
    }
  }
  if (!bins_in_shared) return;
  __syncthreads();
  for (int64_t u = threadIdx.x; u < a.U; u += blockDim.x) out_row[u] = bins[u];
}

}  // namespace mmtransnext
