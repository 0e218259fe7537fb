// Checks arguments, allocates outputs and dispatches to the CPU or CUDA implementation; registers the ops
// (mmtransnext::local_similarity, local_aggregation and their _backward).
#include "local_attention.h"

#include "../common/pytorch_cpp_helper.h"

namespace mmtransnext {
namespace {

LocalWindow check_pixels(const at::Tensor& pixels, int64_t height, int64_t width, int64_t window_size) {
  MMTN_CHECK_DIM(pixels, 4);
  MMTN_CHECK_CONTIGUOUS(pixels);
  TORCH_CHECK(height > 0 && width > 0, "feature map must not be empty, got ", height, "x", width);
  TORCH_CHECK(window_size > 0 && window_size % 2 == 1, "window_size must be a positive odd number, got ", window_size);
  TORCH_CHECK(pixels.size(2) == height * width, "expected H * W = ", height * width, " pixels, got ", pixels.size(2));
  return LocalWindow{height, width, window_size};
}

void check_same(const at::Tensor& a, const at::Tensor& b, const char* what) {
  MMTN_CHECK_CONTIGUOUS(b);
  TORCH_CHECK(a.device() == b.device(), what, " must be on ", a.device(), ", got ", b.device());
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), what, " must be ", a.scalar_type(), ", got ", b.scalar_type());
}

void check_weights(const at::Tensor& weights, const at::Tensor& pixels, const LocalWindow& window, const char* what) {
  check_same(pixels, weights, what);
  TORCH_CHECK(weights.dim() == 4 && weights.size(0) == pixels.size(0) && weights.size(1) == pixels.size(1) &&
                  weights.size(2) == pixels.size(2) && weights.size(3) == window.length(),
              what, " must be (B, heads, N, window_size**2) = (", pixels.size(0), ", ", pixels.size(1), ", ",
              pixels.size(2), ", ", window.length(), "), got ", weights.sizes());
}

}  // namespace

at::Tensor local_similarity_forward(const at::Tensor& query, const at::Tensor& key, const at::Tensor& bias,
                                    int64_t height, int64_t width, int64_t window_size) {
  const LocalWindow window = check_pixels(query, height, width, window_size);
  check_same(query, key, "key");
  TORCH_CHECK(key.sizes() == query.sizes(), "key must have the query's shape ", query.sizes(), ", got ", key.sizes());
  check_same(query, bias, "bias");
  TORCH_CHECK(bias.dim() == 2 && bias.size(0) == query.size(1) && bias.size(1) == window.length(),
              "bias must be (heads, window_size**2) = (", query.size(1), ", ", window.length(), "), got ",
              bias.sizes());
  at::Tensor attn = at::empty({query.size(0), query.size(1), query.size(2), window.length()}, query.options());
  if (on_cuda(query)) {
#ifdef WITH_CUDA
    local_similarity_forward_cuda(query, key, bias, attn, window);
#endif
  } else {
    local_similarity_forward_cpu(query, key, bias, attn, window);
  }
  return attn;
}

// Backward takes the output's gradient in any layout (autograd may hand over a transposed or expanded one).
std::tuple<at::Tensor, at::Tensor, at::Tensor> local_similarity_backward(const at::Tensor& grad,
                                                                         const at::Tensor& query, const at::Tensor& key,
                                                                         int64_t height, int64_t width,
                                                                         int64_t window_size) {
  const LocalWindow window = check_pixels(query, height, width, window_size);
  check_same(query, key, "key");
  const at::Tensor grad_attn = grad.contiguous();
  check_weights(grad_attn, query, window, "grad_attn");
  at::Tensor grad_query = at::empty_like(query), grad_key = at::empty_like(key);
  at::Tensor grad_bias = at::empty({query.size(1), window.length()}, query.options());
  if (on_cuda(query)) {
#ifdef WITH_CUDA
    local_similarity_backward_cuda(grad_attn, query, key, grad_query, grad_key, grad_bias, window);
#endif
  } else {
    local_similarity_backward_cpu(grad_attn, query, key, grad_query, grad_key, grad_bias, window);
  }
  return {grad_query, grad_key, grad_bias};
}

at::Tensor local_aggregation_forward(const at::Tensor& weights, const at::Tensor& value, int64_t height, int64_t width,
                                     int64_t window_size) {
  const LocalWindow window = check_pixels(value, height, width, window_size);
  check_weights(weights, value, window, "weights");
  at::Tensor out = at::empty_like(value);
  if (on_cuda(value)) {
#ifdef WITH_CUDA
    local_aggregation_forward_cuda(weights, value, out, window);
#endif
  } else {
    local_aggregation_forward_cpu(weights, value, out, window);
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor> local_aggregation_backward(const at::Tensor& grad, const at::Tensor& weights,
                                                              const at::Tensor& value, int64_t height, int64_t width,
                                                              int64_t window_size) {
  const LocalWindow window = check_pixels(value, height, width, window_size);
  check_weights(weights, value, window, "weights");
  const at::Tensor grad_out = grad.contiguous();
  check_same(value, grad_out, "grad_out");
  at::Tensor grad_weights = at::empty_like(weights), grad_value = at::empty_like(value);
  if (on_cuda(value)) {
#ifdef WITH_CUDA
    local_aggregation_backward_cuda(grad_out, weights, value, grad_weights, grad_value, window);
#endif
  } else {
    local_aggregation_backward_cpu(grad_out, weights, value, grad_weights, grad_value, window);
  }
  return {grad_weights, grad_value};
}

MMTN_LIBRARY_FRAGMENT(m) {
  set_fake_kernels_module(m);
  m.def(
      "local_similarity(Tensor query, Tensor key, Tensor bias, SymInt height, SymInt width, SymInt window_size) "
      "-> Tensor");
  m.def(
      "local_similarity_backward(Tensor grad, Tensor query, Tensor key, SymInt height, SymInt width, "
      "SymInt window_size) -> (Tensor, Tensor, Tensor)");
  m.def("local_aggregation(Tensor weights, Tensor value, SymInt height, SymInt width, SymInt window_size) -> Tensor");
  m.def(
      "local_aggregation_backward(Tensor grad, Tensor weights, Tensor value, SymInt height, SymInt width, "
      "SymInt window_size) -> (Tensor, Tensor)");
}

// One function per op for both devices: it checks the arguments and calls the device's implementation.
MMTN_LIBRARY_IMPL(CPU, m) {
  m.impl("local_similarity", &local_similarity_forward);
  m.impl("local_similarity_backward", &local_similarity_backward);
  m.impl("local_aggregation", &local_aggregation_forward);
  m.impl("local_aggregation_backward", &local_aggregation_backward);
}

#ifdef WITH_CUDA
MMTN_LIBRARY_IMPL(CUDA, m) {
  m.impl("local_similarity", &local_similarity_forward);
  m.impl("local_similarity_backward", &local_similarity_backward);
  m.impl("local_aggregation", &local_aggregation_forward);
  m.impl("local_aggregation_backward", &local_aggregation_backward);
}
#endif

}  // namespace mmtransnext
