// What the dispatchers share: argument checks, the device test, the ops' registration with torch's dispatcher.
//
// Headers: the op registration and only the ATen functions the dispatchers call. Not torch/extension.h: that is
// torch's whole C++ frontend (torch/all.h: nn, optim, data, ...), two thirds of each dispatcher's compile time (33 of
// 47 s on 2 cores, in set-up and in CI's torch 2.1 build); nor pybind11 (python_bindings.h: 19 -> 13 s for
// pooled_attention.cpp).
#pragma once
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>
#include <torch/version.h>

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

// Where the ops' fake kernels and autograd are added from Python (registration.py). torch.library.register_fake
// (torch >= 2.4) requires an op defined in C++ to name the module that registers them, and a process that traces the
// ops without it gets that name in its error (importing it imports mmtransnext, which registers them all). The old
// name of set_python_module: the one every torch >= 2.4 has.
inline void set_fake_kernels_module(torch::Library& m) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  m.impl_abstract_pystub("mmtransnext.ops.registration", "import mmtransnext registers the ops' fake kernels");
#else
  (void)m;
#endif
}

}  // namespace mmtransnext

// Each op's dispatcher defines its schemas (MMTN_LIBRARY_FRAGMENT: the library `mmtransnext`, one fragment per op)
// and registers its kernels (MMTN_LIBRARY_IMPL(CPU / CUDA, m)), so that torch.ops.load_library of the built module
// alone gives torch.ops.mmtransnext.<op> (exported programs, AOTInductor packages). The CUDA emulation
// (tests/cuda_emulation) compiles the dispatchers into a second module that is loaded beside the built one, where
// the same schemas would be defined twice: there the blocks compile but never run, and its kernels are reached
// through its Python functions (ext_loader.replaced).
#ifdef MMTN_CUDA_EMULATION
#define MMTN_LIBRARY_FRAGMENT(m) \
  [[maybe_unused]] static void C10_CONCATENATE(mmtn_unregistered_library_, C10_UID)(torch::Library & m)
#define MMTN_LIBRARY_IMPL(k, m) MMTN_LIBRARY_FRAGMENT(m)
#else
#define MMTN_LIBRARY_FRAGMENT(m) TORCH_LIBRARY_FRAGMENT(mmtransnext, m)
#define MMTN_LIBRARY_IMPL(k, m) TORCH_LIBRARY_IMPL(mmtransnext, k, m)
#endif
