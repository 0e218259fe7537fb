// The Python functions of the extension module: each op's checked entry points, bound by pybind11. Only the
// modules' bindings include this (pybind.cpp, the CUDA emulation's module): pybind11 with torch's Tensor casters
// is about 6 s of each translation unit's compile, which the dispatchers and kernels no longer pay.
#pragma once
#include <torch/csrc/utils/pybind.h>

#include "gelu_gate.h"
#include "local_attention.h"
#include "pooled_attention.h"
#include "position_bias_mlp.h"

namespace mmtransnext {

inline void bind_local_attention(py::module_& m) {
  m.def("local_similarity_forward", &local_similarity_forward,
        "query-key similarity over each pixel's window plus a per-neighbour bias (-inf outside the map)",
        py::arg("query"), py::arg("key"), py::arg("bias"), py::arg("height"), py::arg("width"), py::arg("window_size"));
  m.def("local_similarity_backward", &local_similarity_backward, "gradients of local_similarity_forward",
        py::arg("grad"), py::arg("query"), py::arg("key"), py::arg("height"), py::arg("width"), py::arg("window_size"));
  m.def("local_aggregation_forward", &local_aggregation_forward,
        "weighted sum of each pixel's window of values (zero outside the map)", py::arg("weights"), py::arg("value"),
        py::arg("height"), py::arg("width"), py::arg("window_size"));
  m.def("local_aggregation_backward", &local_aggregation_backward, "gradients of local_aggregation_forward",
        py::arg("grad"), py::arg("weights"), py::arg("value"), py::arg("height"), py::arg("width"),
        py::arg("window_size"));
}

inline void bind_pooled_attention(py::module_& m) {
  m.def("pooled_attention_forward", &pooled_attention_forward,
        "attention over pooled keys (position bias read from per-row tables) merged with the local logits under "
        "one softmax -> (out, local_weights, lse), without materialising the (N, P) logits; the kernel of "
        "torch.ops.mmtransnext.pooled_attention",
        py::arg("query"), py::arg("key"), py::arg("value"), py::arg("bias_rows"), py::arg("cols_index"),
        py::arg("cols_weight"), py::arg("local_logits"), py::arg("height"), py::arg("width"));
  m.def("pooled_attention_backward", &pooled_attention_backward,
        "gradients of pooled_attention_forward (query, key, value, bias_rows, local_logits), logits recomputed",
        py::arg("grad_out"), py::arg("grad_local_weights"), py::arg("grad_lse"), py::arg("query"), py::arg("key"),
        py::arg("value"), py::arg("bias_rows"), py::arg("cols_index"), py::arg("cols_weight"), py::arg("out"),
        py::arg("local_weights"), py::arg("lse"), py::arg("height"), py::arg("width"));
}

inline void bind_position_bias_mlp(py::module_& m) {
  m.def("position_bias_mlp_forward", &position_bias_mlp_forward,
        "fc2(relu(fc1(coords))) -> (heads, T) without materialising the hidden layer (CPU)", py::arg("coords"),
        py::arg("w1"), py::arg("b1"), py::arg("w2"), py::arg("b2"));
  m.def("position_bias_mlp_backward", &position_bias_mlp_backward,
        "weight gradients of position_bias_mlp_forward (w1, b1, w2, b2)", py::arg("grad"), py::arg("coords"),
        py::arg("w1"), py::arg("b1"), py::arg("w2"));
}

inline void bind_gelu_gate(py::module_& m) {
  m.def("gelu_gate_forward", &gelu_gate_forward, "gelu(gate) * value in one pass (exact GELU; CPU)", py::arg("gate"),
        py::arg("value"));
  m.def("gelu_gate_backward", &gelu_gate_backward, "gradients of gelu_gate_forward (gate, value), GELU recomputed",
        py::arg("grad"), py::arg("gate"), py::arg("value"));
}

}  // namespace mmtransnext
