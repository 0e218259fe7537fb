// Checks arguments and allocates outputs of the fused GELU gate; registers the op (mmtransnext::gelu_gate, _backward).
#include "gelu_gate.h"

#include "../common/pytorch_cpp_helper.h"

namespace mmtransnext {
namespace {

void check_gate(const at::Tensor& gate, const at::Tensor& other, const char* what) {
  MMTN_CHECK_CONTIGUOUS(other);
  TORCH_CHECK(other.is_cpu(), "gelu_gate has CPU kernels only; got ", what, " on ", other.device());
  TORCH_CHECK(other.scalar_type() == gate.scalar_type() && other.sizes() == gate.sizes(), what,
              " must match the gate (", gate.sizes(), ", ", gate.scalar_type(), "), got ", other.sizes(), ", ",
              other.scalar_type());
}

}  // namespace

at::Tensor gelu_gate_forward(const at::Tensor& gate, const at::Tensor& value) {
  check_gate(gate, gate, "gate");
  check_gate(gate, value, "value");
  TORCH_CHECK(gate.scalar_type() == at::kFloat || gate.scalar_type() == at::kDouble,
              "gelu_gate takes float32 or float64, got ", gate.scalar_type());
  at::Tensor out = at::empty_like(gate);
  gelu_gate_forward_cpu(gate, value, out);
  return out;
}

// The output's gradient may come in any layout.
std::tuple<at::Tensor, at::Tensor> gelu_gate_backward(const at::Tensor& grad_in, const at::Tensor& gate,
                                                      const at::Tensor& value) {
  check_gate(gate, value, "value");
  const at::Tensor grad = grad_in.contiguous();
  check_gate(gate, grad, "grad");
  at::Tensor grad_gate = at::empty_like(gate), grad_value = at::empty_like(value);
  gelu_gate_backward_cpu(grad, gate, value, grad_gate, grad_value);
  return {grad_gate, grad_value};
}

MMTN_LIBRARY_FRAGMENT(m) {
  set_fake_kernels_module(m);
  m.def("gelu_gate(Tensor gate, Tensor value) -> Tensor");
  m.def("gelu_gate_backward(Tensor grad, Tensor gate, Tensor value) -> (Tensor, Tensor)");
}

MMTN_LIBRARY_IMPL(CPU, m) {
  m.impl("gelu_gate", &gelu_gate_forward);
  m.impl("gelu_gate_backward", &gelu_gate_backward);
}

}  // namespace mmtransnext
