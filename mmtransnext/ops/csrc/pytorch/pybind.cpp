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
#ifdef WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
