// The one Python binding of mmtransnext._ext.
#include <torch/extension.h>

#include <vector>

namespace mmtransnext {
at::Tensor local_similarity_forward(const at::Tensor& query, const at::Tensor& key, const at::Tensor& bias,
                                    int64_t height, int64_t width, int64_t window_size);
std::vector<at::Tensor> local_similarity_backward(const at::Tensor& grad_attn, const at::Tensor& query,
                                                  const at::Tensor& key, int64_t height, int64_t width,
                                                  int64_t window_size);
at::Tensor local_aggregation_forward(const at::Tensor& weights, const at::Tensor& value, int64_t height,
                                     int64_t width, int64_t window_size);
std::vector<at::Tensor> local_aggregation_backward(const at::Tensor& grad_out, const at::Tensor& weights,
                                                   const at::Tensor& value, int64_t height, int64_t width,
                                                   int64_t window_size);
at::Tensor position_bias_mlp_forward(const at::Tensor& coords, const at::Tensor& w1, const at::Tensor& b1,
                                     const at::Tensor& w2, const at::Tensor& b2);
std::vector<at::Tensor> position_bias_mlp_backward(const at::Tensor& grad, const at::Tensor& coords,
                                                   const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2);
std::vector<at::Tensor> pooled_attention_forward(const at::Tensor& query, const at::Tensor& key,
                                                 const at::Tensor& value, const at::Tensor& bias_rows,
                                                 const at::Tensor& cols_index, const at::Tensor& cols_weight,
                                                 const at::Tensor& local_logits, int64_t height, int64_t width);
std::vector<at::Tensor> pooled_attention_backward(const at::Tensor& grad_out, const at::Tensor& grad_local_weights,
                                                  const at::Tensor& grad_lse, const at::Tensor& query,
                                                  const at::Tensor& key, const at::Tensor& value,
                                                  const at::Tensor& bias_rows, const at::Tensor& cols_index,
                                                  const at::Tensor& cols_weight, const at::Tensor& out,
                                                  const at::Tensor& local_weights, const at::Tensor& lse,
                                                  int64_t height, int64_t width);
at::Tensor gelu_gate_forward(const at::Tensor& gate, const at::Tensor& value);
std::vector<at::Tensor> gelu_gate_backward(const at::Tensor& grad, const at::Tensor& gate, const at::Tensor& value);
}  // namespace mmtransnext

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace mmtransnext;
  m.def("local_similarity_forward", &local_similarity_forward,
        "query-key similarity over each pixel's window plus a per-neighbour bias (-inf outside the map)",
        py::arg("query"), py::arg("key"), py::arg("bias"), py::arg("height"), py::arg("width"),
        py::arg("window_size"));
  m.def("local_similarity_backward", &local_similarity_backward, "gradients of local_similarity_forward",
        py::arg("grad_attn"), py::arg("query"), py::arg("key"), py::arg("height"), py::arg("width"),
        py::arg("window_size"));
  m.def("local_aggregation_forward", &local_aggregation_forward,
        "weighted sum of each pixel's window of values (zero outside the map)", py::arg("weights"),
        py::arg("value"), py::arg("height"), py::arg("width"), py::arg("window_size"));
  m.def("local_aggregation_backward", &local_aggregation_backward, "gradients of local_aggregation_forward",
        py::arg("grad_out"), py::arg("weights"), py::arg("value"), py::arg("height"), py::arg("width"),
        py::arg("window_size"));
  m.def("position_bias_mlp_forward", &position_bias_mlp_forward,
        "fc2(relu(fc1(coords))) -> (heads, T) without materialising the hidden layer (CPU)", py::arg("coords"),
        py::arg("w1"), py::arg("b1"), py::arg("w2"), py::arg("b2"));
  m.def("position_bias_mlp_backward", &position_bias_mlp_backward,
        "weight gradients of position_bias_mlp_forward (w1, b1, w2, b2)", py::arg("grad"), py::arg("coords"),
        py::arg("w1"), py::arg("b1"), py::arg("w2"));
  m.def("pooled_attention_forward", &pooled_attention_forward,
        "attention over pooled keys (position bias read from per-row tables) merged with the local logits under "
        "one softmax -> (out, local_weights, lse), without materialising the (N, P) logits",
        py::arg("query"), py::arg("key"), py::arg("value"), py::arg("bias_rows"), py::arg("cols_index"),
        py::arg("cols_weight"), py::arg("local_logits"), py::arg("height"), py::arg("width"));
  m.def("pooled_attention_backward", &pooled_attention_backward,
        "gradients of pooled_attention_forward (query, key, value, bias_rows, local_logits), logits recomputed",
        py::arg("grad_out"), py::arg("grad_local_weights"), py::arg("grad_lse"), py::arg("query"), py::arg("key"),
        py::arg("value"), py::arg("bias_rows"), py::arg("cols_index"), py::arg("cols_weight"), py::arg("out"),
        py::arg("local_weights"), py::arg("lse"), py::arg("height"), py::arg("width"));
  m.def("gelu_gate_forward", &gelu_gate_forward, "gelu(gate) * value in one pass (exact GELU; CPU)",
        py::arg("gate"), py::arg("value"));
  m.def("gelu_gate_backward", &gelu_gate_backward, "gradients of gelu_gate_forward (gate, value), GELU recomputed",
        py::arg("grad"), py::arg("gate"), py::arg("value"));
#ifdef WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
