// Launchers of the pooled-attention CUDA kernels (float32, float64; the Python face casts reduced
// precision to float32, so that the softmax is computed in float32 under autocast too).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "../../common/cuda/pooled_attention_cuda_kernel.cuh"
#include "../pooled_attention.h"

namespace mmtransnext {
namespace {

constexpr int kQueryThreads = 128;     // queries per block (forward, query side)
constexpr int kKeyThreads = 64;        // pooled keys per block (key side)
constexpr int64_t kQueryChunk = 1024;  // queries per key-side block: one atomic add per key and chunk
constexpr int kBiasThreads = 256;

template <typename T>
PooledArgs<T> args_of(const PooledAttentionTensors& t, int64_t L, const PooledGrid& grid) {
  return {t.query.data_ptr<T>(),
          t.key.data_ptr<T>(),
          t.value.data_ptr<T>(),
          t.bias_rows.data_ptr<T>(),
          t.cols_weight.data_ptr<T>(),
          t.cols_index.data_ptr<int64_t>(),
          t.query.size(0),
          t.query.size(1),
          t.query.size(2),
          t.key.size(2),
          t.query.size(3),
          t.value.size(3),
          L,
          grid.height,
          grid.width,
          grid.pool_height,
          grid.pool_width,
          t.bias_rows.size(3),
          t.cols_index.size(0)};
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

void pooled_attention_forward_cuda(const PooledAttentionTensors& t, const PooledGrid& grid) {
  const c10::cuda::CUDAGuard guard(t.query.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t N = t.query.size(2), BH = t.query.size(0) * t.query.size(1);
  const dim3 blocks((N + kQueryThreads - 1) / kQueryThreads, BH);
  AT_DISPATCH_FLOATING_TYPES(t.query.scalar_type(), "pooled_attention_forward_cuda", [&] {
    const auto a = args_of<scalar_t>(t, t.local_logits.size(3), grid);
    with_max_dim(std::max(t.query.size(3), t.value.size(3)), [&](auto max_dim) {
      MMTN_LAUNCH(blocks, kQueryThreads, 0, stream,
                  pooled_attention_forward_kernel<scalar_t, decltype(max_dim)::value>)(
          a, t.local_logits.data_ptr<scalar_t>(), t.out.data_ptr<scalar_t>(), t.local_weights.data_ptr<scalar_t>(),
          t.lse.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void pooled_attention_backward_cuda(const PooledAttentionTensors& t, const PooledAttentionGrads& grad,
                                    const PooledGrid& grid) {
  const c10::cuda::CUDAGuard guard(t.query.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t N = t.query.size(2), P = t.key.size(2), BH = t.query.size(0) * t.query.size(1);
  at::Tensor shift = at::empty_like(t.lse);
  grad.key.zero_();
  grad.value.zero_();
  grad.bias_rows.zero_();
  AT_DISPATCH_FLOATING_TYPES(t.query.scalar_type(), "pooled_attention_backward_cuda", [&] {
    const auto a = args_of<scalar_t>(t, t.local_weights.size(3), grid);
    with_max_dim(std::max(t.query.size(3), t.value.size(3)), [&](auto max_dim) {
      constexpr int MAXD = decltype(max_dim)::value;
      const dim3 query_blocks((N + kQueryThreads - 1) / kQueryThreads, BH);
      MMTN_LAUNCH(query_blocks, kQueryThreads, 0, stream, pooled_attention_backward_query_kernel<scalar_t, MAXD>)(
          a, grad.out.data_ptr<scalar_t>(), grad.local_weights.data_ptr<scalar_t>(), grad.lse.data_ptr<scalar_t>(),
          t.out.data_ptr<scalar_t>(), t.local_weights.data_ptr<scalar_t>(), t.lse.data_ptr<scalar_t>(),
          grad.query.data_ptr<scalar_t>(), grad.local_logits.data_ptr<scalar_t>(), shift.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      const dim3 key_blocks((P + kKeyThreads - 1) / kKeyThreads, (N + kQueryChunk - 1) / kQueryChunk, BH);
      MMTN_LAUNCH(key_blocks, kKeyThreads, 0, stream, pooled_attention_backward_key_kernel<scalar_t, MAXD>)(
          a, grad.out.data_ptr<scalar_t>(), t.lse.data_ptr<scalar_t>(), shift.data_ptr<scalar_t>(), kQueryChunk,
          grad.key.data_ptr<scalar_t>(), grad.value.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      const int64_t bins_bytes = t.bias_rows.size(3) * static_cast<int64_t>(sizeof(scalar_t));
      const bool in_shared = bins_bytes <= 32 * 1024;
      MMTN_LAUNCH(t.bias_rows.size(0) * grid.height * grid.pool_height, kBiasThreads, in_shared ? bins_bytes : 0,
                  stream, pooled_attention_backward_bias_kernel<scalar_t, MAXD>)(
          a, grad.out.data_ptr<scalar_t>(), t.lse.data_ptr<scalar_t>(), shift.data_ptr<scalar_t>(),
          grad.bias_rows.data_ptr<scalar_t>(), in_shared);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace mmtransnext
