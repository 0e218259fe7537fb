// Checks arguments, allocates outputs and dispatches pooled attention to the CPU or CUDA implementation; registers
// the op (mmtransnext::pooled_attention, _backward).
#include "pooled_attention.h"

#include "../common/pytorch_cpp_helper.h"

namespace mmtransnext {
namespace {

void check_like(const at::Tensor& ref, const at::Tensor& t, const char* what) {
  MMTN_CHECK_CONTIGUOUS(t);
  TORCH_CHECK(t.device() == ref.device(), what, " must be on ", ref.device(), ", got ", t.device());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), what, " must be ", ref.scalar_type(), ", got ", t.scalar_type());
}

void check_shape(const at::Tensor& t, at::IntArrayRef expected, const char* what) {
  TORCH_CHECK(t.sizes() == expected, what, " must have shape ", expected, ", got ", t.sizes());
}

// Validates every input against the query's (B, heads, N, D) and returns the grid.
PooledGrid check_inputs(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                        const at::Tensor& bias_rows, const at::Tensor& cols_index, const at::Tensor& cols_weight,
                        const at::Tensor& local, int64_t height, int64_t width) {
  MMTN_CHECK_DIM(query, 4);
  MMTN_CHECK_CONTIGUOUS(query);
  TORCH_CHECK(query.scalar_type() == at::kFloat || query.scalar_type() == at::kDouble,
              "pooled_attention takes float32 or float64 (the softmax is computed in the inputs' type), got ",
              query.scalar_type());
  TORCH_CHECK(height > 0 && width > 0 && query.size(2) == height * width, "query must hold H * W = ", height, " x ",
              width, " positions, got ", query.size(2));
  const int64_t B = query.size(0), heads = query.size(1), N = query.size(2), D = query.size(3);
  check_like(query, key, "key");
  MMTN_CHECK_DIM(key, 4);
  TORCH_CHECK(key.size(0) == B && key.size(1) == heads && key.size(3) == D && key.size(2) > 0,
              "key must be (B, heads, P, D) with P > 0 and the query's B, heads, D, got ", key.sizes());
  const int64_t P = key.size(2);
  check_like(query, value, "value");
  MMTN_CHECK_DIM(value, 4);
  TORCH_CHECK(value.size(0) == B && value.size(1) == heads && value.size(2) == P,
              "value must be (B, heads, P, Dv) with the key's B, heads, P, got ", value.sizes());
  check_like(query, local, "local_logits");
  MMTN_CHECK_DIM(local, 4);
  TORCH_CHECK(local.size(0) == B && local.size(1) == heads && local.size(2) == N,
              "local logits must be (B, heads, N, L), got ", local.sizes());
  check_like(query, bias_rows, "bias_rows");
  MMTN_CHECK_DIM(bias_rows, 4);
  TORCH_CHECK(bias_rows.size(0) == heads && bias_rows.size(1) == height && bias_rows.size(3) > 0,
              "bias_rows must be (heads, H, ph, U) = (", heads, ", ", height, ", ph, U), got ", bias_rows.sizes());
  const int64_t ph = bias_rows.size(2);
  TORCH_CHECK(ph > 0 && P % ph == 0, "bias_rows' ph = ", ph, " does not divide the ", P, " pooled keys");
  const int64_t pw = P / ph;
  MMTN_CHECK_CONTIGUOUS(cols_index);
  TORCH_CHECK(cols_index.device() == query.device() && cols_index.scalar_type() == at::kLong,
              "cols_index must be int64 on ", query.device());
  MMTN_CHECK_DIM(cols_index, 3);
  TORCH_CHECK(cols_index.size(0) > 0 && cols_index.size(1) == width && cols_index.size(2) == pw,
              "cols_index must be (taps, W, pw) = (taps, ", width, ", ", pw, "), got ", cols_index.sizes());
  check_like(query, cols_weight, "cols_weight");
  check_shape(cols_weight, cols_index.sizes(), "cols_weight");
  return PooledGrid{height, width, ph, pw};
}

