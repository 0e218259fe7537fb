// gelu(gate) * value, the gate of ConvGLU, fused on the CPU (GPUs keep PyTorch's ops).
// gate, value, out: contiguous, same shape and dtype (float32 / float64).
#pragma once
#include <ATen/core/Tensor.h>

#include "../common/python_module_decl.h"

namespace mmtransnext {

void gelu_gate_forward_cpu(const at::Tensor& gate, const at::Tensor& value, at::Tensor& out);
void gelu_gate_backward_cpu(const at::Tensor& grad, const at::Tensor& gate, const at::Tensor& value,
                            at::Tensor& grad_gate, at::Tensor& grad_value);

// Adds this op's Python functions to the extension module (pybind.cpp).
void bind_gelu_gate(py::module_& m);

}  // namespace mmtransnext
