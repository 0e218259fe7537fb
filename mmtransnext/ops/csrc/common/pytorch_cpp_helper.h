// Argument checks shared by the dispatchers.
#pragma once
#include <torch/extension.h>

#define MMTN_CHECK_CONTIGUOUS(x) TORCH_CHECK((x).is_contiguous(), #x " must be contiguous")
#define MMTN_CHECK_DIM(x, d) TORCH_CHECK((x).dim() == (d), #x " must have " #d " dimensions, got ", (x).dim())

namespace mmtransnext {

// Whether the op runs its CUDA kernels for `t`: false on the CPU, an error on other devices or for CUDA
// tensors when the extension was built without CUDA.
inline bool on_cuda(const at::Tensor& t) {
#ifdef MMTN_CUDA_EMULATION
  return t.is_cpu();  // tests/cuda_emulation: CPU tensors stand for device memory
#endif
  if (!t.is_cuda()) {
    TORCH_CHECK(t.is_cpu(), "mmtransnext._ext supports CPU and CUDA tensors, got ", t.device());
    return false;
  }
#ifndef WITH_CUDA
  TORCH_CHECK(false, "mmtransnext._ext was built without CUDA; rebuild it with FORCE_CUDA=1 (see README)");
#endif
  return true;
}

}  // namespace mmtransnext
