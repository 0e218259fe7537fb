// Checks arguments and allocates outputs of the fused position-bias MLP; registers the op
// (mmtransnext::position_bias_mlp, _backward).
#include "position_bias_mlp.h"

#include "../common/pytorch_cpp_helper.h"

namespace mmtransnext {
namespace {

void check_mlp(const at::Tensor& coords, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2) {
  for (const at::Tensor* t : {&coords, &w1, &b1, &w2}) {
    MMTN_CHECK_CONTIGUOUS(*t);
    TORCH_CHECK(t->is_cpu(), "position_bias_mlp has CPU kernels only; got a tensor on ", t->device());
    TORCH_CHECK(t->scalar_type() == coords.scalar_type(), "position_bias_mlp: all tensors must be ",
                coords.scalar_type(), ", got ", t->scalar_type());
  }
  TORCH_CHECK(coords.dim() == 2 && coords.size(1) == 2, "coords must be (T, 2), got ", coords.sizes());
  TORCH_CHECK(w1.dim() == 2 && w1.size(1) == 2 && b1.dim() == 1 && b1.size(0) == w1.size(0),
              "fc1 must map 2 -> hidden: weight (hidden, 2), bias (hidden); got ", w1.sizes(), ", ", b1.sizes());
  TORCH_CHECK(w2.dim() == 2 && w2.size(1) == w1.size(0), "fc2 weight must be (heads, ", w1.size(0), "), got ",
              w2.sizes());
}

}  // namespace

at::Tensor position_bias_mlp_forward(const at::Tensor& coords, const at::Tensor& w1, const at::Tensor& b1,
                                     const at::Tensor& w2, const at::Tensor& b2) {
  check_mlp(coords, w1, b1, w2);
  MMTN_CHECK_CONTIGUOUS(b2);
  TORCH_CHECK(b2.dim() == 1 && b2.size(0) == w2.size(0) && b2.scalar_type() == coords.scalar_type() && b2.is_cpu(),
              "fc2 bias must be (", w2.size(0), ") like its weight, got ", b2.sizes());
  at::Tensor out = at::empty({w2.size(0), coords.size(0)}, coords.options());
  position_bias_mlp_forward_cpu(coords, w1, b1, w2, b2, out);
  return out;
}

// The output's gradient may come in any layout (the bias is read through a transpose).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> position_bias_mlp_backward(const at::Tensor& grad_in,
                                                                                      const at::Tensor& coords,
                                                                                      const at::Tensor& w1,
                                                                                      const at::Tensor& b1,
                                                                                      const at::Tensor& w2) {
  check_mlp(coords, w1, b1, w2);
  const at::Tensor grad = grad_in.contiguous();
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == w2.size(0) && grad.size(1) == coords.size(0) &&
                  grad.scalar_type() == coords.scalar_type(),
              "grad must be (heads, T) = (", w2.size(0), ", ", coords.size(0), "), got ", grad.sizes());
  at::Tensor grad_w1 = at::empty_like(w1), grad_b1 = at::empty_like(b1), grad_w2 = at::empty_like(w2);
  at::Tensor grad_b2 = at::empty({w2.size(0)}, w2.options());
  position_bias_mlp_backward_cpu(grad, coords, w1, b1, w2, grad_w1, grad_b1, grad_w2, grad_b2);
  return {grad_w1, grad_b1, grad_w2, grad_b2};
}

MMTN_LIBRARY_FRAGMENT(m) {
  set_fake_kernels_module(m);
  m.def("position_bias_mlp(Tensor coords, Tensor w1, Tensor b1, Tensor w2, Tensor b2) -> Tensor");
  m.def(
      "position_bias_mlp_backward(Tensor grad, Tensor coords, Tensor w1, Tensor b1, Tensor w2) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
}

MMTN_LIBRARY_IMPL(CPU, m) {
  m.impl("position_bias_mlp", &position_bias_mlp_forward);
  m.impl("position_bias_mlp_backward", &position_bias_mlp_backward);
}

}  // namespace mmtransnext
