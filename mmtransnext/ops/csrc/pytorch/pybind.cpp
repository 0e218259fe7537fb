// The one Python binding of mmtransnext._ext: each op binds its own functions.
#include <torch/extension.h>

namespace mmtransnext {
void bind_local_attention(py::module& m);
void bind_pooled_attention(py::module& m);
void bind_position_bias_mlp(py::module& m);
void bind_gelu_gate(py::module& m);
}  // namespace mmtransnext

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  mmtransnext::bind_local_attention(m);
  mmtransnext::bind_pooled_attention(m);
  mmtransnext::bind_position_bias_mlp(m);
  mmtransnext::bind_gelu_gate(m);
#ifdef WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