// The kernels compute in float32 (float64 for float64 bias rows); query, key and value may come in their own types
// (half / bfloat16 under autocast) and are cast here, inside the op, so that autograd keeps the reduced copies.
at::ScalarType kernel_dtype(const at::Tensor& bias_rows) {
  return bias_rows.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace

PooledOutputs pooled_attention_forward(const at::Tensor& query_in, const at::Tensor& key_in, const at::Tensor& value_in,
                                       const at::Tensor& bias_rows, const at::Tensor& cols_index,
                                       const at::Tensor& cols_weight, const at::Tensor& local_logits, int64_t height,
                                       int64_t width) {
  const at::ScalarType dtype = kernel_dtype(bias_rows);
  const at::Tensor query = query_in.to(dtype), key = key_in.to(dtype), value = value_in.to(dtype);
  const PooledGrid grid =
      check_inputs(query, key, value, bias_rows, cols_index, cols_weight, local_logits, height, width);
  const int64_t B = query.size(0), heads = query.size(1), N = query.size(2);
  const PooledAttentionTensors t{query,
                                 key,
                                 value,
                                 bias_rows,
                                 cols_index,
                                 cols_weight,
                                 local_logits,
                                 at::empty({B, heads, N, value.size(3)}, query.options()),
                                 at::empty_like(local_logits),
                                 at::empty({B, heads, N}, query.options())};
  if (t.lse.numel() > 0) {
    if (on_cuda(query)) {
#ifdef WITH_CUDA
      pooled_attention_forward_cuda(t, grid);
#endif
    } else {
      pooled_attention_forward_cpu(t, grid);
    }
  }
  return {t.out, t.local_weights, t.lse};
}

// The gradients of query, key and value come back in those inputs' types.
PooledInputGrads pooled_attention_backward(const at::Tensor& grad_out, const at::Tensor& grad_local_weights,
                                           const at::Tensor& grad_lse, const at::Tensor& query_in,
                                           const at::Tensor& key_in, const at::Tensor& value_in,
                                           const at::Tensor& bias_rows, const at::Tensor& cols_index,
                                           const at::Tensor& cols_weight, const at::Tensor& out,
                                           const at::Tensor& local_weights, const at::Tensor& lse, int64_t height,
                                           int64_t width) {
  const at::ScalarType dtype = kernel_dtype(bias_rows);
  const at::Tensor query = query_in.to(dtype), key = key_in.to(dtype), value = value_in.to(dtype);
  const PooledGrid grid =
      check_inputs(query, key, value, bias_rows, cols_index, cols_weight, local_weights, height, width);
  check_like(out, grad_out, "grad_out");
  check_shape(grad_out, out.sizes(), "grad_out");
  check_like(local_weights, grad_local_weights, "grad_local_weights");
  check_shape(grad_local_weights, local_weights.sizes(), "grad_local_weights");
  check_like(lse, grad_lse, "grad_lse");
  check_shape(grad_lse, lse.sizes(), "grad_lse");
  const PooledAttentionTensors t{query,       key,          value, bias_rows,     cols_index,
                                 cols_weight, at::Tensor(), out,   local_weights, lse};
  const PooledAttentionGrads grad{grad_out,
                                  grad_local_weights,
                                  grad_lse,
                                  at::empty_like(query),
                                  at::zeros_like(key),
                                  at::zeros_like(value),
                                  at::zeros_like(bias_rows),
                                  at::empty_like(local_weights)};
  if (lse.numel() > 0) {
    if (on_cuda(query)) {
#ifdef WITH_CUDA
      pooled_attention_backward_cuda(t, grad, grid);
#endif
    } else {
      pooled_attention_backward_cpu(t, grad, grid);
    }
  }
  return {grad.query.to(query_in.scalar_type()), grad.key.to(key_in.scalar_type()),
          grad.value.to(value_in.scalar_type()), grad.bias_rows, grad.local_logits};
}

MMTN_LIBRARY_FRAGMENT(m) {
  set_fake_kernels_module(m);
  m.def(
      "pooled_attention(Tensor query, Tensor key, Tensor value, Tensor bias_rows, Tensor cols_index, "
      "Tensor cols_weight, Tensor local_logits, SymInt height, SymInt width) -> (Tensor, Tensor, Tensor)");
  m.def(
      "pooled_attention_backward(Tensor grad_out, Tensor grad_local_weights, Tensor grad_lse, Tensor query, "
      "Tensor key, Tensor value, Tensor bias_rows, Tensor cols_index, Tensor cols_weight, Tensor out, "
      "Tensor local_weights, Tensor lse, SymInt height, SymInt width) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

// One function per op for both devices: it checks the arguments and calls the device's implementation.
MMTN_LIBRARY_IMPL(CPU, m) {
  m.impl("pooled_attention", &pooled_attention_forward);
  m.impl("pooled_attention_backward", &pooled_attention_backward);
}

#ifdef WITH_CUDA
MMTN_LIBRARY_IMPL(CUDA, m) {
  m.impl("pooled_attention", &pooled_attention_forward);
  m.impl("pooled_attention_backward", &pooled_attention_backward);
}
#endif

}  // namespace mmtransnext
