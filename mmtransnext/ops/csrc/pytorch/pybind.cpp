// The one Python binding of mmtransnext._ext: each op binds its own functions.
#include <torch/csrc/utils/pybind.h>  // pybind11 and torch's Tensor casters; torch/extension.h adds torch's C++ frontend

#include "gelu_gate.h"
#include "local_attention.h"
#include "pooled_attention.h"
#include "position_bias_mlp.h"

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
