// Device implementations of the local part of aggregated attention. Tensors are contiguous:
// query / key / value (B, heads, N, D), attention weights (B, heads, N, L), bias (heads, L),
// with N = H * W pixels and L = ws * ws neighbours. Outputs are allocated by the caller.
#pragma once
#include <ATen/core/Tensor.h>

#include "../common/local_window.h"
#include "../common/python_module_decl.h"

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

// Adds this op's Python functions to the extension module (pybind.cpp).
void bind_local_attention(py::module_& m);

}  // namespace mmtransnext
