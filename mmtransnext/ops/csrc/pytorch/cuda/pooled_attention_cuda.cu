// Launchers of the pooled-attention CUDA kernels (float32, float64; the Python face casts reduced
// precision to float32, so that the softmax is computed in float32 under autocast too).
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "../../common/cuda/pooled_attention_cuda_kernel.cuh"
#include "../pooled_attention.h"

namespace mmtransnext {
namespace {

constexpr int kQueryThreads = 128;  // queries per block (forward, query side)
constexpr int kKeyThreads = 64;     // pooled keys per block (key side)
constexpr int64_t kQueryChunk = 1024;  // queries per key-side block: one atomic add per key and chunk
constexpr int kBiasThreads = 256;

template <typename T>
PooledArgs<T> args_of(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                      const at::Tensor& bias_rows, const at::Tensor& cols_index, const at::Tensor& cols_weight,
                      int64_t L, const PooledGrid& grid) {
  return {query.data_ptr<T>(), key.data_ptr<T>(), value.data_ptr<T>(), bias_rows.data_ptr<T>(),
          cols_weight.data_ptr<T>(), cols_index.data_ptr<int64_t>(), query.size(0), query.size(1), query.size(2),
          key.size(2), query.size(3), value.size(3), L, grid.height, grid.width, grid.pool_height, grid.pool_width,
          bias_rows.size(3), cols_index.size(0)};
}

// Calls f.template operator()<MAXD>() with the smallest register width that holds the head dims.
template <typename F>
void with_max_dim(int64_t dim, F&& f) {
  TORCH_CHECK(dim <= 128, "pooled_attention on CUDA supports head dims up to 128, got ", dim);
  if (dim <= 32) {
    f(std::integral_constant<int, 32>());
  } else if (dim <= 64) {
    f(std::integral_constant<int, 64>());
  } else {
    f(std::integral_constant<int, 128>());
  }
}

}  // namespace

void pooled_attention_forward_cuda(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                                   const at::Tensor& bias_rows, const at::Tensor& cols_index,
                                   const at::Tensor& cols_weight, const at::Tensor& local_logits, at::Tensor& out,
                                   at::Tensor& local_weights, at::Tensor& lse, const PooledGrid& grid) {
  const c10::cuda::CUDAGuard guard(query.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t N = query.size(2), BH = query.size(0) * query.size(1);
  const dim3 blocks((N + kQueryThreads - 1) / kQueryThreads, BH);
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "pooled_attention_forward_cuda", [&] {
    const auto a = args_of<scalar_t>(query, key, value, bias_rows, cols_index, cols_weight, local_logits.size(3), grid);
    with_max_dim(std::max(query.size(3), value.size(3)), [&](auto max_dim) {
      pooled_attention_forward_kernel<scalar_t, decltype(max_dim)::value><<<blocks, kQueryThreads, 0, stream>>>(
          a, local_logits.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), local_weights.data_ptr<scalar_t>(),
          lse.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void pooled_attention_backward_cuda(const at::Tensor& grad_out, const at::Tensor& grad_local_weights,
                                    const at::Tensor& grad_lse, const at::Tensor& query, const at::Tensor& key,
                                    const at::Tensor& value, const at::Tensor& bias_rows,
                                    const at::Tensor& cols_index, const at::Tensor& cols_weight,
                                    const at::Tensor& out, const at::Tensor& local_weights, const at::Tensor& lse,
                                    at::Tensor& grad_query, at::Tensor& grad_key, at::Tensor& grad_value,
                                    at::Tensor& grad_bias_rows, at::Tensor& grad_local_logits,
                                    const PooledGrid& grid) {
  const c10::cuda::CUDAGuard guard(query.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t N = query.size(2), P = key.size(2), BH = query.size(0) * query.size(1);
  at::Tensor shift = at::empty_like(lse);
  grad_key.zero_();
  grad_value.zero_();
  grad_bias_rows.zero_();
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "pooled_attention_backward_cuda", [&] {
    const auto a = args_of<scalar_t>(query, key, value, bias_rows, cols_index, cols_weight, local_weights.size(3),
                                     grid);
    with_max_dim(std::max(query.size(3), value.size(3)), [&](auto max_dim) {
      constexpr int MAXD = decltype(max_dim)::value;
      const dim3 query_blocks((N + kQueryThreads - 1) / kQueryThreads, BH);
      pooled_attention_backward_query_kernel<scalar_t, MAXD><<<query_blocks, kQueryThreads, 0, stream>>>(
          a, grad_out.data_ptr<scalar_t>(), grad_local_weights.data_ptr<scalar_t>(), grad_lse.data_ptr<scalar_t>(),
          out.data_ptr<scalar_t>(), local_weights.data_ptr<scalar_t>(), lse.data_ptr<scalar_t>(),
          grad_query.data_ptr<scalar_t>(), grad_local_logits.data_ptr<scalar_t>(), shift.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      const dim3 key_blocks((P + kKeyThreads - 1) / kKeyThreads, (N + kQueryChunk - 1) / kQueryChunk, BH);
      pooled_attention_backward_key_kernel<scalar_t, MAXD><<<key_blocks, kKeyThreads, 0, stream>>>(
          a, grad_out.data_ptr<scalar_t>(), lse.data_ptr<scalar_t>(), shift.data_ptr<scalar_t>(), kQueryChunk,
          grad_key.data_ptr<scalar_t>(), grad_value.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      const int64_t bins_bytes = bias_rows.size(3) * static_cast<int64_t>(sizeof(scalar_t));
      const bool in_shared = bins_bytes <= 32 * 1024;
      pooled_attention_backward_bias_kernel<scalar_t, MAXD>
          <<<bias_rows.size(0) * grid.height * grid.pool_height, kBiasThreads, in_shared ? bins_bytes : 0, stream>>>(
              a, grad_out.data_ptr<scalar_t>(), lse.data_ptr<scalar_t>(), shift.data_ptr<scalar_t>(),
              grad_bias_rows.data_ptr<scalar_t>(), in_shared);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace mmtransnext
