// Device implementations of the fused position-bias MLP (CPU only: on GPUs nn.Linear is fast).
// coords (T, 2), w1 (hidden, 2), b1 (hidden), w2 (heads, hidden), b2 (heads) -> out (heads, T).
#pragma once
#include <ATen/core/Tensor.h>

#include "../common/python_module_decl.h"

namespace mmtransnext {

void position_bias_mlp_forward_cpu(const at::Tensor& coords, const at::Tensor& w1, const at::Tensor& b1,
                                   const at::Tensor& w2, const at::Tensor& b2, at::Tensor& out);
void position_bias_mlp_backward_cpu(const at::Tensor& grad, const at::Tensor& coords, const at::Tensor& w1,
                                    const at::Tensor& b1, const at::Tensor& w2, at::Tensor& grad_w1,
                                    at::Tensor& grad_b1, at::Tensor& grad_w2, at::Tensor& grad_b2);

// Adds this op's Python functions to the extension module (pybind.cpp).
void bind_position_bias_mlp(py::module_& m);

}  // namespace mmtransnext
