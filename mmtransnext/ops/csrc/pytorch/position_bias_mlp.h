// Device implementations of the fused position-bias MLP (CPU only: on GPUs nn.Linear is fast).
// coords (T, 2), w1 (hidden, 2), b1 (hidden), w2 (heads, hidden), b2 (heads) -> out (heads, T).
#pragma once
#include <ATen/core/Tensor.h>

#include <tuple>

namespace mmtransnext {

void position_bias_mlp_forward_cpu(const at::Tensor& coords, const at::Tensor& w1, const at::Tensor& b1,
                                   const at::Tensor& w2, const at::Tensor& b2, at::Tensor& out);
void position_bias_mlp_backward_cpu(const at::Tensor& grad, const at::Tensor& coords, const at::Tensor& w1,
                                    const at::Tensor& b1, const at::Tensor& w2, at::Tensor& grad_w1,
                                    at::Tensor& grad_b1, at::Tensor& grad_w2, at::Tensor& grad_b2);

// The checked entry points: the registered kernels (the dispatcher) and the Python functions
// (python_bindings.h) call them.
at::Tensor position_bias_mlp_forward(const at::Tensor& coords, const at::Tensor& w1, const at::Tensor& b1,
                                     const at::Tensor& w2, const at::Tensor& b2);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> position_bias_mlp_backward(const at::Tensor& grad_in,
                                                                                      const at::Tensor& coords,
                                                                                      const at::Tensor& w1,
                                                                                      const at::Tensor& b1,
                                                                                      const at::Tensor& w2);

}  // namespace mmtransnext
