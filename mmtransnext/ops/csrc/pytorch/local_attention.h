// Device implementations of the local part of aggregated attention. Tensors are contiguous:
// query / key / value (B, heads, N, D), attention weights (B, heads, N, L), bias (heads, L),
// with N = H * W pixels and L = ws * ws neighbours. Outputs are allocated by the caller.
#pragma once
#include <ATen/core/Tensor.h>

#include <tuple>

#include "../common/local_window.h"

namespace mmtransnext {

void local_similarity_forward_cpu(const at::Tensor& query, const at::Tensor& key, const at::Tensor& bias,
                                  at::Tensor& attn, const LocalWindow& window);
void local_similarity_backward_cpu(const at::Tensor& grad_attn, const at::Tensor& query, const at::Tensor& key,
                                   at::Tensor& grad_query, at::Tensor& grad_key, at::Tensor& grad_bias,
                                   const LocalWindow& window);
void local_aggregation_forward_cpu(const at::Tensor& weights, const at::Tensor& value, at::Tensor& out,
                                   const LocalWindow& window);
void local_aggregation_backward_cpu(const at::Tensor& grad_out, const at::Tensor& weights, const at::Tensor& value,
                                    at::Tensor& grad_weights, at::Tensor& grad_value, const LocalWindow& window);

#ifdef WITH_CUDA
void local_similarity_forward_cuda(const at::Tensor& query, const at::Tensor& key, const at::Tensor& bias,
                                   at::Tensor& attn, const LocalWindow& window);
void local_similarity_backward_cuda(const at::Tensor& grad_attn, const at::Tensor& query, const at::Tensor& key,
                                    at::Tensor& grad_query, at::Tensor& grad_key, at::Tensor& grad_bias,
                                    const LocalWindow& window);
void local_aggregation_forward_cuda(const at::Tensor& weights, const at::Tensor& value, at::Tensor& out,
                                    const LocalWindow& window);
void local_aggregation_backward_cuda(const at::Tensor& grad_out, const at::Tensor& weights, const at::Tensor& value,
                                     at::Tensor& grad_weights, at::Tensor& grad_value, const LocalWindow& window);
#endif

// The checked entry points: the registered kernels (the dispatcher) and the Python functions
// (python_bindings.h) call them.
at::Tensor local_similarity_forward(const at::Tensor& query, const at::Tensor& key, const at::Tensor& bias,
                                    int64_t height, int64_t width, int64_t window_size);
std::tuple<at::Tensor, at::Tensor, at::Tensor> local_similarity_backward(const at::Tensor& grad,
                                                                         const at::Tensor& query, const at::Tensor& key,
                                                                         int64_t height, int64_t width,
                                                                         int64_t window_size);
at::Tensor local_aggregation_forward(const at::Tensor& weights, const at::Tensor& value, int64_t height, int64_t width,
                                     int64_t window_size);
std::tuple<at::Tensor, at::Tensor> local_aggregation_backward(const at::Tensor& grad, const at::Tensor& weights,
                                                              const at::Tensor& value, int64_t height, int64_t width,
                                                              int64_t window_size);

}  // namespace mmtransnext
