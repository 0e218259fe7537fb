// The Python module mmtransnext._ext: each op's functions (python_bindings.h).
#include "python_bindings.h"

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
