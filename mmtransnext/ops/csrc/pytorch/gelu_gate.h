// gelu(gate) * value, the gate of ConvGLU, fused on the CPU (GPUs keep PyTorch's ops).
// gate, value, out: contiguous, same shape and dtype (float32 / float64).
#pragma once
#include <ATen/core/Tensor.h>

#include <tuple>

namespace mmtransnext {

void gelu_gate_forward_cpu(const at::Tensor& gate, const at::Tensor& value, at::Tensor& out);
void gelu_gate_backward_cpu(const at::Tensor& grad, const at::Tensor& gate, const at::Tensor& value,
                            at::Tensor& grad_gate, at::Tensor& grad_value);

// The checked entry points: the registered kernels (the dispatcher) and the Python functions
// (python_bindings.h) call them.
at::Tensor gelu_gate_forward(const at::Tensor& gate, const at::Tensor& value);
std::tuple<at::Tensor, at::Tensor> gelu_gate_backward(const at::Tensor& grad_in, const at::Tensor& gate,
                                                      const at::Tensor& value);

}  // namespace mmtransnext
