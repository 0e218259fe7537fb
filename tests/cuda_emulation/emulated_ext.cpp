// The extension's CUDA path, built for the CPU emulation of the CUDA execution model (cuda_emulation.h): the
// dispatchers, the .cu launchers and the kernels as the CUDA build compiles them (WITH_CUDA), with CPU tensors
// standing for device memory (on_cuda() is true for them here). tests/test_cuda_emulation.py builds it.
#include "cuda_emulation.h"

#define WITH_CUDA
#include "../../mmtransnext/ops/csrc/pytorch/cuda/local_attention_cuda.cu"
#include "../../mmtransnext/ops/csrc/pytorch/cuda/pooled_attention_cuda.cu"
#include "../../mmtransnext/ops/csrc/pytorch/local_attention.cpp"
#include "../../mmtransnext/ops/csrc/pytorch/pooled_attention.cpp"

namespace mmtransnext {

// Every tensor takes the CUDA path here, so the CPU kernels are not part of this module.
[[noreturn]] static void cpu_path() { TORCH_CHECK(false, "the CUDA emulation runs the CUDA path only"); }
void local_similarity_forward_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::Tensor&,
                                  const LocalWindow&) {
  cpu_path();
}
void local_similarity_backward_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::Tensor&, at::Tensor&,
                                   at::Tensor&, const LocalWindow&) {
  cpu_path();
}
void local_aggregation_forward_cpu(const at::Tensor&, const at::Tensor&, at::Tensor&, const LocalWindow&) {
  cpu_path();
}
void local_aggregation_backward_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::Tensor&, at::Tensor&,
                                    const LocalWindow&) {
  cpu_path();
}
void pooled_attention_forward_cpu(const PooledAttentionTensors&, const PooledGrid&) { cpu_path(); }
void pooled_attention_backward_cpu(const PooledAttentionTensors&, const PooledAttentionGrads&, const PooledGrid&) {
  cpu_path();
}

}  // namespace mmtransnext

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  mmtransnext::bind_local_attention(m);
  mmtransnext::bind_pooled_attention(m);
}
