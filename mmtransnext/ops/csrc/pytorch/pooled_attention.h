// Device implementations of pooled attention merged with the local logits under one softmax
// (the split-softmax core of aggregated attention). Tensors are contiguous:
//   query (B, heads, N, D), key (B, heads, P, D), value (B, heads, P, Dv),
//   bias_rows (heads, H, ph, U): the position bias resolved along H, read along W through
//   cols_index / cols_weight (T, W, pw): bias[h, (y, x), (ky, kx)] =
//     sum_t cols_weight[t, x, kx] * bias_rows[h, y, ky, cols_index[t, x, kx]],
//   local_logits / local_weights (B, heads, N, L), lse (B, heads, N).
// N = H * W queries, P = ph * pw pooled keys. The (N, P) logits exist only a block of queries at a
// time; backward recomputes them from the saved log-sum-exp. Outputs are allocated by the caller.
#pragma once
#include <torch/extension.h>

namespace mmtransnext {

struct PooledGrid {
  int64_t height, width, pool_height, pool_width;  // query grid H x W, pooled-key grid ph x pw
};

void pooled_attention_forward_cpu(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                                  const at::Tensor& bias_rows, const at::Tensor& cols_index,
                                  const at::Tensor& cols_weight, const at::Tensor& local_logits, at::Tensor& out,
                                  at::Tensor& local_weights, at::Tensor& lse, const PooledGrid& grid);
void pooled_attention_backward_cpu(const at::Tensor& grad_out, const at::Tensor& grad_local_weights,
                                   const at::Tensor& grad_lse, const at::Tensor& query, const at::Tensor& key,
                                   const at::Tensor& value, const at::Tensor& bias_rows, const at::Tensor& cols_index,
                                   const at::Tensor& cols_weight, const at::Tensor& out,
                                   const at::Tensor& local_weights, const at::Tensor& lse, at::Tensor& grad_query,
                                   at::Tensor& grad_key, at::Tensor& grad_value, at::Tensor& grad_bias_rows,
                                   at::Tensor& grad_local_logits, const PooledGrid& grid);

#ifdef WITH_CUDA
void pooled_attention_forward_cuda(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                                   const at::Tensor& bias_rows, const at::Tensor& cols_index,
                                   const at::Tensor& cols_weight, const at::Tensor& local_logits, at::Tensor& out,
                                   at::Tensor& local_weights, at::Tensor& lse, const PooledGrid& grid);
void pooled_attention_backward_cuda(const at::Tensor& grad_out, const at::Tensor& grad_local_weights,
                                    const at::Tensor& grad_lse, const at::Tensor& query, const at::Tensor& key,
                                    const at::Tensor& value, const at::Tensor& bias_rows,
                                    const at::Tensor& cols_index, const at::Tensor& cols_weight,
                                    const at::Tensor& out, const at::Tensor& local_weights, const at::Tensor& lse,
                                    at::Tensor& grad_query, at::Tensor& grad_key, at::Tensor& grad_value,
                                    at::Tensor& grad_bias_rows, at::Tensor& grad_local_logits,
                                    const PooledGrid& grid);
#endif

}  // namespace mmtransnext
