// CUDA kernels of the local part of aggregated attention: one thread per output element,
// accumulating in float for half / bfloat16. Backward passes gather, so there are no atomics.
#pragma once
#include <ATen/OpMathType.h>

#include "../local_window.h"
#include "cuda_launch.h"

namespace mmtransnext {

// attn[i, l] = query[i] . key[neighbour l] + bias[head, l], or -inf outside the map; i = (b, h, n).
template <typename scalar_t>
__global__ void local_similarity_forward_kernel(const scalar_t* __restrict__ query, const scalar_t* __restrict__ key,
                                                const scalar_t* __restrict__ bias, scalar_t* __restrict__ attn,
                                                int64_t total, int64_t heads, int64_t dim, LocalWindow window) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = window.pixels(), L = window.length();
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)blockDim.x * gridDim.x) {
    const int64_t l = idx % L, i = idx / L, n = i % N, bh = i / N;
    int64_t m;
    if (!window.neighbour(n, l, &m)) {
      attn[idx] = static_cast<scalar_t>(-INFINITY);
      continue;
    }
    const scalar_t* q = query + i * dim;
    const scalar_t* k = key + (bh * N + m) * dim;
    acc_t acc = 0;
    for (int64_t c = 0; c < dim; ++c) acc += static_cast<acc_t>(q[c]) * static_cast<acc_t>(k[c]);
    attn[idx] = static_cast<scalar_t>(acc + static_cast<acc_t>(bias[(bh % heads) * L + l]));
  }
}

// grad_query[i, c] = sum_l grad[i, l] key[neighbour l, c];
// grad_key[i, c] = sum over pixels m having pixel n as neighbour l of grad[m, l] query[m, c].
template <typename scalar_t>
__global__ void local_similarity_backward_qk_kernel(const scalar_t* __restrict__ grad_attn,
                                                    const scalar_t* __restrict__ query,
                                                    const scalar_t* __restrict__ key, scalar_t* __restrict__ grad_query,
                                                    scalar_t* __restrict__ grad_key, int64_t total, int64_t dim,
                                                    LocalWindow window) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = window.pixels(), L = window.length();
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)blockDim.x * gridDim.x) {
    const int64_t c = idx % dim, i = idx / dim, n = i % N, base = i - n;
    acc_t acc_q = 0, acc_k = 0;
    for (int64_t l = 0; l < L; ++l) {
      int64_t m;
      if (window.neighbour(n, l, &m))
        acc_q += static_cast<acc_t>(grad_attn[i * L + l]) * static_cast<acc_t>(key[(base + m) * dim + c]);
      if (window.source(n, l, &m))
        acc_k += static_cast<acc_t>(grad_attn[(base + m) * L + l]) * static_cast<acc_t>(query[(base + m) * dim + c]);
    }
    grad_query[idx] = static_cast<scalar_t>(acc_q);
    grad_key[idx] = static_cast<scalar_t>(acc_k);
  }
}

// grad_bias[h, l]: one block of kBlock threads per (head, neighbour), reducing over batch and in-map pixels in
// shared memory by halving (kBlock: the launch's block size, a power of two).
template <typename scalar_t, int kBlock>
__global__ void local_similarity_backward_bias_kernel(const scalar_t* __restrict__ grad_attn,
                                                      scalar_t* __restrict__ grad_bias, int64_t batch, int64_t heads,
                                                      LocalWindow window) {
  static_assert(kBlock > 0 && (kBlock & (kBlock - 1)) == 0, "the reduction halves kBlock: a power of two");
  using acc_t = at::opmath_type<scalar_t>;
  MMTN_SHARED(acc_t, partial, [kBlock]);
  const int64_t N = window.pixels(), L = window.length();
  const int64_t h = blockIdx.x / L, l = blockIdx.x % L;
  acc_t acc = 0;
  for (int64_t j = threadIdx.x; j < batch * N; j += kBlock) {
    const int64_t b = j / N, n = j % N;
    int64_t m;
    if (window.neighbour(n, l, &m)) acc += static_cast<acc_t>(grad_attn[((b * heads + h) * N + n) * L + l]);
  }
  partial[threadIdx.x] = acc;
  __syncthreads();
  for (int s = kBlock / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) grad_bias[blockIdx.x] = static_cast<scalar_t>(partial[0]);
}

// out[i, c] = sum_l weights[i, l] rows[neighbour l, c]: local aggregation forward (rows = value).
// Transposed, out[i, c] = sum over pixels m having pixel i as neighbour l of weights[m, l] rows[m, c]: its
// value gradient (rows = grad_out). Both gather, so no two threads write the same element.
template <typename scalar_t, bool kTransposed>
__global__ void local_weighted_sum_kernel(const scalar_t* __restrict__ weights, const scalar_t* __restrict__ rows,
                                          scalar_t* __restrict__ out, int64_t total, int64_t dim, LocalWindow window) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = window.pixels(), L = window.length();
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)blockDim.x * gridDim.x) {
    const int64_t c = idx % dim, i = idx / dim, n = i % N, base = i - n;
    acc_t acc = 0;
    for (int64_t l = 0; l < L; ++l) {
      int64_t m;
      if (kTransposed ? window.source(n, l, &m) : window.neighbour(n, l, &m)) {
        const int64_t weight_row = kTransposed ? base + m : i;
        acc += static_cast<acc_t>(weights[weight_row * L + l]) * static_cast<acc_t>(rows[(base + m) * dim + c]);
      }
    }
    out[idx] = static_cast<scalar_t>(acc);
  }
}

// grad_weights[i, l] = grad_out[i] . value[neighbour l] (0 outside the map).
template <typename scalar_t>
__global__ void local_aggregation_backward_weights_kernel(const scalar_t* __restrict__ grad_out,
                                                          const scalar_t* __restrict__ value,
                                                          scalar_t* __restrict__ grad_weights, int64_t total,
                                                          int64_t dim, LocalWindow window) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = window.pixels(), L = window.length();
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)blockDim.x * gridDim.x) {
    const int64_t l = idx % L, i = idx / L, n = i % N, base = i - n;
    int64_t m;
    acc_t acc = 0;
    if (window.neighbour(n, l, &m)) {
      const scalar_t* g = grad_out + i * dim;
      const scalar_t* v = value + (base + m) * dim;
      for (int64_t c = 0; c < dim; ++c) acc += static_cast<acc_t>(g[c]) * static_cast<acc_t>(v[c]);
    }
    grad_weights[idx] = static_cast<scalar_t>(acc);
  }
}

}  // namespace mmtransnext
