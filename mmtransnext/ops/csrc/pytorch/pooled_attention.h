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
#include <ATen/core/Tensor.h>

#include <tuple>

namespace mmtransnext {

struct PooledGrid {
  int64_t height, width, pool_height, pool_width;  // query grid H x W, pooled-key grid ph x pw
};

// One call's tensors: the inputs, and the outputs (written by forward, read by backward).
struct PooledAttentionTensors {
  at::Tensor query, key, value, bias_rows, cols_index, cols_weight, local_logits;
  at::Tensor out, local_weights, lse;
};

// Backward's gradients: of the outputs (read) and of the inputs (written).
struct PooledAttentionGrads {
  at::Tensor out, local_weights, lse;
  at::Tensor query, key, value, bias_rows, local_logits;
};

void pooled_attention_forward_cpu(const PooledAttentionTensors& t, const PooledGrid& grid);
void pooled_attention_backward_cpu(const PooledAttentionTensors& t, const PooledAttentionGrads& grad,
                                   const PooledGrid& grid);

#ifdef WITH_CUDA
void pooled_attention_forward_cuda(const PooledAttentionTensors& t, const PooledGrid& grid);
void pooled_attention_backward_cuda(const PooledAttentionTensors& t, const PooledAttentionGrads& grad,
                                    const PooledGrid& grid);
#endif

// The checked entry points: the registered kernels (the dispatcher) and the Python functions
// (python_bindings.h) call them.
using PooledOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using PooledInputGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

PooledOutputs pooled_attention_forward(const at::Tensor& query_in, const at::Tensor& key_in, const at::Tensor& value_in,
                                       const at::Tensor& bias_rows, const at::Tensor& cols_index,
                                       const at::Tensor& cols_weight, const at::Tensor& local_logits, int64_t height,
                                       int64_t width);
PooledInputGrads pooled_attention_backward(const at::Tensor& grad_out, const at::Tensor& grad_local_weights,
                                           const at::Tensor& grad_lse, const at::Tensor& query_in,
                                           const at::Tensor& key_in, const at::Tensor& value_in,
                                           const at::Tensor& bias_rows, const at::Tensor& cols_index,
                                           const at::Tensor& cols_weight, const at::Tensor& out,
                                           const at::Tensor& local_weights, const at::Tensor& lse, int64_t height,
                                           int64_t width);

}  // namespace mmtransnext
