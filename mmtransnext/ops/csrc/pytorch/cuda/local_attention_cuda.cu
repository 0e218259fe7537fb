// Launchers of the CUDA kernels (float32, float16, bfloat16, float64).
// c10's stream / guard headers only: ATen/cuda/CUDAContext.h also needs the cuSPARSE / cuBLAS headers,
// which a bare CUDA toolkit (as in CI) does not ship.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "../../common/cuda/local_attention_cuda_kernel.cuh"
#include "../local_attention.h"

namespace mmtransnext {
namespace {

constexpr int kThreads = 256;

// Grid-stride loops: cap the grid, every kernel loops over the rest.
unsigned int blocks_for(int64_t total) {
  return static_cast<unsigned int>(
      std::max<int64_t>(1, std::min<int64_t>((total + kThreads - 1) / kThreads, 65535 * 8)));
}

}  // namespace

#define MMTN_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

void local_similarity_forward_cuda(const at::Tensor& query, const at::Tensor& key, const at::Tensor& bias,
                                   at::Tensor& attn, const LocalWindow& window) {
  const c10::cuda::CUDAGuard guard(query.device());
  const int64_t total = attn.numel();
  if (total == 0) return;
  auto stream = c10::cuda::getCurrentCUDAStream();
  MMTN_DISPATCH(query.scalar_type(), "local_similarity_forward_cuda", [&] {
    MMTN_LAUNCH(blocks_for(total), kThreads, 0, stream, local_similarity_forward_kernel<scalar_t>)(
        query.data_ptr<scalar_t>(), key.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(), attn.data_ptr<scalar_t>(),
        total, query.size(1), query.size(3), window);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void local_similarity_backward_cuda(const at::Tensor& grad_attn, const at::Tensor& query, const at::Tensor& key,
                                    at::Tensor& grad_query, at::Tensor& grad_key, at::Tensor& grad_bias,
                                    const LocalWindow& window) {
  const c10::cuda::CUDAGuard guard(query.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t total = query.numel();
  MMTN_DISPATCH(query.scalar_type(), "local_similarity_backward_cuda", [&] {
    if (total > 0) {
      MMTN_LAUNCH(blocks_for(total), kThreads, 0, stream, local_similarity_backward_qk_kernel<scalar_t>)(
          grad_attn.data_ptr<scalar_t>(), query.data_ptr<scalar_t>(), key.data_ptr<scalar_t>(),
          grad_query.data_ptr<scalar_t>(), grad_key.data_ptr<scalar_t>(), total, query.size(3), window);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    MMTN_LAUNCH(grad_bias.numel(), kThreads, 0, stream, local_similarity_backward_bias_kernel<scalar_t, kThreads>)(
        grad_attn.data_ptr<scalar_t>(), grad_bias.data_ptr<scalar_t>(), query.size(0), query.size(1), window);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void local_aggregation_forward_cuda(const at::Tensor& weights, const at::Tensor& value, at::Tensor& out,
                                    const LocalWindow& window) {
  const c10::cuda::CUDAGuard guard(value.device());
  const int64_t total = out.numel();
  if (total == 0) return;
  auto stream = c10::cuda::getCurrentCUDAStream();
  MMTN_DISPATCH(value.scalar_type(), "local_aggregation_forward_cuda", [&] {
    MMTN_LAUNCH(blocks_for(total), kThreads, 0, stream, local_weighted_sum_kernel<scalar_t, false>)(
        weights.data_ptr<scalar_t>(), value.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), total, value.size(3),
        window);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void local_aggregation_backward_cuda(const at::Tensor& grad_out, const at::Tensor& weights, const at::Tensor& value,
                                     at::Tensor& grad_weights, at::Tensor& grad_value, const LocalWindow& window) {
  const c10::cuda::CUDAGuard guard(value.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  if (value.numel() == 0) return;
  MMTN_DISPATCH(value.scalar_type(), "local_aggregation_backward_cuda", [&] {
    MMTN_LAUNCH(blocks_for(weights.numel()), kThreads, 0, stream, local_aggregation_backward_weights_kernel<scalar_t>)(
        grad_out.data_ptr<scalar_t>(), value.data_ptr<scalar_t>(), grad_weights.data_ptr<scalar_t>(), weights.numel(),
        value.size(3), window);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    // grad_value[m, c] = sum over pixels n having m as neighbour l of weights[n, l] grad_out[n, c]
    MMTN_LAUNCH(blocks_for(value.numel()), kThreads, 0, stream, local_weighted_sum_kernel<scalar_t, true>)(
        weights.data_ptr<scalar_t>(), grad_out.data_ptr<scalar_t>(), grad_value.data_ptr<scalar_t>(), value.numel(),
        value.size(3), window);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace mmtransnext
